"""The operations calendar (runbook §4.1-§4.3, §8) as data, and its pure decisions.

A *period* (daily, weekly, monthly) runs *items*: a procedure of the registry
(runbook.procedures.PROCEDURES, by name, looked up when the run starts) with its
parameters, or an edge task outside runbook (log rotation, clearing the KV CACHE,
exporting the Workers configuration). Its *checklist* holds every §8 item of the
period: each answered by one item's result (``item``) or by a person (``person``).

Nothing here does I/O: the flows (flows/periods.py) run the items and pass their
outcomes in; these functions tick the checklist and judge the run.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

Period = Literal["daily", "weekly", "monthly"]
PERIODS: tuple[str, ...] = ("daily", "weekly", "monthly")
EDGE_TASKS: tuple[str, ...] = ("log-rotation", "cache-clear", "workers-export")


class ItemStatus(str, Enum):
    """How one item of a period's run ended."""

    COMPLETED = "completed"
    FAILED = "failed"
    NOT_AVAILABLE = "not available"  # no such procedure in this version of runbook
    NOT_CONFIGURED = "not configured"  # an edge task whose command or URL is unset


class CalendarItem(BaseModel):
    """One thing a period runs: a procedure (by its registry name) or an edge task."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=60, description="The item's name in the report and checklist.")
    procedure: str | None = Field(None, description="A procedure of runbook (CLI name), run as a subflow.")
    edge: Literal["log-rotation", "cache-clear", "workers-export"] | None = Field(
        None, description="An edge task outside runbook, run by its RUNBOOK_CALENDAR__EDGE__* command or URL."
    )
    parameters: dict[str, Any] = Field(default_factory=dict, description="The procedure's parameters (its params form's fields).")
    critical: bool = Field(True, description="A failure of this item fails the period's run (the others still run).")

    @model_validator(mode="after")
    def _one_kind(self) -> "CalendarItem":
        if (self.procedure is None) == (self.edge is None):
            raise ValueError(f"item {self.name!r} needs exactly one of procedure or edge")
        if self.edge is not None and self.parameters:
            raise ValueError(f"item {self.name!r}: parameters are for procedures; an edge task is configured in RUNBOOK_CALENDAR__EDGE")
        return self


class ChecklistEntry(BaseModel):
    """One §8 checklist item: answered from an item's result, or asked of a person."""

    text: str = Field(min_length=1, description="The item as §8 words it.")
    item: str | None = Field(None, description="The period item whose result answers it; unset: a person answers it.")
    judge: Literal["state", "backup-fresh", "component"] = Field(
        "state",
        description="state: the item completed; backup-fresh: backup-list shows a DONE backup within `argument` hours; "
        "component: the diagnose component named by `argument` is ok.",
    )
    argument: str = Field("", description="The judge's argument (hours, a component).")

    @property
    def key(self) -> str:
        """The answer's field name in the typed input (letters, digits, _)."""
        return slug(self.text)


def slug(text: str) -> str:
    out = "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")
    while "__" in out:
        out = out.replace("__", "_")
    return out or "item"


class PeriodPlan(BaseModel):
    """What one period runs and checks."""

    items: list[CalendarItem] = Field(default_factory=list)
    checklist: list[ChecklistEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> "PeriodPlan":
        names = [i.name for i in self.items]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"item names must be unique: {', '.join(twice)}")
        unknown = sorted({e.item for e in self.checklist if e.item is not None and e.item not in names})
        if unknown:
            raise ValueError(f"checklist entries refer to items the period does not run: {', '.join(unknown)}")
        keys = [e.key for e in self.checklist]
        if len(set(keys)) != len(keys):
            raise ValueError("two checklist entries have the same wording")
        return self

    def people(self) -> list[ChecklistEntry]:
        return [e for e in self.checklist if e.item is None]


def _items(*rows: tuple[Any, ...]) -> list[CalendarItem]:
    built = []
    for name, kind, value, params, critical in rows:
        built.append(CalendarItem(name=name, **{kind: value}, parameters=params, critical=critical))
    return built


def _entries(*rows: tuple[Any, ...]) -> list[ChecklistEntry]:
    return [ChecklistEntry(text=r[0], item=r[1], **({"judge": r[2], "argument": r[3]} if len(r) > 2 else {})) for r in rows]


