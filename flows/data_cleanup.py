"""``data-cleanup`` (runbook §4.5): the retention rules, applied so that nothing is
lost: checked against the catalog, planned and published, then applied in short
batches with a journal that makes a killed run resumable and its counts exact."""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.states import Completed, Failed
from pydantic import BaseModel, Field

from runbook import progress
from runbook.cleanup import Action, BatchKey, Policy, PolicyFailed, PolicyPlan, TableInfo, Unfinished, check_policies, review_unfinished
from runbook.errors import ConfigError
from runbook.reports import artifact_key, expected_failures
from runbook.settings import RunbookSettings
from runbook.target import prepare
from tasks import postgres
from tasks.slots import database_slot
from tasks.store import open_backup_store
from tasks.cleanup import (
    Bounds, JournalEntry, abandon_entry, apply_policy, ensure_journal, iso_dates, plan_or_refuse, table_catalog, unfinished_entries,
    vacuum_analyze,
)


class CleanupParameters(BaseModel):
    """What to clean, and whether to do it."""

    dry_run: bool = Field(True, description="Only plan and publish what each policy would touch.")
    policies: list[str] = Field(default_factory=list, description="Names of the policies to run; empty: all configured.")
    batch_size: int | None = Field(None, ge=1, le=1_000_000, description="Keys per batch. Unset: RUNBOOK_CLEANUP__BATCH_SIZE.")
    abandon_unfinished: bool = Field(
        False,
        description="Abandon the chosen policies' unfinished runs (killed or failed) instead of resuming them: each is marked"
        " abandoned in runbook.cleanup_journal, what it had already changed is reported, and the policy starts afresh."
        " Needed when a policy changed since its unfinished run.",
    )


def chosen_policies(settings: RunbookSettings, names: list[str]) -> list[Policy]:
    configured = {p.name: p for p in settings.cleanup.policies}
    unknown = [n for n in names if n not in configured]
    if unknown:
        raise ConfigError(f"no policy named {', '.join(unknown)}: configured are {', '.join(configured) or 'none'}")
    return [configured[n] for n in names] if names else list(configured.values())


def plan(dsn: str, policies: list[Policy], settings: RunbookSettings) -> tuple[dict[str, TableInfo], list[PolicyPlan], dict[str, Unfinished]]:
    """Check every policy against the catalog (nothing is touched when one is wrong),
    then count what each would touch, as of now (a policy that cannot be applied gets a
    plan saying why), and read the unfinished runs in the journal."""
    with postgres.session(dsn, application="runbook data-cleanup plan", connect_timeout=settings.connect_timeout, statement_timeout_s=settings.statement_timeout) as conn:
        iso_dates(conn)
        catalog = table_catalog(conn)
        check_policies(policies, catalog)
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index] - the database's clock decides ages
        plans = [plan_or_refuse(conn, p, catalog[p.table], p.cutoff(now)) for p in policies]
        unfinished = unfinished_entries(conn, [p.name for p in policies])
    return catalog, plans, unfinished


