"""The platform's log table in PostgreSQL (§2.4-§2.5): its columns, and a window of rows
summarised by aggregates in the database (counts per level, error groups, top errors,
response-time percentiles with ``percentile_cont``): no log row is pulled out.

Every name is quoted with ``sql.Identifier`` and every json key passed as a
``sql.Literal``; the shape comes from :func:`runbook.logs.resolve_shape`, checked
against the catalog first. The queries run in one REPEATABLE READ, READ ONLY
transaction (the counts agree with each other) bounded by RUNBOOK_STATEMENT_TIMEOUT.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from psycopg import sql

from runbook.errors import RunbookError
from runbook.logs import PERCENTILES, ErrorGroup, LogField, LogShape, LogSummary, ResponseTimes, TopError
from runbook.retry import RETRIES, backoff, retry_transient
from runbook.performance import EndpointFigures
from tasks import postgres

# What a text value must look like to be read as a response time: a plain decimal,
# bounded so the cast can never overflow (a value like "n/a" or "1e999" is left out).
NUMBER_PATTERN = r"^\s*-?[0-9]{1,15}(\.[0-9]{1,15})?\s*$"
# The grouping of messages (runbook.logs.NORMALISATION says the same in words).
NORMALISERS = (
    (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>", "gi"),
    (r"\m0x[0-9a-f]+\M", "<hex>", "gi"),
    (r"\m(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\M", "<hex>", "gi"),
    (r"[0-9]+", "<n>", "g"),
)
MESSAGE_LIMIT = 500  # characters of a message that are grouped and shown (a stack trace can be long)


def log_columns(conn: psycopg.Connection[Any], schema: str, table: str) -> dict[str, str] | None:
    """The columns of the log table or view (name -> information_schema data_type), or
    None when this role sees no such relation."""
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (schema, table),
    ).fetchall()
    return {str(name): str(kind) for name, kind in rows} or None


def text_of(field: LogField) -> sql.Composable:
    """The field as text: a column cast, or the json path's value (``#>>``)."""
    column = sql.Identifier(field.column)
    if field.is_json:
        return sql.SQL("({} #>> {})").format(column, sql.Literal(list(field.path)))
    return sql.SQL("({}::text)").format(column)


def number_of(field: LogField) -> sql.Composable:
    """The field as double precision, NULL where it is not a number."""
    if field.is_number and not field.path:
        return sql.SQL("({}::double precision)").format(sql.Identifier(field.column))
    text = text_of(field)
    return sql.SQL("(CASE WHEN {text} ~ {pattern} THEN {text}::double precision END)").format(
        text=text, pattern=sql.Literal(NUMBER_PATTERN)
    )


def normalised(message: sql.Composable) -> sql.Composable:
    """The message with ids and numbers replaced, so that rows differing only by them group."""
    expression: sql.Composable = sql.SQL("left({}, {})").format(message, sql.Literal(MESSAGE_LIMIT))
    for pattern, replacement, flags in NORMALISERS:
        expression = sql.SQL("regexp_replace({}, {}, {}, {})").format(
            expression, sql.Literal(pattern), sql.Literal(replacement), sql.Literal(flags)
        )
    return expression


