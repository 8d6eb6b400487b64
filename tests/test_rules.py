"""Pure decisions, tested without any I/O: backup ids, selection, retention, size watch."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from runbook.backups import (
    BackupStatus,
    Manifest,
    Verification,
    backup_id_for,
    next_free_id,
    plan_retention,
    select_backup,
    size_watch,
    time_of,
)
from runbook.checks import CheckResult, outcome
from runbook.errors import ConfigError
from runbook.settings import RetentionSettings, SizeWatchSettings

NOW = datetime(2026, 11, 29, 12, 30, tzinfo=timezone.utc)


def manifest(moment: datetime, status: BackupStatus = BackupStatus.DONE, size: int = 1000) -> Manifest:
    return Manifest(
        id=backup_id_for(moment), status=status, database="platform", started_at=moment, snapshot_at=moment, size_bytes=size
    )


def test_backup_ids_follow_the_guide_in_utc() -> None:
    tokyo = timezone(timedelta(hours=9))
    assert backup_id_for(datetime(2026, 11, 29, 16, 0, 5, tzinfo=tokyo)) == "backup_20261129_070005"
    assert time_of("backup_20261129_070005") == datetime(2026, 11, 29, 7, 0, 5, tzinfo=timezone.utc)
    with pytest.raises(ConfigError, match="not a backup id"):
        time_of("backup_2026")


def test_next_free_id_moves_on_when_the_second_is_taken() -> None:
    moment = datetime(2026, 11, 29, 7, 0, 5, 900, tzinfo=timezone.utc)
    assert next_free_id(moment, []) == "backup_20261129_070005"
    assert next_free_id(moment, ["backup_20261129_070005", "backup_20261129_070006"]) == "backup_20261129_070007"


def test_selection_takes_only_done_backups() -> None:
    old = manifest(NOW - timedelta(hours=3))
    failed = manifest(NOW - timedelta(hours=1), BackupStatus.FAILED)
    running = manifest(NOW, BackupStatus.STARTED)
    mid = manifest(NOW - timedelta(hours=2))
    manifests = [old, mid, failed, running]
    assert select_backup(manifests).id == mid.id
    assert select_backup(manifests, at_or_before=NOW - timedelta(hours=2, minutes=30)).id == old.id
    assert select_backup(manifests, backup_id=old.id).id == old.id
    with pytest.raises(ConfigError, match="FAILED, not DONE"):
        select_backup(manifests, backup_id=failed.id)
    with pytest.raises(ConfigError, match="no backup backup_20200101_000000"):
        select_backup(manifests, backup_id="backup_20200101_000000")
    with pytest.raises(ConfigError, match="at or before"):
        select_backup(manifests, at_or_before=NOW - timedelta(days=1))


def hourly_for(days: int) -> list[Manifest]:
    return [manifest(NOW - timedelta(hours=h)) for h in range(days * 24)]


def test_retention_keeps_newest_of_each_period() -> None:
    manifests = hourly_for(60)
    policy = RetentionSettings(hourly=24, daily=7, weekly=4, monthly=12)
    decisions = {d.backup_id: d for d in plan_retention(manifests, {}, policy, timezone_name="UTC", now=NOW)}
    kept = [d for d in decisions.values() if d.keep]
    # 24 hourly; daily adds the newest of 6 earlier days; weekly/monthly pick among those or add older ones
    hours = {d.backup_id for d in kept if any(r.startswith("hourly") for r in d.reasons)}
    assert len(hours) == 24
    days = [d for d in kept if any(r.startswith("daily") for r in d.reasons)]
    assert len(days) == 7
    assert decisions[backup_id_for(NOW)].keep
    assert "newest DONE backup" in decisions[backup_id_for(NOW)].reasons
    # the newest of each day is what is kept: 23:30 of the day before NOW
    assert decisions[backup_id_for(datetime(2026, 11, 28, 23, 30, tzinfo=timezone.utc))].keep
    assert not decisions[backup_id_for(datetime(2026, 11, 27, 22, 30, tzinfo=timezone.utc))].keep
    monthly = [d for d in kept if any(r.startswith("monthly") for r in d.reasons)]
    assert len(monthly) == 3  # 60 days back from 29 November reach into September
    assert len(kept) < len(manifests)


def test_retention_periods_follow_the_team_timezone() -> None:
    late_28 = datetime(2026, 11, 28, 14, 30, tzinfo=timezone.utc)  # 23:30 on the 28th in Tokyo
    early_29 = datetime(2026, 11, 28, 15, 30, tzinfo=timezone.utc)  # 00:30 on the 29th in Tokyo
    manifests = [manifest(late_28), manifest(early_29), manifest(NOW)]
    policy = RetentionSettings(hourly=0, daily=2, weekly=0, monthly=0)

    def kept(zone: str) -> set[str]:
        return {d.backup_id for d in plan_retention(manifests, {}, policy, timezone_name=zone, now=NOW) if d.keep}

    assert kept("UTC") == {backup_id_for(early_29), backup_id_for(NOW)}
    assert kept("Asia/Tokyo") == {backup_id_for(late_28), backup_id_for(NOW)}


def test_retention_never_removes_the_newest_verified_backup_nor_running_ones() -> None:
    verified = manifest(NOW - timedelta(days=400))
    newest = manifest(NOW)
    running = manifest(NOW - timedelta(days=500), BackupStatus.STARTED)
    old_failed = manifest(NOW - timedelta(days=30), BackupStatus.FAILED)
    fresh_failed = manifest(NOW - timedelta(days=1), BackupStatus.FAILED)
    verifications = {
        verified.id: Verification(backup_id=verified.id, verified_at=NOW, outcome="passed"),
        newest.id: Verification(backup_id=newest.id, verified_at=NOW, outcome="failed"),
    }
    policy = RetentionSettings(hourly=1, daily=0, weekly=0, monthly=0)
    plan = {d.backup_id: d for d in plan_retention([verified, newest, running, old_failed, fresh_failed], verifications, policy, now=NOW)}
    assert plan[verified.id].keep and plan[verified.id].reasons == ["newest verified backup"]
    assert plan[newest.id].keep
    assert plan[running.id].keep
    assert not plan[old_failed.id].keep
    assert plan[fresh_failed.id].keep


def test_retention_with_everything_zero_still_keeps_the_newest() -> None:
    manifests = hourly_for(2)
    plan = plan_retention(manifests, {}, RetentionSettings(hourly=0, daily=0, weekly=0, monthly=0), now=NOW)
    assert [d.backup_id for d in plan if d.keep] == [backup_id_for(NOW)]


@pytest.mark.parametrize(
    ("size", "ok"),
    [(1000, True), (801, True), (799, False), (1499, True), (1501, False)],
)
def test_size_watch_flags_departures_from_the_median(size: int, ok: bool) -> None:
    previous = [900, 1000, 1100, 1000, 5000, 1000, 10]  # median 1000, robust to the outliers
    check = size_watch(size, previous, SizeWatchSettings())
    assert check.ok is ok
    assert check.critical is False
    assert "median 1,000" in check.detail


def test_size_watch_uses_only_the_last_window() -> None:
    previous = [10] * 10 + [1000] * 7
    assert size_watch(1000, previous, SizeWatchSettings(window=7)).ok
    assert not size_watch(1000, previous, SizeWatchSettings(window=17)).ok
    assert size_watch(5, [], SizeWatchSettings()).ok


def test_outcome_fails_only_on_critical_checks() -> None:
    warn = CheckResult(name="size-watch", ok=False, critical=False)
    bad = CheckResult(name="sha256", ok=False)
    good = CheckResult(name="restore", ok=True)
    assert outcome([good]) == "passed"
    assert outcome([good, warn]) == "passed-with-warnings"
    assert outcome([good, warn, bad]) == "failed"


def test_objects_without_a_manifest_are_orphans() -> None:
    from runbook.backups import orphaned_keys

    keys = [
        "db/backup_20261129_010000.dump.zst",
        "db/backup_20261129_010000.manifest.json",
        "db/backup_20261129_020000.dump.zst",  # its manifest went first in an interrupted prune
        "db/backup_20261129_020000.verification.json",
        "db/notes.txt",
    ]
    assert orphaned_keys(keys) == ["db/backup_20261129_020000.dump.zst", "db/backup_20261129_020000.verification.json"]


# --------------------------------------------------------------------------- collisions


def _run(name: str, minute: int, state, started: bool):  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone
    from uuid import uuid4

    from prefect.client.schemas.objects import FlowRun

    at = datetime(2026, 12, 1, 0, minute, tzinfo=timezone.utc)
    return FlowRun(id=uuid4(), name=name, flow_id=uuid4(), state=state, expected_start_time=at, start_time=at if started else None)


def test_collisions_are_the_limits_cancellations_since_the_last_run_that_ran() -> None:
    from prefect.states import Cancelled, Completed, Failed, Running

    from tasks.runs import collision_check, collisions_since_last_run

    limit = "Deployment concurrency limit reached."
    current = _run("now", 50, Running(), True)
    runs = [  # newest first, as read
        current,
        _run("c3", 40, Cancelled(message=limit), False),
        _run("by-hand", 30, Cancelled(message="cancelled by alice"), False),
        _run("c2", 20, Cancelled(message=limit), False),
        _run("stuck", 10, Failed(), True),
        _run("c1", 5, Cancelled(message=limit), False),  # reported by "stuck" already
        _run("older", 0, Completed(), True),
    ]
    found = collisions_since_last_run(runs, current.id)
    assert [c.name for c in found] == ["c2", "c3"]
    check = collision_check(found, "backup")
    assert not check.ok and not check.critical and "2 scheduled backup run(s)" in check.detail and "c2 (2026-12-01T00:20+00:00)" in check.detail
    assert collisions_since_last_run([current, runs[4]], current.id) == []
    assert collision_check([], "backup").ok


def test_backup_keys_live_under_the_instance_and_older_manifests_under_their_database() -> None:
    from datetime import datetime, timezone

    from runbook.backups import BackupStatus, Manifest, dump_key, manifest_key, verification_key

    assert dump_key("db.example.com-5432-postgres", "backup_20261129_070000") == "db.example.com-5432-postgres/backup_20261129_070000.dump.zst"
    assert manifest_key("staging", "backup_1").startswith("staging/") and verification_key("staging", "backup_1").startswith("staging/")
    now = datetime.now(timezone.utc)
    assert Manifest(id="backup_1", status=BackupStatus.DONE, database="postgres", instance="prod", started_at=now).dump_key == "prod/backup_1.dump.zst"
    assert Manifest(id="backup_1", status=BackupStatus.DONE, database="postgres", started_at=now).dump_key == "postgres/backup_1.dump.zst"
