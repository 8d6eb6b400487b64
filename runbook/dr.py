"""Pure arithmetic of disaster recovery (runbook §6.3–§6.4): achieved RPO and RTO
against their targets, per-phase timings, the projection of restore time to the data
sizes of §7.1, and the scalar labels and tags a drill leaves on its flow run.
Plain data in, plain data out; no I/O."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field

from runbook.checks import CheckResult, checks_markdown, failed
from runbook.schema import SecurityPosture, TableSecurity
from runbook.times import show

GB = 1000**3
DEFAULT_RTO = timedelta(hours=4)
DEFAULT_RPO = timedelta(hours=1)
SIZES_OF_7_1 = (("now", 100 * GB), ("projected", 1000 * GB))  # §7.1: data 100 GB now, 1,000 GB projected


class PhaseStatus(str, Enum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    NOT_RUN = "not-run"


class PhaseTiming(BaseModel):
    """One named phase of §6.4 and when it ran."""

    name: str
    status: PhaseStatus
    started_at: datetime | None = None
    finished_at: datetime | None = None
    detail: str = ""

    @property
    def seconds(self) -> float:
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return (self.finished_at - self.started_at).total_seconds()


class Verdict(BaseModel):
    """An achieved duration against its target."""

    name: str
    achieved_seconds: float
    target_seconds: float
    ok: bool
    message: str = Field(description="One line for the report and the run's final message.")


def human_duration(seconds: float) -> str:
    """3725 -> '1h02m05s'; 42.5 -> '42.5s'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def judge(name: str, achieved: timedelta, target: timedelta) -> Verdict:
    """Within target, or breached and by how much."""
    achieved_s, target_s = achieved.total_seconds(), target.total_seconds()
    if achieved_s < 0:
        raise ValueError(f"{name} cannot be negative ({achieved_s:.0f} s): is the incident time before the backup?")
    ok = achieved_s <= target_s
    if ok:
        message = f"{name} {human_duration(achieved_s)} within the {human_duration(target_s)} target ({human_duration(target_s - achieved_s)} to spare)"
    else:
        message = f"{name} {human_duration(achieved_s)} breaches the {human_duration(target_s)} target by {human_duration(achieved_s - target_s)}"
    return Verdict(name=name, achieved_seconds=achieved_s, target_seconds=target_s, ok=ok, message=message)


def achieved_rpo(incident_at: datetime, snapshot_at: datetime) -> timedelta:
    """Data lost if the platform failed at ``incident_at``: back to the backup's snapshot."""
    return incident_at - snapshot_at


def achieved_rto(incident_at: datetime, phases: list[PhaseTiming], last_phase: str) -> timedelta | None:
    """Time from the incident to the end of ``last_phase`` (phase 5, test every function);
    None when that phase did not finish."""
    for phase in phases:
        if phase.name == last_phase and phase.status is PhaseStatus.OK and phase.finished_at is not None:
            return phase.finished_at - incident_at
    return None


class Projection(BaseModel):
    label: str
    size_bytes: int
    restore_seconds: float
    exceeds_rto: bool


def project_restore(
    restored_bytes: int, restore_seconds: float, rto: timedelta, sizes: tuple[tuple[str, int], ...] = SIZES_OF_7_1
) -> list[Projection]:
    """Restore time alone at other data sizes, from the measured throughput (linear: a
    floor, since indexes grow faster than linearly), and whether it would exceed the RTO."""
    if restored_bytes <= 0 or restore_seconds <= 0:
        return []
    per_byte = restore_seconds / restored_bytes
    return [
        Projection(
            label=label,
            size_bytes=size,
            restore_seconds=size * per_byte,
            exceeds_rto=size * per_byte > rto.total_seconds(),
        )
        for label, size in sizes
    ]


def largest_restorable(restored_bytes: int, restore_seconds: float, rto: timedelta) -> int | None:
    """The data size whose restore alone would take the whole RTO at the measured rate."""
    if restored_bytes <= 0 or restore_seconds <= 0:
        return None
    return int(rto.total_seconds() * restored_bytes / restore_seconds)


