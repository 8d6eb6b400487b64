"""Pure decisions of deploy verification (runbook §1.4–1.5, §7.1, §7.3): what a round
of samples says about each endpoint, and whether to roll back. No I/O."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from runbook.checks import CheckResult, failed

WARNING_MS = 3000.0  # §7.1 response time: warning
CRITICAL_MS = 5000.0  # §7.1 response time: critical


class Timing(BaseModel):
    """One request's time, split as §3.1 asks: DNS, connect, TLS, first byte, total (ms).
    Connect and TLS are 0 when the request reused a connection."""

    dns_ms: float = 0.0
    connect_ms: float = 0.0
    tls_ms: float = 0.0
    ttfb_ms: float = 0.0
    total_ms: float = 0.0


class Sample(BaseModel):
    """One request to one endpoint and what came back."""

    path: str
    status: int | None = None
    error: str | None = None
    timing: Timing = Field(default_factory=Timing)
    cache_control: str | None = None
    version: str | None = None
    json_keys: list[str] | None = None


class Endpoint(BaseModel):
    """What an endpoint must answer."""

    path: str = Field(description="Path on the platform, e.g. /api/market/prices.")
    auth: bool = Field(False, description="Send the dashboard's Bearer token.")
    status: int = Field(200, ge=100, le=599, description="Expected HTTP status.")
    json_keys: list[str] = Field(default_factory=list, description="Top-level JSON keys the answer must have.")
    cache_ttl: int | None = Field(None, ge=0, description="Expected Cache-Control max-age in seconds (§7.3).")


DEFAULT_ENDPOINTS = [
    Endpoint(path="/api/health", json_keys=["status"]),
    Endpoint(path="/api/dashboard", auth=True, cache_ttl=300),
    Endpoint(path="/api/monitoring/metrics", json_keys=["error_rate_pct", "p95_ms"]),
    Endpoint(path="/api/market/prices", json_keys=["prices"], cache_ttl=60),
    Endpoint(path="/api/learning/lessons", json_keys=["lessons"], cache_ttl=3600),
]


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(round(pct / 100 * len(ordered) + 0.5 - 1e-9))))
    return ordered[rank - 1]


def max_age(cache_control: str | None) -> int | None:
    if not cache_control:
        return None
    match = re.search(r"(?:^|[,\s])max-age=(\d+)", cache_control)
    return int(match.group(1)) if match else None


def endpoint_checks(
    endpoint: Endpoint,
    samples: list[Sample],
    *,
    expected_version: str | None = None,
    warning_ms: float = WARNING_MS,
    critical_ms: float = CRITICAL_MS,
) -> list[CheckResult]:
    """Status, JSON shape, latency (p50/p95 against §7.1), cache header (§7.3), version."""
    path = endpoint.path
    checks: list[CheckResult] = []
    errors = [s for s in samples if s.error]
    wrong = [s for s in samples if not s.error and s.status != endpoint.status]
    if errors or wrong or not samples:
        first = errors[0].error if errors else (f"HTTP {wrong[0].status}" if wrong else "no sample")
        checks.append(
            CheckResult(
                name=f"status:{path}",
                ok=False,
                detail=f"{len(errors) + len(wrong)} of {len(samples)} answers not {endpoint.status} (first: {first})",
            )
        )
        return checks
    checks.append(CheckResult(name=f"status:{path}", ok=True, detail=f"{len(samples)} x HTTP {endpoint.status}"))
    if endpoint.json_keys:
        missing = sorted({k for s in samples for k in endpoint.json_keys if k not in (s.json_keys or [])})
        checks.append(
            CheckResult(
                name=f"shape:{path}",
                ok=not missing,
                detail=f"missing {', '.join(missing)}" if missing else f"has {', '.join(endpoint.json_keys)}",
            )
        )
    totals = [s.timing.total_ms for s in samples]
    p50, p95 = percentile(totals, 50), percentile(totals, 95)
    detail = f"p50 {p50:.0f} ms, p95 {p95:.0f} ms over {len(totals)} samples"
    if p95 >= critical_ms:
        checks.append(CheckResult(name=f"latency:{path}", ok=False, detail=f"{detail}: p95 >= {critical_ms:.0f} ms (critical)"))
    elif p95 >= warning_ms:
        checks.append(CheckResult(name=f"latency:{path}", ok=False, detail=f"{detail}: p95 >= {warning_ms:.0f} ms", critical=False))
    else:
        checks.append(CheckResult(name=f"latency:{path}", ok=True, detail=detail))
    if endpoint.cache_ttl is not None:
        seen = {max_age(s.cache_control) for s in samples}
        ok = seen == {endpoint.cache_ttl}
        header = samples[0].cache_control or "none"
        checks.append(
            CheckResult(
                name=f"cache:{path}",
                ok=ok,
                detail=f"max-age={endpoint.cache_ttl}" if ok else f"expected max-age={endpoint.cache_ttl}, got Cache-Control: {header}",
                critical=False,
            )
        )
    if expected_version is not None and path == "/api/health":
        versions = sorted({s.version or "none" for s in samples})
        ok = versions == [expected_version]
        checks.append(
            CheckResult(
                name="version",
                ok=ok,
                detail=f"{expected_version} serving" if ok else f"expected {expected_version}, serving {', '.join(versions)}",
            )
        )
    return checks


def should_roll_back(environment: str, checks: list[CheckResult], command: list[str]) -> tuple[bool, str]:
    """Roll back when a critical check failed in production and a command is configured."""
    critical = failed(checks, critical_only=True)
    if not critical:
        return False, "no critical failure"
    if environment != "production":
        return False, f"{environment}: failures are reported, rollback is for production"
    if not command:
        return False, "no rollback command configured: alert only"
    return True, f"{len(critical)} critical failures in production"


def endpoint_rows(samples: dict[str, list[Sample]]) -> list[dict[str, object]]:
    """Per endpoint: p50/p95 and the breakdown of its slowest request (§3.1)."""
    rows = []
    for path, items in samples.items():
        totals = [s.timing.total_ms for s in items]
        slowest = max(items, key=lambda s: s.timing.total_ms) if items else None
        cold = next((s for s in items if s.timing.connect_ms), None)
        rows.append(
            {
                "path": path,
                "samples": len(items),
                "p50_ms": round(percentile(totals, 50), 1),
                "p95_ms": round(percentile(totals, 95), 1),
                "slowest_ttfb_ms": round(slowest.timing.ttfb_ms, 1) if slowest else None,
                "new_connection_dns_ms": round(cold.timing.dns_ms, 1) if cold else 0.0,
                "new_connection_connect_ms": round(cold.timing.connect_ms, 1) if cold else 0.0,
                "new_connection_tls_ms": round(cold.timing.tls_ms, 1) if cold else 0.0,
                "statuses": ", ".join(sorted({str(s.status or s.error) for s in items})),
            }
        )
    return rows


def certificate_checks(
    target: str,
    *,
    days_left: float | None,
    chain_ok: bool,
    hostname_ok: bool,
    problem: str | None,
    warning_days: int = 30,
    critical_days: int = 7,
) -> list[CheckResult]:
    """§4.3: days to expiry (warning below 30, critical below 7), the chain, the hostname."""
    if days_left is None:
        return [CheckResult(name=f"cert:{target}", ok=False, detail=f"no certificate read: {problem}")]
    if days_left < 0:
        expiry = CheckResult(name=f"cert:{target}:expiry", ok=False, detail=f"EXPIRED {-days_left:.0f} days ago")
    elif days_left < critical_days:
        expiry = CheckResult(name=f"cert:{target}:expiry", ok=False, detail=f"{days_left:.1f} days left (< {critical_days}): renew now")
    elif days_left < warning_days:
        expiry = CheckResult(name=f"cert:{target}:expiry", ok=False, detail=f"{days_left:.0f} days left (< {warning_days})", critical=False)
    else:
        expiry = CheckResult(name=f"cert:{target}:expiry", ok=True, detail=f"{days_left:.0f} days left")
    why = f": {problem}" if problem else ""
    return [
        expiry,
        CheckResult(name=f"cert:{target}:chain", ok=chain_ok, detail="trusted" if chain_ok else f"not trusted{why}"),
        CheckResult(name=f"cert:{target}:hostname", ok=hostname_ok, detail="matches" if hostname_ok else f"does not match{why}"),
    ]
