"""Data validation with Great Expectations, executed inside PostgreSQL.

A restored backup is checked table by table with one expectation suite each: the
row count the manifest recorded, primary keys unique and not null, no orphaned
foreign keys, no time column later than the backup's snapshot. Every expectation
runs as an SQL aggregate in the database: no rows are pulled into pandas.

Great Expectations takes seconds of CPU to import, so the suites run in a worker
process (``IntegrityWorker``) started when a verification begins: it imports the
library on the other core while the dump is fetched and restored, and then runs two
tables' suites at a time, each in its own PostgreSQL session.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from runbook.checks import CheckResult
from runbook.errors import RunbookError
from runbook.schema import ForeignKey, TableShape

# The library must never try to phone home from a machine that may have no network.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


class IntegrityTimeout(RunbookError):
    """The integrity checks ran out of their time (RUNBOOK_VERIFY__INTEGRITY_TIMEOUT_SECONDS)."""


@dataclass(frozen=True)
class IntegrityPlan:
    """What to check in a restored database: expected row counts from the manifest,
    and the tables' keys and time columns read from the restored catalog."""

    expected_rows: dict[str, int]
    shapes: dict[str, TableShape]
    foreign_keys: list[ForeignKey]
    snapshot_at: datetime | None
    future_time_columns: list[str]
    thorough: bool = False  # scan the data even where a valid constraint already proves it


def _sqlalchemy_url(
    dsn: str, *, statement_timeout_s: float | None = None, application: str = "runbook verify", connect_timeout: int = 10
) -> str:
    """The DSN as a SQLAlchemy URL for Great Expectations, keeping every libpq option
    (host, port, sslmode, sslrootcert, options, target_session_attrs...) as a query
    parameter, which SQLAlchemy's psycopg dialect hands back to libpq unchanged. The
    session gets a statement timeout (added to any ``options`` the DSN has), an
    ``application_name`` and a connect timeout unless the DSN sets its own."""
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import URL

    params = {key: str(value) for key, value in conninfo_to_dict(dsn).items() if value is not None}
    username = params.pop("user", None)
    password = params.pop("password", None)
    database = params.pop("dbname", None)
    if statement_timeout_s:
        timeout = f"-c statement_timeout={max(1, int(statement_timeout_s * 1000))}"
        params["options"] = f"{params['options']} {timeout}" if params.get("options") else timeout
    params.setdefault("application_name", application)
    params.setdefault("connect_timeout", str(connect_timeout))
    # host and port stay in the query as libpq spells them (a socket folder, several
    # comma-separated hosts and ports), not in the URL's netloc
    url = URL.create("postgresql+psycopg", username=username, password=password, database=database, query=params)
    return url.render_as_string(hide_password=False)


# Great Expectations fills {batch} in an unexpected-rows query with str.format, so every
# other brace must be doubled. NUL cannot occur in a PostgreSQL identifier or in a
# rendered literal, so it marks where the batch goes until the braces are escaped.
_BATCH_MARK = "\x00"


def _rows_query(query: sql.Composable) -> str:
    """An unexpected-rows query composed with psycopg.sql (identifiers quoted by
    psycopg), rendered for Great Expectations with ``{batch}`` where BATCH was."""
    text = query.as_string(None)
    return text.replace("{", "{{").replace("}", "}}").replace(_BATCH_MARK, "{batch}")


_BATCH = sql.SQL(_BATCH_MARK)


def _rows(table: str) -> tuple[sql.Composable, sql.Composable]:
    """What the queries read the table's rows from, and what ends them. Normally the
    library's batch. For a name holding a ``%`` the library's rendering of the batch
    doubles it (SQLAlchemy's pyformat escaping, which psycopg never undoes for a query
    without parameters) and the relation is not found; the whole table is the batch, so
    such a table is named directly (quoted by psycopg), and the batch left in a comment,
    where the library wants to find it."""
    schema, _, name = table.partition(".")
    if "%" not in table:
        return sql.SQL("(SELECT * FROM {})").format(_BATCH), sql.SQL("")
    return sql.Identifier(schema, name), sql.SQL(" /* {} */").format(_BATCH)


def freshness_query(table: str, column: str, snapshot_at: datetime) -> str:
    """Rows of the batch whose ``column`` lies after the snapshot."""
    rows, tail = _rows(table)
    return _rows_query(
        sql.SQL("SELECT c.{col} FROM {rows} AS c WHERE c.{col} > {at}{tail}").format(
            col=sql.Identifier(column), rows=rows, at=sql.Literal(snapshot_at), tail=tail
        )
    )


def duplicate_keys_query(table: str, columns: list[str]) -> str:
    """Key values of the batch held by more than one row."""
    rows, tail = _rows(table)
    keys = sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(col)) for col in columns)
    return _rows_query(
        sql.SQL("SELECT {keys} FROM {rows} AS c GROUP BY {keys} HAVING count(*) > 1{tail}").format(keys=keys, rows=rows, tail=tail)
    )


