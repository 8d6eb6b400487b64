"""``disaster-recovery`` (runbook §6.3–§6.4): bring the platform's database back from a
backup, in five named and timed phases, and measure RTO and RPO on every run.

A *drill* (monthly, or by hand) restores into a new scratch database and never touches
the live platform; a *recovery* restores into the configured recovery target after a
typed confirmation. Both follow the same steps:

1. emergency shutdown (the maintenance-mode hook; skipped in a drill)
2. restore the backup (fetch, sha256, ``pg_restore -j``)
3. verify the data (the integrity checks of backup-verify)
4. bring the services back (the configured steps)
5. test every function (the platform's key reads, and its HTTP checks when configured)

then the post-recovery checks (health, performance against the previous drill,
security). A failed phase stops the ones after it. A recovery ends with the user
acceptance test: who accepted and what they tried, given as a parameter or asked in the
Prefect UI (no answer in time: recorded as not accepted), kept in the report and history.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Completed, Failed
from pydantic import BaseModel, Field, SecretStr

from flows.asking import ask
from runbook import dr
from runbook.backups import Manifest, human_size, select_backup
from runbook.checks import CheckResult, describe, failed
from runbook.errors import ConfigError
from runbook.masking import dsn_url
from runbook.reports import artifact_key, expected_failures
from runbook.settings import HookStep, RunbookSettings
from runbook.target import Target, prepare
from runbook.times import maybe_team_time, show
from tasks import postgres
from tasks.backups import first_line, read_catalog_task, read_drill_history, record_drill
from tasks.hooks import check_platform_http, run_hook_step
from tasks.restore import (
    Destination,
    RestorePipeline,
    RestoreServer,
    analyze_database,
    check_health,
    inspect_recovery_target,
    read_security,
    scratch_server,
)
from tasks.runs import label_flow_run
from tasks.slots import database_slot
from tasks.smoke import smoke_test
from tasks.store import BackupStore, open_backup_store
from tasks.validation import IntegrityWorker


class Mode(str, Enum):
    DRILL = "drill"
    RECOVER = "recover"


class DrParameters(BaseModel):
    """What to restore, where, and against which targets."""

    mode: Mode = Field(Mode.DRILL, description="drill: restore into a scratch database, touch nothing live. recover: the real thing.")
    backup_id: str | None = Field(None, description="A backup id such as backup_20261129_073000. Unset: the latest DONE.")
    at: datetime | None = Field(
        None,
        description="Take the latest DONE backup at or before this time (a backup date). "
        "Without an offset: in the team's timezone (RUNBOOK_TIMEZONE).",
    )
    keep_restored: bool = Field(False, description="Drill: keep the scratch database afterwards (it is dropped otherwise).")
    replace: bool = Field(
        False,
        description="Recover: the recovery target holds tables; move it aside (renamed, nothing dropped) and restore into a new one.",
    )
    rto_target_minutes: float = Field(240.0, gt=0, description="§6.3 recovery time objective (4 hours).")
    rpo_target_minutes: float = Field(60.0, gt=0, description="§6.3 recovery point objective (1 hour).")
    incident_at: datetime | None = Field(
        None,
        description="Recover: when the incident began; unless a backup is chosen, the latest DONE backup at or before it "
        "is restored. Without an offset: in the team's timezone (RUNBOOK_TIMEZONE). Unset: this run's start.",
    )
    confirm: str | None = Field(
        None,
        description="Recover: the recovery target's database name, typed to confirm. Unset: the run pauses and asks in the UI.",
    )
    acceptance: "UserAcceptance | None" = Field(
        None, description="Recover: the user acceptance test's answer (§6.4). Unset: the run asks in the UI at its end.",
    )
    ask_acceptance: bool = Field(
        True, description="Recover: without an acceptance answer, pause and ask in the UI (the CLI cannot: not accepted).",
    )


class UserAcceptance(BaseModel):
    """The user acceptance test that ends a recovery (§6.4): who accepted, what they tried."""

    accepted: bool = Field(True, description="Did the users accept the recovered platform?")
    accepted_by: str = Field(min_length=1, description="Who accepted (or refused) it.")
    tried: str = Field(min_length=1, description="What they tried (logins, payments, alerts...).")


class AcceptanceInput(UserAcceptance, RunInput):
    """Typed answer of the user acceptance test."""


DrParameters.model_rebuild()


class Confirmation(RunInput):
    """Typed confirmation of a recovery."""

    database: str = Field(description="Type the name of the database the recovery will restore into.")


@dataclass
class Findings:
    """What the phases found, for the checks, the report and the run's metadata."""

    checks: list[CheckResult] = field(default_factory=list)
    latencies_ms: dict[str, float] = field(default_factory=dict)
    restored_bytes: int = 0
    analyze: Any = None  # the ANALYZE running beside phase 3 (a Prefect future)

    def statistics_ready(self) -> None:
        """Wait for the ANALYZE started after the restore (its failure fails the caller)."""
        if self.analyze is not None:
            self.analyze.result()