# §4.1 and §8 daily. The health check is diagnose (the full check of §3.5); the heavy
# parts of the database's week and month are in weekly and monthly, never here.
DEFAULT_DAILY = PeriodPlan(
    items=_items(
        ("health-check", "procedure", "diagnose", {"component": "all"}, True),
        ("performance-report", "procedure", "performance-report", {"period": "day"}, False),
        ("security-scan", "procedure", "security-scan", {}, True),
        ("error-log-review", "procedure", "log-report", {"hours": 24}, False),
        ("backups", "procedure", "backup-list", {}, False),
        ("log-rotation", "edge", "log-rotation", {}, False),
        ("cache-cleanup", "edge", "cache-clear", {}, False),
        ("workers-export", "edge", "workers-export", {}, False),
    ),
    checklist=_entries(
        ("system up", "health-check"),
        ("error-log review", "error-log-review"),
        ("performance figures", "performance-report"),
        # the watch runs every 5 minutes and alerts on its own: a person looks at the day's alerts
        ("security alerts", None),
        ("backup ran", "backups", "backup-fresh", "25"),
        ("external API limits", "health-check", "component", "external-apis"),
        ("user-support inquiries", None),
    ),
)

# §4.2 and §8 weekly.
DEFAULT_WEEKLY = PeriodPlan(
    items=_items(
        ("dependency-audit", "procedure", "security-scan", {}, True),
        ("db-maintenance", "procedure", "db-maintenance", {"vacuum": True, "apply": False}, True),
        ("backup-verify", "procedure", "backup-verify", {"deep": False}, True),
        ("performance-report", "procedure", "performance-report", {"period": "week"}, False),
        ("performance-test", "procedure", "deploy-verify", {"environment": "production", "rollback": False}, False),
    ),
    checklist=_entries(
        ("detailed performance report", "performance-report"),
        ("security scan", "dependency-audit"),
        ("dependency vulnerabilities", "dependency-audit"),
        ("capacity use", "db-maintenance"),
        ("database optimisation", "db-maintenance"),
        ("feature-usage statistics", None),
        ("user-feedback analysis", None),
    ),
)

# §4.3 and §8 monthly.
DEFAULT_MONTHLY = PeriodPlan(
    items=_items(
        ("cert-check", "procedure", "cert-check", {"renew": True}, True),
        ("data-cleanup", "procedure", "data-cleanup", {"dry_run": False}, True),
        ("capacity-review", "procedure", "capacity-review", {}, False),
        ("dr-drill", "procedure", "dr-drill", {}, True),
        ("security-audit", "procedure", "security-scan", {}, True),
    ),
    checklist=_entries(
        ("full security audit", "security-audit"),
        ("DR test", "dr-drill"),
        ("capacity plan review", "capacity-review"),
        ("SLA performance review", None),
        ("cost review", None),
        ("technical-debt review", None),
        ("team training", None),
    ),
)

DEFAULT_PLANS: dict[str, PeriodPlan] = {"daily": DEFAULT_DAILY, "weekly": DEFAULT_WEEKLY, "monthly": DEFAULT_MONTHLY}


# --------------------------------------------------------------------------- results and the checklist


class ItemOutcome(BaseModel):
    """How one item ended, from its subflow's own final state and message."""

    name: str
    kind: str  # the procedure's name, or edge:<task>
    status: ItemStatus
    message: str = ""
    critical: bool = True
    flow_run_id: str | None = None
    result: Any = None  # the subflow's report (a dict), for the judges


class Tick(str, Enum):
    DONE = "done"
    NOT_DONE = "not done"
    NOT_CONFIRMED = "not confirmed"
    NOT_APPLICABLE = "not applicable"


class Answer(str, Enum):
    """What a person answers for one checklist item in the typed input."""

    DONE = "done"
    NOT_DONE = "not done"
    NOT_APPLICABLE = "not applicable"


class ChecklistLine(BaseModel):
    text: str
    tick: Tick
    reason: str = ""
    source: Literal["run", "person"] = "run"
    by: str | None = None


def _judge(entry: ChecklistEntry, outcome: ItemOutcome, now: datetime) -> tuple[bool, str]:
    if outcome.status is not ItemStatus.COMPLETED:
        return False, f"{outcome.name} {outcome.status.value}" + (f": {outcome.message}" if outcome.message else "")
    result = outcome.result if isinstance(outcome.result, dict) else {}
    if entry.judge == "backup-fresh":
        return backup_fresh(result.get("backups") or [], float(entry.argument or 25), now)
    if entry.judge == "component":
        verdict = (result.get("components") or {}).get(entry.argument)
        if verdict is None:
            return False, f"{outcome.name} did not check {entry.argument}"
        return verdict != "failed", f"{entry.argument}: {verdict}"
    return True, outcome.message or f"{outcome.name} completed"


