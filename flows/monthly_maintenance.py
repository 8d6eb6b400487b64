"""``monthly-maintenance`` (runbook §4.3, §8): the monthly procedures as subflows and the monthly checklist."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.periods import PeriodParameters, run_period
from runbook.reports import expected_failures


@flow(name="monthly-maintenance")
@expected_failures
def monthly_maintenance(params: PeriodParameters = PeriodParameters()) -> Any:
    """Monthly maintenance (§4.3): certificate renewal, the large old-data clean-up, the
    capacity-plan review, the disaster-recovery drill and the full security audit, each a
    subflow or an edge task (RUNBOOK_CALENDAR__MONTHLY). A failing item never stops the
    rest; the run fails when a critical one failed. Then the monthly checklist of §8: ticked
    from the items' results, the items only a person can answer asked here as typed input
    (resume the paused checklist-questions subflow in the UI), kept as an artifact and in
    the history."""
    return run_period("monthly", params)
