"""capacity-review as one real flow run on the seeded platform: a metric history with
known values in runbook_alerting.metric_history, a backup and a drill in the store with
known sizes and durations; the figures in the result, the recorded table sizes and the
chart (artifact and PNG in the store)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prefect import flow
from prefect.artifacts import Artifact

from flows.capacity_review import CapacityReviewParameters, capacity_review
from runbook.alerting.model import Sample
from runbook.backups import BackupStatus, Manifest, manifest_key
from runbook.dr import DrillRecord, Verdict
from runbook.procedures import PROCEDURES
from runbook.reports import artifact_key
from tasks import alertstate
from tasks.backups import drill_key
from tasks.store import open_store, put_json
from tests.conftest import Platform

SCHEMA = "runbook_alerting"
NOW = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)


def record(conn, metric: str, resource: str, values: list[tuple[datetime, float]]) -> None:  # type: ignore[no-untyped-def]
    """The rows record_history would have kept (the first through record_history itself)."""
    (at, value), rest = values[0], values[1:]
    alertstate.record_history(conn, SCHEMA, [Sample(metric=metric, resource=resource, value=value)], at,
                              every=timedelta(minutes=15), keep=timedelta(days=400))
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO runbook_alerting.metric_history (metric, resource, at, value) VALUES (%s, %s, %s, %s)",
                        [(metric, resource, at, value) for at, value in rest])


def every_6_hours(days: int, start: float, per_day: float) -> list[tuple[datetime, float]]:
    return [(NOW - timedelta(days=days) + timedelta(hours=6 * i), start + per_day * i / 4) for i in range(days * 4 + 1)]


def test_the_review_projects_the_thresholds_the_scale_up_and_the_rpo_from_the_history(platform: Platform) -> None:
    instance = platform.database
    with platform.connect() as conn:
        alertstate.ensure_schema(conn, SCHEMA)
        record(conn, "database_size_gb", instance, every_6_hours(30, 20.0, 0.5))  # 35 GB now, 80 GB in 90 days
        record(conn, "disk_pct", "api", every_6_hours(30, 50.0, 0.0))  # flat
        record(conn, "cpu_pct", "api", every_6_hours(30, 85.0, 0.0))
        record(conn, "memory_pct", "api", every_6_hours(30, 84.0, 0.0))
        record(conn, "database_connections_pct", "api", every_6_hours(30, 10.0, 1.0))  # another resource: not the database's
        record(conn, "database_connections_pct", instance, every_6_hours(1, 10.0, 1.0))  # 5 points: too few
    store = open_store(platform.store_url)
    started = NOW - timedelta(hours=2)
    put_json(store, manifest_key(instance, "backup_20261201_000000"), Manifest(
        id="backup_20261201_000000", status=BackupStatus.DONE, database=instance, instance=instance, started_at=started,
        finished_at=started + timedelta(seconds=20), raw_bytes=1_000_000_000, size_bytes=200_000_000).model_dump(mode="json"))  # 50 MB/s
    verdict = Verdict(name="RPO", achieved_seconds=60, target_seconds=3600, ok=True, message="")
    put_json(store, drill_key(instance, "drill_1"), DrillRecord(
        run_id="drill_1", mode="drill", database=instance, instance=instance, backup_id="backup_20261201_000000", started_at=started,
        incident_at=started, outcome="passed", rpo=verdict, phases=[], restored_bytes=500_000_000, restore_seconds=25.0,
    ).model_dump(mode="json"))  # 20 MB/s

    # a monthly run on the server before the review, and one as a subflow (not the calendar's own run: not counted)
    monthly_run = flow(name="monthly-maintenance")(lambda: None)
    monthly_run()
    flow(name="a-parent")(lambda: monthly_run())()

    state = capacity_review(CapacityReviewParameters(end=datetime.now(timezone.utc) + timedelta(seconds=1)), return_state=True)
    report = state.result()
    assert state.is_completed(), state.message
    # the calendar's budgets: the backup's 20 s today, but about 72 min at the size projected a year ahead (217 GB at 50 MB/s)
    calendar = {b["deployment"]: b for b in report["calendar"]}
    assert calendar["backup"]["runs"] == 1 and calendar["backup"]["longest_minutes"] == pytest.approx(1 / 3)
    assert calendar["backup"]["projected_minutes"] > 60 and not calendar["backup"]["ok"] and "calendar:backup" in report["failed"]
    assert calendar["monthly-maintenance"]["runs"] == 1 and calendar["monthly-maintenance"]["ok"]
    assert "unchecked" in calendar["weekly-maintenance"]["detail"]

    metrics = report["metrics"]
    size = metrics["database_size_gb"]
    assert size["status"] == "growing" and size["slope_per_day"] == pytest.approx(0.5) and size["r2"] == pytest.approx(1.0)
    assert size["thresholds"][0]["days"] == pytest.approx(90.0, abs=0.2)
    assert metrics["disk_pct"]["status"] == "not growing"
    assert metrics["database_connections_pct"]["status"] == "insufficient data" and metrics["database_connections_pct"]["points"] == 5
    assert metrics["cpu_pct"]["status"] == "over" and report["scale_up"]["now"] is True

    rpo, rto = report["windows"]
    assert rpo["throughput"]["bytes_per_second"] == pytest.approx(50e6) and rto["throughput"]["bytes_per_second"] == pytest.approx(20e6)
    # 50 MB/s holds 180 GB in the hour: the database (35 GB, +0.5 a day) gets there in 290 days; 1 TB is over
    assert rpo["missed"] == "growing" and rpo["days"] == pytest.approx(290, abs=1)
    assert {d["label"]: d["ok"] for d in rpo["at_sizes"]}["§7.1 projected"] is False
    # 20 MB/s restores 288 GB in 4 hours: 506 days away, beyond the 365-day horizon
    assert rto["missed"] == "growing" and rto["days"] == pytest.approx(506, abs=1)
    # warnings: what is over or reached within the year, and the RTO too: a restore of §7.1's 1 TB at 20 MB/s takes 13.9 h
    failed = set(report["failed"])
    assert {"capacity:cpu_pct", "capacity:memory_pct", "capacity:scale-up", "capacity:database_size_gb", "capacity:backup-rpo",
            "capacity:restore-rto"} <= failed
    assert "capacity:disk_pct" not in failed and report["outcome"] == "passed-with-warnings"

    # the table sizes were read and recorded: the seeded tables, largest first
    tables = {row["table"]: row for row in report["tables"]}
    assert tables["public.system_logs"]["size_mb"] > 1 and tables["public.system_logs"]["readings"] == 1
    with platform.connect() as conn:
        recorded = conn.execute("SELECT count(*) FROM runbook_alerting.table_size_history WHERE instance = %s", (instance,)).fetchone()
    assert recorded and recorded[0] >= len(tables)

    # the chart: inline in the markdown artifact and as a PNG in the store
    markdown = Artifact.get(artifact_key("capacity-review", instance))
    assert markdown is not None and "data:image/png;base64," in str(markdown.data)
    table = Artifact.get(artifact_key("capacity-status", instance))
    assert table is not None and "database_size_gb" in str(table.data)
    png = Path(platform.store_url) / report["chart"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # what the CLI prints of it
    shown = PROCEDURES["capacity-review"].show(report)
    assert "database_size_gb" in shown and "growing in 90 days" in shown and "scale up now" in shown and "RPO 1 h" in shown