# --------------------------------------------------------------------------- before anything is touched


def read_times(params: DrParameters, zone: str) -> DrParameters:
    """``at`` and ``incident_at`` as typed on the CLI or in the UI's form: without an
    offset they are wall-clock times in the team's timezone."""
    return params.model_copy(update={"at": maybe_team_time(params.at, zone), "incident_at": maybe_team_time(params.incident_at, zone)})


def check_parameters(params: DrParameters, settings: RunbookSettings, started_at: datetime) -> datetime:
    """Refuse contradictory parameters; return the incident time (a time without an
    offset is read in the team's timezone)."""
    params = read_times(params, settings.timezone)
    if params.mode is Mode.RECOVER and settings.recovery_database_url is None:
        raise ConfigError("a recovery restores into RUNBOOK_RECOVERY_DATABASE_URL: set it to the recovery target's postgresql:// DSN")
    if params.backup_id and params.at:
        raise ConfigError("give backup_id or at, not both")
    if params.mode is Mode.DRILL:
        if params.incident_at or params.confirm or params.replace or params.acceptance:
            raise ConfigError("incident_at, confirm, replace and acceptance apply to mode=recover; a drill's incident is its start")
        return started_at
    if params.keep_restored:
        raise ConfigError("keep_restored applies to drills: a recovery always keeps what it restored")
    incident_at = params.incident_at or started_at
    if incident_at > started_at + timedelta(minutes=1):
        raise ConfigError(f"incident_at {show(incident_at, settings.timezone)} is in the future")
    return incident_at


def choose_backup(manifests: list[Manifest], params: DrParameters, incident_at: datetime, zone: str) -> Manifest:
    """The given backup, or the latest DONE at or before ``at``, or (the default) the
    latest DONE at or before the incident: a later one may already hold the damage.
    Times without an offset are in ``zone``, the team's timezone."""
    params = read_times(params, zone)
    at = params.at or (incident_at if params.mode is Mode.RECOVER and not params.backup_id else None)
    manifest = select_backup(manifests, backup_id=params.backup_id, at_or_before=at)
    taken = manifest.snapshot_at or manifest.started_at
    if taken > incident_at:
        raise ConfigError(
            f"{manifest.id} was taken at {show(taken, zone)}, after the incident time "
            f"{show(incident_at, zone)}: it may hold the damage; choose a backup at or before it"
        )
    return manifest


