"""``db-maintenance`` (runbook §4.4, §7.2, §7.4): VACUUM ANALYZE of the large tables and
a report on what needs an operator: settings against §7.4, the recommended indexes,
unused and invalid indexes, dead tuples and bloat, size against the 80 GB threshold."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, Field

from runbook.checks import CheckResult, checks_markdown, outcome
from runbook.maintenance import (
    dead_tuple_checks,
    human_bytes,
    invalid_index_checks,
    recommended_index_checks,
    settings_checks,
    size_check,
    unused_indexes,
)
from runbook.reports import artifact_key, conclude, expected_failures
from runbook.target import prepare
from tasks import postgres
from tasks.maintenance import create_index_concurrently, read_facts, vacuum_analyze_tables
from tasks.slots import database_slot


class MaintenanceParameters(BaseModel):
    """What to do besides the report."""

    vacuum: bool = Field(True, description="VACUUM ANALYZE the large tables (RUNBOOK_MAINTENANCE__TABLES).")
    apply: bool = Field(False, description="Create a missing recommended index of §7.4 CONCURRENTLY.")


@flow(name="db-maintenance")
@expected_failures
def db_maintenance(params: MaintenanceParameters = MaintenanceParameters()) -> Any:
    """Database maintenance (§4.4): VACUUM ANALYZE of the large tables; a report of the
    column statistics, unused indexes (never those of primary keys or unique
    constraints), invalid indexes, dead tuples and bloat estimates, the settings and
    indexes of §7.4, and the size against §7.2's 80 GB. With apply, a missing
    recommended index is built CONCURRENTLY."""
    settings, target = prepare()
    database = postgres.database_name(target.dsn)
    tables = settings.maintenance.tables
    with database_slot(target.instance, job="db-maintenance", wait_seconds=settings.heavy_jobs.wait_seconds):
        vacuumed = vacuum_analyze_tables(target.dsn, tables, settings.connect_timeout) if params.vacuum else []
        facts = read_facts(target.dsn, tables, settings.connect_timeout, settings.statement_timeout)
        index_checks, missing = recommended_index_checks(facts["indexes"])
        created: list[str] = []
        refused: list[CheckResult] = []
        if params.apply and missing:
            names = {i.name.split(".", 1)[1] for i in facts["indexes"]}
            for wanted in missing:
                if wanted.name in names:  # an index of that name exists (invalid, or other columns): do not guess
                    refused.append(CheckResult(
                        name=f"create:{wanted.name}", ok=False, critical=False,
                        detail=f"an index named {wanted.name} already exists: drop or rename it first",
                    ))
                    continue
                created.append(create_index_concurrently(target.dsn, wanted, settings.connect_timeout))
            facts = read_facts(target.dsn, tables, settings.connect_timeout, settings.statement_timeout)
            index_checks, missing = recommended_index_checks(facts["indexes"])
    unused = unused_indexes(facts["indexes"])
    checks: list[CheckResult] = [
        *settings_checks(facts["settings"]),
        *index_checks,
        *refused,
        *invalid_index_checks(facts["indexes"]),
        *dead_tuple_checks({t["table"]: (t["live"], t["dead"]) for t in facts["tables"]}),
        size_check(facts["size_bytes"]),
        CheckResult(
            name="unused-indexes", ok=not unused, critical=False,
            detail=(f"{len(unused)} unused since {facts['stats_reset'] or 'the statistics began'}: "
                    + ", ".join(f"{i.name} ({human_bytes(i.size_bytes)})" for i in unused)) if unused else "none",
        ),
    ]
    unused_rows = [{"index": i.name, "table": i.table, "size": human_bytes(i.size_bytes), "definition": i.definition} for i in unused]
    report = {
        "database": database,
        "vacuumed": vacuumed,
        "created_indexes": created,
        "unused_indexes": unused_rows,
        "tables": facts["tables"],
        "size_bytes": facts["size_bytes"],
    }
    create_markdown_artifact(
        key=artifact_key("db-maintenance", target.instance),
        markdown=f"# Database maintenance of `{database}`: {outcome(checks)}\n\n"
        + (f"VACUUM ANALYZE: {', '.join(vacuumed)}\n\n" if vacuumed else "")
        + checks_markdown(checks),
        description="Settings, indexes, dead tuples, size",
    )
    create_table_artifact(key=artifact_key("db-maintenance-tables", target.instance), table=facts["tables"], description="Tables: tuples, vacuum, bloat")
    create_table_artifact(key=artifact_key("db-maintenance-columns", target.instance), table=facts["columns"], description="Column statistics (pg_stats)")
    if unused_rows:
        create_table_artifact(key=artifact_key("db-maintenance-unused-indexes", target.instance), table=unused_rows, description="Unused indexes")
    created_text = f"; created {', '.join(created)}" if created else ""
    return conclude(checks, report, passed=f"maintenance of {database}: {outcome(checks)}{created_text}", failed_as=f"maintenance of {database} found problems")
