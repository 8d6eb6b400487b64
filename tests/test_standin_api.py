"""The stand-in of the platform's API: real HTTP on 127.0.0.1 over the test database,
each endpoint and each fault switch."""

from __future__ import annotations

import json
import ssl
import socket
from collections.abc import Iterator
from datetime import datetime, timezone

import httpx
import pytest

from runbook.stripe import check_stripe_signature, sign_stripe_payload
from sandbox.api import CACHE_TTLS, Faults, RunningApi, serve
from tests.conftest import Platform

TOKEN = "dash-token-123"
WEBHOOK_SECRET = "whsec_test_abc"


@pytest.fixture
def api(platform: Platform) -> Iterator[RunningApi]:
    running = serve(platform.dsn, dashboard_token=TOKEN, webhook_secret=WEBHOOK_SECRET)
    yield running
    running.stop()


def test_every_endpoint_answers_with_its_shape_and_cache_headers(api: RunningApi) -> None:
    with httpx.Client(base_url=api.url, timeout=10) as client:
        health = client.get("/api/health")
        assert health.status_code == 200 and health.json()["database"] == "ok"
        assert client.get("/api/dashboard").status_code == 401
        dashboard = client.get("/api/dashboard", headers={"Authorization": f"Bearer {TOKEN}"})
        assert dashboard.status_code == 200 and dashboard.json()["alerts"] > 0
        assert dashboard.headers["Cache-Control"] == "private, max-age=300"
        prices = client.get("/api/market/prices")
        assert prices.headers["Cache-Control"] == "public, max-age=60"
        assert {p["symbol"] for p in prices.json()["prices"]} and all(p["price"] > 0 for p in prices.json()["prices"])
        lessons = client.get("/api/learning/lessons")
        assert lessons.headers["Cache-Control"] == "public, max-age=3600" and lessons.json()["lessons"]
        metrics = client.get("/api/monitoring/metrics").json()
        for key in ("request_count", "requests_per_second", "error_rate_pct", "p50_ms", "p95_ms", "cpu_pct", "memory_pct", "disk_pct", "active_users", "database_bytes"):
            assert key in metrics, key
        assert metrics["request_count"] == 5  # the five before this one and metrics["database_bytes"] > 0
    assert CACHE_TTLS == {"/api/market/prices": 60, "/api/dashboard": 300, "/api/learning/lessons": 3600}


def test_the_stripe_webhook_checks_the_signature_and_handles_an_event_once(api: RunningApi) -> None:
    event = json.dumps({"id": "evt_1", "type": "payment_intent.succeeded"}).encode()
    with httpx.Client(base_url=api.url, timeout=10) as client:
        bad = client.post("/api/stripe/webhooks", content=event, headers={"Stripe-Signature": sign_stripe_payload(event, "whsec_wrong")})
        assert bad.status_code == 400 and "signature" in bad.json()["error"]
        assert client.post("/api/stripe/webhooks", content=event).status_code == 400
        headers = {"Stripe-Signature": sign_stripe_payload(event, WEBHOOK_SECRET)}
        first = client.post("/api/stripe/webhooks", content=event, headers=headers)
        again = client.post("/api/stripe/webhooks", content=event, headers=headers)
    assert first.status_code == 200 and first.json() == {"received": True, "id": "evt_1", "duplicate": False}
    assert again.status_code == 200 and again.json()["duplicate"] is True


def test_a_signature_outside_the_tolerance_or_tampered_is_refused() -> None:
    payload = b'{"id": "evt_2"}'
    old = sign_stripe_payload(payload, WEBHOOK_SECRET, timestamp=1_000_000)
    assert check_stripe_signature(payload, old, WEBHOOK_SECRET) == "timestamp outside the tolerance"
    fresh = sign_stripe_payload(payload, WEBHOOK_SECRET)
    assert check_stripe_signature(payload, fresh, WEBHOOK_SECRET) is None
    assert check_stripe_signature(payload + b" ", fresh, WEBHOOK_SECRET) == "signature does not match"


def test_fault_switches_slow_5xx_database_down_wrong_cache_and_version(api: RunningApi) -> None:
    with httpx.Client(base_url=api.url, timeout=10) as client:
        def set_faults(**kwargs: object) -> None:
            assert client.put("/__faults", json=Faults(**kwargs).model_dump()).status_code == 200

        set_faults(delay_ms=300)
        started = datetime.now(timezone.utc)
        assert client.get("/api/learning/lessons").status_code == 200
        assert (datetime.now(timezone.utc) - started).total_seconds() >= 0.3
        set_faults(error_paths=["/api/market/prices"])
        assert client.get("/api/market/prices").status_code == 500
        assert client.get("/api/learning/lessons").status_code == 200
        set_faults(database_down=True)
        health = client.get("/api/health")
        assert health.status_code == 503 and health.json()["database"] == "unreachable"
        set_faults(wrong_cache=True, version="9.9.9")
        prices = client.get("/api/market/prices")
        assert prices.headers["Cache-Control"] == "no-store" and prices.headers["X-Platform-Version"] == "9.9.9"
        set_faults()
        assert client.get("/api/health").json()["version"] != "9.9.9"
        metrics = client.get("/api/monitoring/metrics").json()
        assert metrics["error_rate_pct"] > 0  # the 500 and 503 above were counted


def test_tls_with_a_certificate_expiring_in_n_days(platform: Platform, tmp_path) -> None:  # type: ignore[no-untyped-def]
    running = serve(platform.dsn, tls_days=5, tls_dir=tmp_path)
    try:
        assert running.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(running.cert_file))
        port = int(running.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            with context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                not_after = ssl.cert_time_to_seconds(tls.getpeercert()["notAfter"])
        days = (not_after - datetime.now(timezone.utc).timestamp()) / 86400
        assert 4.9 < days < 5.1
        assert httpx.get(f"{running.url}/api/health", verify=context).status_code == 200
    finally:
        running.stop()


def test_the_stand_in_runs_as_its_own_process_and_needs_its_secrets(platform: Platform) -> None:
    import os
    import subprocess
    import sys

    base = {**os.environ, "RUNBOOK_DATABASE_URL": platform.dsn}
    refused = subprocess.run([sys.executable, "-m", "sandbox.api", "--port", "0"], env=base, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "RUNBOOK_PLATFORM_TOKEN" in refused.stderr
    env = {**base, "RUNBOOK_PLATFORM_TOKEN": TOKEN, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    server = subprocess.Popen([sys.executable, "-m", "sandbox.api", "--port", "0"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/api/dashboard", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).status_code == 200
    finally:
        server.terminate()
        assert server.wait(timeout=20) == 0