def plan_destination(
    params: DrParameters, settings: RunbookSettings, target: Target, manifest: Manifest, scratch: RestoreServer
) -> Destination:
    """A drill restores into a new scratch database (on the scratch or recovery server
    when one is configured, else on the platform's); a recovery into the recovery
    target, which must be empty unless ``replace``."""
    recovery = settings.recovery_database_url
    if params.mode is Mode.DRILL:
        server = scratch.dsn
        name = f"runbook_drill_{manifest.id.removeprefix('backup_')}_{scratch_suffix(flow_run.get_id())}"
        return Destination(server=server, name=name, dsn=SecretStr(postgres.with_database(server.get_secret_value(), name)), scratch=True)
    if recovery is None:
        raise ConfigError("a recovery restores into RUNBOOK_RECOVERY_DATABASE_URL: set it to the recovery target's postgresql:// DSN")
    name = postgres.database_name(recovery.get_secret_value())
    server = SecretStr(postgres.with_database(recovery.get_secret_value(), "postgres"))
    destination = Destination(server=server, name=name, dsn=recovery, scratch=False)
    tables = inspect_recovery_target(server.get_secret_value(), recovery.get_secret_value(), settings.connect_timeout)
    if tables is not None:
        if tables and not params.replace:
            raise ConfigError(
                f"the recovery target {name} is not empty ({tables} tables): pass replace=true (CLI --replace) "
                "to move it aside under a new name and restore into a new one"
            )
        if tables:
            destination.move_aside = f"{name[:40]}_before_{datetime.now(timezone.utc):%Y%m%d_%H%M%S}"
        else:
            destination.created = True  # exists and empty: restore into it as is
    return destination


def confirm_recovery(params: DrParameters, name: str, settings: RunbookSettings) -> None:
    """The operator types the target database's name (parameter, or in the Prefect UI)."""
    typed = params.confirm
    if typed is None:
        answer = ask(Confirmation, key="confirm-recovery", description=f"Type {name!r}, the database the recovery restores into.",
                     timeout_s=settings.dr.confirm_timeout_seconds,
                     waiting=f"Waiting for confirmation: type {name!r}, the database the recovery restores into")
        if answer is None:
            raise ConfigError(f"no confirmation within {settings.dr.confirm_timeout_seconds} s: nothing was touched")
        typed = answer.database
    if typed.strip() != name:
        raise ConfigError(f"the confirmation {typed.strip()!r} is not the recovery target {name!r}: nothing was touched")


@flow(name="user-acceptance")
def user_acceptance(database: str, timeout_s: int) -> dict[str, Any]:
    """The user acceptance test of a recovery (§6.4, last step): resume this run in the
    Prefect UI and say who accepted the recovered platform and what they tried. A subflow
    of its own, so that no answer in time leaves the recovery's record intact: this run
    fails, and the recovery records "not accepted"."""
    get_run_logger().warning("Waiting for the user acceptance test of %s: resume this run in the Prefect UI", database)
    answer = pause_flow_run(wait_for_input=AcceptanceInput, timeout=timeout_s, poll_interval=2, key="user-acceptance")
    return UserAcceptance.model_validate(answer.model_dump()).model_dump()


def acceptance_test(params: DrParameters, record: dr.DrillRecord, timeout_s: int) -> tuple[dict[str, Any], CheckResult]:
    """The answer (given, asked, or none in time) and its check: refused fails the
    recovery; unanswered is a warning, recorded as not accepted, never as accepted."""
    if record.outcome == "failed":
        answer = {"status": "not asked", "detail": "the recovery failed before its user acceptance test"}
        return answer, CheckResult(name="user-acceptance", ok=False, detail=answer["detail"], critical=False)
    given = params.acceptance
    if given is None and not params.ask_acceptance:
        answer = {"status": "not accepted", "detail": "not given (asked only in the UI; CLI: --accepted-by and --tried)"}
        return answer, CheckResult(name="user-acceptance", ok=False, detail=f"not accepted ({answer['detail']})", critical=False)
    if given is None:
        state = user_acceptance(record.database, timeout_s, return_state=True)
        if not state.is_completed():
            answer = {"status": "not accepted", "detail": f"no answer within {timeout_s} s"}
            return answer, CheckResult(name="user-acceptance", ok=False, detail=f"not accepted ({answer['detail']})", critical=False)
        given = UserAcceptance.model_validate(state.result())
    status = "accepted" if given.accepted else "refused"
    answer = {"status": status, "by": given.accepted_by, "tried": given.tried, "detail": f"{status} by {given.accepted_by} after: {given.tried}"}
    return answer, CheckResult(name="user-acceptance", ok=given.accepted, detail=answer["detail"])