@flow(name="data-cleanup")
@expected_failures
def data_cleanup(params: CleanupParameters = CleanupParameters()) -> Any:
    """Data retention (§4.5): system logs older than 90 days deleted, alerts resolved more
    than 30 days ago flagged archived, expired sessions deleted (policies are settings;
    archive-then-delete writes each batch to the backup store, checked, before deleting it).
    Plans first (an artifact; the dry run stops there), then applies in short batches by
    primary key (integer, uuid, text or composite) with lock and statement timeouts,
    backing off under pressure; a killed run resumes where it stopped if its policy is
    unchanged. A policy that cannot run (no primary key, a failed batch) is reported and
    the others go on; the run then ends Failed. One clean-up at a time; VACUUM ANALYZE
    afterwards."""
    logger = get_run_logger()
    settings, target = prepare()
    policies = chosen_policies(settings, params.policies)
    database = postgres.database_name(target.dsn)
    catalog, plans, unfinished = plan(target.dsn, policies, settings)
    runnable = [(policy, planned) for policy, planned in zip(policies, plans) if planned.problem is None]
    keys = {policy.name: BatchKey.of(catalog[policy.table]) for policy, _ in runnable}
    review = review_unfinished([(p, keys[p.name]) for p, _ in runnable], unfinished, params.abandon_unfinished)  # refuses a changed policy
    archiving = any(p.action is Action.ARCHIVE_THEN_DELETE for p, _ in runnable)
    store = open_backup_store(target.store_url, settings.s3_endpoint_url, settings.backup.part_size_mb) if archiving else None
    create_table_artifact(
        key=artifact_key("data-cleanup-plan", target.instance),
        table=[p.model_dump(mode="json") | {"sample_keys": ", ".join(map(str, p.sample_keys)), "problem": p.problem or ""} for p in plans],
        description=f"What each policy would touch in {database} ({'dry run' if params.dry_run else 'applied next'})",
    )
    report: dict[str, Any] = {"database": database, "dry_run": params.dry_run, "plans": [p.model_dump(mode="json") for p in plans]}
    refused = [planned for planned in plans if planned.problem is not None]
    for planned in refused:
        logger.error("%s cannot run: %s", planned.policy, planned.problem)
    if params.dry_run:
        report["unfinished"] = review  # what --apply would resume, or abandon
        total = sum(planned.rows for _, planned in runnable)
        report["message"] = f"dry run: {total:,} rows would be touched by {len(runnable)} policies"
        if refused:
            report["message"] += "; " + "; ".join(f"{p.policy} cannot run: {p.problem}" for p in refused)
            return Failed(message=report["message"], data=report)
        return Completed(message=report["message"], data=report)

    run_id = f"cleanup_{datetime.now(timezone.utc):%Y%m%d_%H%M%S}_{secrets.token_hex(2)}"
    batch_size = params.batch_size or settings.cleanup.batch_size
    total = max(1, sum(planned.rows for _, planned in runnable))
    progress_id = create_progress_artifact(progress=0.0, description=f"Clean-up of {database}")
    done_before: dict[str, int] = {}
    shown = [0.0]

    def on_batch(entry: JournalEntry) -> None:
        done_before[entry.policy] = entry.rows_done
        progress.report(f"clean-up of {database}", sum(done_before.values()), total)
        if time.monotonic() - shown[0] >= 1.0:  # one API call a second, not one per batch
            update_progress_artifact(progress_id, min(100.0, 100.0 * sum(done_before.values()) / total))
            shown[0] = time.monotonic()

    results: list[dict[str, Any]] = []
    with (
        database_slot(target.instance, job="data-cleanup", wait_seconds=settings.heavy_jobs.wait_seconds),
        postgres.session(target.dsn, application="runbook data-cleanup", connect_timeout=settings.connect_timeout, statement_timeout_s=None, autocommit=True) as lock,
    ):
        postgres.try_advisory_lock(lock, f"data-cleanup of {database}")
        with postgres.session(target.dsn, connect_timeout=settings.connect_timeout, statement_timeout_s=60) as conn:
            ensure_journal(conn)
            # read again under the lock: only now is no other clean-up changing the journal
            unfinished = unfinished_entries(conn, [p.name for p, _ in runnable])
            report["unfinished"] = review_unfinished([(p, keys[p.name]) for p, _ in runnable], unfinished, params.abandon_unfinished)
            if params.abandon_unfinished:
                for entry in unfinished.values():
                    abandon_entry(conn, entry, run_id)
                    logger.warning("Abandoned run %s of %s: %s", entry.run_id, entry.policy, entry.done())
        for policy, planned in runnable:
            try:
                results.append(
                    apply_policy(
                        target.dsn, policy, keys[policy.name], run_id, planned.cutoff,
                        batch_size=batch_size, lock_timeout_ms=settings.cleanup.lock_timeout_ms,
                        statement_timeout_ms=settings.cleanup.statement_timeout_ms, max_lock_waits=settings.cleanup.max_lock_waits,
                        long_transaction_s=settings.cleanup.long_transaction_seconds, connect_timeout=settings.connect_timeout,
                        on_batch=on_batch, store=store, database=target.instance,  # archives go under this platform's instance
                        bounds=Bounds(first=planned.first_key, last=planned.last_key, rows=planned.rows),
                    )
                )
            except PolicyFailed as err:  # its batches stopped: what it did is in err.result, its journal entry stays unfinished
                logger.error("%s", err)
                results.append(err.result)
            except Exception as err:  # noqa: BLE001 - one policy that cannot run must not stop the others; reported, and the run fails
                logger.error("policy %r could not start: %s: %s", policy.name, type(err).__name__, str(err).strip().splitlines()[0] if str(err).strip() else "")
                results.append(_not_run(policy.name, policy.table, policy.action, planned.rows, "failed", f"{type(err).__name__}: {err}"))
        results += [_not_run(p.policy, p.table, p.action, p.rows, "refused", p.problem or "") for p in refused]
        touched = sorted({r["table"] for r in results if r["rows"]})
        if settings.cleanup.vacuum and touched:
            vacuum_analyze(target.dsn, touched, settings.connect_timeout)
    update_progress_artifact(progress_id, 100.0)
    done = sum(r["rows"] for r in results)
    progress.report(f"clean-up of {database}", done, max(done, 1))
    report["results"] = results
    if store is not None:
        report["archive"] = f"{store.url}/{target.instance}/archive/"
    report["vacuumed"] = touched if settings.cleanup.vacuum else []
    create_markdown_artifact(
        key=artifact_key("data-cleanup", target.instance),
        markdown=_markdown(database, results, report["unfinished"]),
        description=f"Clean-up of {database}: exact counts",
    )
    changed = ", ".join(f"{r['policy']} {r['rows']:,} rows" for r in results if r["outcome"] == "done")
    stopped = [r for r in results if r["outcome"] != "done"]
    if stopped:
        report["message"] = "clean-up incomplete: " + "; ".join(f"{r['policy']} {r['outcome']}: {r['error']}" for r in stopped)
        report["message"] += f" (done: {changed or 'nothing'})"
        logger.error(report["message"])
        return Failed(message=report["message"], data=report)
    report["message"] = "clean-up done: " + changed
    logger.info(report["message"])
    return Completed(message=report["message"], data=report)


