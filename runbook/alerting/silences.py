"""Silences are leases (Alertmanager's, with the guard rails its users ask for): an
author, a reason, an end at most 7 days away, and a matcher that cannot match
everything. A silence holds notifications and escalation of the alerts it matches
until it ends; then an alert still firing notifies at once."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from runbook.errors import ConfigError

MAX_SILENCE = timedelta(days=7)
MATCH_FIELDS = ("rule", "resource", "severity")


class Silence(BaseModel):
    id: int | None = None
    matchers: dict[str, str] = Field(description="rule / resource / severity: a value, or a prefix ending in '*'.")
    author: str
    reason: str
    starts_at: datetime
    ends_at: datetime

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: dict[str, str]) -> bool:
        return all(_match(expected, labels.get(name, "")) for name, expected in self.matchers.items())

    def label(self) -> str:
        return f"silence #{self.id}" if self.id is not None else "a silence"


def _match(expected: str, value: str) -> bool:
    if expected.endswith("*"):
        return value.startswith(expected[:-1])
    return value == expected


def check_silence(matchers: dict[str, str], author: str, reason: str, starts_at: datetime, ends_at: datetime) -> Silence:
    """A new silence, or a ConfigError naming what is wrong with it."""
    problems = []
    unknown = sorted(set(matchers) - set(MATCH_FIELDS))
    if unknown:
        problems.append(f"unknown matcher {', '.join(unknown)} (use {', '.join(MATCH_FIELDS)})")
    narrowing = [name for name in ("rule", "resource") if matchers.get(name, "").rstrip("*").strip()]
    if not narrowing:
        problems.append("the matcher must name a rule or a resource (a value, or a prefix followed by '*'): "
                        "a silence of everything would hide every page")
    if matchers.get("severity") not in (None, "warning", "critical"):
        problems.append(f"severity {matchers['severity']!r}: use warning or critical")
    if not author.strip():
        problems.append("an author is needed (--author)")
    if not reason.strip():
        problems.append("a reason is needed (--reason)")
    if ends_at <= starts_at:
        problems.append("it must end after it starts")
    elif ends_at - starts_at > MAX_SILENCE:
        problems.append(f"it may last at most 7 days, not {(ends_at - starts_at).total_seconds() / 86400:.1f}")
    if problems:
        raise ConfigError("silence: " + "; ".join(problems))
    return Silence(matchers=matchers, author=author.strip(), reason=reason.strip(), starts_at=starts_at, ends_at=ends_at)


def silenced_by(silences: list[Silence], labels: dict[str, str], now: datetime) -> Silence | None:
    return next((s for s in silences if s.active(now) and s.matches(labels)), None)
