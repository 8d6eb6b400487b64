"""The Prefect API: metadata on the current flow run (labels and tags), so that the
server can show and filter what a run measured."""

from __future__ import annotations

from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client

from runbook.retry import RETRIES, backoff


@task(name="label-flow-run", retries=RETRIES, retry_delay_seconds=backoff(), cache_policy=NO_CACHE)
def label_flow_run(flow_run_id: str, labels: dict[str, str | int | float | bool], tags: list[str]) -> None:
    """Merge scalar labels into the run, and add tags to the ones it has."""
    run_id = UUID(flow_run_id)
    with get_client(sync_client=True) as client:
        client.update_flow_run_labels(run_id, labels)
        current = client.read_flow_run(run_id).tags or []
        client.update_flow_run(run_id, tags=sorted(set(current) | set(tags)))
    get_run_logger().info("Labelled the run: %s; tags %s", ", ".join(f"{k}={v}" for k, v in labels.items()), ", ".join(tags))


def read_flow_run_labels(flow_run_id: str) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        return dict(client.read_flow_run(UUID(flow_run_id)).labels or {})
