"""``weekly-maintenance`` (runbook §4.2, §8): the weekly procedures as subflows and the weekly checklist."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.periods import PeriodParameters, run_period
from runbook.reports import expected_failures


@flow(name="weekly-maintenance")
@expected_failures
def weekly_maintenance(params: PeriodParameters = PeriodParameters()) -> Any:
    """Weekly maintenance (§4.2): dependency audit, database optimisation (db-maintenance),
    backup verification, the detailed performance report and the full performance test, each
    a subflow or an edge task (RUNBOOK_CALENDAR__WEEKLY). A failing item never stops the
    rest; the run fails when a critical one failed. Then the weekly checklist of §8: ticked
    from the items' results, the items only a person can answer asked here as typed input
    (resume the paused checklist-questions subflow in the UI), kept as an artifact and in
    the history."""
    return run_period("weekly", params)
