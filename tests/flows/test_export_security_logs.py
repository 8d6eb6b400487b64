"""export-security-logs (§5.4, §5.1): the rows of a time range, gzip'd JSON lines in the
backup store (a folder, or S3), a manifest whose sha256 and row counts are the objects';
read back and checked; a bad range exits 2; the preview warns about personal data."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flows.export_security_logs import ExportSecurityLogsParameters, export_security_logs
from runbook.errors import ConfigError, VerificationFailed
from runbook.security.exports import check_range
from tasks import secstate
from tasks.logexport import read_back
from tasks.store import LocalStore
from tests.conftest import S3, Platform, runbook_here

SOURCES = ["api_requests", "auth_events", "security_events", "system_logs"]


def _known_rows(dsn: str, since: datetime, until: datetime) -> None:
    """One row of each source at since (in), inside, just before until (in), at until and before since (out)."""
    times = {"in-start": since, "in-middle": since + (until - since) / 2, "in-end": until - timedelta(microseconds=1),
             "out-until": until, "out-before": since - timedelta(seconds=1)}
    with psycopg.connect(dsn) as conn:
        for tag, at in times.items():
            conn.execute("INSERT INTO auth_events (email, ip, success, user_agent, created_at) VALUES (%s, '198.51.100.9', false, 'x', %s)",
                         (f"{tag}@example.test", at))
            conn.execute("INSERT INTO api_requests (api_key, ip, path, status, created_at) VALUES (%s, '198.51.100.9', '/api/x', 401, %s)",
                         (tag, at))
            conn.execute("INSERT INTO security_events (severity, type, details, created_at) VALUES ('HIGH', %s, '{\"ip\": \"198.51.100.9\"}', %s)",
                         (tag, at))
            conn.execute("INSERT INTO system_logs (level, message, context, created_at) VALUES ('ERROR', %s, '{}', %s)", (tag, at))


def _range() -> tuple[datetime, datetime]:
    # after the seeded data (which ends at the conftest's anchor, yesterday 00:00 UTC), in the past
    now = datetime.now(timezone.utc).replace(microsecond=0)
    return now - timedelta(hours=3), now - timedelta(hours=1)


def _run(since: datetime, until: datetime, **fields: Any) -> tuple[Any, dict[str, Any]]:
    params = ExportSecurityLogsParameters(since=since, until=until, by="ana", reason="incident 7", confirm=True, **fields)
    state = export_security_logs(params, return_state=True)
    return state, state.result(raise_on_failure=False)


def _check_export(report: dict[str, Any], fetch: Any) -> dict[str, list[dict[str, Any]]]:
    """Each object's sha256, size and lines are the manifest's; its lines, parsed."""
    manifest = json.loads(fetch(report["folder"] + "manifest.json"))
    assert sorted(f["source"] for f in manifest["files"]) == SOURCES
    lines: dict[str, list[dict[str, Any]]] = {}
    for entry in manifest["files"]:
        body = fetch(entry["key"])
        assert entry["key"] == f"{report['folder']}{entry['source']}.jsonl.gz"
        assert hashlib.sha256(body).hexdigest() == entry["sha256"] and len(body) == entry["bytes"]
        lines[entry["source"]] = [json.loads(line) for line in gzip.decompress(body).decode().splitlines()]
        assert len(lines[entry["source"]]) == entry["rows"]
    assert manifest["by"] == "ana" and manifest["reason"] == "incident 7" and manifest["rows"] == sum(map(len, lines.values()))
    return lines


def test_rows_in_the_range_go_to_a_folder_store_with_their_sha256(platform: Platform) -> None:
    since, until = _range()
    _known_rows(platform.dsn, since, until)
    state, report = _run(since, until)
    assert state.is_completed(), state.message
    assert report["outcome"] == "passed" and all(c["ok"] for c in report["checks"])
    root = LocalStore(Path(platform.store_url))
    lines = _check_export(report, root.get_bytes)
    assert report["folder"].startswith(f"{platform.database}/security-exports/{since:%Y%m%dT%H%M%SZ}_{until:%Y%m%dT%H%M%SZ}_")
    inside = ["in-start", "in-middle", "in-end"]
    assert [line["user"].split("@")[0] for line in lines["auth_events"]] == inside  # oldest first, mapped fields
    assert set(lines["auth_events"][0]) == {"time", "user", "ip", "success", "user_agent"}
    assert lines["auth_events"][0]["ip"] == "198.51.100.9" and lines["auth_events"][0]["time"].endswith("+00:00")
    assert [line["key"] for line in lines["api_requests"]] == inside
    assert [line["type"] for line in lines["security_events"]] == inside
    assert lines["security_events"][0]["details"] == {"ip": "198.51.100.9"}  # jsonb stays JSON
    assert [line["message"] for line in lines["system_logs"]] == inside  # the whole row
    assert set(lines["system_logs"][0]) == {"id", "level", "message", "context", "created_at"}
    assert report["preview"]["counts"] == {"auth_events": 3, "api_requests": 3, "security_events": 3, "system_logs": 3}
    with psycopg.connect(platform.dsn) as conn:
        audit = list(reversed(secstate.audit_rows(conn, "runbook_security", action="export-security-logs")))
    assert [(r["phase"], r["actor"], r["reason"]) for r in audit] == [("preview", "ana", "incident 7"), ("applied", "ana", "incident 7")]
    assert audit[0]["preview"]["undo"] is None and any("personal data" in w for w in audit[0]["preview"]["warnings"])
    assert audit[1]["after"]["rows"] == 12 and audit[1]["run_id"]


def test_a_day_of_logs_streams_in_small_fetches_to_s3(s3_platform: Platform, s3_server: S3,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_SECURITY__LOG_EXPORT__FETCH_ROWS", "97")
    with psycopg.connect(s3_platform.dsn) as conn:
        until = conn.execute("SELECT max(created_at) FROM auth_events").fetchone()[0]
        since = until - timedelta(days=1)
        expected = {name: conn.execute(f"SELECT count(*) FROM {name} WHERE created_at >= %s AND created_at < %s",
                                       (since, until)).fetchone()[0] for name in SOURCES}
    assert expected["auth_events"] > 2000 and expected["system_logs"] > 300
    state, report = _run(since, until)
    assert state.is_completed(), state.message
    bucket, prefix = s3_platform.store_url.removeprefix("s3://").split("/", 1)

    def fetch(key: str) -> bytes:
        return s3_server.client.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read()  # type: ignore[attr-defined]

    lines = _check_export(report, fetch)
    assert {name: len(rows) for name, rows in lines.items()} == expected
    assert all(since.isoformat() <= line["time"] < until.isoformat() for line in lines["auth_events"])


def test_preview_only_writes_nothing(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    since, until = _range()
    proc = runbook_here("export-security-logs", "--since", since.isoformat(), "--until", until.isoformat(), "--source", "auth_events",
                        "--by", "ana", "--reason", "incident 7", env={}, monkeypatch=monkeypatch)
    assert proc.returncode == 0, proc.stderr
    assert "nothing was changed; add --confirm to apply" in proc.stdout and "personal data" in proc.stdout
    assert "This cannot be undone" in proc.stdout and "auth_events.jsonl.gz" in proc.stdout
    assert not Path(platform.store_url).exists() or not any(Path(platform.store_url).rglob("*.gz"))


@pytest.mark.parametrize(
    "shift, env, extra, message",
    [
        ((0, -1), {}, (), "is not after since"),
        ((0, 0), {}, (), "is not after since"),
        ((0, 5), {}, (), "is in the future"),
        ((-100, -1), {"RUNBOOK_SECURITY__LOG_EXPORT__MAX_RANGE_DAYS": "2"}, (), "longer than RUNBOOK_SECURITY__LOG_EXPORT__MAX_RANGE_DAYS (2 days)"),
        ((-2, -1), {}, ("--source", "nginx"), "sources: nginx not in RUNBOOK_SECURITY__LOG_EXPORT__SOURCES"),
        ((-2, -1), {"RUNBOOK_SECURITY__LOG_EXPORT__SOURCES": '{"auth": {"table": "auth_events", "fields": {"user": "login"}}}'}, (),
         "RUNBOOK_SECURITY__LOG_EXPORT__SOURCES: source 'auth': public.auth_events has no column for user -> login (its columns: id,"),
    ],
)
def test_bad_ranges_and_sources_exit_2_and_write_nothing(platform: Platform, monkeypatch: pytest.MonkeyPatch, shift: tuple[int, int],
                                                         env: dict[str, str], extra: tuple[str, ...], message: str) -> None:
    now = datetime.now(timezone.utc)
    since, until = now + timedelta(hours=shift[0]) - timedelta(minutes=1), now + timedelta(hours=shift[1]) - timedelta(minutes=1)
    if shift == (0, 0):
        until = since
    proc = runbook_here("export-security-logs", "--since", since.isoformat(), "--until", until.isoformat(), *extra,
                        "--by", "ana", "--reason", "incident 7", "--confirm", env=env, monkeypatch=monkeypatch)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr
    assert not Path(platform.store_url).exists() or not any(Path(platform.store_url).rglob("*.gz"))


def test_a_changed_object_fails_its_read_back_naming_the_file(platform: Platform) -> None:
    since, until = _range()
    _known_rows(platform.dsn, since, until)
    state, report = _run(since, until, sources=["system_logs"])
    assert state.is_completed(), state.message
    store = LocalStore(Path(platform.store_url))
    entry = report["manifest"]["files"][0]
    read_back(store, entry)
    store.put_bytes(entry["key"], gzip.compress(b'{"message": "in-start"}\n'))
    with pytest.raises(VerificationFailed, match=r"system_logs\.jsonl\.gz .*: sha256 .* rows 1 \(manifest: 3\)"):
        read_back(store, entry)


def test_ranges_are_checked_on_their_own() -> None:
    now = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
    check_range(now - timedelta(days=31), now, now, 31)
    with pytest.raises(ConfigError, match="offset"):
        check_range(datetime(2026, 11, 28), now, now, 31)
    with pytest.raises(ConfigError, match="since: .* is in the future"):
        check_range(now + timedelta(seconds=1), now + timedelta(hours=1), now, 31)