# --------------------------------------------------------------------------- the phases of §6.4


def hook_env(destination: Destination, mode: Mode) -> dict[str, str | SecretStr]:
    """What a hook gets besides PATH, HOME, LANG and its own ``env`` names: the mode, the
    restored database's name and a postgresql:// URL of it (a secret: masked in the
    hook's output in every form, its password alone included)."""
    return {
        "RUNBOOK_DR_MODE": mode.value,
        "RUNBOOK_RESTORED_DATABASE": destination.name,
        "RUNBOOK_RESTORED_DATABASE_URL": SecretStr(dsn_url(destination.dsn.get_secret_value())),
    }


def emergency_shutdown(step: HookStep, env: dict[str, SecretStr]) -> str:
    return f"{step.name}: {run_hook_step(step, env)}"


def restore(pipeline: RestorePipeline, settings: RunbookSettings, findings: Findings) -> str:
    """Fetch the backup, check it against its manifest, and only then (moving a
    replaced database aside) restore it."""
    destination, manifest = pipeline.destination, pipeline.manifest
    findings.checks += pipeline.restore()
    if pipeline.failure is not None:
        raise dr.PhaseFailed(pipeline.failure)
    # planner statistics are gathered while phase 3 checks the data; phase 5 waits for them
    findings.analyze = analyze_database.submit(destination.dsn.get_secret_value(), settings.connect_timeout)
    findings.restored_bytes = postgres.inspect_database(destination.dsn.get_secret_value(), settings.connect_timeout).size_bytes
    return (
        f"{human_size(manifest.size_bytes)} fetched, sha256 ok, pg_restore -j {settings.backup.restore_jobs} "
        f"into {destination.name} ({human_size(findings.restored_bytes)})"
        + (f"; the previous one is kept as {destination.still_aside}" if destination.still_aside else "")
    )


def verify_data(pipeline: RestorePipeline, worker: IntegrityWorker, findings: Findings) -> str:
    """The integrity checks of backup-verify on the restored database."""
    checks = pipeline.check(worker, deep=False)
    findings.checks += checks
    bad = failed(checks, critical_only=True)
    if bad:
        raise dr.PhaseFailed(f"{len(bad)} integrity checks failed: " + describe(bad, 5))
    return f"{len(checks)} integrity checks, {len(failed(checks))} warnings"


def restore_services(steps: list[HookStep], env: dict[str, SecretStr]) -> str:
    return "; ".join(f"{step.name}: {run_hook_step(step, env)}" for step in steps)


def test_functions(destination: Destination, settings: RunbookSettings, platform_url: str | None, findings: Findings) -> str:
    """The platform's key reads on the restored schema, and its HTTP checks."""
    findings.statistics_ready()
    checks, findings.latencies_ms = smoke_test(destination.dsn.get_secret_value(), settings.dr.smoke_reads, settings.connect_timeout, settings.statement_timeout)
    if platform_url:
        checks += check_platform_http(platform_url, settings.dr.http_checks)
    findings.checks += checks
    bad = failed(checks, critical_only=True)
    if bad:
        raise dr.PhaseFailed(describe(bad))
    http = f", {len(settings.dr.http_checks)} HTTP checks on {platform_url}" if platform_url else ", no platform URL: no HTTP check"
    return f"{len(findings.latencies_ms)} smoke queries answered{http}"


