"""The monitor's signal collectors against real peers: the platform stand-in (with its
fault switch), real PostgreSQL databases, a real store, the session's Prefect server;
and a scripted HTTP peer for what the stand-in cannot do (other field names, refusals)."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prefect import flow, get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId, TaskRunFilter, TaskRunFilterFlowRunId
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.states import Cancelled, Completed, Crashed, Failed

from runbook.alerting.model import METRICS, Sample
from runbook.backups import BackupStatus, Manifest, manifest_key
from runbook.errors import ConfigError
from runbook.settings import PLATFORM_METRIC_FIELDS, SIGNAL_SOURCES, load_settings
from runbook.target import resolve_target
from sandbox.api import Faults, RunningApi, serve
from tasks.postgres import with_database
from tasks.signals import (
    NO_BACKUP_AGE_MINUTES,
    Signals,
    collect_backup_age,
    collect_database,
    collect_deployment_runs,
    collect_health,
    collect_platform_metrics,
    collect_signals,
    open_monitored_store,
    platform_client,
    platform_metrics_task,
)
from tasks.store import LocalStore, put_json
from tests.conftest import S3, Platform
from tests.servers import free_port

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
TOKEN = "monitor-token-7f3a"


def _by(samples: list[Sample]) -> dict[tuple[str, str], Sample]:
    keyed = {(s.metric, s.resource): s for s in samples}
    assert len(keyed) == len(samples), "one sample per metric and resource"
    return keyed


def _values(samples: list[Sample]) -> dict[tuple[str, str], float | None]:
    return {key: s.value for key, s in _by(samples).items()}


@pytest.fixture
def api(platform: Platform) -> Iterator[RunningApi]:
    running = serve(platform.dsn, dashboard_token=TOKEN)
    yield running
    running.stop()


def _faults(api: RunningApi, **faults: Any) -> None:
    httpx.put(f"{api.url}/__faults", json=Faults(**faults).model_dump(), timeout=5).raise_for_status()


class ScriptedPeer:
    """An HTTP peer on 127.0.0.1 answering each GET with the next scripted (status,
    body), the last one forever; it records the Authorization header of each request."""

    def __init__(self, *answers: tuple[int, Any]) -> None:
        self.answers = list(answers)
        self.seen: list[str | None] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                peer.seen.append(self.headers.get("Authorization"))
                status, body = peer.answers.pop(0) if len(peer.answers) > 1 else peer.answers[0]
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def peer() -> Iterator[Any]:
    started: list[ScriptedPeer] = []

    def start(*answers: tuple[int, Any]) -> ScriptedPeer:
        started.append(ScriptedPeer(*answers))
        return started[-1]

    yield start
    for one in started:
        one.stop()


# --------------------------------------------------------------------------- settings


def test_the_metric_field_map_names_only_known_metrics_and_merges_over_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(PLATFORM_METRIC_FIELDS) <= set(METRICS)
    assert {"signal_up"} <= set(METRICS)
    monkeypatch.setenv("RUNBOOK_MONITOR__METRIC_FIELDS__RESPONSE_TIME_P95_MS", "latency.p95")
    monkeypatch.setenv("RUNBOOK_MONITOR__METRIC_FIELDS__DISK_PCT", "")
    fields = load_settings().monitor.metric_fields
    assert fields == {**PLATFORM_METRIC_FIELDS, "response_time_p95_ms": "latency.p95", "disk_pct": ""}
    monkeypatch.setenv("RUNBOOK_MONITOR__METRIC_FIELDS", '{"load_avg": "load"}')
    with pytest.raises(ConfigError, match="RUNBOOK_MONITOR__METRIC_FIELDS: unknown metric.*load_avg"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RUNBOOK_MONITOR__SOURCES", '["metrics", "logs"]', "RUNBOOK_MONITOR__SOURCES"),
        ("RUNBOOK_MONITOR__HEALTH_PATH", "http://elsewhere/api/health", "RUNBOOK_MONITOR__HEALTH_PATH"),
        ("RUNBOOK_MONITOR__HTTP_TIMEOUT_SECONDS", "0", "RUNBOOK_MONITOR__HTTP_TIMEOUT_SECONDS"),
        ("RUNBOOK_MONITOR__DEPLOYMENT_TAG", "", "RUNBOOK_MONITOR__DEPLOYMENT_TAG"),
    ],
)
def test_bad_monitor_settings_are_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


# --------------------------------------------------------------------------- platform metrics and health


def test_metrics_and_health_of_the_stand_in(api: RunningApi) -> None:
    fields = load_settings().monitor.metric_fields
    with platform_client(api.url, token=None, timeout_s=5) as client:
        httpx.get(f"{api.url}/api/learning/lessons", timeout=5)  # something for the metrics to count
        metrics = _by(collect_platform_metrics(client, fields))
        health = _by(collect_health(client))

    assert set(metrics) == {(m, "api") for m in PLATFORM_METRIC_FIELDS} | {("signal_up", "metrics")}
    for metric in PLATFORM_METRIC_FIELDS:
        assert isinstance(metrics[(metric, "api")].value, float), metrics[(metric, "api")]
    assert 0 <= metrics[("disk_pct", "api")].value <= 100  # type: ignore[operator]
    assert "p95_ms" in metrics[("response_time_p95_ms", "api")].detail
    assert metrics[("signal_up", "metrics")].value == 1
    assert health[("health_up", "api")].value == 1
    assert health[("health_latency_ms", "api")].value is not None and health[("health_latency_ms", "api")].value >= 0
    assert health[("signal_up", "health")].value == 1


def test_a_platform_whose_database_is_down_gives_no_metrics_and_health_down(api: RunningApi) -> None:
    _faults(api, database_down=True)
    fields = load_settings().monitor.metric_fields
    with platform_client(api.url, token=None, timeout_s=5) as client:
        metrics = _values(collect_platform_metrics(client, fields))
        health = _by(collect_health(client))

    assert metrics == {**{(m, "api"): None for m in PLATFORM_METRIC_FIELDS}, ("signal_up", "metrics"): 0.0}
    # the health endpoint answered (503): the source is up and says the platform is not
    assert health[("health_up", "api")].value == 0
    assert health[("health_latency_ms", "api")].value is not None
    assert health[("signal_up", "health")].value == 1
    assert "HTTP 503" in health[("health_up", "api")].detail


def test_a_platform_answering_500_everywhere(api: RunningApi) -> None:
    _faults(api, error_paths=["*"])
    with platform_client(api.url, token=None, timeout_s=5) as client:
        metrics = _by(collect_platform_metrics(client, PLATFORM_METRIC_FIELDS))
        health = _values(collect_health(client))
    assert metrics[("signal_up", "metrics")].value == 0
    assert metrics[("signal_up", "metrics")].detail == "GET /api/monitoring/metrics: HTTP 500: internal error (fault switch)"
    assert metrics[("error_rate_pct", "api")].value is None
    assert health[("health_up", "api")] == 0 and health[("signal_up", "health")] == 1


def test_a_platform_that_does_not_answer_is_health_down_and_sources_down() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with platform_client(closed, token=None, timeout_s=5) as client:
        metrics = _by(collect_platform_metrics(client, PLATFORM_METRIC_FIELDS))
        health = _by(collect_health(client))
    assert metrics[("signal_up", "metrics")].value == 0
    assert "cannot reach 127.0.0.1:" in metrics[("signal_up", "metrics")].detail
    assert all(metrics[(m, "api")].value is None for m in PLATFORM_METRIC_FIELDS)
    # nothing answered: health_up is 0 (the platform is down), the latency unknown
    assert health[("health_up", "api")].value == 0
    assert health[("health_latency_ms", "api")].value is None
    assert health[("signal_up", "health")].value == 0


def test_the_field_map_reads_another_platforms_names_and_the_token_is_sent(peer: Any) -> None:
    answer = {"errors": {"rate": 7.5}, "latency": {"p95": 812}, "cpu": "high", "mem": True, "disk_pct": 42.0}
    scripted = peer((200, answer))
    fields = {
        "error_rate_pct": "errors.rate",
        "response_time_p95_ms": "latency.p95",
        "cpu_pct": "cpu",
        "memory_pct": "mem",
        "disk_pct": "",  # turned off
    }
    with platform_client(scripted.url, token=load_settings(platform_token=TOKEN).platform_token, timeout_s=5) as client:
        samples = _by(collect_platform_metrics(client, fields | {"disk_pct": ""}))
        fields["disk_pct"] = "disk"  # and a field the answer lacks
        missing = _by(collect_platform_metrics(client, fields))

    assert samples[("error_rate_pct", "api")].value == 7.5
    assert samples[("response_time_p95_ms", "api")].value == 812.0
    assert samples[("cpu_pct", "api")].value is None and "'high', not a number" in samples[("cpu_pct", "api")].detail
    assert samples[("memory_pct", "api")].value is None  # a boolean is not a measurement
    assert ("disk_pct", "api") not in samples
    assert samples[("signal_up", "metrics")].value == 1
    assert missing[("disk_pct", "api")].value is None and "no field 'disk'" in missing[("disk_pct", "api")].detail
    assert scripted.seen == [f"Bearer {TOKEN}", f"Bearer {TOKEN}"]
    assert all(TOKEN not in s.detail for s in [*samples.values(), *missing.values()])


def test_the_health_check_sends_no_token_and_an_answer_that_is_not_json_is_a_source_down(peer: Any) -> None:
    scripted = peer((200, "<html>maintenance</html>"))
    with platform_client(scripted.url, token=load_settings(platform_token=TOKEN).platform_token, timeout_s=5) as client:
        metrics = _by(collect_platform_metrics(client, PLATFORM_METRIC_FIELDS))
    assert metrics[("signal_up", "metrics")].value == 0 and "not JSON" in metrics[("signal_up", "metrics")].detail
    settings = load_settings(platform_url=scripted.url, platform_token=TOKEN)
    from tasks.signals import health_task

    health = _values(health_task(settings.platform_url, "/api/health", 5))
    assert health[("health_up", "api")] == 1
    assert scripted.seen[-1] is None


def test_a_transient_refusal_is_retried_and_a_wrong_token_is_not(peer: Any) -> None:
    flaky = peer((503, {"error": "warming up"}), (200, {"error_rate_pct": 0.5}))
    fields = {"error_rate_pct": "error_rate_pct"}
    samples = platform_metrics_task.with_options(retries=1, retry_delay_seconds=0)(flaky.url, None, fields, "/m", 5)
    assert _values(samples) == {("error_rate_pct", "api"): 0.5, ("signal_up", "metrics"): 1.0}
    assert len(flaky.seen) == 2

    refused = peer((401, {"error": "unauthorized"}))
    with pytest.raises(ConfigError, match="HTTP 401: unauthorized; check RUNBOOK_PLATFORM_TOKEN"):
        platform_metrics_task.with_options(retries=2, retry_delay_seconds=0)(refused.url, None, fields, "/m", 5)
    assert len(refused.seen) == 1


# --------------------------------------------------------------------------- database


def _expected_size_gb(dsn: str) -> float:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert row is not None
    return round(row[0] / 1e9, 6)


def test_database_health_of_the_platform(platform: Platform) -> None:
    with platform.connect() as conn:  # one more client connection, which must be counted
        max_connections = int(conn.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
        samples = _by(collect_database(platform.dsn, "prod-1"))

    assert samples[("database_up", "prod-1")].value == 1
    pct = samples[("database_connections_pct", "prod-1")].value
    assert pct is not None and 2 * 100 / max_connections <= pct <= 100
    assert f"of max_connections {max_connections}" in samples[("database_connections_pct", "prod-1")].detail
    assert samples[("database_size_gb", "prod-1")].value == _expected_size_gb(platform.dsn)
    assert "GB (10^9 bytes" in samples[("database_size_gb", "prod-1")].detail
    assert samples[("signal_up", "database")].value == 1


def test_database_health_of_the_variants_database(variants: Platform) -> None:
    samples = _values(collect_database(variants.dsn, variants.database))
    assert samples[("database_up", variants.database)] == 1
    assert samples[("database_size_gb", variants.database)] == _expected_size_gb(variants.dsn)
    assert samples[("database_connections_pct", variants.database)] is not None


def test_an_unreachable_database_is_database_down_without_an_exception() -> None:
    dsn = f"postgresql://monitor:pw-{secrets.token_hex(4)}@127.0.0.1:{free_port()}/platform"
    samples = _by(collect_database(dsn, "prod-1", timeout_s=2))
    assert _values(list(samples.values())) == {
        ("database_up", "prod-1"): 0.0,
        ("database_connections_pct", "prod-1"): None,
        ("database_size_gb", "prod-1"): None,
        ("signal_up", "database"): 0.0,
    }
    detail = samples[("database_up", "prod-1")].detail
    assert "cannot reach PostgreSQL" in detail and "\n" not in detail
    password = dsn.split(":")[2].split("@")[0]
    assert all(password not in s.detail for s in samples.values())


def test_a_database_that_does_not_exist_is_database_down(platform: Platform) -> None:
    samples = _by(collect_database(with_database(platform.dsn, "no_such_database"), "prod-1"))
    assert samples[("database_up", "prod-1")].value == 0
    assert "does not exist" in samples[("signal_up", "database")].detail


# --------------------------------------------------------------------------- backups


def _write_manifest(store: Any, instance: str, backup_id: str, status: BackupStatus, snapshot_at: datetime | None) -> None:
    started = (snapshot_at or NOW) - timedelta(seconds=5)
    manifest = Manifest(
        id=backup_id, status=status, database="platform", instance=instance, started_at=started, snapshot_at=snapshot_at
    )
    put_json(store, manifest_key(instance, backup_id), manifest.model_dump(mode="json"))


def test_backup_age_is_that_of_the_newest_done_backup_of_the_instance(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "backups")
    _write_manifest(store, "prod-1", "backup_20260302_090000", BackupStatus.DONE, NOW - timedelta(hours=3))
    _write_manifest(store, "prod-1", "backup_20260302_104500", BackupStatus.DONE, NOW - timedelta(minutes=80))
    # newer, but not usable: neither counts
    _write_manifest(store, "prod-1", "backup_20260302_113000", BackupStatus.FAILED, NOW - timedelta(minutes=30))
    _write_manifest(store, "prod-1", "backup_20260302_115500", BackupStatus.STARTED, NOW - timedelta(minutes=5))
    # another platform's fresh backup in the same store
    _write_manifest(store, "prod-2", "backup_20260302_115800", BackupStatus.DONE, NOW - timedelta(minutes=2))

    samples = _by(collect_backup_age(store, "prod-1", now=NOW))
    age = samples[("backup_age_minutes", "prod-1")]
    assert age.value == 80.0
    assert age.detail.startswith("backup_20260302_104500, snapshot at 2026-03-02T10:40:00+00:00")
    assert samples[("signal_up", "backups")].value == 1
    assert _values(collect_backup_age(store, "prod-2", now=NOW))[("backup_age_minutes", "prod-2")] == 2.0


def test_no_done_backup_is_as_stale_as_can_be(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "backups")
    empty = _by(collect_backup_age(store, "prod-1", now=NOW))
    assert empty[("backup_age_minutes", "prod-1")].value == NO_BACKUP_AGE_MINUTES > 75
    assert empty[("backup_age_minutes", "prod-1")].detail == f"no DONE backup in {store.url}/prod-1"
    assert empty[("signal_up", "backups")].value == 1
    _write_manifest(store, "prod-1", "backup_20260302_115500", BackupStatus.FAILED, NOW - timedelta(minutes=5))
    failed = _by(collect_backup_age(store, "prod-1", now=NOW))[("backup_age_minutes", "prod-1")]
    assert failed.value == NO_BACKUP_AGE_MINUTES and "(1 not DONE)" in failed.detail
    with pytest.raises(ValueError, match="timezone"):
        collect_backup_age(store, "prod-1", now=NOW.replace(tzinfo=None))


def test_backup_age_on_s3_and_a_bucket_that_does_not_exist(s3_server: S3) -> None:
    bucket = s3_server.new_bucket()
    store = open_monitored_store(f"s3://{bucket}/backups", s3_endpoint_url=s3_server.endpoint, timeout_s=5)
    _write_manifest(store, "prod-1", "backup_20260302_113000", BackupStatus.DONE, NOW - timedelta(minutes=30))
    assert _values(collect_backup_age(store, "prod-1", now=NOW))[("backup_age_minutes", "prod-1")] == 30.0

    gone = open_monitored_store(f"s3://rb-gone-{secrets.token_hex(4)}/b", s3_endpoint_url=s3_server.endpoint, timeout_s=5)
    samples = _by(collect_backup_age(gone, "prod-1", now=NOW))
    assert samples[("backup_age_minutes", "prod-1")].value is None
    assert samples[("signal_up", "backups")].value == 0
    assert samples[("signal_up", "backups")].detail.endswith("(NoSuchBucket)")


# --------------------------------------------------------------------------- runbook's own runs


def _deployment(client: Any, flow_id: Any, name: str, tag: str, *, active: bool | None = True, paused: bool = False) -> Any:
    schedules = [] if active is None else [DeploymentScheduleCreate(schedule=IntervalSchedule(interval=timedelta(hours=1)), active=active)]
    return client.create_deployment(flow_id=flow_id, name=name, tags=[tag, "other"], schedules=schedules, paused=paused)


def _finished_run(client: Any, deployment_id: Any, state: Any) -> Any:
    run = client.create_flow_run_from_deployment(deployment_id)
    client.set_flow_run_state(run.id, state, force=True)
    return run


@pytest.fixture
def watched_tag() -> str:
    return f"runbook-{secrets.token_hex(4)}"


def test_the_newest_finished_run_of_each_scheduled_deployment(watched_tag: str) -> None:
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(f"signals-{watched_tag}")
        backup = _deployment(client, flow_id, "backup", watched_tag)
        verify = _deployment(client, flow_id, "backup-verify", watched_tag)
        drill = _deployment(client, flow_id, "dr-drill", watched_tag)
        cleanup = _deployment(client, flow_id, "data-cleanup", watched_tag)
        _deployment(client, flow_id, "fresh", watched_tag)  # never ran
        by_hand = _deployment(client, flow_id, "backup-prune", watched_tag, active=None)  # no schedule: not watched
        off = _deployment(client, flow_id, "cert-check", watched_tag, active=False)  # schedule off: not watched
        paused = _deployment(client, flow_id, "db-maintenance", watched_tag, paused=True)
        other = client.create_deployment(flow_id=flow_id, name="not-ours", tags=["other"],
                                         schedules=[DeploymentScheduleCreate(schedule=IntervalSchedule(interval=timedelta(hours=1)))])

        failed = _finished_run(client, backup, Failed(message="pg_dump: error: connection lost\ndetails"))
        _finished_run(client, verify, Failed(message="old failure"))
        _finished_run(client, verify, Completed())  # the newest finished one is what counts
        _finished_run(client, drill, Crashed(message="worker died"))
        _finished_run(client, cleanup, Cancelled())
        client.create_flow_run_from_deployment(cleanup)  # scheduled, not finished: ignored
        for ignored in (by_hand, off, paused, other):
            _finished_run(client, ignored, Failed())

        samples = _by(collect_deployment_runs(client, watched_tag))

    assert _values(list(samples.values())) == {
        ("deployment_failed", "backup"): 1.0,
        ("deployment_failed", "backup-verify"): 0.0,
        ("deployment_failed", "dr-drill"): 1.0,
        ("deployment_failed", "data-cleanup"): 0.0,
        ("deployment_failed", "fresh"): 0.0,
        ("signal_up", "prefect"): 1.0,
    }
    detail = samples[("deployment_failed", "backup")].detail
    assert f"run {failed.name} ({failed.id}) Failed at " in detail and detail.endswith(": pg_dump: error: connection lost")
    assert "Crashed" in samples[("deployment_failed", "dr-drill")].detail
    assert samples[("deployment_failed", "fresh")].detail == "no finished run yet"


def test_an_unreachable_prefect_api_is_a_source_down() -> None:
    from prefect.client.orchestration import SyncPrefectClient

    # a plain transport: Prefect's own retries a refused connection three times with backoff
    with SyncPrefectClient(api=f"http://127.0.0.1:{free_port()}/api", httpx_settings={"transport": httpx.HTTPTransport()}) as client:
        samples = collect_deployment_runs(client, "runbook")
    assert [(s.metric, s.resource, s.value) for s in samples] == [("signal_up", "prefect", 0.0)]
    assert "cannot reach" in samples[0].detail


# --------------------------------------------------------------------------- all of them


def _signals(monkeypatch: pytest.MonkeyPatch, **env: str) -> tuple[Signals, Any]:
    monkeypatch.setenv("RUNBOOK_MONITOR__RETRIES", "0")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    return collect_signals(settings, resolve_target(settings), now=NOW), settings


def test_collect_signals_reads_every_source(platform: Platform, api: RunningApi, watched_tag: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(Path(platform.store_url))
    _write_manifest(store, platform.database, "backup_20260302_113000", BackupStatus.DONE, NOW - timedelta(minutes=30))
    with get_client(sync_client=True) as client:
        deployment = _deployment(client, client.create_flow_from_name(f"signals-{watched_tag}"), "backup", watched_tag)
        _finished_run(client, deployment, Failed(message="boom"))

    signals, _ = _signals(
        monkeypatch, RUNBOOK_PLATFORM_URL=api.url, RUNBOOK_PLATFORM_TOKEN=TOKEN, RUNBOOK_MONITOR__DEPLOYMENT_TAG=watched_tag
    )
    assert signals.skipped == {}
    assert {s.resource: s.value for s in signals.samples if s.metric == "signal_up"} == {source: 1.0 for source in SIGNAL_SOURCES}
    assert signals.value("database_up", platform.database) == 1
    assert signals.value("backup_age_minutes", platform.database) == 30.0
    assert signals.value("deployment_failed", "backup") == 1
    assert signals.value("health_up", "api") == 1
    assert all(signals.value(m, "api") is not None for m in PLATFORM_METRIC_FIELDS)
    assert {s.metric for s in signals.samples} <= set(METRICS)
    assert all(TOKEN not in s.detail for s in signals.samples)


def test_collect_signals_says_what_it_skipped(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNBOOK_BACKUP_STORE")
    signals, _ = _signals(monkeypatch, RUNBOOK_MONITOR__SOURCES='["metrics", "health", "database", "backups"]')
    assert signals.skipped == {
        "metrics": "RUNBOOK_PLATFORM_URL: not set",
        "health": "RUNBOOK_PLATFORM_URL: not set",
        "backups": signals.skipped["backups"],
        "prefect": "disabled: not in RUNBOOK_MONITOR__SOURCES",
    }
    assert signals.skipped["backups"].startswith("RUNBOOK_BACKUP_STORE: not set")
    assert {(s.metric, s.resource) for s in signals.samples} == {
        ("database_up", platform.database), ("database_connections_pct", platform.database),
        ("database_size_gb", platform.database), ("signal_up", "database"),
    }


def test_collect_signals_goes_on_when_the_database_is_down(
    platform: Platform, api: RunningApi, watched_tag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    signals, _ = _signals(
        monkeypatch,
        RUNBOOK_DATABASE_URL=f"postgresql://monitor@127.0.0.1:{free_port()}/platform",
        RUNBOOK_INSTANCE="prod-1",
        RUNBOOK_PLATFORM_URL=api.url,
        RUNBOOK_MONITOR__DEPLOYMENT_TAG=watched_tag,
    )
    ups = {s.resource: s.value for s in signals.samples if s.metric == "signal_up"}
    assert ups == {"metrics": 1.0, "health": 1.0, "database": 0.0, "backups": 1.0, "prefect": 1.0}
    assert signals.value("database_up", "prod-1") == 0
    assert signals.value("database_size_gb", "prod-1") is None
    assert signals.value("backup_age_minutes", "prod-1") == NO_BACKUP_AGE_MINUTES


def test_collect_signals_in_a_flow_run_makes_its_task_runs_children_of_it(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_MONITOR__SOURCES", '["database", "backups"]')

    @flow(name="signals-in-a-flow")
    def monitor_like() -> list[Sample]:
        settings = load_settings()
        return collect_signals(settings, resolve_target(settings), now=datetime.now(timezone.utc)).samples

    state = monitor_like(return_state=True)
    assert _values(state.result())[("database_up", platform.database)] == 1
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[state.state_details.flow_run_id])))
        assert not client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[state.state_details.flow_run_id])))
    assert sorted(r.name.rsplit("-", 1)[0] for r in runs) == ["check-backup-freshness", "check-database-health"]


def test_a_source_error_that_is_not_transient_gives_samples_too(peer: Any, platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    refused = peer((403, {"error": "forbidden"}))
    signals, _ = _signals(monkeypatch, RUNBOOK_PLATFORM_URL=refused.url, RUNBOOK_MONITOR__SOURCES='["metrics"]', RUNBOOK_MONITOR__RETRIES="2")
    assert signals.value("signal_up", "metrics") == 0
    assert "HTTP 403: forbidden; check RUNBOOK_PLATFORM_TOKEN" in next(s.detail for s in signals.samples if s.resource == "metrics")
    assert len(refused.seen) == 1  # refused for good: not retried
