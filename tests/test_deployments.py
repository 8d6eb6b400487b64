"""prefect.yaml: every deployment loads, its entrypoint imports, its name is its
flow's name, its parameters fit the flow's signature, its schedules are valid."""

from __future__ import annotations

import importlib
from typing import get_type_hints
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from prefect.flows import Flow
from prefect.utilities.callables import parameter_schema

ROOT = Path(__file__).resolve().parent.parent
SPEC = yaml.safe_load((ROOT / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}
MODES = {"dr-drill": "disaster-recovery"}  # deployments that run a flow in one mode


def load(entrypoint: str) -> Flow:
    path, name = entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, name)
    assert isinstance(flow, Flow)
    return flow


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_every_deployment_names_its_flow_and_fits_its_parameters(name: str) -> None:
    deployment = DEPLOYMENTS[name]
    flow = load(deployment["entrypoint"])
    assert flow.name == MODES.get(name, name)
    schema = parameter_schema(flow.fn)
    hints = get_type_hints(flow.fn)
    for key, value in (deployment.get("parameters") or {}).items():
        assert key in schema.properties
        hints[key].model_validate(value)  # the deployment's values are valid for the form
    assert flow.description, "the flow's docstring shows in the UI"


def test_backups_run_hourly_and_verification_weekly_in_the_team_timezone() -> None:
    from prefect.client.schemas.schedules import CronSchedule

    from runbook.calendar import DEFAULT_WEEKLY

    hourly = DEPLOYMENTS["backup"]["schedules"][0]
    weekly = DEPLOYMENTS["weekly-maintenance"]["schedules"][0]  # it runs backup-verify (§4.2)
    assert "backup-verify" in [item.procedure for item in DEFAULT_WEEKLY.items]
    for schedule in (hourly, weekly):
        CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
        ZoneInfo(schedule["timezone"])
        assert schedule["timezone"] == "Asia/Tokyo"
    assert hourly["cron"] == "0 * * * *"
    assert weekly["cron"].split()[2:4] == ["*", "*"] and weekly["cron"].split()[4] != "*"
    assert DEPLOYMENTS["backup"]["concurrency_limit"]["limit"] == 1
    assert not DEPLOYMENTS["backup-prune"]["schedules"]
    assert DEPLOYMENTS["backup-prune"]["parameters"]["params"]["dry_run"] is True


def test_every_flow_module_has_a_deployment() -> None:
    # flows/approval.py is the step the incident actions share, flows/periods.py what the
    # daily/weekly/monthly-maintenance flows share, flows/asking.py the typed input in the
    # UI several procedures ask: none is a procedure of its own
    shared = ("__init__", "approval", "periods", "asking")
    modules = {p.stem.replace("_", "-") for p in (ROOT / "flows").glob("*.py") if p.stem not in shared}
    assert modules == set(DEPLOYMENTS) - set(MODES)


def test_the_registry_of_procedures_and_prefect_yaml_declare_the_same_procedures() -> None:
    """One registry drives the CLI, serve and these tests: each procedure has its
    deployment (same entrypoint, the parameters of its mode), a command, a parameter
    model that accepts the deployment's values, and nothing is declared twice."""
    from deployments.serve import procedure_of
    from runbook.cli import build_parser
    from runbook.procedures import PROCEDURES

    assert set(PROCEDURES) == set(DEPLOYMENTS)
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, procedure in PROCEDURES.items():
        assert procedure_of(DEPLOYMENTS[name]) is procedure
        assert name in commands
        model = procedure.parameter_model()
        values = (DEPLOYMENTS[name].get("parameters") or {}).get("params")
        if values is not None:
            assert model is not None and model.model_validate(values)
        for key, value in procedure.mode.items():  # the deployment runs the flow in the procedure's mode
            assert getattr(model.model_validate(values), key).value == value