def run_labels(
    *, backup_id: str, outcome: str, rto: Verdict | None, rpo: Verdict, phases: list[PhaseTiming]
) -> dict[str, str | int | float | bool]:
    """Flow-run labels: scalars only (a nested value makes the run unreadable in Prefect)."""
    labels: dict[str, str | int | float | bool] = {
        "backup_id": backup_id,
        "outcome": outcome,
        "rpo_seconds": round(rpo.achieved_seconds, 1),
        "rpo_ok": rpo.ok,
    }
    if rto is not None:
        labels["rto_seconds"] = round(rto.achieved_seconds, 1)
        labels["rto_ok"] = rto.ok
    for phase in phases:
        labels[f"phase_{phase.name.replace('-', '_')}_seconds"] = round(phase.seconds, 1)
    return labels


def run_tags(rto: Verdict | None, rpo: Verdict) -> list[str]:
    """Tags the server can filter on: rto-ok / rto-breached, rpo-ok / rpo-breached."""
    tags = ["rpo-ok" if rpo.ok else "rpo-breached"]
    tags.append("rto-ok" if rto is not None and rto.ok else "rto-breached")
    return tags


# --------------------------------------------------------------------------- phases

PHASES = ("shutdown", "restore", "verify", "restore-services", "test-functions")  # §6.4 steps 1-5
LAST_PHASE = PHASES[-1]


class PhaseFailed(Exception):
    """Raised by a phase to fail with a message (the phases after it are not run)."""


class Timeline:
    """Runs the phases in order, timing each; once one fails, the rest are recorded
    as not run. A phase function returns its one-line detail, or raises."""

    def __init__(self, names: tuple[str, ...] = PHASES, clock: Callable[[], datetime] | None = None) -> None:
        from datetime import timezone

        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.phases = {name: PhaseTiming(name=name, status=PhaseStatus.NOT_RUN) for name in names}
        self.failure: PhaseTiming | None = None

    def skip(self, name: str, reason: str) -> None:
        now = self.clock()
        if self.failure is None:
            self.phases[name] = PhaseTiming(name=name, status=PhaseStatus.SKIPPED, started_at=now, finished_at=now, detail=reason)

    def run(self, name: str, fn: Callable[..., str], *args: object, **kwargs: object) -> bool:
        """Run one phase; False if it failed or an earlier one had."""
        if self.failure is not None:
            self.phases[name] = PhaseTiming(name=name, status=PhaseStatus.NOT_RUN, detail=f"not run: {self.failure.name} failed")
            return False
        started = self.clock()
        try:
            detail = fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - a failed phase is reported, not raised
            text = str(err).strip()
            self.phases[name] = PhaseTiming(
                name=name, status=PhaseStatus.FAILED, started_at=started, finished_at=self.clock(),
                detail=text.splitlines()[0] if text else type(err).__name__,
            )
            self.failure = self.phases[name]
            return False
        self.phases[name] = PhaseTiming(name=name, status=PhaseStatus.OK, started_at=started, finished_at=self.clock(), detail=detail)
        return True

    @property
    def timings(self) -> list[PhaseTiming]:
        return list(self.phases.values())


# --------------------------------------------------------------------------- post-recovery checks


