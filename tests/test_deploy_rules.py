"""Deploy verification's rules (§1.4-1.5, §7.1, §7.3): plain data in, checks out."""

from __future__ import annotations

import pytest

from runbook.checks import CheckResult
from runbook.deploy import Endpoint, Sample, Timing, endpoint_checks, max_age, percentile, should_roll_back


def sample(path: str = "/api/x", status: int = 200, ms: float = 10.0, **kwargs: object) -> Sample:
    return Sample(path=path, status=status, timing=Timing(total_ms=ms), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "pct", "expected"),
    [([], 95, 0.0), ([5.0], 95, 5.0), (list(map(float, range(1, 21))), 95, 19.0), (list(map(float, range(1, 21))), 50, 10.0),
     ([1.0, 2.0, 3.0, 100.0], 95, 100.0)],
)
def test_percentile_is_nearest_rank(values: list[float], pct: float, expected: float) -> None:
    assert percentile(values, pct) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [("public, max-age=60", 60), ("max-age=3600", 3600), ("private,max-age=300, must-revalidate", 300), ("s-maxage=10", None),
     ("no-store", None), (None, None)],
)
def test_max_age_reads_the_cache_control_header(header: str | None, expected: int | None) -> None:
    assert max_age(header) == expected


def test_latency_is_judged_on_p95_against_the_thresholds_of_7_1() -> None:
    endpoint = Endpoint(path="/api/x")
    fast = endpoint_checks(endpoint, [sample(ms=100.0)] * 19 + [sample(ms=2900.0)])
    assert next(c for c in fast if c.name == "latency:/api/x").ok
    slow = {c.name: c for c in endpoint_checks(endpoint, [sample(ms=3500.0)] * 20)}["latency:/api/x"]
    assert not slow.ok and not slow.critical
    critical = {c.name: c for c in endpoint_checks(endpoint, [sample(ms=5000.0)] * 20)}["latency:/api/x"]
    assert not critical.ok and critical.critical


def test_a_wrong_status_or_an_error_stops_the_other_checks_of_that_endpoint() -> None:
    checks = endpoint_checks(Endpoint(path="/api/x", json_keys=["a"], cache_ttl=60), [sample(), sample(status=502), Sample(path="/api/x", error="ConnectError")])
    assert [c.name for c in checks] == ["status:/api/x"]
    assert not checks[0].ok and "2 of 3" in checks[0].detail and "ConnectError" in checks[0].detail


def test_shape_cache_and_version_checks() -> None:
    endpoint = Endpoint(path="/api/health", json_keys=["status", "database"], cache_ttl=60)
    good = sample(path="/api/health", json_keys=["database", "status"], cache_control="public, max-age=60", version="v2")
    checks = {c.name: c for c in endpoint_checks(endpoint, [good, good], expected_version="v2")}
    assert all(c.ok for c in checks.values()) and set(checks) == {"status:/api/health", "shape:/api/health", "latency:/api/health", "cache:/api/health", "version"}
    bad = sample(path="/api/health", json_keys=["status"], cache_control="no-store", version="v1")
    checks = {c.name: c for c in endpoint_checks(endpoint, [good, bad], expected_version="v2")}
    assert not checks["shape:/api/health"].ok and "database" in checks["shape:/api/health"].detail
    assert not checks["cache:/api/health"].ok and not checks["cache:/api/health"].critical
    assert not checks["version"].ok and "v1, v2" in checks["version"].detail


def test_rollback_only_for_a_critical_failure_in_production_with_a_command() -> None:
    bad = [CheckResult(name="status:/api/health", ok=False)]
    warning = [CheckResult(name="cache:/x", ok=False, critical=False)]
    assert should_roll_back("production", bad, ["wrangler", "rollback"]) == (True, "1 critical failures in production")
    assert should_roll_back("production", warning, ["wrangler", "rollback"])[0] is False
    assert should_roll_back("staging", bad, ["wrangler", "rollback"])[0] is False
    assert should_roll_back("production", bad, []) == (False, "no rollback command configured: alert only")
