"""deploy-verify against the stand-in API (real HTTP on 127.0.0.1), each fault switched on."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import get_client

from flows.deploy_verify import DeployVerifyParameters, Environment, deploy_verify
from sandbox.api import VERSION, Faults, RunningApi, serve
from tests.conftest import Platform

TOKEN = "deploy-token-s3cr3t"


@pytest.fixture
def api(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningApi]:
    running = serve(platform.dsn, dashboard_token=TOKEN)
    monkeypatch.setenv("RUNBOOK_PLATFORM_URL", running.url)
    monkeypatch.setenv("RUNBOOK_PLATFORM_TOKEN", TOKEN)
    monkeypatch.setenv("RUNBOOK_DEPLOY__ROLLBACK_WAIT_SECONDS", "0")
    monkeypatch.setenv("RUNBOOK_DEPLOY__SAMPLES", "4")
    yield running
    running.stop()


def faults(api: RunningApi, **kwargs: Any) -> None:
    assert httpx.put(f"{api.url}/__faults", json=Faults(**kwargs).model_dump()).status_code == 200


def _run(**kwargs: Any) -> tuple[Any, dict[str, Any]]:
    state = deploy_verify(DeployVerifyParameters(**kwargs), return_state=True)
    return state, state.result(raise_on_failure=False)


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_a_good_deploy_passes_every_check_with_timings(api: RunningApi) -> None:
    state, report = _run(environment=Environment.PRODUCTION, expected_version=VERSION)
    assert state.is_completed(), state.message
    checks = _checks(report)
    for path in ("/api/health", "/api/dashboard", "/api/monitoring/metrics", "/api/market/prices", "/api/learning/lessons"):
        assert checks[f"status:{path}"]["ok"] and checks[f"latency:{path}"]["ok"]
    for path in ("/api/dashboard", "/api/market/prices", "/api/learning/lessons"):
        assert checks[f"cache:{path}"]["ok"]
    assert checks["shape:/api/market/prices"]["ok"] and checks["version"]["ok"]
    assert checks["auth-required:/api/dashboard"]["ok"] and "401" in checks["auth-required:/api/dashboard"]["detail"]
    rows = report["rounds"][0]["endpoints"]
    assert len(rows) == 5 and all(r["samples"] == 4 for r in rows)
    assert any(r["new_connection_connect_ms"] > 0 for r in rows)  # the timing breakdown was measured
    assert report["rollback"]["done"] is False


def test_wrong_cache_headers_are_warnings_not_a_bad_deploy(api: RunningApi) -> None:
    faults(api, wrong_cache=True)
    state, report = _run()
    assert state.is_completed(), state.message
    assert report["outcome"] == "passed-with-warnings"
    cache = _checks(report)["cache:/api/market/prices"]
    assert not cache["ok"] and not cache["critical"] and "no-store" in cache["detail"]


def test_a_5xx_in_production_is_rolled_back_and_verified_again(api: RunningApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    faults(api, error_paths=["/api/market/prices"])
    # the "rollback" puts the stand-in back in order, as wrangler rollback would the platform
    # it also writes down its environment: PATH, HOME, LANG and RUNBOOK_DEPLOY__ROLLBACK_ENV's names only
    seen_file = tmp_path / "rollback-env.json"
    script = (
        f"import httpx, json, os; json.dump(dict(os.environ), open({str(seen_file)!r}, 'w')); "
        f"httpx.put('{api.url}/__faults', json={{}}).raise_for_status(); print('rolled back to v41')"
    )
    monkeypatch.setenv("RUNBOOK_DEPLOY__ROLLBACK_COMMAND", json.dumps([sys.executable, "-c", script]))
    monkeypatch.setenv("RUNBOOK_DEPLOY__ROLLBACK_ENV", '["CLOUDFLARE_API_TOKEN"]')
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "cf-token-1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-2")
    state, report = _run(environment=Environment.PRODUCTION)
    seen = json.loads(seen_file.read_text())
    assert seen["CLOUDFLARE_API_TOKEN"] == "cf-token-1"
    assert not {"RUNBOOK_PLATFORM_TOKEN", "AWS_SECRET_ACCESS_KEY", "RUNBOOK_DATABASE_URL"} & set(seen)
    assert state.is_failed()
    assert not _checks(report)["status:/api/market/prices"]["ok"]
    assert report["rollback"]["done"] is True and report["rollback"]["verified"] == "passed"
    assert [r["round"] for r in report["rounds"]] == ["after deploy", "after rollback"]
    assert "deploy is bad" in state.message and "rolled back, verification after it: passed" in state.message


def test_a_failing_staging_deploy_is_reported_not_rolled_back(api: RunningApi, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "rolled-back"
    monkeypatch.setenv("RUNBOOK_DEPLOY__ROLLBACK_COMMAND", json.dumps(["touch", str(marker)]))
    faults(api, database_down=True)
    state, report = _run(environment=Environment.STAGING)
    assert state.is_failed() and "staging: failures are reported" in state.message
    assert not _checks(report)["status:/api/health"]["ok"]
    assert not marker.exists()


def test_production_without_a_rollback_command_alerts_only(api: RunningApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_DEPLOY__ROLLBACK_COMMAND", "[]")
    faults(api, version="0.0.1-bad")
    state, report = _run(environment=Environment.PRODUCTION, expected_version=VERSION)
    assert state.is_failed() and "alert only" in state.message
    assert "serving 0.0.1-bad" in _checks(report)["version"]["detail"]


def test_slow_answers_over_the_critical_threshold_fail(api: RunningApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_DEPLOY__WARNING_MS", "100")
    monkeypatch.setenv("RUNBOOK_DEPLOY__CRITICAL_MS", "250")
    faults(api, delay_ms=300)
    state, report = _run(rollback=False, environment=Environment.PRODUCTION)
    assert state.is_failed()
    latency = _checks(report)["latency:/api/learning/lessons"]
    assert not latency["ok"] and latency["critical"] and "p95" in latency["detail"]
    assert report["rollback"]["done"] is False


def test_tls_timings_and_a_private_ca(platform: Platform, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    running = serve(platform.dsn, dashboard_token=TOKEN, tls_days=90, tls_dir=tmp_path)
    try:
        monkeypatch.setenv("RUNBOOK_PLATFORM_TOKEN", TOKEN)
        monkeypatch.setenv("RUNBOOK_DEPLOY__CA_BUNDLE", str(running.cert_file))
        state, report = _run(base_url=running.url, samples=2)
        assert state.is_completed(), state.message
        assert any(r["new_connection_tls_ms"] > 0 for r in report["rounds"][0]["endpoints"])
    finally:
        running.stop()


def test_missing_url_or_token_is_refused_and_the_token_never_shows(api: RunningApi, monkeypatch: pytest.MonkeyPatch) -> None:
    state, _ = _run()
    assert state.is_completed()
    with get_client(sync_client=True) as client:
        assert not [a.key for a in client.read_artifacts() if TOKEN in json.dumps(a.data, default=str)]
        assert not [log.message for log in client.read_logs() if TOKEN in log.message]
    monkeypatch.delenv("RUNBOOK_PLATFORM_TOKEN")
    state, _ = _run()
    assert state.is_failed() and "RUNBOOK_PLATFORM_TOKEN" in state.message
    monkeypatch.delenv("RUNBOOK_PLATFORM_URL")
    state, _ = _run()
    assert state.is_failed() and "RUNBOOK_PLATFORM_URL" in state.message
