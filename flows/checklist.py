"""``checklist`` (runbook §8): the latest checklist of a period, from the history kept
in the platform's database. ``latest`` is a plain function: the CLI can answer from it
without a flow run."""

from __future__ import annotations

from enum import Enum
from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from runbook.errors import ConfigError
from runbook.reports import expected_failures


class PeriodName(str, Enum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


class ChecklistParameters(BaseModel):
    """Which period's checklist to show."""

    period: PeriodName = Field(PeriodName.DAILY, description="daily, weekly or monthly.")


def latest(period: str) -> dict[str, Any]:
    """The newest checklist of ``period`` as a dict (a ConfigError when there is none yet)."""
    from runbook.target import prepare
    from runbook.times import show
    from tasks.checklists import latest_checklist

    settings, target = prepare()
    row = latest_checklist(target.dsn, settings.calendar.state_schema, period, settings.connect_timeout)
    if row is None:
        raise ConfigError(f"no {period} checklist yet: {period}-maintenance records one each time it runs")
    return {
        "period": period, "instance": target.instance, "id": row["id"], "at": show(row["at"], settings.timezone),
        "flow_run_id": row["flow_run_id"], "outcome": row["outcome"], "answered_by": row["answered_by"],
        "checklist": row["lines"], "items": row["items"],
    }


@flow(name="checklist")
@expected_failures
def checklist(params: ChecklistParameters = ChecklistParameters()) -> dict[str, Any]:
    """The latest daily, weekly or monthly checklist (§8): each item done, not done (and
    why), or not confirmed, who answered the items only a person can answer, and how
    each item of that run ended."""
    return latest(params.period.value)
