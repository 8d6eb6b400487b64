"""cert-check against real TLS servers on 127.0.0.1 with certificates made in the test."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.cert_check import CertParameters, cert_check
from runbook.deploy import certificate_checks
from sandbox.api import RunningApi, serve
from tests.conftest import Platform


@pytest.fixture
def hosts(platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[int, RunningApi]]:
    """Three HTTPS servers whose certificates expire in 5, 20 and 90 days, one CA bundle."""
    servers = {days: serve(platform.dsn, tls_days=days, tls_dir=tmp_path / str(days)) for days in (5, 20, 90)}
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("".join(s.cert_file.read_text() for s in servers.values()))  # type: ignore[union-attr]
    monkeypatch.setenv("RUNBOOK_CERTS__CA_BUNDLE", str(bundle))
    yield servers
    for server in servers.values():
        server.stop()


def target(server: RunningApi, host: str = "127.0.0.1") -> str:
    return f"{host}:{server.url.rsplit(':', 1)[1]}"


def _run(**kwargs: Any) -> tuple[Any, dict[str, Any]]:
    state = cert_check(CertParameters(**kwargs), return_state=True)
    return state, state.result(raise_on_failure=False)


def test_days_to_expiry_warn_below_30_and_fail_below_7(hosts: dict[int, RunningApi]) -> None:
    state, report = _run(hosts=[target(hosts[90]), target(hosts[20])])
    assert state.is_completed() and report["outcome"] == "passed-with-warnings"
    rows = {r["host"]: r for r in report["certificates"]}
    assert 89 < rows[target(hosts[90])]["days_left"] <= 90 and rows[target(hosts[90])]["chain"] == "ok"
    warn = next(c for c in report["checks"] if c["name"] == f"cert:{target(hosts[20])}:expiry")
    assert not warn["ok"] and not warn["critical"] and "days left (< 30)" in warn["detail"]
    state, report = _run(hosts=[target(hosts[5])])
    assert state.is_failed() and "renew now" in state.message


def test_an_untrusted_chain_and_a_wrong_hostname_are_named(hosts: dict[int, RunningApi], monkeypatch: pytest.MonkeyPatch) -> None:
    state, report = _run(hosts=[target(hosts[90], "localhost")])  # the certificate names 127.0.0.1 only
    checks = {c["name"]: c for c in report["checks"]}
    assert state.is_failed() and not checks[f"cert:localhost:{target(hosts[90]).split(':')[1]}:hostname"]["ok"]
    monkeypatch.delenv("RUNBOOK_CERTS__CA_BUNDLE")  # system CAs: a self-signed chain is not trusted
    state, report = _run(hosts=[target(hosts[90])])
    checks = {c["name"]: c for c in report["checks"]}
    assert state.is_failed() and "not trusted" in checks[f"cert:{target(hosts[90])}:chain"]["detail"]
    assert checks[f"cert:{target(hosts[90])}:expiry"]["ok"]  # still read, without verification


def test_a_due_certificate_runs_the_renewal_command_then_checks_again(
    hosts: dict[int, RunningApi], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    marker = tmp_path / "renewed"
    # the renewal writes down its environment: PATH, HOME, LANG and RUNBOOK_CERTS__RENEW_ENV's names only
    renew = f"import json, os; json.dump(dict(os.environ), open({str(marker)!r}, 'w'))"
    monkeypatch.setenv("RUNBOOK_CERTS__RENEW_COMMAND", json.dumps([sys.executable, "-c", renew]))
    monkeypatch.setenv("RUNBOOK_CERTS__RENEW_ENV", '["CF_DNS_TOKEN"]')
    monkeypatch.setenv("CF_DNS_TOKEN", "dns-token-1")
    monkeypatch.setenv("RUNBOOK_PLATFORM_TOKEN", "platform-token-2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-3")
    monkeypatch.setenv("RUNBOOK_DATABASE_URL", "postgresql://app:db-pass-4@db.internal/platform")
    monkeypatch.setenv("RUNBOOK_CERTS__HOSTS", json.dumps([target(hosts[20])]))
    state, report = _run()
    assert marker.exists() and report["renewal"]["ran"] is True
    seen = json.loads(marker.read_text())
    assert seen["CF_DNS_TOKEN"] == "dns-token-1"
    assert not {"RUNBOOK_PLATFORM_TOKEN", "AWS_SECRET_ACCESS_KEY", "RUNBOOK_DATABASE_URL"} & set(seen)
    assert state.is_completed()  # still 20 days: a warning after the renewal, checked again
    _, report = _run(renew=False, hosts=[target(hosts[90])])
    assert report["renewal"] == {"ran": False}


def test_no_host_is_refused() -> None:
    state, _ = _run()
    assert state.is_failed() and "RUNBOOK_CERTS__HOSTS" in state.message


def test_certificate_rules() -> None:
    def names(days: float | None) -> dict[str, tuple[bool, bool]]:
        checks = certificate_checks("h", days_left=days, chain_ok=True, hostname_ok=True, problem=None if days is not None else "refused")
        return {c.name: (c.ok, c.critical) for c in checks}

    assert names(45)["cert:h:expiry"] == (True, True)
    assert names(29.9)["cert:h:expiry"] == (False, False)
    assert names(6.9)["cert:h:expiry"] == (False, True)
    assert names(-1)["cert:h:expiry"] == (False, True)
    assert names(None) == {"cert:h": (False, True)}
