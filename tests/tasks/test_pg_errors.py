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


def test_names_holding_a_percent_sign_work_in_queries_with_parameters(pg_admin_dsn: str) -> None:
    """psycopg reads every % of a query with parameters as a placeholder, also inside a
    quoted name (psycopg/psycopg2#825): runbook's connections double it there."""
    from psycopg import sql

    from tasks.postgres import connect

    table, column = sql.Identifier("cpu%(x)s usage"), sql.Identifier("pct%s")
    with connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TEMP TABLE {} ({} int, note text)").format(table, column))
        with conn.cursor() as cur:
            cur.executemany(sql.SQL("INSERT INTO {} ({}, note) VALUES (%s, %s)").format(table, column), [(1, "5% off"), (7, "%s")])
        query = sql.SQL("SELECT count(*), max(note) FROM {} WHERE {} > %(v)s AND note <> {}").format(table, column, sql.Literal("100%"))
        assert conn.execute(query, {"v": 0}).fetchone() == (2, "5% off")
        assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone() == (2,)  # no parameters: as it was
        assert conn.execute("SELECT %s::text || '%%'", ("50",)).fetchone() == ("50%",)  # our own strings keep their %%
        with conn.transaction(), conn.cursor(name="named") as named:  # a server-side cursor too
            named.execute(sql.SQL("SELECT {} FROM {} WHERE {} >= %s ORDER BY 1").format(column, table, column), (1,))
            assert named.fetchall() == [(1,), (7,)]
    # a plain psycopg connection fails on the same query: what the cursor mends
    with psycopg.connect(pg_admin_dsn) as plain:
        with pytest.raises(psycopg.ProgrammingError):
            plain.execute(sql.SQL("SELECT 1 FROM pg_class WHERE relname = %s AND {} IS NOT NULL").format(sql.Identifier("x%s")), ("a",))
