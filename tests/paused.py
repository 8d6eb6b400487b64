"""Wait for a flow run to pause for input (the tests then resume it with typed input)."""

from __future__ import annotations

import time
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterStateName


def wait_paused(what: str, *, timeout: float = 60, flow_name: str | None = None, key: str | None = None) -> UUID:
    """The id of a Paused flow run (of ``flow_name``, paused at ``key``, when given);
    an AssertionError saying ``what`` never paused after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    flow_filter = FlowFilter(name=FlowFilterName(any_=[flow_name])) if flow_name else None
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(state=dict(name=FlowRunFilterStateName(any_=["Paused"]))),
                                         flow_filter=flow_filter)
        for run in runs:
            if key is None or (run.state and run.state.state_details.pause_key == key):
                return run.id
        time.sleep(0.3)
    raise AssertionError(f"{what} never paused")
