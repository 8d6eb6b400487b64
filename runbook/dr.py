"""Pure arithmetic of disaster recovery (runbook §6.3–§6.4): achieved RPO and RTO
against their targets, per-phase timings, the projection of restore time to the data
sizes of §7.1, and the scalar labels and tags a drill leaves on its flow run.
Plain data in, plain data out; no I/O."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum

from pydantic import BaseModel, Field

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
