"""diagnose: every component of §3 against real servers on 127.0.0.1 (the stand-in API,
a real PostgreSQL, and third parties that check and record the keys they receive)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from prefect import get_client

from flows.diagnose import Component, DiagnoseParameters, diagnose
from sandbox.api import Faults, RunningApi, serve
from tests.conftest import Platform
from tests.servers import ThirdParties

KEYS = {
    "COINMARKETCAP_API_KEY": "cmc-key-0001",
    "OPENAI_API_KEY": "sk-openai-key-0002",
    "ANTHROPIC_API_KEY": "sk-ant-key-0003",
    "STRIPE_WEBHOOK_SECRET": "whsec_key_0004",
}
TOKEN = "diag-token-0005"


@pytest.fixture
def world(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Platform, RunningApi, ThirdParties]]:
    api = serve(platform.dsn, dashboard_token=TOKEN, webhook_secret=KEYS["STRIPE_WEBHOOK_SECRET"])
    third = ThirdParties(KEYS)
    for name, value in {**KEYS, **third.settings_env()}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RUNBOOK_PREDEPLOY__SECRET_SOURCE", "environment")
    monkeypatch.setenv("RUNBOOK_PLATFORM_URL", api.url)
    monkeypatch.setenv("RUNBOOK_PLATFORM_TOKEN", TOKEN)
    yield platform, api, third
    third.stop()
    api.stop()


def _run(component: Component = Component.ALL) -> tuple[Any, dict[str, Any]]:
    state = diagnose(DiagnoseParameters(component=component), return_state=True)
    return state, state.result(raise_on_failure=False)


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_a_healthy_platform_passes_every_component_and_keys_travel_only_in_headers(world: Any) -> None:
    _, _, third = world
    state, report = _run()
    assert state.is_completed(), state.message
    assert report["components"] == {c: "passed" for c in ("api", "database", "external-apis", "payments", "ai")}
    assert report["advice"] == {}
    checks = _checks(report)
    assert "1,200 of 10,000 used (12 %)" in checks["coinmarketcap:usage"]["detail"]
    assert checks["openai:models"]["detail"].startswith("2 models") and checks["anthropic:models"]["ok"]
    assert checks["stripe:duplicate-ignored"]["detail"].endswith("marked duplicate")
    assert checks["stripe:bad-signature-refused"]["ok"]
    assert {r["path"] for r in report["details"]["api"]} >= {"/api/health", "/api/market/prices"}
    received = {r["path"]: r["headers"] for r in third.requests}
    assert received["/cmc/v1/account"]["x-cmc_pro_api_key"] == KEYS["COINMARKETCAP_API_KEY"]
    assert received["/openai/v1/models"]["authorization"] == f"Bearer {KEYS['OPENAI_API_KEY']}"
    assert received["/anthropic/v1/models"]["x-api-key"] == KEYS["ANTHROPIC_API_KEY"]
    assert not [r["path"] for r in third.requests for key in KEYS.values() if key in r["path"]]
    shown = json.dumps(report)
    with get_client(sync_client=True) as client:
        shown += json.dumps([a.data for a in client.read_artifacts()], default=str)
        shown += json.dumps([log.message for log in client.read_logs()])
    assert not [name for name, key in {**KEYS, "token": TOKEN}.items() if key in shown]


def test_plan_usage_warns_from_80_percent_and_fails_when_exhausted(world: Any) -> None:
    _, _, third = world
    third.credits_used = 8500
    state, report = _run(Component.EXTERNAL_APIS)
    assert state.is_completed() and report["components"] == {"external-apis": "passed-with-warnings"}
    assert "85 %" in _checks(report)["coinmarketcap:usage"]["detail"]
    assert "lengthen the cache periods" in report["advice"]["external-apis"]
    third.credits_used = 10000
    state, report = _run(Component.EXTERNAL_APIS)
    assert state.is_failed() and "exhausted" in state.message


def test_a_rejected_ai_key_fails_with_the_advice(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    state, report = _run(Component.AI)
    assert state.is_failed()
    assert "HTTP 401: the key was rejected" in _checks(report)["openai:models"]["detail"]
    assert _checks(report)["anthropic:models"]["ok"]
    assert "OPENAI_API_KEY" in report["advice"]["ai"]


def test_the_database_diagnosis_finds_rls_off_and_a_long_query_with_its_literals_hidden(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    platform, _, _ = world
    monkeypatch.setenv("RUNBOOK_DIAGNOSE__LONG_QUERY_SECONDS", "0.3")
    with psycopg.connect(platform.dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE users DISABLE ROW LEVEL SECURITY")
    sleeper = threading.Thread(
        target=lambda: psycopg.connect(platform.dsn, autocommit=True).execute("SELECT pg_sleep(4), 'hunter2-password'"), daemon=True
    )
    sleeper.start()
    import time

    time.sleep(1.0)
    state, report = _run(Component.DATABASE)
    sleeper.join(timeout=10)
    assert state.is_failed()
    checks = _checks(report)
    assert "public.users has row-level security OFF" in checks["database:row-level-security"]["detail"]
    long_running = checks["database:long-running"]
    assert not long_running["ok"] and not long_running["critical"] and "pg_sleep(4), '?'" in long_running["detail"]
    assert "hunter2" not in json.dumps(report)
    assert checks["database:connections"]["ok"] and "RLS permissions" in report["advice"]["database"]


def test_payments_with_the_wrong_webhook_secret_fail(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_not_the_platforms")
    state, report = _run(Component.PAYMENTS)
    assert state.is_failed()
    assert "HTTP 400" in _checks(report)["stripe:webhook"]["detail"]
    assert "signature verification" in report["advice"]["payments"]


def test_a_slow_api_shows_in_the_timing_breakdown(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, api, _ = world
    monkeypatch.setenv("RUNBOOK_DEPLOY__WARNING_MS", "150")
    httpx.put(f"{api.url}/__faults", json=Faults(delay_ms=200).model_dump()).raise_for_status()
    state, report = _run(Component.API)
    assert state.is_completed() and report["components"] == {"api": "passed-with-warnings"}
    rows = {r["path"]: r for r in report["details"]["api"]}
    assert rows["/api/health"]["p50_ms"] >= 200 and rows["/api/health"]["slowest_ttfb_ms"] >= 200
    assert "first byte" in report["advice"]["api"]


def test_a_component_that_lacks_its_setting_is_refused_alone_and_reported_within_all(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNBOOK_PLATFORM_URL")
    state, _ = _run(Component.PAYMENTS)
    assert state.is_failed() and "RUNBOOK_PLATFORM_URL" in state.message
    state, report = _run()
    assert state.is_failed()
    assert _checks(report)["api:setup"]["detail"] == "no platform URL: set RUNBOOK_PLATFORM_URL"
    assert report["components"]["database"] == "passed" and report["components"]["ai"] == "passed"


def test_an_empty_token_is_no_token_never_an_empty_bearer(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_PLATFORM_TOKEN", "")
    state, report = _run(Component.API)
    checks = _checks(report)
    assert checks["api:token"]["detail"].startswith("RUNBOOK_PLATFORM_TOKEN unset") and not checks["api:token"]["critical"]
    assert not [name for name in checks if "/api/dashboard" in name]  # skipped, not sent "Bearer "
    assert state.is_completed(), state.message
