"""Detectors as data (fail2ban's findtime/maxretry, CrowdSec's leaky buckets grouped by
IP with ``distinct`` counting), evaluated on the events' own timestamps, never on the
clock: replaying the same events always gives the same findings.

A detector counts the events of one source that match ``where``, grouped by
``group_by``, within any window of ``window_minutes``; it fires for a group when the
count (or, with ``distinct``, the number of distinct values of that field) reaches
``threshold`` in some window. Each finding carries its evidence: the count, the first
and last time of the densest window, and sample events.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from runbook.alerting.model import Severity

Source = Literal["auth", "api", "security"]
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class Event(BaseModel):
    """One record of a source, its fields by name (``at``: its own time)."""

    at: datetime
    fields: dict[str, Any]


class Detector(BaseModel):
    name: str
    source: Source
    where: dict[str, Any] = Field(default_factory=dict, description="Fields that must equal these values.")
    group_by: tuple[str, ...] = Field(("ip",), min_length=1)
    window_minutes: float = Field(gt=0, le=7 * 24 * 60)
    threshold: int = Field(ge=1)
    distinct: str | None = Field(None, description="Count distinct values of this field (credential stuffing: user).")
    severity: Severity = Severity.warning
    summary: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.fullmatch(value):
            raise ValueError(f"detector name {value!r}: use lowercase letters, digits and dashes")
        return value

    @property
    def window(self) -> timedelta:
        return timedelta(minutes=self.window_minutes)


class Finding(BaseModel):
    detector: str
    group: dict[str, Any]
    count: int
    first_at: datetime
    last_at: datetime
    samples: list[dict[str, Any]]
    severity: Severity

    @property
    def resource(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.group.items())


DEFAULT_DETECTORS: tuple[Detector, ...] = (
    Detector(name="brute-force", source="auth", where={"success": False}, group_by=("ip",), window_minutes=10, threshold=20,
             severity=Severity.critical, summary="§5: many failed logins from one address."),
    Detector(name="credential-stuffing", source="auth", where={"success": False}, group_by=("ip",), window_minutes=30,
             threshold=10, distinct="user", severity=Severity.critical,
             summary="§5: failed logins for many different users from one address."),
    Detector(name="api-abuse-key", source="api", group_by=("key",), window_minutes=1, threshold=600, severity=Severity.warning,
             summary="§5: one API key far above its normal rate."),
    Detector(name="api-abuse-ip", source="api", group_by=("ip",), window_minutes=1, threshold=600, severity=Severity.warning,
             summary="§5: one address far above the normal rate."),
    Detector(name="api-unauthorized", source="api", where={"status": 401}, group_by=("ip",), window_minutes=10, threshold=50,
             severity=Severity.warning, summary="§5: many refused requests (401) from one address."),
)


def _matches(event: Event, where: dict[str, Any]) -> bool:
    return all(event.fields.get(k) == v for k, v in where.items())


def detect(detector: Detector, events: Iterable[Event], *, samples: int = 5) -> list[Finding]:
    """The groups for which some window of the detector's length reaches its threshold,
    each with the densest such window as evidence. Deterministic: the same events give
    the same findings, in the same order."""
    groups: dict[tuple[Any, ...], list[Event]] = defaultdict(list)
    for event in events:
        if _matches(event, detector.where):
            groups[tuple(event.fields.get(k) for k in detector.group_by)].append(event)
    findings = []
    for key in sorted(groups, key=lambda k: tuple(str(v) for v in k)):
        found = _densest(sorted(groups[key], key=lambda e: (e.at, json.dumps(e.fields, sort_keys=True, default=str))), detector)
        if found is None:
            continue
        count, window = found
        findings.append(Finding(
            detector=detector.name, group=dict(zip(detector.group_by, key)), count=count, first_at=window[0].at,
            last_at=window[-1].at, samples=[{"at": e.at.isoformat(), **e.fields} for e in window[:samples]], severity=detector.severity,
        ))
    return findings


def _densest(ordered: list[Event], detector: Detector) -> tuple[int, list[Event]] | None:
    """Two pointers over the events in time order: the largest count (or distinct
    count) within any window of the detector's length, if it reaches the threshold."""
    best: tuple[int, int, int] | None = None  # count, start, end (exclusive)
    seen: Counter[Any] = Counter()
    start = 0
    for end, event in enumerate(ordered):
        if detector.distinct:
            seen[event.fields.get(detector.distinct)] += 1
        while event.at - ordered[start].at >= detector.window:
            if detector.distinct:
                gone = ordered[start].fields.get(detector.distinct)
                seen[gone] -= 1
                if not seen[gone]:
                    del seen[gone]
            start += 1
        count = len(seen) if detector.distinct else end - start + 1
        if best is None or count > best[0]:
            best = (count, start, end + 1)
    if best is None or best[0] < detector.threshold:
        return None
    return best[0], ordered[best[1]:best[2]]


# --------------------------------------------------------------------------- repeat offenders


def decayed_offences(offences: int, last_offence_at: datetime | None, now: datetime, quiet: timedelta) -> int:
    """The offence count after decay: one offence is forgiven per full ``quiet`` period
    since the last one (counts that never decay are what fail2ban users complain of)."""
    if last_offence_at is None or offences <= 0:
        return 0
    periods = int((now - last_offence_at) / quiet) if now > last_offence_at else 0
    return max(0, offences - periods)


def block_duration(offences: int, base: timedelta, cap: timedelta) -> timedelta:
    """The suggested block for the ``offences``-th offence: base, 2x, 4x ... up to ``cap``."""
    if offences < 1:
        raise ValueError("an offence count starts at 1")
    return min(cap, base * (2 ** min(offences - 1, 30)))
