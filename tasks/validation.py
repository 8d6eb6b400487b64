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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runbook.checks import CheckResult
from runbook.schema import ForeignKey, TableShape

# The library must never try to phone home from a machine that may have no network.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

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


def _sqlalchemy_url(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import URL

    params = conninfo_to_dict(dsn)
    query = {}
    host = str(params.pop("host", "") or "")
    if host.startswith("/"):
        query["host"] = host
        host = ""
    url = URL.create(
        "postgresql+psycopg",
        username=params.pop("user", None),
        password=params.pop("password", None),
        host=host or None,
        port=int(params.pop("port")) if params.get("port") else None,
        database=params.pop("dbname", None),
        query=query,
    )
    return url.render_as_string(hide_password=False)


def _join(columns: list[str], ref_columns: list[str]) -> str:
    return " AND ".join(f'r."{rc}" = c."{cc}"' for cc, rc in zip(columns, ref_columns, strict=True))


def _ident(table: str) -> str:
    schema, _, name = table.partition(".")
    return f'"{schema}"."{name}"'


def build_suites(plan: IntegrityPlan) -> dict[str, list[tuple[str, Any]]]:
    """Per table, the (check name, expectation) pairs to run."""
    import great_expectations.expectations as gxe

    suites: dict[str, list[tuple[str, Any]]] = {}
    for table, expected in plan.expected_rows.items():
        if table not in plan.shapes:
            continue
        shape = plan.shapes[table]
        items: list[tuple[str, Any]] = [(f"row-count:{table}", gxe.ExpectTableRowCountToEqual(value=expected))]
        if shape.primary_key_enforced and not plan.thorough:
            pass  # proven by the restored index: see proven_by_constraints
        elif len(shape.primary_key) == 1:
            column = shape.primary_key[0]
            items.append((f"primary-key-unique:{table}", gxe.ExpectColumnValuesToBeUnique(column=column)))
        elif shape.primary_key:
            items.append(
                (f"primary-key-unique:{table}", gxe.ExpectCompoundColumnsToBeUnique(column_list=shape.primary_key))
            )
        for column in shape.primary_key if not (shape.primary_key_enforced and not plan.thorough) else []:
            items.append((f"primary-key-not-null:{table}.{column}", gxe.ExpectColumnValuesToNotBeNull(column=column)))
        if plan.snapshot_at is not None:
            for column in shape.time_columns:
                if column in plan.future_time_columns:
                    continue
                items.append(
                    (
                        f"freshness:{table}.{column}",
                        gxe.UnexpectedRowsExpectation(
                            unexpected_rows_query=(
                                f'SELECT c."{column}" FROM (SELECT * FROM {{batch}}) AS c '
                                f"WHERE c.\"{column}\" > '{plan.snapshot_at.isoformat()}'::timestamptz"
                            ),
                            description=f"no {column} later than the snapshot",
                        ),
                    )
                )
        for fk in plan.foreign_keys:
            if fk.table != table or (fk.validated and not plan.thorough):
                continue
            not_null = " AND ".join(f'c."{col}" IS NOT NULL' for col in fk.columns)
            items.append(
                (
                    f"foreign-key:{table}.{fk.name}",
                    gxe.UnexpectedRowsExpectation(
                        unexpected_rows_query=(
                            f"SELECT 1 FROM (SELECT * FROM {{batch}}) AS c WHERE {not_null} AND NOT EXISTS "
                            f"(SELECT 1 FROM {_ident(fk.ref_table)} r WHERE {_join(fk.columns, fk.ref_columns)})"
                        ),
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


def run_integrity_suites(dsn: str, plan: IntegrityPlan) -> list[CheckResult]:
    """Run the suites against the database of ``dsn`` and return one check per expectation."""
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

    groups: list[list[str]] = [[], []]
    load = [0, 0]
    for table in sorted(suites, key=lambda t: plan.expected_rows.get(t, 0), reverse=True):
        lighter = load.index(min(load))  # biggest tables first, each to the less busy lane
        groups[lighter].append(table)
        load[lighter] += plan.expected_rows.get(table, 0) + 1
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="integrity") as lanes:
        lanes_done = list(lanes.map(lambda group: _run_suites(dsn, {t: suites[t] for t in group}), [g for g in groups if g]))
    by_table = {table: found for done in lanes_done for table, found in done.items()}
    for table in suites:  # the manifest's order, whatever lane ran it
        checks += by_table[table]
    return checks


def _run_suites(dsn: str, suites: dict[str, list[tuple[str, Any]]]) -> dict[str, list[CheckResult]]:
    """Run some tables' suites in one Great Expectations context of their own."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    checks: dict[str, list[CheckResult]] = {}
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_sql(name="restored", connection_string=_sqlalchemy_url(dsn))
    for index, (table, items) in enumerate(suites.items()):
        schema, _, name = table.partition(".")
        asset = source.add_table_asset(name=f"t{index}", table_name=name, schema_name=schema)
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
        return bool(getattr(self._pool, "_broken", False))

    def run(self, dsn: str, plan: IntegrityPlan) -> list[CheckResult]:
        return self._pool.submit(run_integrity_suites, dsn, plan).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
