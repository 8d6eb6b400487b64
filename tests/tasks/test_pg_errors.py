"""How PostgreSQL's refusals are told apart (tasks/postgres/connection.py), from real
errors of the test server: a setting that names what is not there is bad configuration
(exit 2); SQL that only a bug in runbook could write is a problem of the run (exit 1)."""

from __future__ import annotations

import psycopg
import pytest

from runbook.errors import ConfigError, RunbookError
from tasks.postgres import translate_pg_error


def _refusal(dsn: str, statement: str) -> psycopg.Error:
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute(statement)
        except psycopg.Error as err:
            return err
    raise AssertionError(f"{statement!r} was not refused")


@pytest.mark.parametrize("statement", [
    "SELECT missing_column FROM pg_class",  # a column a setting named
    "SELECT 1 FROM no_such_table",  # a table a setting named
])
def test_what_a_setting_names_and_is_not_there_is_configuration(pg_admin_dsn: str, statement: str) -> None:
    found = translate_pg_error(_refusal(pg_admin_dsn, statement), pg_admin_dsn, "log-report")
    assert type(found) is ConfigError and found.args[0].startswith("log-report on ")


@pytest.mark.parametrize("statement, kind", [
    ("SELECT relname, count(*) FROM pg_class", "grouping error"),  # the performance-report bug of issue 13
    ("SELEC 1", "syntax error"),
])
def test_sql_only_a_bug_writes_is_a_problem_of_the_run_not_a_setting(pg_admin_dsn: str, statement: str, kind: str) -> None:
    found = translate_pg_error(_refusal(pg_admin_dsn, statement), pg_admin_dsn, "performance-report")
    assert type(found) is RunbookError and not isinstance(found, ConfigError)
    assert f"({kind}: " in str(found) and "bug in runbook" in str(found)