def summarise(conn: psycopg.Connection[Any], shape: LogShape, start: datetime, end: datetime, top: int) -> LogSummary:
    """Aggregates of the rows with ``start <= time < end`` (the caller's transaction)."""
    table = sql.Identifier(shape.schema, shape.table)
    # Values as literals, no placeholders: a name or json key holding "%" would otherwise
    # be read as one (psycopg parses placeholders in the composed query).
    in_window = sql.SQL("{time} >= {start} AND {time} < {end}").format(
        time=sql.Identifier(shape.time.column), start=sql.Literal(start), end=sql.Literal(end)
    )
    is_error = sql.SQL("upper(btrim({})) = ANY({}::text[])").format(text_of(shape.level), sql.Literal(list(shape.error_levels)))
    action = text_of(shape.action) if shape.action else sql.SQL("NULL::text")
    message = normalised(text_of(shape.message))
    limit = sql.Literal(top)

    # per level, whether it is an error level: the error count needs no scan of its own
    level_rows = conn.execute(
        sql.SQL(
            "SELECT coalesce({level}, '(none)'), coalesce({is_error}, false), count(*) FROM {table} WHERE {in_window}"
            " GROUP BY 1, 2 ORDER BY 3 DESC, 1"
        ).format(level=text_of(shape.level), is_error=is_error, table=table, in_window=in_window)
    ).fetchall()
    levels: dict[str, int] = {}
    for level, _, rows in level_rows:
        levels[str(level)] = levels.get(str(level), 0) + int(rows)
    time = sql.Identifier(shape.time.column)
    errors = sql.SQL("SELECT {action} AS action, {message} AS message, {time} AS at FROM {table} WHERE {in_window} AND {is_error}").format(
        action=action, message=message, time=time, table=table, in_window=in_window, is_error=is_error
    )
    group_rows = conn.execute(
        sql.SQL(
            "SELECT action, message, count(*), min(at), max(at), count(*) OVER () FROM ({errors}) e"
            " GROUP BY action, message ORDER BY 3 DESC, message, action NULLS FIRST LIMIT {limit}"
        ).format(errors=errors, limit=limit)
    ).fetchall()
    top_rows = conn.execute(
        sql.SQL(
            "SELECT message, count(*), count(DISTINCT action), min(at), max(at), count(*) OVER () FROM ({errors}) e"
            " GROUP BY message ORDER BY 2 DESC, message LIMIT {limit}"
        ).format(errors=errors, limit=limit)
    ).fetchall()
    times = None
    if shape.response_time is not None:
        row = conn.execute(
            sql.SQL(
                "SELECT count(n), count(*) FILTER (WHERE raw IS NULL), count(*) FILTER (WHERE raw IS NOT NULL AND n IS NULL),"
                " percentile_cont({fractions}::double precision[]) WITHIN GROUP (ORDER BY n), max(n)"
                " FROM (SELECT {raw} AS raw, {number} AS n FROM {table} WHERE {in_window}) r"
            ).format(
                fractions=sql.Literal(list(PERCENTILES)), raw=text_of(shape.response_time), number=number_of(shape.response_time),
                table=table, in_window=in_window,
            )
        ).fetchone()
        assert row is not None
        values = list(row[3]) if row[3] is not None else [None] * len(PERCENTILES)
        times = ResponseTimes(rows=row[0], without=row[1], not_numbers=row[2], p50=values[0], p90=values[1], p95=values[2],
                              p99=values[3], max=row[4])
    return LogSummary(
        start=start, end=end, rows=sum(levels.values()), levels=levels, errors=sum(int(rows) for _, error, rows in level_rows if error),
        groups=[ErrorGroup(action=r[0], message=r[1], rows=r[2], first_seen=r[3], last_seen=r[4]) for r in group_rows],
        group_count=group_rows[0][5] if group_rows else 0,
        top_errors=[TopError(message=r[0], rows=r[1], actions=r[2], first_seen=r[3], last_seen=r[4]) for r in top_rows],
        message_count=top_rows[0][5] if top_rows else 0,
        response_time=times,
    )


def endpoint_figures(conn: psycopg.Connection[Any], shape: LogShape, endpoint: LogField | None, start: datetime, end: datetime,
                     top: int) -> list[EndpointFigures]:
    """Rows, error rows and p50/p95 of the response time in ``[start, end)``: all rows
    first (endpoint None), then the ``top`` busiest endpoints when ``endpoint`` is
    given; one scan (GROUPING SETS)."""
    table = sql.Identifier(shape.schema, shape.table)
    in_window = sql.SQL("{time} >= {start} AND {time} < {end}").format(
        time=sql.Identifier(shape.time.column), start=sql.Literal(start), end=sql.Literal(end))
    is_error = sql.SQL("coalesce(upper(btrim({})) = ANY({}::text[]), false)").format(text_of(shape.level), sql.Literal(list(shape.error_levels)))
    number = number_of(shape.response_time) if shape.response_time else sql.SQL("NULL::double precision")
    ep = text_of(endpoint) if endpoint else sql.SQL("NULL::text")
    sets = sql.SQL("GROUPING SETS ((ep), ())") if endpoint else sql.SQL("GROUPING SETS (())")
    grouping = sql.SQL("GROUPING(ep)") if endpoint else sql.SQL("1")
    # without an endpoint field only the total is grouped: ep may not be selected bare
    outer_ep = sql.SQL("ep") if endpoint else sql.SQL("NULL::text")
    rows = conn.execute(
        sql.SQL(
            "SELECT {outer_ep}, {grouping} AS total, count(*), count(*) FILTER (WHERE err), count(n),"
            " percentile_cont(ARRAY[0.5, 0.95]::double precision[]) WITHIN GROUP (ORDER BY n)"
            " FROM (SELECT {ep} AS ep, {is_error} AS err, {number} AS n FROM {table} WHERE {in_window}) r"
            " GROUP BY {sets} ORDER BY 2 DESC, 3 DESC, 1 NULLS FIRST LIMIT {limit}"
        ).format(outer_ep=outer_ep, grouping=grouping, ep=ep, is_error=is_error, number=number, table=table, in_window=in_window, sets=sets,
                 limit=sql.Literal(top + 1))
    ).fetchall()
    out = []
    for endpoint_value, total, count, errors, timed, percentiles in rows:
        p50, p95 = (percentiles or [None, None])[:2]
        out.append(EndpointFigures(endpoint=None if total else ("(none)" if endpoint_value is None else str(endpoint_value)),
                                   rows=count, errors=errors, timed=timed, p50=p50, p95=p95))
    if not out:  # no row at all: the total row still says so
        out.append(EndpointFigures(endpoint=None, rows=0, errors=0, timed=0))
    return out


