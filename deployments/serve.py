"""Serve every deployment of prefect.yaml from this process, with its schedule and
parameters, without a work pool: ``python -m deployments.serve``. For production use
``prefect deploy --all`` and workers (see the README); this is the same set of
deployments for a single machine."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

SPEC = Path(__file__).resolve().parent.parent / "prefect.yaml"


def load_spec(path: Path = SPEC) -> list[dict[str, Any]]:
    return list(yaml.safe_load(path.read_text())["deployments"])


def load_flow(entrypoint: str) -> Any:
    module_path, name = entrypoint.split(":")
    module = importlib.import_module(module_path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def runner_deployments(path: Path = SPEC) -> list[Any]:
    """Every deployment of prefect.yaml as a RunnerDeployment, ready for ``prefect.serve``."""
    from prefect.client.schemas.schedules import CronSchedule

    built = []
    for spec in load_spec(path):
        flow = load_flow(spec["entrypoint"])
        schedules = [
            CronSchedule(cron=s["cron"], timezone=s.get("timezone", "UTC")) for s in spec.get("schedules") or [] if s.get("active", True)
        ]
        limit = (spec.get("concurrency_limit") or {}).get("limit")
        built.append(
            flow.to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                tags=spec.get("tags"),
                parameters=spec.get("parameters") or {},
                schedules=schedules or None,
                concurrency_limit=limit,
            )
        )
    return built


def main() -> None:
    from prefect import serve

    serve(*runner_deployments())


if __name__ == "__main__":
    main()
