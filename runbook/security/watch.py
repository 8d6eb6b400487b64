"""The decisions of ``security-watch`` (§5.1), without I/O: which stretch of events a run
reads, which findings are new evidence, how a finding becomes an alert sample, and the
repeat-offender arithmetic (doubling block suggestions, decaying counts).

A run covers ``[since, until)``: ``since`` is the previous run's ``until`` (the
checkpoint), ``until`` the run's clock. Windowed detectors read from ``since`` minus
their window, so an attack that straddles two runs is seen whole, and report a group
only when its evidence reaches past ``since`` (new events). The same events and the
same ``[since, until)`` always give the same findings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from runbook.alerting.model import Sample, Severity
from runbook.security.detectors import Finding, block_duration, decayed_offences, new_offence

METRIC = {Severity.critical: "security_critical_findings", Severity.warning: "security_warning_findings"}
RULES = ("security-critical", "security-warning")


@dataclass(frozen=True)
class Span:
    since: datetime
    until: datetime
    first_run: bool
    clipped: timedelta | None  # how much older backlog was left unread (a watch that was down for long)


def plan_span(checkpoint: datetime | None, now: datetime, *, lookback: timedelta, max_catchup: timedelta,
              since: datetime | None = None, until: datetime | None = None) -> Span:
    """The stretch this run reads: an explicit replay (``since``/``until``), else from
    the checkpoint (the first run: ``lookback``) to ``now``, at most ``max_catchup`` long."""
    end = until or now
    if since is not None:
        if since >= end:
            raise ValueError(f"since {since.isoformat()} is not before until {end.isoformat()}")
        return Span(since, end, False, None)
    start = checkpoint if checkpoint is not None else end - lookback
    clipped = None
    if end - start > max_catchup:
        clipped = end - max_catchup - start
        start = end - max_catchup
    return Span(min(start, end), end, checkpoint is None, clipped)


def resource(finding: Finding) -> str:
    """The alert's resource: the detector and the group, e.g. ``brute-force ip=1.2.3.4``."""
    return f"{finding.detector} {finding.resource}"


@dataclass
class Offence:
    ip: str
    offences: int
    suggested: timedelta
    new: bool


def apply_offence(previous: dict[str, Any] | None, finding: Finding, gap: timedelta, *, quiet: timedelta,
                  base: timedelta, cap: timedelta) -> Offence:
    """The offence count of the finding's address after this finding (decayed on the
    events' own times) and the block it suggests (base, 2x, 4x ... up to cap)."""
    ip = str(finding.group["ip"])
    last_evidence = previous["last_evidence_at"] if previous else None
    count = decayed_offences(previous["offences"], previous["last_offence_at"], finding.first_at, quiet) if previous else 0
    is_new = new_offence(finding.first_at, last_evidence, gap)
    count = count + 1 if is_new else max(count, 1)
    return Offence(ip=ip, offences=count, suggested=block_duration(count, base, cap), new=is_new)


def describe(finding: Finding, offence: Offence | None, zone_fmt: str = "%H:%M:%S") -> str:
    """What the notification says: the evidence, and for an address the suggested block."""
    what = "distinct values" if finding.detector.startswith("credential") else "events"
    text = (f"{finding.detector}: {finding.count} {what} for {finding.resource} between "
            f"{finding.first_at.strftime(zone_fmt)} and {finding.last_at.strftime(zone_fmt)} UTC")
    if finding.note:
        text += f" ({finding.note})"
    if offence is not None:
        minutes = int(offence.suggested.total_seconds() // 60)
        text += (f"; offence {offence.offences}: suggested `runbook block-ip {offence.ip} --minutes {minutes} --by <you> "
                 f"--reason \"{finding.detector}\"`")
    return text


def samples(findings: list[tuple[Finding, str]], active: dict[str, set[str]]) -> list[Sample]:
    """One alert sample per finding (value: its count) and a zero for every alert of these
    rules still active whose resource has no finding now, so that it resolves."""
    out = [Sample(metric=METRIC[f.severity], resource=resource(f), value=float(f.count), detail=detail) for f, detail in findings]
    seen = {(s.metric, s.resource) for s in out}
    for rule, resources in active.items():
        metric = METRIC[Severity.critical if rule == "security-critical" else Severity.warning]
        for res in sorted(resources):
            if (metric, res) not in seen:
                out.append(Sample(metric=metric, resource=res, value=0.0, detail="no new evidence in this run"))
    return out
