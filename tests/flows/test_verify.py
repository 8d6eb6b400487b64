"""backup-verify: passes on a good backup and names the failed check on a bad one.
Every case runs a real restore into a real scratch database, dropped afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from prefect.artifacts import Artifact

from flows.backup import BackupParameters, backup
from flows.backup_verify import VerifyParameters, backup_verify
from tests.conftest import Platform, _dsn_url, scratch_databases


@pytest.fixture
def backed_up(platform: Platform) -> tuple[Platform, str]:
    result = backup(BackupParameters(prune=False, fingerprint=True))
    return platform, result["backup_id"]


def _files(platform: Platform, backup_id: str) -> tuple[Path, Path]:
    folder = Path(platform.store_url, platform.database)
    return folder / f"{backup_id}.dump.zst", folder / f"{backup_id}.manifest.json"


def _verify(**kwargs):  # type: ignore[no-untyped-def]
    state = backup_verify(VerifyParameters(**kwargs), return_state=True)
    return state, state.result(raise_on_failure=False)


def _failed(report: dict) -> set[str]:  # type: ignore[type-arg]
    return {c["name"] for c in report["checks"] if not c["ok"] and c["critical"]}


def test_a_good_backup_passes_deep_verification_and_the_outcome_is_recorded(backed_up: tuple[Platform, str]) -> None:
    platform, backup_id = backed_up
    state, report = _verify(deep=True)
    assert state.is_completed(), report
    assert report["backup_id"] == backup_id and report["outcome"] == "passed"
    names = {c["name"] for c in report["checks"]}
    for expected in (
        "sha256",
        "size",
        "restore",
        "row-count:public.users",
        "primary-key-unique:public.user_alerts",
        "foreign-key:public.user_sessions.user_sessions_user_id_fkey",
        "freshness:public.system_logs.created_at",
        "fingerprint:public.market_data",
    ):
        assert expected in names
    assert "freshness:public.user_sessions.expires_at" not in names  # expiry lies in the future by design
    recorded = json.loads(Path(platform.store_url, platform.database, f"{backup_id}.verification.json").read_text())
    assert recorded["outcome"] == "passed" and recorded["deep"] is True
    assert scratch_databases(platform.admin_dsn) == []
    # neither a scratch nor a recovery server is set: the restore ran on production, and the report says so
    assert report["restore_server"] == "production" and "production server" in report["notes"][0]
    assert "restored on the production server" in state.message
    markdown = Artifact.get(f"backup-verify-{platform.database}".replace("_", "-"))
    assert markdown is not None and "production server" in markdown.data


def test_the_scratch_restore_goes_to_the_scratch_server_and_never_touches_production(
    backed_up: tuple[Platform, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    platform, backup_id = backed_up
    # verification must not need production or the recovery server once a scratch server is set
    only_the_scratch_server_answers(platform, monkeypatch)
    state, report = _verify()
    assert state.is_completed(), report
    assert report["backup_id"] == backup_id and report["restore_server"] == "scratch" and report["notes"] == []
    assert "production" not in state.message
    assert scratch_databases(platform.admin_dsn) == []


def only_the_scratch_server_answers(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """Production and the recovery server unreachable (a role that does not exist), the
    test server configured as the scratch server."""
    monkeypatch.setenv("RUNBOOK_DATABASE_URL", _unreachable(platform, platform.database))
    monkeypatch.setenv("RUNBOOK_RECOVERY_DATABASE_URL", _unreachable(platform, "recovered"))
    monkeypatch.setenv("RUNBOOK_SCRATCH_DATABASE_URL", _dsn_url(platform.admin_dsn, "postgres"))


def _unreachable(platform: Platform, database: str) -> str:
    """A DSN on the test server whose role does not exist: any connection through it fails."""
    from tasks.postgres import parse_dsn

    return f"postgresql://runbook_no_such_role@/{database}?host={parse_dsn(platform.admin_dsn)['host']}"


def test_a_flipped_byte_fails_the_checksum_and_no_restore_is_tried(backed_up: tuple[Platform, str]) -> None:
    platform, backup_id = backed_up
    dump, _ = _files(platform, backup_id)
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01
    dump.write_bytes(bytes(data))
    state, report = _verify()
    assert state.is_failed()
    assert "sha256" in _failed(report) and "size" not in _failed(report)
    assert "not attempted" in next(c["detail"] for c in report["checks"] if c["name"] == "restore")
    assert "sha256" in state.message
    assert scratch_databases(platform.admin_dsn) == []


def test_a_truncated_dump_fails_size_checksum_and_decompression(backed_up: tuple[Platform, str]) -> None:
    platform, backup_id = backed_up
    dump, _ = _files(platform, backup_id)
    data = dump.read_bytes()
    dump.write_bytes(data[: len(data) - 1000])
    state, report = _verify()
    assert state.is_failed()
    assert {"size", "sha256", "decompress"} <= _failed(report)


def test_a_missing_manifest_fails_verification_of_that_backup(backed_up: tuple[Platform, str]) -> None:
    platform, backup_id = backed_up
    _, manifest = _files(platform, backup_id)
    manifest.unlink()
    state, report = _verify(backup_id=backup_id)
    assert state.is_failed()
    assert _failed(report) == {"manifest"}


def test_a_restore_missing_a_table_or_rows_fails_and_names_them(backed_up: tuple[Platform, str]) -> None:
    platform, backup_id = backed_up
    _, manifest_file = _files(platform, backup_id)
    manifest = json.loads(manifest_file.read_text())
    manifest["tables"]["public.users"] += 5  # the backup claims rows the dump does not hold
    manifest["tables"]["public.payments"] = 12  # and a table it does not hold
    manifest_file.write_text(json.dumps(manifest))
    state, report = _verify()
    assert state.is_failed()
    assert _failed(report) == {"row-count:public.users", "table-present:public.payments"}
    # without --deep, keys PostgreSQL proved while restoring are not scanned again
    details = {c["name"]: c["detail"] for c in report["checks"]}
    assert "enforced by the restored primary key index" in details["primary-key-unique:public.users"]
    assert "validated" in details["foreign-key:public.user_alerts.user_alerts_user_id_fkey"]
    assert scratch_databases(platform.admin_dsn) == []


def test_orphaned_foreign_keys_and_future_times_are_found(platform: Platform) -> None:
    """A NOT VALID foreign key lets orphans in (and through pg_restore); a clock gone
    wrong writes the future. Both are caught in the restored copy."""
    with psycopg.connect(platform.dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE user_sessions DROP CONSTRAINT user_sessions_user_id_fkey")
        conn.execute(
            "INSERT INTO user_sessions (user_id, token_hash, expires_at) VALUES (999999, 'orphan', now() + interval '1 day')"
        )
        conn.execute(
            "ALTER TABLE user_sessions ADD CONSTRAINT user_sessions_user_id_fkey"
            " FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID"
        )
        conn.execute("INSERT INTO system_logs (level, message, created_at) VALUES ('INFO', 'from the future', now() + interval '2 days')")
    backup(BackupParameters(prune=False))
    state, report = _verify()
    assert state.is_failed()
    assert _failed(report) == {
        "foreign-key:public.user_sessions.user_sessions_user_id_fkey",
        "freshness:public.system_logs.created_at",
    }
    details = {c["name"]: c["detail"] for c in report["checks"]}
    assert details["foreign-key:public.user_sessions.user_sessions_user_id_fkey"] == "1 unexpected rows"
    assert scratch_databases(platform.admin_dsn) == []


def test_deep_verification_of_a_backup_without_fingerprints_is_refused(platform: Platform) -> None:
    backup(BackupParameters(prune=False, fingerprint=False))
    state, report = _verify(deep=True)
    assert state.is_failed()
    assert "fingerprint" in str(report)


def test_a_time_without_an_offset_selects_the_backup_as_read_in_the_team_timezone(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time
    from datetime import datetime, timedelta, timezone

    monkeypatch.delenv("RUNBOOK_TIMEZONE", raising=False)  # the default: Asia/Tokyo, UTC+9
    first = backup(BackupParameters(prune=False))["backup_id"]
    time.sleep(1.1)  # backup ids are to the second
    second = backup(BackupParameters(prune=False))["backup_id"]
    now = datetime.now(timezone.utc)
    for backup_id, hours_ago in ((first, 12), (second, 3)):
        _, manifest_file = _files(platform, backup_id)
        manifest = json.loads(manifest_file.read_text())
        manifest["snapshot_at"] = (now - timedelta(hours=hours_ago)).isoformat()
        manifest_file.write_text(json.dumps(manifest))
    # two hours ago as a UTC wall clock, typed without an offset: in Tokyo that is
    # eleven hours ago, after the first backup and before the second
    typed = (now - timedelta(hours=2)).replace(tzinfo=None)
    state, report = _verify(at=typed)
    assert report["backup_id"] == first, state.message


def test_the_cli_reads_at_in_the_team_timezone(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import runbook_here

    monkeypatch.delenv("RUNBOOK_TIMEZONE", raising=False)
    done = runbook_here("backup-verify", "--at", "2000-01-01T09:00:00", env={}, monkeypatch=monkeypatch)
    assert done.returncode == 2
    assert "no DONE backup at or before 2000-01-01T09:00:00+09:00" in done.stderr
