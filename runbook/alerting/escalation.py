"""On-call escalation (§9), pure: which levels of an incident's chain are due.

    level 1 automatic alert handling   within 5 minutes of the signal
    level 2 on-call engineer           15 minutes
    level 3 team lead                  30 minutes
    level 4 management                 1 hour

A critical alert opens an incident, which copies the chain it opened with (editing
the chain later changes no open incident). Levels are paged from the stored state on
each monitor run: level L is due once ``after_minutes(L)`` have passed since the
signal, unless the incident is acknowledged. An acknowledgement holds every page
until it expires (30 minutes by default) while the alert still fires; then a new
*round* begins at the level reached, paged at once, and the next levels follow at
their distance from it. Each (incident, round, level) is paged exactly once: the
ledger's unique key enforces it across restarts and concurrent runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from runbook.alerting.model import ChannelName, Severity
from runbook.errors import ConfigError

LEVEL1_WITHIN = timedelta(minutes=5)


class Contact(BaseModel):
    """Who a level pages, on which channel; ``to`` unset: the channel's default recipients."""

    channel: ChannelName
    to: str | None = Field(None, description="An address, a number (E.164), a Slack channel; unset: the channel's default.")


class Level(BaseModel):
    level: int = Field(ge=1, le=9)
    name: str
    after_minutes: float = Field(ge=0, le=24 * 60, description="Paged this long after the signal unless acknowledged.")
    contacts: list[Contact]


DEFAULT_CHAIN: tuple[Level, ...] = (
    Level(level=1, name="automatic alert handling", after_minutes=0,
          contacts=[Contact(channel="slack"), Contact(channel="statuspage")]),
    Level(level=2, name="on-call engineer", after_minutes=15, contacts=[Contact(channel="phone"), Contact(channel="sms")]),
    Level(level=3, name="team lead", after_minutes=30, contacts=[Contact(channel="email"), Contact(channel="sms")]),
    Level(level=4, name="management", after_minutes=60, contacts=[Contact(channel="email")]),
)


class Chain(BaseModel):
    levels: list[Level]

    @model_validator(mode="after")
    def _ordered(self) -> "Chain":
        numbers = [lv.level for lv in self.levels]
        if numbers != list(range(1, len(numbers) + 1)):
            raise ValueError(f"levels must be numbered 1, 2, 3... in order, not {numbers}")
        times = [lv.after_minutes for lv in self.levels]
        if times != sorted(times):
            raise ValueError(f"after_minutes must not go down from one level to the next: {times}")
        return self


IncidentStatus = Literal["open", "acknowledged", "resolved"]


class Incident(BaseModel):
    """What the escalation needs to know of one incident."""

    id: int
    fingerprint: str
    severity: Severity = Severity.critical
    status: IncidentStatus = "open"
    signal_at: datetime
    chain: list[Level]
    round: int = 0
    round_started_at: datetime | None = None
    round_level: int = 1
    reached_level: int = 0
    ack_expires_at: datetime | None = None


class Page(BaseModel):
    round: int
    level: int


def check_coverage(chain: list[Level], usable: Callable[[str, str | None], list[str]], *, first_page_after: timedelta) -> None:
    """Refuse a chain with a level no working channel reaches, or whose level 1 cannot
    be paged within §9's 5 minutes (``first_page_after``: the slowest critical rule's
    ``for`` times the evaluation interval). ``usable(channel, to)`` returns what the
    channel lacks (empty: it can send)."""
    problems: list[str] = []
    if not chain:
        problems.append("no level")
    for level in chain:
        reasons = []
        for contact in level.contacts:
            lacking = usable(contact.channel, contact.to)
            if not lacking:
                break
            reasons.append(f"{contact.channel} lacks {', '.join(lacking)}")
        else:
            problems.append(f"level {level.level} ({level.name}) has no contact with a working channel"
                            + (f": {'; '.join(reasons)}" if reasons else ""))
    if chain and timedelta(minutes=chain[0].after_minutes) + first_page_after > LEVEL1_WITHIN:
        problems.append(
            f"level 1 would be paged {(timedelta(minutes=chain[0].after_minutes) + first_page_after).total_seconds() / 60:g} "
            f"minutes after the signal, later than §9's 5 (lower its after_minutes or the critical rules' `for`)"
        )
    if problems:
        raise ConfigError("RUNBOOK_ALERTS__ESCALATION: " + "; ".join(problems))


def resume_after_ack(incident: Incident, now: datetime) -> Incident | None:
    """An acknowledged incident whose ack ran out (and which still fires: it is not
    resolved) starts a new round at the level reached; None while the ack holds."""
    if incident.status != "acknowledged" or incident.ack_expires_at is None or now < incident.ack_expires_at:
        return None
    return incident.model_copy(update={
        "status": "open", "round": incident.round + 1, "round_started_at": incident.ack_expires_at,
        "round_level": max(1, incident.reached_level), "ack_expires_at": None,
    })


def due_pages(incident: Incident, now: datetime) -> list[Page]:
    """The levels of the current round due by ``now`` (the ledger drops those already
    paged). None while acknowledged or resolved."""
    if incident.status != "open":
        return []
    levels = [lv for lv in incident.chain if lv.level >= incident.round_level]
    if not levels:
        return []
    base = incident.signal_at if incident.round == 0 else (incident.round_started_at or incident.signal_at)
    offset = levels[0].after_minutes if incident.round else 0.0
    return [
        Page(round=incident.round, level=lv.level)
        for lv in levels
        if now - base >= timedelta(minutes=lv.after_minutes - offset)
    ]


def level_of(chain: list[Level], number: int) -> Level:
    return next(lv for lv in chain if lv.level == number)