def _not_run(policy: str, table: str, action: Action, selected: int, outcome: str, error: str) -> dict[str, Any]:
    """The result of a policy that changed nothing: refused, or failed before its first batch."""
    return {
        "policy": policy, "table": table, "action": action.value, "run_id": None, "cutoff": None, "rows": 0, "selected_at_start": selected,
        "batches": 0, "last_key": None, "resumed": False, "longest_batch_ms": 0.0, "waited_for_pressure_s": 0.0, "lock_retries": 0,
        "outcome": outcome, "error": error,
    }


def _markdown(database: str, results: list[dict[str, Any]], unfinished: list[dict[str, Any]]) -> str:
    lines = [
        f"# Clean-up of `{database}`", "",
        "| policy | table | action | outcome | selected at the start | rows changed | batches | resumed | longest batch ms | waited s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['policy']} | {r['table']} | {r['action']} | {r['outcome']} | {r['selected_at_start']:,} | {r['rows']:,} | {r['batches']} | "
            f"{'yes' if r['resumed'] else 'no'} | {r['longest_batch_ms']} | {r['waited_for_pressure_s']} |"
        )
    problems = [r for r in results if r["outcome"] != "done"]
    if problems:
        lines += ["", "## Not done", ""]
        for r in problems:
            after = f" (its run {r['run_id']} stays unfinished after key {r['last_key']}: the next run resumes it)" if r["outcome"] == "failed" and r["run_id"] else ""
            lines.append(f"- **{r['policy']}** {r['outcome']}: {r['error']}{after}")
    abandoned = [u for u in unfinished if u["verdict"] == "abandon"]
    if abandoned:
        lines += ["", "## Abandoned unfinished runs", ""]
        lines += [f"- {u['policy']}: run {u['run_id']} (cutoff {u['cutoff']}) had {u['done']}" for u in abandoned]
    return "\n".join(lines)
