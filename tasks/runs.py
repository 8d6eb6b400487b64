"""The Prefect API: metadata on the current flow run (labels and tags), so that the
server can show and filter what a run measured."""

from __future__ import annotations

import time
from uuid import UUID

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client

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
