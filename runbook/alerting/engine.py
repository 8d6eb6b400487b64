"""The alert state machine, pure: one evaluation of one rule on one resource.

    inactive --breach--> pending --`for` breaches--> firing --clear--> inactive
                 (a clear while pending: a blip, nothing is sent)

A rule's ``keep_firing_minutes`` holds a firing alert until the signal has been clear
that long (a breach in between starts the wait again), as Prometheus' keep_firing_for.

Notifications, as Alertmanager and PagerDuty do them:
- the first firing notifies once (its dedup key names the alert's episode), then again
  every ``repeat_interval`` while it fires, and "resolved" when it clears, but only
  when the firing was told (a silenced firing resolves quietly);
- a silence or an inhibition holds notifications back; when it ends while the alert
  still fires, the alert notifies at once (not at the next repeat);
- an alert that flips firing<->resolved more than ``flap_changes`` times within
  ``flap_window`` sends one "flapping" notice, then nothing until it has been stable
  for ``flap_window``; then it says where it settled.
- no value (the source did not answer) keeps the state as it was: never a resolve.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from runbook.alerting.model import Severity
from runbook.alerting.rules import Rule

Status = Literal["inactive", "pending", "firing"]


class Policy(BaseModel):
    """Timing of notifications (RUNBOOK_ALERTS__...)."""

    repeat_interval: timedelta = timedelta(hours=4)
    flap_changes: int = 4
    flap_window: timedelta = timedelta(minutes=30)


class AlertState(BaseModel):
    """What is stored of one alert (rule + resource) between evaluations."""

    fingerprint: str
    rule: str
    resource: str
    severity: Severity
    status: Status = "inactive"
    breaches: int = 0
    active_since: datetime | None = Field(None, description="First breach of this episode: when the signal started.")
    firing_since: datetime | None = None
    clear_since: datetime | None = Field(None, description="A firing alert kept firing: the first clear evaluation since its last breach.")
    episode: int = Field(0, description="Counts firings: part of each notification's dedup key.")
    told: bool = Field(False, description="This episode's firing was notified.")
    last_notified_at: datetime | None = None
    repeats: int = 0
    last_value: float | None = None
    last_detail: str = Field("", description="What the collector saw, for the notification.")
    last_evaluated_at: datetime | None = None
    flips: list[datetime] = Field(default_factory=list)
    flapping: bool = False
    suppressed: str | None = Field(None, description="'silenced by #3', 'inhibited by database-down', or None.")


class Notice(BaseModel):
    """A notification the evaluation asks for; the ledger turns it into deliveries."""

    kind: Literal["firing", "repeat", "resolved", "flapping", "stable"]
    fingerprint: str
    dedup_key: str
    detail: str = ""


def fingerprint(rule: str, resource: str) -> str:
    return f"{rule}|{resource}"


def new_state(rule: Rule, resource: str) -> AlertState:
    return AlertState(fingerprint=fingerprint(rule.name, resource), rule=rule.name, resource=resource, severity=rule.severity)


def evaluate(
    state: AlertState, rule: Rule, value: float | None, now: datetime, policy: Policy, *, suppressed: str | None = None,
    detail: str = "",
) -> tuple[AlertState, list[Notice]]:
    """One evaluation: the new state and the notices it asks for."""
    s = state.model_copy(update={"flips": list(state.flips)})  # the only mutable field
    s.severity = rule.severity
    s.last_evaluated_at = now
    if value is None:
        s.suppressed = suppressed
        return s, []
    s.last_value, s.last_detail = value, detail
    was = s.status
    if rule.breached(value):
        s.breaches += 1
        s.clear_since = None
        if s.status == "inactive":
            s.status, s.active_since = "pending", now
        if s.status == "pending" and s.breaches >= rule.for_:
            s.status, s.firing_since = "firing", now
            s.episode += 1
            s.told, s.repeats = False, 0
    else:
        s.breaches = 0
        if s.status == "pending":
            s.status, s.active_since = "inactive", None  # a blip shorter than `for`
        elif s.status == "firing":
            s.clear_since = s.clear_since or now
            if now - s.clear_since >= timedelta(minutes=rule.keep_firing_minutes):
                s.status, s.clear_since = "inactive", None
    flipped = (was == "firing") != (s.status == "firing")
    if flipped:
        s.flips.append(now)
    s.flips = [t for t in s.flips if now - t <= policy.flap_window]
    notices: list[Notice] = []
    key = f"{s.fingerprint}#{s.episode}"

    if not s.flapping and len(s.flips) > policy.flap_changes:
        s.flapping = True
        notices.append(Notice(kind="flapping", fingerprint=s.fingerprint, dedup_key=f"flapping:{key}",
                              detail=f"{len(s.flips)} changes within {_minutes(policy.flap_window)}"))
        s.suppressed = suppressed
        if s.status == "firing":
            s.told = True
        return _settle(s, was), [] if suppressed else notices
    if s.flapping:
        if s.flips:
            s.suppressed = suppressed
            return _settle(s, was), []
        s.flapping = False  # stable for a whole window: say where it settled
        s.suppressed = suppressed
        if not suppressed:
            notices.append(Notice(kind="stable", fingerprint=s.fingerprint, dedup_key=f"stable:{key}:{now.isoformat()}",
                                  detail="firing" if s.status == "firing" else "resolved"))
            s.told = s.status == "firing"
            s.last_notified_at = now
        return _settle(s, was), notices

    if was == "firing" and s.status == "inactive":
        if s.told and not suppressed:
            notices.append(Notice(kind="resolved", fingerprint=s.fingerprint, dedup_key=f"resolved:{key}"))
        s.told = False
    elif s.status == "firing" and not suppressed:
        if not s.told or state.suppressed:
            # first told, or told again at once when a silence or inhibition ends
            ended = state.suppressed if was == "firing" else None
            dedup = f"firing:{key}" if not s.told else f"firing:{key}:unsuppressed:{now.isoformat()}"
            detail = f"still firing; no longer {ended}" if ended else ""
            notices.append(Notice(kind="firing", fingerprint=s.fingerprint, dedup_key=dedup, detail=detail))
            s.told, s.last_notified_at = True, now
        elif s.last_notified_at is not None and now - s.last_notified_at >= policy.repeat_interval:
            s.repeats += 1
            notices.append(Notice(kind="repeat", fingerprint=s.fingerprint, dedup_key=f"repeat:{key}:{s.repeats}"))
            s.last_notified_at = now
    s.suppressed = suppressed
    return _settle(s, was), notices


def _settle(s: AlertState, was: Status) -> AlertState:
    if s.status == "inactive":
        s.active_since = None if s.breaches == 0 else s.active_since
        s.firing_since = None
    return s


def _minutes(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 60:g} min"