def post_recovery_checks(
    destination: Destination,
    manifest: Manifest,
    params: DrParameters,
    settings: RunbookSettings,
    target: Target,
    previous: list[dr.DrillRecord],
    findings: Findings,
) -> list[CheckResult]:
    """§6.4 afterwards: health, performance against the previous drill, security."""
    restored = destination.dsn.get_secret_value()
    checks = check_health(restored, settings.connect_timeout)
    before = next((r.latencies_ms for r in previous if r.latencies_ms and r.outcome != "failed"), None)
    checks += dr.performance_checks(findings.latencies_ms, before, settings.dr.latency_regression_pct, settings.dr.latency_floor_ms)
    expected = manifest.security
    if expected is None and params.mode is Mode.DRILL:
        expected, _ = read_security(target.dsn, settings.connect_timeout)
        checks.append(CheckResult(name="security:source", ok=True, detail="backup predates security recording: compared with the live database", critical=False))
    elif expected is None:
        checks.append(CheckResult(name="security:source", ok=False, detail="backup predates security recording: only public write grants checked", critical=False))
    posture, roles = read_security(restored, settings.connect_timeout, (expected.roles if expected else []))
    checks += dr.security_checks(expected or dr.SecurityPosture(), posture, roles)
    return checks


# --------------------------------------------------------------------------- the flow


def scratch_suffix(run_id: Any) -> str:
    """A drill's scratch database ends with its flow run's id (first 12 hex digits), so
    a hook that only knows the run can find it; a random suffix outside a flow run."""
    return str(run_id).replace("-", "")[:12] if run_id else secrets.token_hex(6)


def _drop_abandoned_scratch(flow: Any, flow_run_: Any, state: Any) -> None:
    """On cancellation or crash: drop this run's drill scratch database (the flow's own
    clean-up may not have run), unless the run asked to keep it."""
    params = flow_run_.parameters.get("params") or {}
    if params.get("keep_restored") or params.get("mode", "drill") != "drill":
        return
    settings, target = prepare()
    server = scratch_server(settings, target.dsn).dsn.get_secret_value()
    pattern = f"runbook\\_drill\\_%\\_{scratch_suffix(flow_run_.id)}"
    for name in postgres.databases_like(server, pattern, connect_timeout=settings.connect_timeout):
        postgres.drop_database(server, name, connect_timeout=settings.connect_timeout)