def security_checks(expected: SecurityPosture, restored: SecurityPosture, roles_present: set[str]) -> list[CheckResult]:
    """§6.4 security: RLS and policies where the source had them, the roles grants name
    exist, every grant came back, and no write grant to PUBLIC appeared."""
    checks: list[CheckResult] = []
    lost_rls = [t for t, s in expected.tables.items() if s.rls and not restored.tables.get(t, TableSecurity()).rls]
    with_rls = sum(1 for s in expected.tables.values() if s.rls)
    checks.append(
        CheckResult(
            name="security:row-level-security",
            ok=not lost_rls,
            detail=f"disabled on {', '.join(lost_rls)}" if lost_rls else f"enabled on the {with_rls} tables that had it",
        )
    )
    lost_policies = [
        f"{t}.{p}" for t, s in expected.tables.items() for p in s.policies if p not in restored.tables.get(t, TableSecurity()).policies
    ]
    checks.append(
        CheckResult(
            name="security:policies",
            ok=not lost_policies,
            detail=f"missing {', '.join(lost_policies[:10])}" if lost_policies else f"{sum(len(s.policies) for s in expected.tables.values())} policies present",
        )
    )
    missing_roles = sorted(set(expected.roles) - roles_present)
    checks.append(
        CheckResult(
            name="security:roles",
            ok=not missing_roles,
            detail=f"missing on the server: {', '.join(missing_roles)} (restore the cluster's roles first: pg_dumpall --roles-only)"
            if missing_roles
            else f"{len(expected.roles)} roles present",
        )
    )
    lost_grants = [
        f"{t} {g}" for t, s in expected.tables.items() for g in s.grants if g not in restored.tables.get(t, TableSecurity()).grants
    ]
    checks.append(
        CheckResult(
            name="security:grants",
            ok=not lost_grants,
            detail=f"{len(lost_grants)} not restored: {', '.join(lost_grants[:5])}"
            if lost_grants
            else f"{sum(len(s.grants) for s in expected.tables.values())} grants restored",
        )
    )
    writes = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")
    new_public = [
        f"{t} {g}"
        for t, s in restored.tables.items()
        for g in s.grants
        if g.startswith("PUBLIC:") and g.split(":", 1)[1] in writes and g not in expected.tables.get(t, TableSecurity()).grants
    ]
    checks.append(
        CheckResult(
            name="security:no-new-public-writes",
            ok=not new_public,
            detail=f"PUBLIC may now write: {', '.join(new_public[:5])}" if new_public else "no new write grant to PUBLIC",
        )
    )
    return checks


def performance_checks(
    latencies_ms: dict[str, float], previous_ms: dict[str, float] | None, regression_pct: float, floor_ms: float
) -> list[CheckResult]:
    """Each smoke query's latency against the previous drill's: a warning when it is
    more than ``regression_pct`` % slower and above ``floor_ms`` (below it is noise)."""
    if not previous_ms:
        return [CheckResult(name="performance", ok=True, detail="no previous drill to compare with", critical=False)]
    checks = []
    for name, now_ms in latencies_ms.items():
        before = previous_ms.get(name)
        if before is None:
            checks.append(CheckResult(name=f"performance:{name}", ok=True, detail=f"{now_ms:.1f} ms (new query)", critical=False))
            continue
        slower = before > 0 and now_ms > before * (1 + regression_pct / 100) and now_ms > floor_ms
        change = (now_ms - before) / before * 100 if before else 0.0
        checks.append(
            CheckResult(
                name=f"performance:{name}",
                ok=not slower,
                detail=f"{now_ms:.1f} ms vs {before:.1f} ms in the previous drill ({change:+.0f} %)",
                critical=False,
            )
        )
    return checks


# --------------------------------------------------------------------------- the record of a run


class DrillRecord(BaseModel):
    """What one drill or recovery measured; kept in the backup store beside the
    backups (``<instance>/drills/``) so the next run can compare with it."""

    run_id: str
    mode: str
    database: str
    instance: str = ""  # the store folder (empty in older records: the database name)
    backup_id: str
    started_at: datetime
    incident_at: datetime
    outcome: str
    rpo: Verdict
    rto: Verdict | None = None
    phases: list[PhaseTiming]
    restored_bytes: int = 0
    restore_seconds: float = 0.0
    latencies_ms: dict[str, float] = Field(default_factory=dict)
    flow_run_id: str = ""
    acceptance: dict[str, Any] | None = None  # a recovery's user acceptance test: status, by, tried, detail

    @property
    def throughput_mb_s(self) -> float:
        return self.restored_bytes / 1e6 / self.restore_seconds if self.restore_seconds else 0.0


def drill_outcome(phases: list[PhaseTiming], checks: list[CheckResult], rpo: Verdict, rto: Verdict | None) -> str:
    if any(p.status is PhaseStatus.FAILED for p in phases) or failed(checks, critical_only=True):
        return "failed"
    if not rpo.ok or rto is None or not rto.ok:
        return "failed"
    return "passed-with-warnings" if failed(checks) else "passed"