def backup_fresh(rows: list[dict[str, Any]], hours: float, now: datetime) -> tuple[bool, str]:
    """A DONE backup at most ``hours`` old among backup-list's rows (their ``time`` is ISO)."""
    done = []
    for row in rows:
        if row.get("status") != "DONE":
            continue
        try:
            moment = datetime.fromisoformat(str(row.get("time")))
        except ValueError:
            continue
        done.append(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))
    if not done:
        return False, "no DONE backup in the store"
    newest = max(done)
    age_h = (now - newest).total_seconds() / 3600
    if age_h > hours:
        return False, f"the newest DONE backup is {age_h:.1f} h old (more than {hours:g} h)"
    return True, f"the newest DONE backup is {age_h:.1f} h old"


def tick_checklist(
    plan: PeriodPlan,
    outcomes: dict[str, ItemOutcome],
    answers: dict[str, Answer | None],
    *,
    by: str | None,
    unanswered: str,
    now: datetime,
    notes: str = "",
) -> list[ChecklistLine]:
    """Every entry of the period's checklist: run entries from their item's outcome (the
    reason when not done), person entries from ``answers`` (keyed by entry.key); an
    entry nobody answered is "not confirmed" with ``unanswered`` as its reason, never done."""
    lines = []
    for entry in plan.checklist:
        if entry.item is not None:
            ok, reason = _judge(entry, outcomes[entry.item], now)
            lines.append(ChecklistLine(text=entry.text, tick=Tick.DONE if ok else Tick.NOT_DONE, reason=reason))
            continue
        answer = answers.get(entry.key)
        if answer is None:
            lines.append(ChecklistLine(text=entry.text, tick=Tick.NOT_CONFIRMED, reason=unanswered, source="person"))
        else:
            lines.append(ChecklistLine(text=entry.text, tick=Tick(answer.value), reason=notes, source="person", by=by))
    return lines


def critical_failures(outcomes: list[ItemOutcome]) -> list[ItemOutcome]:
    """The critical items that did not complete. An item not available or not configured
    is reported, but never fails the run by itself: it did not run."""
    return [o for o in outcomes if o.critical and o.status is ItemStatus.FAILED]


def checklist_markdown(period: str, lines: list[ChecklistLine], outcomes: list[ItemOutcome], zone_time: str) -> str:
    marks = {Tick.DONE: "[x]", Tick.NOT_DONE: "[ ]", Tick.NOT_CONFIRMED: "[?]", Tick.NOT_APPLICABLE: "[-]"}
    out = [f"# {period.title()} checklist, {zone_time}", ""]
    for line in lines:
        who = f" ({line.by})" if line.by else ""
        reason = f": {line.reason}" if line.reason else ""
        out.append(f"- {marks[line.tick]} **{line.text}**: {line.tick.value}{who}{reason}".replace("\n", " "))
    out += ["", "| item | ran | result |", "|---|---|---|"]
    for o in outcomes:
        message = o.message.replace("|", "\\|").replace("\n", " ")[:300]
        out.append(f"| {o.name} ({o.kind}) | {o.status.value}{' (critical)' if o.critical else ''} | {message} |")
    return "\n".join(out)


# --------------------------------------------------------------------------- schedules


# Deployments whose runs load the platform's database, with how long one run is expected
# to take (minutes). The hourly backup leaves 40 minutes of each hour; the heavy periods
# start at :20 and must end by the next backup. Raise a figure when the runs grow
# (capacity-review projects them) and the schedules test says what then meets.
HEAVY_MINUTES: dict[str, int] = {
    "backup": 20,
    "daily-maintenance": 15,
    "weekly-maintenance": 35,
    "monthly-maintenance": 35,
}


def meetings(starts: dict[str, list[datetime]], minutes: dict[str, int]) -> list[tuple[str, datetime, str, datetime]]:
    """Pairs of runs of two different deployments where one starts while the other is
    still expected to run (its start + its expected duration, half-open). Pure: the
    occurrences come in, sorted or not."""
    events = sorted((at, name) for name, times in starts.items() for at in times)
    found = []
    running: list[tuple[datetime, str]] = []  # (expected end, name) of runs that may still run
    for at, name in events:
        running = [(end, other) for end, other in running if end > at]
        for end, other in running:
            if other != name:
                found.append((other, end - timedelta(minutes=minutes[other]), name, at))
        running.append((at + timedelta(minutes=minutes[name]), name))
    return found