@flow(name="disaster-recovery", on_cancellation=[_drop_abandoned_scratch], on_crashed=[_drop_abandoned_scratch])
@expected_failures
def disaster_recovery(params: DrParameters = DrParameters()) -> Any:
    """Disaster recovery (§6.4) as a drill or for real: emergency shutdown, restore the
    latest (or a chosen) backup, verify the data, bring the services back, test every
    function, then the health, performance and security checks. Measures RTO and RPO
    against §6.3 (4 h, 1 h) and fails a drill that misses either, saying by how much."""
    logger = get_run_logger()
    started_at = datetime.now(timezone.utc)
    settings, target = prepare()
    incident_at = check_parameters(params, settings, started_at)
    store = open_backup_store(target.store_url, settings.s3_endpoint_url, settings.backup.part_size_mb)
    database = postgres.database_name(target.dsn)
    manifests, _ = read_catalog_task(store, target.instance)  # this platform's backups only
    manifest = choose_backup(manifests, params, incident_at, settings.timezone)
    scratch = scratch_server(settings, target.dsn)
    destination = plan_destination(params, settings, target, manifest, scratch)
    pipeline = RestorePipeline(store, manifest, destination, settings)
    previous = read_drill_history(store, target.instance, settings.dr.history)
    platform_url = settings.dr.platform_url or (settings.platform_url if params.mode is Mode.RECOVER else None)
    logger.info("%s of %s from %s into %s", params.mode.value.title(), database, manifest.id, destination.name)

    worker = IntegrityWorker.shared()  # imports Great Expectations while the dump is restored
    timeline = dr.Timeline()
    findings = Findings()
    env = hook_env(destination, params.mode)
    with (
        database_slot(target.instance, job=f"disaster-recovery ({params.mode.value})", wait_seconds=settings.heavy_jobs.wait_seconds),
        postgres.session(destination.server.get_secret_value(), application="runbook disaster-recovery", connect_timeout=settings.connect_timeout, statement_timeout_s=60, autocommit=True) as lock,
    ):
        postgres.try_advisory_lock(lock, f"disaster-recovery of {database}")
        if params.mode is Mode.RECOVER:
            confirm_recovery(params, destination.name, settings)
        labelled = None
        try:
            if params.mode is Mode.DRILL:
                timeline.skip("shutdown", "a drill never touches the live platform")
            elif settings.dr.shutdown is None:
                timeline.skip("shutdown", "no maintenance-mode hook configured (RUNBOOK_DR__SHUTDOWN)")
            else:
                timeline.run("shutdown", emergency_shutdown, settings.dr.shutdown, env)
            timeline.run("restore", restore, pipeline, settings, findings)
            timeline.run("verify", verify_data, pipeline, worker, findings)
            if settings.dr.restore_services:
                timeline.run("restore-services", restore_services, settings.dr.restore_services, env)
            else:
                timeline.skip("restore-services", "no step configured (RUNBOOK_DR__RESTORE_SERVICES)")
            timeline.run("test-functions", test_functions, destination, settings, platform_url, findings)
            if timeline.failure is None:
                try:
                    findings.checks += post_recovery_checks(destination, manifest, params, settings, target, previous, findings)
                except Exception as err:  # noqa: BLE001 - a check that could not run is a failed check
                    findings.checks.append(CheckResult(name="post-recovery-checks", ok=False, detail=first_line(err)))
            record = measure(params, database, manifest, started_at, incident_at, timeline, findings, target.instance)
            # labelling the run goes on while the scratch database is dropped
            labelled = label_flow_run.submit(
                record.flow_run_id,
                dr.run_labels(backup_id=record.backup_id, outcome=record.outcome, rto=record.rto, rpo=record.rpo, phases=record.phases),
                [params.mode.value, *dr.run_tags(record.rto, record.rpo)],
            ) if record.flow_run_id else None
        finally:
            if findings.analyze is not None:
                findings.analyze.wait()
            if not params.keep_restored:
                pipeline.discard()
            if labelled is not None:
                # before the slot is given back: releasing it rewrites the run's tags, and
                # must not overwrite the ones the labelling adds
                labelled.wait()
    if params.mode is Mode.RECOVER:  # after the lock: the users may take their time
        record.acceptance, check = acceptance_test(params, record, settings.dr.acceptance_timeout_seconds)
        findings.checks.append(check)
        record.outcome = dr.drill_outcome(record.phases, findings.checks, record.rpo, record.rto)
    report = _report(record, findings, previous, store, destination, params, scratch if destination.scratch else None, settings.timezone)
    if labelled is not None:
        labelled.result()
    return report


def measure(
    params: DrParameters,
    database: str,
    manifest: Manifest,
    started_at: datetime,
    incident_at: datetime,
    timeline: dr.Timeline,
    findings: Findings,
    instance: str,
) -> dr.DrillRecord:
    """RPO and RTO against their targets, and the record of the run."""
    rpo = dr.judge("RPO", dr.achieved_rpo(incident_at, manifest.snapshot_at or manifest.started_at), timedelta(minutes=params.rpo_target_minutes))
    rto_achieved = dr.achieved_rto(incident_at, timeline.timings, dr.LAST_PHASE)
    rto = dr.judge("RTO", rto_achieved, timedelta(minutes=params.rto_target_minutes)) if rto_achieved is not None else None
    run_id = f"{'drill' if params.mode is Mode.DRILL else 'recovery'}_{started_at:%Y%m%d_%H%M%S}_{secrets.token_hex(2)}"
    return dr.DrillRecord(
        run_id=run_id,
        mode=params.mode.value,
        database=database,
        instance=instance,
        backup_id=manifest.id,
        started_at=started_at,
        incident_at=incident_at,
        outcome=dr.drill_outcome(timeline.timings, findings.checks, rpo, rto),
        rpo=rpo,
        rto=rto,
        phases=timeline.timings,
        restored_bytes=findings.restored_bytes,
        restore_seconds=timeline.phases["restore"].seconds,
        latencies_ms=findings.latencies_ms,
        flow_run_id=str(flow_run.get_id() or ""),
    )