def history_rows(records: list[DrillRecord], zone: str = "UTC") -> list[dict[str, str | float]]:
    """The table artifact: one row per run, newest first, scalars only; times in
    ``zone`` (the team's) with their offset."""
    rows = []
    for record in sorted(records, key=lambda r: r.started_at, reverse=True):
        row: dict[str, str | float] = {
            "started": show(record.started_at, zone).replace("T", " "),
            "mode": record.mode,
            "backup": record.backup_id,
            "outcome": record.outcome,
            "rpo": human_duration(record.rpo.achieved_seconds),
            "rto": human_duration(record.rto.achieved_seconds) if record.rto else "-",
        }
        for phase in record.phases:
            row[phase.name] = human_duration(phase.seconds) if phase.status is PhaseStatus.OK else phase.status.value
        row["restore MB/s"] = round(record.throughput_mb_s, 1)
        if record.mode == "recover":
            row["user acceptance"] = (record.acceptance or {}).get("detail", "not recorded")
        rows.append(row)
    return rows


def report_markdown(
    record: DrillRecord,
    checks: list[CheckResult],
    previous: list[DrillRecord],
    rto_target: timedelta,
    target_database: str,
    kept: bool,
    notes: list[str] | None = None,
    zone: str = "UTC",
) -> str:
    """The run's report: verdicts, notes (where the restore ran, what became of a
    replaced database), the phase timeline, the checks, the last drills side by side
    and the RTO projected to the data sizes of §7.1. Times in ``zone`` (the team's), with their offset."""
    title = "Disaster-recovery drill" if record.mode == "drill" else "Disaster recovery"
    lines = [
        f"# {title} of `{record.database}`: {record.outcome}",
        "",
        f"- backup `{record.backup_id}`, restored into `{target_database}`"
        + (" (kept)" if kept else (" (dropped at the end)" if record.mode == "drill" else "")),
        f"- incident time {show(record.incident_at, zone)}, run started {show(record.started_at, zone)}",
        f"- {record.rpo.message}",
        f"- {record.rto.message}" if record.rto else "- RTO not achieved: the phases did not reach the end of step 5",
        *(f"- **{note}**" for note in notes or []),
        "",
        "## Phases (§6.4)",
        "",
        f"| # | phase | status | started ({show(record.started_at, zone)[-6:]}) | seconds | detail |",
        "|---|---|---|---|---|---|",
    ]
    for number, phase in enumerate(record.phases, 1):
        started = show(phase.started_at, zone)[11:19] if phase.started_at else "-"
        detail = phase.detail.replace("|", "\\|")
        lines.append(f"| {number} | {phase.name} | {phase.status.value} | {started} | {phase.seconds:.1f} | {detail} |")
    if checks:
        lines += ["", "## Checks", "", checks_markdown(checks)]
    if record.restore_seconds > 0 and record.restored_bytes > 0:
        lines += [
            "",
            f"## Projection (restore at {record.throughput_mb_s:.1f} MB/s measured)",
            "",
            "| data size (§7.1) | restore alone | within the RTO? |",
            "|---|---|---|",
        ]
        for p in project_restore(record.restored_bytes, record.restore_seconds, rto_target):
            verdict = f"no: exceeds {human_duration(rto_target.total_seconds())}" if p.exceeds_rto else "yes"
            lines.append(f"| {p.label}: {p.size_bytes / GB:,.0f} GB | {human_duration(p.restore_seconds)} | {verdict} |")
        largest = largest_restorable(record.restored_bytes, record.restore_seconds, rto_target)
        if largest is not None:
            lines.append("")
            lines.append(
                f"Restore time alone would exceed the {human_duration(rto_target.total_seconds())} RTO beyond about "
                f"{largest / GB:,.0f} GB (linear; indexes make it a floor)."
            )
    runs = [record, *previous]
    if len(runs) > 1:
        lines += ["", "## Last runs side by side", ""]
        rows = history_rows(runs, zone)
        columns = list(rows[0])
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        for row in rows:
            lines.append("| " + " | ".join(str(row.get(c, "-")) for c in columns) + " |")
    return "\n".join(lines)
