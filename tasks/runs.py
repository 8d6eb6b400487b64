"""The Prefect API: metadata on the current flow run (labels and tags), so that the
server can show and filter what a run measured; the runs of a deployment that its
concurrency limit cancelled (a collision), so that the next run can say so; and how
long the heavy procedures' recent runs took (the capacity review's calendar budgets)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterParentTaskRunId,
    FlowRunFilterStartTime,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import PrefectHTTPStatusError

from runbook.checks import CheckResult
from runbook.retry import RETRIES, backoff

# On a SQLite-backed Prefect server (the default server, the CLI's ephemeral mode) the
# labels endpoint reads the run, then writes it; when another writer holds the database
# then, the server answers 503 at once. Prefect's client sleeps 2 s before it even looks
# at a retryable answer (also with retries off), so labelling a run took 2 s in most
# drills. One quick attempt at a time instead, a bounded few, then the client's own way.
QUICK_RETRIES = (0.05, 0.1, 0.2, 0.4, 0.8)
RETRYABLE = {429, 502, 503}


def _update_labels(client, run_id: UUID, labels: dict[str, str | int | float | bool]) -> None:  # type: ignore[no-untyped-def]
    http = client._client  # the client's httpx client: the API's base URL and auth
    for pause in QUICK_RETRIES:
        request = http.build_request("PATCH", f"/flow_runs/{run_id}/labels", json=labels)
        response = httpx.Client.send(http, request)  # one attempt, without the 2 s sleep
        if response.status_code < 300:
            return
        if response.status_code not in RETRYABLE:
            break  # e.g. a CSRF token needed: the client's own way knows how
        time.sleep(pause)
    client.update_flow_run_labels(run_id, labels)


@task(name="label-flow-run", retries=RETRIES, retry_delay_seconds=backoff(), cache_policy=NO_CACHE)
def label_flow_run(flow_run_id: str, labels: dict[str, str | int | float | bool], tags: list[str]) -> None:
    """Merge scalar labels into the run, and add tags to the ones it has."""
    run_id = UUID(flow_run_id)
    with get_client(sync_client=True) as client:
        _update_labels(client, run_id, labels)
        current = client.read_flow_run(run_id).tags or []
        client.update_flow_run(run_id, tags=sorted(set(current) | set(tags)))
    get_run_logger().info("Labelled the run: %s; tags %s", ", ".join(f"{k}={v}" for k, v in labels.items()), ", ".join(tags))


# --------------------------------------------------------------------------- collisions

# What the server writes on a run it cancels under a deployment's CANCEL_NEW
# concurrency limit (prefect.server.orchestration.core_policy).
COLLISION_MESSAGE = "concurrency limit"
COLLISION_LOOKBACK = timedelta(days=7)


@dataclass(frozen=True)
class Collision:
    """A scheduled run of the deployment that the server cancelled because another
    run of it still held the deployment's only concurrency slot."""

    run_id: str
    name: str
    expected_start: datetime | None
    message: str


def collisions_since_last_run(runs: list[FlowRun], current_run_id: UUID) -> list[Collision]:
    """Of a deployment's runs, newest first: the ones cancelled by its concurrency limit
    since the last run that actually ran (each collision is reported by one run only),
    oldest first."""
    found: list[Collision] = []
    for run in runs:
        if run.id == current_run_id:
            continue
        state = run.state
        message = (state.message or "") if state else ""
        if state is not None and state.type is StateType.CANCELLED and COLLISION_MESSAGE in message.lower():
            found.append(Collision(str(run.id), run.name, run.expected_start_time, message))
        elif run.start_time is not None:
            break  # the run that held the slot (or an earlier one): reported before
    return sorted(found, key=lambda c: (c.expected_start is None, c.expected_start or datetime.min.replace(tzinfo=timezone.utc)))


def read_collisions(client, deployment_id: UUID, current_run_id: UUID, *, now: datetime, lookback: timedelta = COLLISION_LOOKBACK) -> list[Collision]:  # type: ignore[no-untyped-def]
    """The deployment's runs cancelled by its concurrency limit since its last run."""
    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(
            expected_start_time=FlowRunFilterExpectedStartTime(after_=now - lookback, before_=now)
        ),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        limit=200,  # the API's most; a week of hourly runs is 168
    )
    return collisions_since_last_run(runs, current_run_id)