def nulls_query(table: str, column: str) -> str:
    """Rows of the batch where ``column`` is NULL."""
    rows, tail = _rows(table)
    return _rows_query(
        sql.SQL("SELECT 1 FROM {rows} AS c WHERE c.{col} IS NULL{tail}").format(col=sql.Identifier(column), rows=rows, tail=tail)
    )


def orphans_query(fk: ForeignKey) -> str:
    """Rows of the batch whose (non-null) foreign key has no row in the referenced table."""
    rows, tail = _rows(fk.table)
    not_null = sql.SQL(" AND ").join(sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(col)) for col in fk.columns)
    join = sql.SQL(" AND ").join(
        sql.SQL("r.{} = c.{}").format(sql.Identifier(rc), sql.Identifier(cc))
        for cc, rc in zip(fk.columns, fk.ref_columns, strict=True)
    )
    schema, _, name = fk.ref_table.partition(".")
    return _rows_query(
        sql.SQL("SELECT 1 FROM {rows} AS c WHERE {not_null} AND NOT EXISTS (SELECT 1 FROM {ref} r WHERE {join}){tail}").format(
            rows=rows, not_null=not_null, ref=sql.Identifier(schema, name), join=join, tail=tail
        )
    )


def build_suites(plan: IntegrityPlan) -> dict[str, list[tuple[str, Any]]]:
    """Per table, the (check name, expectation) pairs to run."""
    import great_expectations.expectations as gxe

    suites: dict[str, list[tuple[str, Any]]] = {}
    for table, expected in plan.expected_rows.items():
        if table not in plan.shapes:
            continue
        shape = plan.shapes[table]
        items: list[tuple[str, Any]] = [(f"row-count:{table}", gxe.ExpectTableRowCountToEqual(value=expected))]
        # keys are scanned with queries of our own (identifiers quoted by psycopg): the
        # library's column expectations cannot parse a column name holding a double quote
        scan_key = bool(shape.primary_key) and not (shape.primary_key_enforced and not plan.thorough)
        if scan_key:  # otherwise proven by the restored index: see proven_by_constraints
            items.append(
                (
                    f"primary-key-unique:{table}",
                    gxe.UnexpectedRowsExpectation(
                        unexpected_rows_query=duplicate_keys_query(table, shape.primary_key),
                        description=f"no two rows share ({', '.join(shape.primary_key)})",
                    ),
                )
            )
        for column in shape.primary_key if scan_key else []:
            items.append(
                (
                    f"primary-key-not-null:{table}.{column}",
                    gxe.UnexpectedRowsExpectation(unexpected_rows_query=nulls_query(table, column), description=f"no NULL {column}"),
                )
            )
        if plan.snapshot_at is not None:
            for column in shape.time_columns:
                if column in plan.future_time_columns:
                    continue
                items.append(
                    (
                        f"freshness:{table}.{column}",
                        gxe.UnexpectedRowsExpectation(
                            unexpected_rows_query=freshness_query(table, column, plan.snapshot_at),
                            description=f"no {column} later than the snapshot",
                        ),
                    )
                )
        for fk in plan.foreign_keys:
            if fk.table != table or (fk.validated and not plan.thorough):
                continue
            items.append(
                (
                    f"foreign-key:{table}.{fk.name}",
                    gxe.UnexpectedRowsExpectation(
                        unexpected_rows_query=orphans_query(fk),
                        description=f"every {', '.join(fk.columns)} exists in {fk.ref_table}",
                    ),
                )
            )
        suites[table] = items
    return suites


def proven_by_constraints(plan: IntegrityPlan) -> list[CheckResult]:
    """The key checks PostgreSQL itself has already proven in the restored database:
    a primary key whose unique index was built and is valid holds no duplicate and no
    NULL, and a validated foreign key has no orphan (pg_restore --exit-on-error would
    have failed otherwise). Scanning again proves nothing more; ``thorough`` does it
    anyway. A NOT VALID foreign key is always scanned."""
    if plan.thorough:
        return []
    checks: list[CheckResult] = []
    for table in plan.expected_rows:
        shape = plan.shapes.get(table)
        if shape is None or not shape.primary_key_enforced:
            continue
        columns = ", ".join(shape.primary_key)
        checks.append(
            CheckResult(name=f"primary-key-unique:{table}", ok=True, detail=f"({columns}) enforced by the restored primary key index")
        )
        for column in shape.primary_key:
            checks.append(
                CheckResult(name=f"primary-key-not-null:{table}.{column}", ok=True, detail="enforced by the primary key")
            )
        for fk in plan.foreign_keys:
            if fk.table == table and fk.validated:
                checks.append(
                    CheckResult(
                        name=f"foreign-key:{table}.{fk.name}",
                        ok=True,
                        detail=f"every {', '.join(fk.columns)} exists in {fk.ref_table}: the restored constraint is validated",
                    )
                )
    return checks


