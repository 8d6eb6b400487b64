"""What a run works on: never the sandbox unless asked for; the DSN from a Secret block
and the store from a Prefect Variable, read when the run starts; the instance name."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.blocks.system import Secret
from prefect.variables import Variable

from flows.backup import BackupParameters, backup
from runbook.errors import ConfigError
from runbook.settings import load_settings
from runbook.target import default_instance, resolve_target
from tests.conftest import Platform


@pytest.mark.parametrize(
    ("dsn", "instance"),
    [
        ("postgresql://app:pw@db.example.com:5432/postgres", "db.example.com-5432-postgres"),
        ("postgresql://app:pw@DB.Example.com/postgres", "db.example.com-5432-postgres"),
        ("postgresql://app@staging.internal:6543/postgres?sslmode=require", "staging.internal-6543-postgres"),
        ("postgresql://u@/platform?host=/tmp/pg", "local-5432-platform"),
        ("postgresql:///platform", "local-5432-platform"),
        ("host=/var/run/postgresql port=5433 dbname=app", "local-5433-app"),
        ("postgresql://u@[::1]:5432/my%20db", "1-5432-my_db"),
    ],
)
def test_the_default_instance_is_host_port_database_and_never_a_credential(dsn: str, instance: str) -> None:
    assert default_instance(dsn) == instance
    assert "pw" not in default_instance(dsn).split("-")


def test_two_platforms_with_the_same_database_name_get_two_instances() -> None:
    staging = default_instance("postgresql://u:p@db.staging.supabase.co:5432/postgres")
    production = default_instance("postgresql://u:p@db.prod.supabase.co:5432/postgres")
    assert staging != production


@pytest.mark.parametrize("value", ["", "   "])
def test_an_unset_or_empty_dsn_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("RUNBOOK_DATABASE_URL", value)
    monkeypatch.delenv("RUNBOOK_DATABASE_URL_SECRET_BLOCK", raising=False)
    monkeypatch.delenv("RUNBOOK_SANDBOX", raising=False)
    with pytest.raises(ConfigError, match="^RUNBOOK_DATABASE_URL: not set"):
        resolve_target(load_settings())


def test_an_unset_store_is_refused_only_where_it_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_DATABASE_URL", "postgresql://app:pw@db.example.com/postgres")
    monkeypatch.setenv("RUNBOOK_BACKUP_STORE", "")
    monkeypatch.delenv("RUNBOOK_BACKUP_STORE_VARIABLE", raising=False)
    target = resolve_target(load_settings())  # diagnose and db-maintenance need no store
    assert target.instance == "db.example.com-5432-postgres"
    with pytest.raises(ConfigError, match="^RUNBOOK_BACKUP_STORE: not set"):
        target.store_url


def test_the_dsn_comes_from_a_secret_block_and_an_empty_one_is_refused(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNBOOK_DATABASE_URL")
    Secret(value=platform.dsn).save("rb-dsn-good", overwrite=True)
    Secret(value="").save("rb-dsn-empty", overwrite=True)
    monkeypatch.setenv("RUNBOOK_DATABASE_URL_SECRET_BLOCK", "rb-dsn-good")
    assert resolve_target(load_settings()).dsn == platform.dsn
    monkeypatch.setenv("RUNBOOK_DATABASE_URL_SECRET_BLOCK", "rb-dsn-empty")
    with pytest.raises(ConfigError, match="RUNBOOK_DATABASE_URL_SECRET_BLOCK: the Secret block 'rb-dsn-empty' is empty"):
        resolve_target(load_settings())
    monkeypatch.setenv("RUNBOOK_DATABASE_URL_SECRET_BLOCK", "rb-dsn-absent")
    with pytest.raises(ConfigError, match="RUNBOOK_DATABASE_URL_SECRET_BLOCK: no Secret block named 'rb-dsn-absent'"):
        resolve_target(load_settings())


def test_the_sandbox_only_when_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RUNBOOK_DATABASE_URL", "RUNBOOK_DATABASE_URL_SECRET_BLOCK", "RUNBOOK_BACKUP_STORE", "RUNBOOK_INSTANCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUNBOOK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RUNBOOK_SANDBOX", "false")
    with pytest.raises(ConfigError, match="RUNBOOK_DATABASE_URL: not set"):
        resolve_target(load_settings())
    assert not (tmp_path / "home").exists()  # nothing started
    from sandbox.platform import Sandbox

    monkeypatch.setenv("RUNBOOK_SANDBOX", "true")
    try:
        target = resolve_target(load_settings())
        assert target.sandbox and target.store_url == str(Sandbox(tmp_path / "home").store)
        assert target.instance == "local-5432-platform"
    finally:
        Sandbox(tmp_path / "home").down()


def _backup_into() -> tuple[object, dict]:
    state = backup(BackupParameters(prune=False), return_state=True)
    return state, state.result(raise_on_failure=False)


def test_the_store_variable_is_read_when_each_run_starts(platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prefect.yaml names the Variable; a changed Variable takes effect on the next run, a
    missing one fails the run naming it, before anything is touched."""
    monkeypatch.delenv("RUNBOOK_BACKUP_STORE")
    monkeypatch.setenv("RUNBOOK_BACKUP_STORE_VARIABLE", "rb_store_at_run_time")
    first, second = tmp_path / "first", tmp_path / "second"
    Variable.set("rb_store_at_run_time", str(first), overwrite=True)
    state, result = _backup_into()
    assert state.is_completed(), state.message
    assert result["store"] == str(first) and list(first.rglob(f"{result['backup_id']}.dump.zst"))

    Variable.set("rb_store_at_run_time", str(second), overwrite=True)
    state, result = _backup_into()
    assert state.is_completed(), state.message
    assert result["store"] == str(second) and list(second.rglob(f"{result['backup_id']}.dump.zst"))

    Variable.unset("rb_store_at_run_time")
    state, _ = _backup_into()
    assert state.is_failed()
    assert "RUNBOOK_BACKUP_STORE_VARIABLE: no Prefect Variable named 'rb_store_at_run_time'" in state.message
    Variable.set("rb_store_at_run_time", "", overwrite=True)
    state, _ = _backup_into()
    assert state.is_failed() and "the Prefect Variable 'rb_store_at_run_time' is empty" in state.message
    assert len(list(tmp_path.rglob("*.manifest.json"))) == 2  # the failed runs wrote nothing


def test_two_instances_of_one_database_name_keep_their_own_reports(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """Staging and production are both ``postgres`` on Supabase: on one Prefect server
    their reports must not be versions of one artifact."""
    from prefect.artifacts import Artifact

    from flows.backup_list import backup_list

    for instance in ("staging-db", "production-db"):
        monkeypatch.setenv("RUNBOOK_INSTANCE", instance)
        assert backup_list(return_state=True).is_completed()
    staging, production = Artifact.get("backup-list-staging-db"), Artifact.get("backup-list-production-db")
    assert staging is not None and production is not None and staging.id != production.id
    assert "staging-db" in (staging.description or "") and "production-db" in (production.description or "")