def original_notes(destination: Destination) -> list[str]:
    """What became of a replaced database, for the report."""
    if destination.put_back:
        return [f"the restore failed after {destination.name} was moved aside: it was put back, unchanged"]
    if destination.still_aside:
        return [f"the previous {destination.name} is kept as {destination.still_aside} (nothing was dropped)"]
    if destination.move_aside and not destination.moved:
        return [f"{destination.name} was not touched"]
    return []


def _report(
    record: dr.DrillRecord,
    findings: Findings,
    previous: list[dr.DrillRecord],
    store: BackupStore,
    destination: Destination,
    params: DrParameters,
    scratch: RestoreServer | None,
    zone: str,
) -> Any:
    """Record the run (store, artifacts) and end it Completed or Failed."""
    logger = get_run_logger()
    record_drill(store, record)
    rto_target = timedelta(minutes=params.rto_target_minutes)
    kept = destination.scratch and params.keep_restored
    notes = original_notes(destination)
    if record.acceptance:
        notes.append(f"user acceptance test: {record.acceptance['status']}: {record.acceptance['detail']}")
    if scratch is not None and scratch.note:
        notes.append(scratch.note)
    create_table_artifact(
        key=artifact_key("dr-history", record.instance or record.database),
        table=dr.history_rows([record, *previous], zone),
        description=f"Drills and recoveries of {record.database}, newest first",
    )
    create_markdown_artifact(
        key=artifact_key("dr-report", record.instance or record.database),
        markdown=dr.report_markdown(record, findings.checks, previous, rto_target, destination.name, kept, notes=notes, zone=zone),
        description=f"{record.mode} of {record.database}: {record.outcome}",
    )
    report = {
        **record.model_dump(mode="json"),
        "restored_into": destination.name,
        "kept": kept or not destination.scratch,
        "moved_aside": destination.still_aside,
        "put_back": destination.put_back,
        "restore_server": scratch.source if scratch is not None else "recovery-target",
        "notes": notes,
        "checks": [check.model_dump() for check in findings.checks],
        "failed": [check.name for check in failed(findings.checks)],
        "phase_seconds": {p.name: round(p.seconds, 2) for p in record.phases},
    }
    problems = []
    failure = next((p for p in record.phases if p.status is dr.PhaseStatus.FAILED), None)
    if failure is not None:
        problems.append(f"phase {failure.name} failed: {failure.detail}")
    critical = failed(findings.checks, critical_only=True)
    if critical and failure is None:
        problems.append("checks failed: " + describe(critical, 5))
    if not record.rpo.ok:
        problems.append(record.rpo.message)
    if record.rto is not None and not record.rto.ok:
        problems.append(record.rto.message)
    if problems:
        report["message"] = f"{record.mode} of {record.database} from {record.backup_id} failed: " + "; ".join(problems)
        logger.error(report["message"])
        return Failed(message=report["message"], data=report)
    rto_text = record.rto.message if record.rto else ""
    report["message"] = f"{record.mode} of {record.database} from {record.backup_id} {record.outcome}: {record.rpo.message}; {rto_text}"
    if scratch is not None and scratch.production:
        report["message"] += f"; on {scratch.place}"
    return Completed(message=report["message"], data=report)
