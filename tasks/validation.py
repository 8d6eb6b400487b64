"""Data validation with Great Expectations, executed inside PostgreSQL.

A restored backup is checked table by table with one expectation suite each: the
row count the manifest recorded, primary keys unique and not null, no orphaned
foreign keys, no time column later than the backup's snapshot. Every expectation
runs as an SQL aggregate in the database: no rows are pulled into pandas.
Great Expectations takes seconds to import, so it is imported only here, lazily.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runbook.checks import CheckResult
from tasks.postgres import ForeignKey, TableShape

# The library must never try to phone home from a machine that may have no network.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

_preload: threading.Thread | None = None


def preload() -> None:
    """Import Great Expectations in a background thread (it takes seconds), so that it
    is ready by the time a restore, which runs in another process, has finished."""
    global _preload
    if _preload is None:
        _preload = threading.Thread(target=lambda: __import__("great_expectations"), name="gx-import", daemon=True)
        _preload.start()


def _wait_for_preload() -> None:
    """Two threads importing the same package at once can see it half-initialised."""
    if _preload is not None:
        _preload.join()


@dataclass(frozen=True)
class IntegrityPlan:
    """What to check in a restored database: expected row counts from the manifest,
    and the tables' keys and time columns read from the restored catalog."""

    expected_rows: dict[str, int]
    shapes: dict[str, TableShape]
    foreign_keys: list[ForeignKey]
    snapshot_at: datetime | None
    future_time_columns: list[str]


def _sqlalchemy_url(dsn: str) -> str:
    from sqlalchemy.engine import URL

    from tasks.postgres import parse_dsn

    params = parse_dsn(dsn)
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
    _wait_for_preload()
    import great_expectations.expectations as gxe

    suites: dict[str, list[tuple[str, Any]]] = {}
    for table, expected in plan.expected_rows.items():
        if table not in plan.shapes:
            continue
        shape = plan.shapes[table]
        items: list[tuple[str, Any]] = [(f"row-count:{table}", gxe.ExpectTableRowCountToEqual(value=expected))]
        if len(shape.primary_key) == 1:
            column = shape.primary_key[0]
            items.append((f"primary-key-unique:{table}", gxe.ExpectColumnValuesToBeUnique(column=column)))
        elif shape.primary_key:
            items.append(
                (f"primary-key-unique:{table}", gxe.ExpectCompoundColumnsToBeUnique(column_list=shape.primary_key))
            )
        for column in shape.primary_key:
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
            if fk.table != table:
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
    suites = build_suites(plan)
    if not suites:
        return checks

    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

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
        for result in outcome.results:
            checks.append(
                CheckResult(
                    name=(result.expectation_config.meta or {}).get("check", result.expectation_config.type),
                    ok=bool(result.success),
                    detail=_detail(result),
                )
            )
    return checks
