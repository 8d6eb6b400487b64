"""Serve every deployment of prefect.yaml from this process, with its schedule and
parameters, without a work pool: ``python -m deployments.serve``. For production use
``prefect deploy --all`` and workers (see the README); this is the same set of
deployments for a single machine, with the same settings: the work pool's ``env`` job
variables of prefect.yaml are applied to this process, whose runs inherit them (a
served deployment has no work pool to take job variables)."""

from __future__ import annotations

import importlib
import os
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


def procedure_of(spec: dict[str, Any]) -> Any:
    """The registry's procedure of a prefect.yaml deployment (same name, same entrypoint,
    the parameters of its mode): a deployment the CLI does not know is a mistake."""
    from runbook.procedures import PROCEDURES

    procedure = PROCEDURES.get(spec["name"])
    if procedure is None:
        raise ValueError(f"prefect.yaml: deployment {spec['name']!r} is no procedure of runbook.procedures.PROCEDURES")
    if procedure.entrypoint != spec["entrypoint"]:
        raise ValueError(f"prefect.yaml: {spec['name']!r} runs {spec['entrypoint']}, the registry says {procedure.entrypoint}")
    params = (spec.get("parameters") or {}).get("params") or {}
    for key, value in procedure.mode.items():
        if params.get(key) != value:
            raise ValueError(f"prefect.yaml: {spec['name']!r} must set params.{key}: {value} (its mode)")
    return procedure


def job_env(path: Path = SPEC) -> dict[str, str]:
    """The ``env`` job variables of prefect.yaml's deployments (one work pool, one env)."""
    envs = {
        tuple(sorted(((spec.get("work_pool") or {}).get("job_variables") or {}).get("env", {}).items()))
        for spec in load_spec(path)
    }
    if len(envs) != 1:
        raise ValueError(f"{path}: the deployments' work pools set different env job variables; serve needs one")
    env = {str(name): str(value) for name, value in envs.pop()}
    templated = [name for name, value in env.items() if "{{" in value]
    if templated:
        raise ValueError(f"{path}: serve cannot render the templates in {', '.join(templated)}: name a Variable instead")
    return env


def apply_job_env(path: Path = SPEC) -> dict[str, str]:
    """Set prefect.yaml's env in this process (it wins over the environment, as a
    worker's job variables do), for the served runs to inherit."""
    env = job_env(path)
    os.environ.update(env)
    return env


def runner_deployments(path: Path = SPEC) -> list[Any]:
    """Every deployment of prefect.yaml as a RunnerDeployment, ready for ``prefect.serve``."""
    from prefect.client.schemas.schedules import CronSchedule

    built = []
    for spec in load_spec(path):
        flow = procedure_of(spec).flow()
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

    apply_job_env()
    serve(*runner_deployments())


if __name__ == "__main__":
    main()
