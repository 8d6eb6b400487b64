"""Two platforms, one bucket: each instance's backups, retention, clean-up of interrupted
uploads and DR's choice of backup stay in its own folder (RUNBOOK_INSTANCE)."""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone

import psycopg
import pytest
from psycopg import sql

from flows.backup import BackupParameters, backup
from flows.backup_list import backup_list
from flows.disaster_recovery import DrParameters, Mode, disaster_recovery
from runbook.backups import BackupStatus, Manifest
from tasks.postgres import parse_dsn
from tests.conftest import S3, Platform, clone_database

PASSWORD = "Inst4nce-pw"  # the test server trusts local connections: any password works, it must never be stored


def _keys(s3: S3, bucket: str, prefix: str) -> list[str]:
    answer = s3.client.list_objects_v2(Bucket=bucket, Prefix=prefix)  # type: ignore[attr-defined]
    return sorted(o["Key"] for o in answer.get("Contents", []))


def _uploads(s3: S3, bucket: str) -> list[str]:
    return [u["Key"] for u in s3.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]  # type: ignore[attr-defined]


def test_two_instances_in_one_bucket_leave_each_other_alone(
    s3_platform: Platform, s3_server: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_platform.store_url.removeprefix("s3://").split("/")[0]
    host = parse_dsn(s3_platform.admin_dsn)["host"]
    other = f"t_{secrets.token_hex(4)}"
    clone_database(s3_platform.admin_dsn, other)
    platforms = {
        "staging": f"postgresql://postgres:{PASSWORD}@/{s3_platform.database}?host={host}",
        "production": f"postgresql://postgres:{PASSWORD}@/{other}?host={host}",
    }

    def be(instance: str) -> None:
        monkeypatch.setenv("RUNBOOK_DATABASE_URL", platforms[instance])
        monkeypatch.setenv("RUNBOOK_INSTANCE", instance)

    try:
        be("production")
        p1 = backup(BackupParameters(prune=False))
        # production's backup killed mid-upload: a STARTED manifest and an open multipart upload
        killed = "backup_20200101_000000"
        s3_server.client.create_multipart_upload(Bucket=bucket, Key=f"backups/production/{killed}.dump.zst")  # type: ignore[attr-defined]
        started = Manifest(id=killed, status=BackupStatus.STARTED, database=other, instance="production", started_at=datetime.now(timezone.utc))
        s3_server.client.put_object(Bucket=bucket, Key=f"backups/production/{killed}.manifest.json", Body=started.model_dump_json().encode())  # type: ignore[attr-defined]

        be("staging")
        for name in ("HOURLY", "DAILY", "WEEKLY", "MONTHLY"):
            monkeypatch.setenv(f"RUNBOOK_RETENTION__{name}", "0")  # keeps only the newest DONE
        s1 = backup(BackupParameters(prune=False))
        s2 = backup(BackupParameters(prune=True))
        assert s2["retention"]["removed"] == [s1["backup_id"]]
        staging = _keys(s3_server, bucket, "backups/staging/")
        assert f"backups/staging/{s2['backup_id']}.dump.zst" in staging and not [k for k in staging if s1["backup_id"] in k]
        production = _keys(s3_server, bucket, "backups/production/")
        assert f"backups/production/{p1['backup_id']}.dump.zst" in production  # retention of staging never saw it
        # staging's backup cleaned up only its own folder: production's upload is still open, its manifest STARTED
        assert _uploads(s3_server, bucket) == [f"backups/production/{killed}.dump.zst"]
        body = s3_server.client.get_object(Bucket=bucket, Key=f"backups/production/{killed}.manifest.json")["Body"].read()  # type: ignore[attr-defined]
        assert json.loads(body)["status"] == "STARTED"
        assert [b["id"] for b in backup_list()["backups"]] == [s2["backup_id"]]

        be("production")
        p2 = backup(BackupParameters(prune=False))  # newer than every staging backup
        assert _uploads(s3_server, bucket) == []  # its own interrupted upload: aborted
        body = s3_server.client.get_object(Bucket=bucket, Key=f"backups/production/{killed}.manifest.json")["Body"].read()  # type: ignore[attr-defined]
        assert json.loads(body)["status"] == "FAILED"

        manifest = json.loads(
            s3_server.client.get_object(Bucket=bucket, Key=f"backups/production/{p2['backup_id']}.manifest.json")["Body"].read()  # type: ignore[attr-defined]
        )
        assert manifest["instance"] == "production"
        server = manifest["server"]
        assert server["database"] == other and server["host"] == host and server["port"] == int(parse_dsn(s3_platform.admin_dsn).get("port") or 5432)
        assert server["system_identifier"] and server["system_identifier"].isdigit() and server["server_version"].startswith("16")
        assert PASSWORD not in json.dumps(manifest) and "postgres:" not in json.dumps(manifest)

        be("staging")
        state = disaster_recovery(DrParameters(mode=Mode.DRILL), return_state=True)
        report = state.result(raise_on_failure=False)
        assert report["backup_id"] == s2["backup_id"]  # its own latest, not production's newer p2
        assert report["instance"] == "staging"
        assert [k for k in _keys(s3_server, bucket, "backups/staging/drills/") if k.endswith(".json")]
        assert not _keys(s3_server, bucket, "backups/production/drills/")
        for key in _keys(s3_server, bucket, "backups/"):
            if key.endswith(".json"):
                assert PASSWORD not in s3_server.client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()  # type: ignore[attr-defined]
    finally:
        with psycopg.connect(s3_platform.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(other)))
