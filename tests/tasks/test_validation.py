"""The Great Expectations side of the integrity checks: the connection keeps every DSN
option and carries a statement timeout, every identifier is quoted (also the odd
ones), and the checks as a whole stop at their time limit."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import sqlalchemy as sa
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from runbook.backups import BackupStatus, Manifest
from runbook.settings import load_settings
from tasks import postgres
from tasks.restore import check_integrity
from tasks.validation import IntegrityPlan, IntegrityWorker, _sqlalchemy_url, run_integrity_suites
from tests.conftest import Platform


def _libpq_params(url: str) -> dict[str, str]:
    """What SQLAlchemy's psycopg dialect hands to psycopg.connect for ``url``."""
    args, params = PGDialect_psycopg().create_connect_args(sa.make_url(url))
    assert args == []
    return {key: str(value) for key, value in params.items()}


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://app:p%40ss%3Aw%2Frd%25%20x@db.example.com:6543/platform?sslmode=verify-full"
        "&sslrootcert=/etc/ssl/ca.pem&options=-c%20search_path%3Dapp&target_session_attrs=read-write",
        "host=/run/postgresql,db2.example.com port=5432,5433 dbname=platform user=ops password='se cr=et' sslmode=require",
    ],
)
def test_the_great_expectations_url_keeps_every_dsn_option_and_adds_a_statement_timeout(dsn: str) -> None:
    given = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    params = _libpq_params(_sqlalchemy_url(dsn, statement_timeout_s=600))
    assert params.pop("options") == " ".join(x for x in (given.pop("options", None), "-c statement_timeout=600000") if x)
    assert params.pop("application_name") == "runbook verify" and params.pop("connect_timeout") == "10"
    assert params == given  # host, port, sslmode, sslrootcert, target_session_attrs, and the password, unchanged


def test_the_dsn_own_application_name_and_connect_timeout_win_and_no_timeout_adds_no_options() -> None:
    params = _libpq_params(_sqlalchemy_url("postgresql://u@h/d?application_name=mine&connect_timeout=3"))
    assert params == {"user": "u", "host": "h", "dbname": "d", "application_name": "mine", "connect_timeout": "3"}


def test_the_statement_timeout_applies_to_the_great_expectations_session(variants: Platform) -> None:
    engine = sa.create_engine(_sqlalchemy_url(variants.dsn, statement_timeout_s=0.2))
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "200ms"
            assert conn.execute(sa.text("SHOW application_name")).scalar() == "runbook verify"
            with pytest.raises(sa.exc.OperationalError, match="statement timeout"):
                conn.execute(sa.text("SELECT pg_sleep(5)"))
    finally:
        engine.dispose()


ODD_TABLE = 'app.we"ird {t}'
ODD_CHILD = "app.child of {it}"


def _odd_tables(platform: Platform, snapshot_at: datetime) -> None:
    """A table whose name and columns hold a double quote, braces and spaces, and a
    child pointing at it with one orphan (behind a NOT VALID foreign key)."""
    with platform.connect() as conn:
        conn.execute('CREATE TABLE app."we""ird {t}" ("k ""1"" {x}" int PRIMARY KEY, "at {when}" timestamptz NOT NULL)')
        conn.execute('CREATE TABLE app."child of {it}" ("id" int PRIMARY KEY, "ref {k}" int)')
        conn.execute(
            'INSERT INTO app."we""ird {t}" SELECT i, %s::timestamptz - make_interval(hours => i) FROM generate_series(1, 50) i',
            (snapshot_at,),
        )
        conn.execute('UPDATE app."we""ird {t}" SET "at {when}" = %s::timestamptz + interval \'1 hour\' WHERE "k ""1"" {x}" = 7', (snapshot_at,))
        conn.execute('INSERT INTO app."child of {it}" SELECT i, CASE WHEN i = 3 THEN 999 ELSE i END FROM generate_series(1, 10) i')
        conn.execute(
            'ALTER TABLE app."child of {it}" ADD CONSTRAINT "to weird {fk}" FOREIGN KEY ("ref {k}")'
            ' REFERENCES app."we""ird {t}" ("k ""1"" {x}") NOT VALID'
        )


def test_odd_identifiers_are_quoted_in_every_integrity_check(variants: Platform) -> None:
    snapshot_at = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    _odd_tables(variants, snapshot_at)
    with postgres.session(variants.dsn) as conn:
        shapes, keys = postgres.table_shapes(conn), postgres.foreign_keys(conn)
    plan = IntegrityPlan(
        expected_rows={ODD_TABLE: 50, ODD_CHILD: 10},
        shapes=shapes,
        foreign_keys=keys,
        snapshot_at=snapshot_at,
        future_time_columns=[],
        thorough=True,
    )
    checks = {c.name: c for c in run_integrity_suites(variants.dsn, plan, statement_timeout_s=60)}
    assert checks[f"row-count:{ODD_TABLE}"].ok and checks[f"row-count:{ODD_CHILD}"].ok
    assert checks[f'primary-key-unique:{ODD_TABLE}'].ok and checks[f'primary-key-not-null:{ODD_TABLE}.k "1" {{x}}'].ok
    fresh = checks[f"freshness:{ODD_TABLE}.at {{when}}"]
    assert not fresh.ok and fresh.detail == "1 unexpected rows"  # the row after the snapshot, found
    orphan = checks[f"foreign-key:{ODD_CHILD}.to weird {{fk}}"]
    assert not orphan.ok and orphan.detail == "1 unexpected rows"  # ref 999, found


def test_the_integrity_checks_stop_at_their_time_limit_as_a_failed_check(
    variants: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNBOOK_VERIFY__INTEGRITY_TIMEOUT_SECONDS", "1")
    settings = load_settings()
    assert settings.verify.integrity_timeout_seconds == 1
    manifest = Manifest(
        id="backup_20261201_000000", status=BackupStatus.DONE, database=variants.database,
        started_at=datetime.now(timezone.utc), tables={"app.audit log": 1200},
    )
    worker = IntegrityWorker()
    blocker = psycopg.connect(variants.dsn)
    try:
        # a session holding the table: every read of it waits (under a 600 s statement timeout)
        blocker.execute('LOCK TABLE app."audit log" IN ACCESS EXCLUSIVE MODE')
        checks = check_integrity.fn(variants.dsn, manifest, settings, False, worker)
    finally:
        blocker.close()
        worker.close()
    assert [(c.name, c.ok, c.critical) for c in checks] == [("integrity-checks", False, True)]
    assert "did not finish within 1 s" in checks[0].detail and "RUNBOOK_VERIFY__INTEGRITY_TIMEOUT_SECONDS" in checks[0].detail
    assert worker.broken  # killed, with its sessions; IntegrityWorker.shared() would start a new one
