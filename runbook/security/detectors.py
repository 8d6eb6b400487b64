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

from pydantic import BaseModel, Field, field_validator, model_validator

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
    ratio: float | None = Field(
        None, gt=0, le=1, description="Fire on the share of ratio_where events among at least `threshold` events in a window "
        "(401/429 ratios), instead of on the count.")
    ratio_where: dict[str, Any] = Field(default_factory=dict, description="The events that count towards the ratio.")
    severity: Severity = Severity.warning
    summary: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.fullmatch(value):
            raise ValueError(f"detector name {value!r}: use lowercase letters, digits and dashes")
        return value

    @field_validator("where", "ratio_where")
    @classmethod
    def _values(cls, value: dict[str, Any]) -> dict[str, Any]:
        for field, wanted in value.items():
            if isinstance(wanted, list) and not wanted:
                raise ValueError(f"where {field}: an empty list matches nothing")
            if isinstance(wanted, (dict, set)):
                raise ValueError(f"where {field}: a value or a list of values")
        return value

    @model_validator(mode="after")
    def _ratio(self) -> "Detector":
        if (self.ratio is None) != (not self.ratio_where):
            raise ValueError(f"detector {self.name}: ratio and ratio_where go together")
        if self.ratio is not None and self.distinct:
            raise ValueError(f"detector {self.name}: ratio and distinct cannot be combined")
        return self

    @property
    def window(self) -> timedelta:
        return timedelta(minutes=self.window_minutes)


class SpikeDetector(BaseModel):
    """Matching events in the last ``window_minutes`` against the same window on each of
    the previous ``days`` days (auth-failure spikes): fires when the count reaches
    ``min_count`` and ``factor`` times the baseline's mean."""

    name: str
    source: Source
    where: dict[str, Any] = Field(default_factory=dict)
    window_minutes: float = Field(60, gt=0, le=24 * 60)
    days: int = Field(7, ge=1, le=28)
    factor: float = Field(3.0, gt=1)
    min_count: int = Field(50, ge=1)
    severity: Severity = Severity.warning
    summary: str = ""

    _name = field_validator("name")(Detector._name.__func__)  # type: ignore[attr-defined]

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
    note: str = ""

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
    Detector(name="api-refused-ratio", source="api", group_by=("key",), window_minutes=10, threshold=100, ratio=0.5,
             ratio_where={"status": [401, 429]}, severity=Severity.warning,
             summary="§5: most of one API key's requests are refused (401) or throttled (429)."),
    Detector(name="critical-security-event", source="security", where={"severity": "CRITICAL"}, group_by=("type",),
             window_minutes=5, threshold=1, severity=Severity.critical, summary="§5.1: a CRITICAL security event."),
)

DEFAULT_SPIKES: tuple[SpikeDetector, ...] = (
    SpikeDetector(name="auth-failure-spike", source="auth", where={"success": False}, window_minutes=60, days=7, factor=3.0,
                  min_count=50, severity=Severity.warning,
                  summary="§5.1: failed logins far above the same hour of the previous days."),
)


def _matches(event: Event, where: dict[str, Any]) -> bool:
    return all(event.fields.get(k) in v if isinstance(v, list) else event.fields.get(k) == v for k, v in where.items())


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
    if detector.ratio is not None:
        return _densest_ratio(ordered, detector)
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


def _densest_ratio(ordered: list[Event], detector: Detector) -> tuple[int, list[Event]] | None:
    """The window of at least ``threshold`` events with the highest share of
    ``ratio_where`` events, if that share reaches ``ratio``; its count is the number
    of those events."""
    assert detector.ratio is not None
    best: tuple[float, int, int, int] | None = None  # share, hits, start, end (exclusive)
    hits = start = 0
    flags = [_matches(e, detector.ratio_where) for e in ordered]
    for end, event in enumerate(ordered):
        hits += flags[end]
        while event.at - ordered[start].at >= detector.window:
            hits -= flags[start]
            start += 1
        total = end - start + 1
        if total >= detector.threshold:
            share = hits / total
            if best is None or (share, hits) > (best[0], best[1]):
                best = (share, hits, start, end + 1)
    if best is None or best[0] < detector.ratio:
        return None
    return best[1], ordered[best[2]:best[3]]


def spike(detector: SpikeDetector, current: int, baseline: list[int]) -> tuple[bool, float]:
    """Whether ``current`` (this window's count) is a spike against ``baseline`` (the same
    window on each previous day), and the baseline's mean."""
    mean = sum(baseline) / len(baseline) if baseline else 0.0
    return current >= detector.min_count and current >= detector.factor * mean, mean


def new_offence(first_at: datetime, last_evidence_at: datetime | None, gap: timedelta) -> bool:
    """A finding is a new offence when its evidence starts more than ``gap`` after the
    previous finding's evidence ended: a continuing attack is one offence, not one per run."""
    return last_evidence_at is None or first_at > last_evidence_at + gap


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
