"""``daily-maintenance`` (runbook §4.1, §8): the daily procedures as subflows and the daily checklist."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.periods import PeriodParameters, run_period
from runbook.reports import expected_failures


@flow(name="daily-maintenance")
@expected_failures
def daily_maintenance(params: PeriodParameters = PeriodParameters()) -> Any:
    """Daily maintenance (§4.1): health check (diagnose), performance report, security scan,
    error-log review, the backups, log rotation, cache clean-up and the
    Workers configuration export, each a subflow or an edge task (RUNBOOK_CALENDAR__DAILY).
    A failing item never stops the rest; the run fails when a critical one failed. Then the
    daily checklist of §8: ticked from the items' results, the items only a person can
    answer asked here as typed input (resume the paused checklist-questions subflow in the
    UI), kept as an artifact and in the history."""
    return run_period("daily", params)