# --------------------------------------------------------------------------- Prefect tasks


@task(name="read-log-columns", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def read_log_columns(dsn: str, table: tuple[str, str], connect_timeout: int) -> dict[str, str] | None:
    """The columns of the log table, read from the catalog (nothing else is read)."""
    get_run_logger().info("Reading the columns of %s.%s", *table)
    with postgres.session(dsn, application="runbook log-report", connect_timeout=connect_timeout, statement_timeout_s=60) as conn:
        return log_columns(conn, *table)


@task(name="summarise-logs", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def summarise_logs(dsn: str, shape: LogShape, start: datetime, end: datetime, top: int, connect_timeout: int, statement_timeout: int) -> LogSummary:
    """Counts per level, error groups, top errors and response-time percentiles of the
    window, aggregated in PostgreSQL in one read-only snapshot. A statement that runs
    into RUNBOOK_STATEMENT_TIMEOUT is not retried: it would only load the database again."""
    logger = get_run_logger()
    logger.info("Summarising %s from %s to %s", shape.display, start.isoformat(timespec="seconds"), end.isoformat(timespec="seconds"))
    with postgres.session(dsn, application="runbook log-report", connect_timeout=connect_timeout, statement_timeout_s=statement_timeout) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        try:
            with conn.transaction():
                summary = summarise(conn, shape, start, end, top)
        except psycopg.errors.QueryCanceled:
            raise RunbookError(
                f"log-report: reading {shape.display} stopped at RUNBOOK_STATEMENT_TIMEOUT ({statement_timeout} s): "
                f"shorten the window (--hours) or index {shape.time.column}"
            ) from None
        except psycopg.Error as err:
            raise postgres.translate_pg_error(err, dsn, f"log-report on {shape.display}") from None
    logger.info("%d rows, %d errors in %d groups", summary.rows, summary.errors, summary.group_count)
    return summary


@task(name="read-endpoint-figures", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def read_endpoint_figures(dsn: str, shape: LogShape, endpoint: LogField | None, start: datetime, end: datetime, top: int,
                          connect_timeout: int, statement_timeout: int) -> list[EndpointFigures]:
    """p50/p95 response time and error rows of one period, overall and per endpoint,
    aggregated in PostgreSQL (read only). A statement timeout is not retried."""
    get_run_logger().info("Response times in %s from %s to %s%s", shape.display, start.isoformat(timespec="seconds"),
                          end.isoformat(timespec="seconds"), f" by {endpoint.display}" if endpoint else "")
    with postgres.session(dsn, application="runbook performance-report", connect_timeout=connect_timeout,
                          statement_timeout_s=statement_timeout) as conn:
        conn.read_only = True
        try:
            with conn.transaction():
                return endpoint_figures(conn, shape, endpoint, start, end, top)
        except psycopg.errors.QueryCanceled:
            raise RunbookError(
                f"performance-report: reading {shape.display} stopped at RUNBOOK_STATEMENT_TIMEOUT ({statement_timeout} s): "
                f"a shorter period, or an index on {shape.time.column}"
            ) from None
        except psycopg.Error as err:
            raise postgres.translate_pg_error(err, dsn, f"performance-report on {shape.display}") from None
