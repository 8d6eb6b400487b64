"""Settings: one clear error naming the setting and what would be valid; secrets never echoed."""

from __future__ import annotations

import pytest

from runbook.errors import ConfigError
from runbook.settings import load_settings, redact_dsn


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("RUNBOOK_DATABASE_URL", "mysql://u:topsecret@h/db", "RUNBOOK_DATABASE_URL: expected a postgresql://"),
        ("RUNBOOK_DATABASE_URL", "postgresql://u:topsecret@h:port/db", "RUNBOOK_DATABASE_URL: the DSN's port is not a number"),
        ("RUNBOOK_DATABASE_URL", "postgresql://u:topsecret@h:5432", "RUNBOOK_DATABASE_URL: the DSN names no database"),
        ("RUNBOOK_BACKUP_STORE", "ftp://host/x", "RUNBOOK_BACKUP_STORE: scheme 'ftp' is not supported"),
        ("RUNBOOK_BACKUP_STORE", "s3://", "RUNBOOK_BACKUP_STORE: s3:// needs a bucket"),
        ("RUNBOOK_BACKUP_STORE", "s3://Bad_Bucket/x", "is not a valid S3 bucket name"),
        ("RUNBOOK_BACKUP_STORE", "file://relative/x", "file:// needs an absolute path"),
        ("RUNBOOK_S3_ENDPOINT_URL", "localhost:9000", "RUNBOOK_S3_ENDPOINT_URL: expected an http(s)://host[:port] URL"),
        ("RUNBOOK_PG_BIN_DIR", "/nonexistent", "RUNBOOK_PG_BIN_DIR: /nonexistent holds no executable pg_dump"),
        ("RUNBOOK_TIMEZONE", "Mars/Olympus", "RUNBOOK_TIMEZONE: 'Mars/Olympus' is not an IANA timezone"),
        ("RUNBOOK_RETENTION__HOURLY", "-1", "RUNBOOK_RETENTION__HOURLY: Input should be greater than or equal to 0"),
        ("RUNBOOK_BACKUP__ZSTD_LEVEL", "99", "RUNBOOK_BACKUP__ZSTD_LEVEL: Input should be less than or equal to 19"),
        ("RUNBOOK_CONNECT_TIMEOUT", "soon", "RUNBOOK_CONNECT_TIMEOUT: Input should be a valid integer"),
    ],
)
def test_a_bad_setting_names_itself_and_what_is_valid(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert expected in str(caught.value)
    assert "topsecret" not in str(caught.value)


def test_defaults_need_no_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RUNBOOK_DATABASE_URL", "RUNBOOK_BACKUP_STORE", "RUNBOOK_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.database_url is None and settings.backup_store is None
    assert (settings.retention.hourly, settings.retention.daily, settings.retention.weekly, settings.retention.monthly) == (24, 7, 4, 12)
    assert settings.timezone == "Asia/Tokyo"
    assert settings.verify.size_watch.smaller_pct == 20 and settings.verify.size_watch.larger_pct == 50


def test_a_config_file_is_read_and_the_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "runbook.toml"
    config.write_text('backup_store = "s3://team-backups/prod"\ntimezone = "UTC"\n[retention]\nhourly = 48\n')
    monkeypatch.setenv("RUNBOOK_CONFIG", str(config))
    monkeypatch.delenv("RUNBOOK_BACKUP_STORE", raising=False)
    monkeypatch.setenv("RUNBOOK_TIMEZONE", "Europe/Paris")
    settings = load_settings()
    assert settings.backup_store == "s3://team-backups/prod"
    assert settings.retention.hourly == 48
    assert settings.timezone == "Europe/Paris"


def test_the_dsn_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_DATABASE_URL", "postgresql://app:topsecret@db.internal:5432/platform")
    settings = load_settings()
    assert "topsecret" not in repr(settings) and "topsecret" not in str(settings.model_dump())
    assert redact_dsn(settings.database_url.get_secret_value()) == "postgresql://app:***@db.internal:5432/platform"  # type: ignore[union-attr]
    assert redact_dsn("postgresql:///platform?host=/tmp&password=topsecret") == "postgresql:///platform?host=/tmp&password=***"
