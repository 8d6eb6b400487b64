"""The Prefect API: metadata on the current flow run (labels and tags), so that the
server can show and filter what a run measured."""

from __future__ import annotations

import time
from uuid import UUID

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

from runbook.retry import RETRIES, backoff

# On a SQLite-backed Prefect server the labels endpoint reads the run and then writes
# it in one deferred transaction; when a background writer (task-run events, logs)
# commits in between, SQLite refuses the write at once and the server answers 503, which
# Prefect's client retries only after 2 s. Retry that conflict sooner, a bounded few times.
QUICK_RETRIES = (0.05, 0.1, 0.2, 0.4)


def _update_labels(client, run_id: UUID, labels: dict[str, str | int | float | bool]) -> None:  # type: ignore[no-untyped-def]
    for pause in QUICK_RETRIES:
        try:
            with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}):
                client.update_flow_run_labels(run_id, labels)
            return
        except httpx.HTTPStatusError as err:
            if err.response.status_code < 500:
                raise
            time.sleep(pause)
    client.update_flow_run_labels(run_id, labels)  # last try with the client's own retries


@task(name="label-flow-run", retries=RETRIES, retry_delay_seconds=backoff(), cache_policy=NO_CACHE)
def label_flow_run(flow_run_id: str, labels: dict[str, str | int | float | bool], tags: list[str]) -> None:
    """Merge scalar labels into the run, and add tags to the ones it has."""
    run_id = UUID(flow_run_id)
    with get_client(sync_client=True) as client:
        _update_labels(client, run_id, labels)
        current = client.read_flow_run(run_id).tags or []
        client.update_flow_run(run_id, tags=sorted(set(current) | set(tags)))
    get_run_logger().info("Labelled the run: %s; tags %s", ", ".join(f"{k}={v}" for k, v in labels.items()), ", ".join(tags))