def test_a_deployment_the_registry_does_not_know_is_refused_by_serve(tmp_path: Path) -> None:
    from deployments.serve import runner_deployments

    spec = {**SPEC, "deployments": [{**DEPLOYMENTS["backup"], "name": "backup-typo"}]}
    (tmp_path / "prefect.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="backup-typo"):
        runner_deployments(tmp_path / "prefect.yaml")
    spec = {**SPEC, "deployments": [{**DEPLOYMENTS["dr-drill"], "parameters": {"params": {"mode": "recover"}}}]}
    (tmp_path / "prefect.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="mode"):
        runner_deployments(tmp_path / "prefect.yaml")


def test_the_drill_runs_monthly_and_a_recovery_only_by_hand() -> None:
    from prefect.client.schemas.schedules import CronSchedule

    from runbook.calendar import DEFAULT_MONTHLY

    drill, recovery = DEPLOYMENTS["dr-drill"], DEPLOYMENTS["disaster-recovery"]
    assert drill["parameters"]["params"]["mode"] == "drill" and recovery["parameters"]["params"]["mode"] == "recover"
    assert "dr-drill" in [item.procedure for item in DEFAULT_MONTHLY.items] and not drill["schedules"]  # in monthly-maintenance
    schedule = DEPLOYMENTS["monthly-maintenance"]["schedules"][0]
    CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    minute, hour, day, month, weekday = schedule["cron"].split()
    assert day.isdigit() and (month, weekday) == ("*", "*") and minute != "0"  # monthly, not on the hourly backup's minute
    assert recovery["schedules"] == []
    assert "confirm" not in recovery["parameters"]["params"]  # a deployed recovery always asks


def test_the_same_deployments_can_be_served_without_a_work_pool() -> None:
    from deployments.serve import runner_deployments

    built = {d.name: d for d in runner_deployments()}
    assert set(built) == set(DEPLOYMENTS)
    backup = built["backup"]
    assert backup.schedules and backup.schedules[0].schedule.cron == "0 * * * *"
    assert backup.schedules[0].schedule.timezone == "Asia/Tokyo"
    assert backup.parameters == {"params": {"prune": True, "prune_dry_run": False}}
    assert not built["backup-list"].schedules


def test_deployed_runs_read_the_store_variable_and_the_dsn_block_at_run_time() -> None:
    """Templates are rendered by `prefect deploy` (a missing Variable becomes ""): the
    work pool's env names the Secret block and the Variable, and each run reads them."""
    for deployment in DEPLOYMENTS.values():
        env = deployment["work_pool"]["job_variables"]["env"]
        assert not [name for name, value in env.items() if "{{" in str(value)]
        assert env["RUNBOOK_DATABASE_URL_SECRET_BLOCK"] == "runbook-database-url"
        assert env["RUNBOOK_BACKUP_STORE_VARIABLE"] == "runbook_backup_store"
        assert "RUNBOOK_DATABASE_URL" not in env and "RUNBOOK_SANDBOX" not in env
        assert deployment["work_pool"]["name"] == "runbook"


def test_served_runs_get_the_same_env_as_deployed_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import prefect

    import deployments.serve as serving

    pool_env = DEPLOYMENTS["backup"]["work_pool"]["job_variables"]["env"]
    assert serving.job_env() == {k: str(v) for k, v in pool_env.items()}
    monkeypatch.setenv("RUNBOOK_BACKUP_STORE_VARIABLE", "something_else")  # the pool's env wins, as on a worker
    for name in pool_env:
        monkeypatch.setenv(name, os.environ.get(name, ""))  # restored after the test
    seen: dict[str, str] = {}

    def fake_serve(*deployments: object) -> None:  # what the served runs' processes inherit
        seen.update({name: os.environ[name] for name in pool_env})
        seen["count"] = str(len(deployments))

    monkeypatch.setattr(prefect, "serve", fake_serve)
    serving.main()
    assert seen.pop("count") == str(len(DEPLOYMENTS))
    assert seen == {k: str(v) for k, v in pool_env.items()}


def test_serve_refuses_a_template_it_cannot_render(tmp_path: Path) -> None:
    from deployments.serve import job_env

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        deployment["work_pool"] = {"name": "runbook", "job_variables": {"env": {"RUNBOOK_BACKUP_STORE": "{{ prefect.variables.x }}"}}}
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="RUNBOOK_BACKUP_STORE"):
        job_env(path)