def collision_check(collisions: list[Collision], procedure: str) -> CheckResult:
    """A warning: scheduled runs did not happen because an earlier run was still going."""
    if not collisions:
        return CheckResult(
            name="collisions", ok=True, detail=f"no {procedure} run was cancelled since the previous one", critical=False
        )
    runs = ", ".join(
        f"{c.name} ({c.expected_start.isoformat(timespec='minutes') if c.expected_start else 'unscheduled'})"
        for c in collisions
    )
    return CheckResult(
        name="collisions",
        ok=False,
        detail=(
            f"{len(collisions)} scheduled {procedure} run(s) cancelled by the deployment's concurrency limit "
            f"while an earlier run was still going: {runs}"
        ),
        critical=False,
    )


def current_deployment_run() -> tuple[UUID, UUID] | None:
    """(deployment id, flow run id) of the running flow when a deployment started it;
    None otherwise (the CLI). From the run's context: no API call."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    run = context.flow_run if context else None
    if run is None or run.deployment_id is None:
        return None
    return run.deployment_id, run.id


@task(name="read-collisions", cache_policy=NO_CACHE)
def report_collisions(deployment_id: UUID, run_id: UUID, procedure: str) -> CheckResult:
    """Warn about the deployment's scheduled runs that the server cancelled
    (CANCEL_NEW) since its previous run, because that one was still going."""
    logger = get_run_logger()
    try:
        with get_client(sync_client=True) as client:
            collisions = read_collisions(client, deployment_id, run_id, now=datetime.now(timezone.utc))
    except (httpx.HTTPError, PrefectHTTPStatusError) as err:
        # a report about past runs must not stop this backup; the check says it is unknown
        logger.warning("Could not read the deployment's earlier runs: %s", err)
        return CheckResult(name="collisions", ok=False, detail=f"could not read the deployment's runs: {err}", critical=False)
    check = collision_check(collisions, procedure)
    if collisions:
        logger.warning("%s", check.detail)
    return check


@task(name="read-flow-run", retries=RETRIES, retry_delay_seconds=backoff(), cache_policy=NO_CACHE)
def read_flow_run_summary(flow_run_id: str) -> dict[str, Any]:
    """Name, deployment (and whether it runs on a schedule), state and state message of a flow run (``<uuid>`` or the event's
    resource id ``prefect.flow-run.<uuid>``), and its UI URL."""
    from prefect.utilities.urls import url_for

    run_id = UUID(flow_run_id.removeprefix("prefect.flow-run."))
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        found = client.read_deployment(run.deployment_id) if run.deployment_id else None
        flow_name = client.read_flow(run.flow_id).name
    deployment = found.name if found is not None else None
    scheduled = bool(found is not None and not found.paused and any(s.active for s in found.schedules or []))
    state = run.state
    message = (state.message or "").strip().splitlines()[0] if state is not None and state.message else ""
    return {
        "id": str(run.id), "name": run.name, "flow": flow_name, "deployment": deployment, "scheduled": scheduled,
        "state": state.name if state is not None else None, "message": message,
        "url": url_for(run, url_type="ui") if run else None,
    }


# --------------------------------------------------------------------------- durations


@task(name="read-run-durations", retries=RETRIES, retry_delay_seconds=backoff(), cache_policy=NO_CACHE)
def read_run_durations(flow_names: list[str], since: datetime, until: datetime, last: int = 10) -> dict[str, list[float]]:
    """Minutes from start to end of each flow's last finished runs (completed or failed:
    both held the database) started in [since, until), that ran on their own (not as a
    subflow of a period), newest first. The server's history only: runs of the CLI under
    Prefect's temporary server are not there."""
    found: dict[str, list[float]] = {}
    with get_client(sync_client=True) as client:
        for name in flow_names:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[name])),
                flow_run_filter=FlowRunFilter(
                    parent_task_run_id=FlowRunFilterParentTaskRunId(is_null_=True),
                    state=dict(type=FlowRunFilterStateType(any_=[StateType.COMPLETED, StateType.FAILED])),
                    start_time=FlowRunFilterStartTime(after_=since, before_=until),
                ),
                sort=FlowRunSort.START_TIME_DESC,
                limit=last,
            )
            found[name] = [(r.end_time - r.start_time).total_seconds() / 60 for r in runs if r.start_time and r.end_time]
    return found