def _exception_message(info: Any) -> str | None:
    """The first exception message in GX's exception_info (flat or keyed by metric)."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "error")
    for value in info.values():
        found = _exception_message(value)
        if found:
            return found
    return None


def _detail(result: Any) -> str:
    message = _exception_message(result.exception_info)
    if message:
        return f"could not run: {message.strip().splitlines()[0][:200]}"
    data = result.result or {}
    if result.expectation_config.type == "unexpected_rows_expectation" and "observed_value" in data:
        return f"{data['observed_value']} unexpected rows"
    if "unexpected_count" in data and data.get("unexpected_count") is not None:
        return f"{data['unexpected_count']} unexpected rows"
    if "observed_value" in data:
        return f"observed {data['observed_value']}"
    return ""


def run_integrity_suites(dsn: str, plan: IntegrityPlan, statement_timeout_s: float | None = None) -> list[CheckResult]:
    """Run the suites against the database of ``dsn`` and return one check per
    expectation; each query of Great Expectations runs under ``statement_timeout_s``."""
    checks: list[CheckResult] = []
    for table in plan.expected_rows:
        present = table in plan.shapes
        checks.append(
            CheckResult(
                name=f"table-present:{table}",
                ok=present,
                detail="restored" if present else "missing from the restored database",
            )
        )
    checks += proven_by_constraints(plan)
    suites = build_suites(plan)
    if not suites:
        return checks

    url = _sqlalchemy_url(dsn, statement_timeout_s=statement_timeout_s)
    groups: list[list[str]] = [[], []]
    load = [0, 0]
    for table in sorted(suites, key=lambda t: plan.expected_rows.get(t, 0), reverse=True):
        lighter = load.index(min(load))  # biggest tables first, each to the less busy lane
        groups[lighter].append(table)
        load[lighter] += plan.expected_rows.get(table, 0) + 1
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="integrity") as lanes:
        lanes_done = list(lanes.map(lambda group: _run_suites(url, {t: suites[t] for t in group}), [g for g in groups if g]))
    by_table = {table: found for done in lanes_done for table, found in done.items()}
    for table in suites:  # the manifest's order, whatever lane ran it
        checks += by_table[table]
    return checks


def _run_suites(url: str, suites: dict[str, list[tuple[str, Any]]]) -> dict[str, list[CheckResult]]:
    """Run some tables' suites in one Great Expectations context of their own."""
    import great_expectations as gx
    from sqlalchemy import quoted_name
    from great_expectations.data_context.types.base import ProgressBarsConfig

    checks: dict[str, list[CheckResult]] = {}
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_sql(name="restored", connection_string=url)
    for index, (table, items) in enumerate(suites.items()):
        schema, _, name = table.partition(".")
        # quoted as given: Great Expectations would fold an unquoted "User" to user and
        # leave "audit log" unquoted
        asset = source.add_table_asset(
            name=f"t{index}", table_name=quoted_name(name, quote=True), schema_name=quoted_name(schema, quote=True)
        )
        batch = asset.add_batch_definition_whole_table("whole")
        suite = context.suites.add(gx.ExpectationSuite(name=f"integrity-{index}"))
        for check_name, expectation in items:
            expectation.meta = {"check": check_name}
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"integrity-{index}", data=batch, suite=suite)
        )
        outcome = definition.run(result_format="BASIC")
        checks[table] = []
        for result in outcome.results:
            checks[table].append(
                CheckResult(
                    name=(result.expectation_config.meta or {}).get("check", result.expectation_config.type),
                    ok=bool(result.success),
                    detail=_detail(result),
                )
            )
    return checks


def _import_library() -> None:
    import great_expectations  # noqa: F401
    import great_expectations.expectations  # noqa: F401


class IntegrityWorker:
    """A worker process for the suites, importing Great Expectations from the moment it
    starts. One is shared by the verifications of a process (``shared``), so a process
    that verifies often (a Prefect worker, the tests) imports the library once."""

    _shared: IntegrityWorker | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self._killed = False
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        self._warm = self._pool.submit(_import_library)

    @classmethod
    def shared(cls) -> IntegrityWorker:
        """The process's worker, started on first use (or again if it died)."""
        with cls._lock:
            if cls._shared is None or cls._shared.broken:
                cls._shared = cls()
                atexit.register(cls._shared.close)
            return cls._shared

    @property
    def broken(self) -> bool:
        return self._killed or bool(getattr(self._pool, "_broken", False))

    def run(
        self, dsn: str, plan: IntegrityPlan, *, statement_timeout_s: float | None = None, timeout_s: float | None = None
    ) -> list[CheckResult]:
        """Run the suites in the worker; after ``timeout_s`` the worker is killed (its
        sessions end with it) and IntegrityTimeout is raised."""
        future = self._pool.submit(run_integrity_suites, dsn, plan, statement_timeout_s)
        try:
            return future.result(timeout=timeout_s)
        except FuturesTimeout:
            self.kill()
            raise IntegrityTimeout(f"the integrity checks did not finish within {timeout_s:g} s") from None

    def kill(self) -> None:
        """Stop the worker at once, whatever it is running; ``shared`` starts a new one."""
        self._killed = True
        for process in list(getattr(self._pool, "_processes", {}).values()):
            process.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
