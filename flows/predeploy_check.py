"""``predeploy-check`` (runbook §1.1–1.3): the gate before a production deploy. Every
secret of §0 exists, every configured gate command passes; optionally deploys to
staging, verifies, then production, and verifies again."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from flows.deploy_verify import DeployVerifyParameters, Environment, deploy_verify
from runbook.checks import CheckResult, failed
from runbook.errors import ConfigError
from runbook.reports import artifact_key, conclude, expected_failures
from runbook.settings import GateCommand, RunbookSettings, load_settings
from tasks.secrets import block_name, locate_secrets_task
from tasks.shell import CommandResult, known_secrets, run_command

ORDER = ("staging", "production")  # §1.3
NO_GATES = (
    "no gate command configured: §1.1 requires the production check, the security scan, "
    "the performance test and the e2e test to pass"
)


class PredeployParameters(BaseModel):
    """Check only (default), or check and deploy."""

    deploy: bool = Field(False, description="After a passing gate: deploy to staging, verify, then production, verify.")


def secret_checks(found: dict[str, str | None], source: str) -> list[CheckResult]:
    """One check per secret of §0, naming where it is, or how to provide it."""
    checks = []
    for name, place in found.items():
        if place:
            checks.append(CheckResult(name=f"secret:{name}", ok=True, detail=f"present ({place})"))
            continue
        where = {
            "prefect": f"a Prefect Secret block {block_name(name)!r}",
            "environment": f"the environment variable {name}",
            "both": f"a Prefect Secret block {block_name(name)!r} or the environment variable {name}",
        }[source]
        checks.append(CheckResult(name=f"secret:{name}", ok=False, detail=f"missing: provide {where}"))
    return checks


@task(name="run-gate", cache_policy=NO_CACHE)
def run_gate(gate: GateCommand, settings: RunbookSettings) -> CommandResult:
    """Run one gate command with its timeout; its output goes to an artifact."""
    logger = get_run_logger()
    logger.info("Gate %r: running %s", gate.name, gate.command[0])
    result = run_command(
        gate.command, timeout_s=gate.timeout_seconds, env_names=gate.env, cwd=settings.predeploy.project_dir,
        secrets=known_secrets(settings),
    )
    create_markdown_artifact(
        key=artifact_key("predeploy-gate", gate.name),
        markdown=f"# Gate {gate.name}: {'passed' if result.ok else 'FAILED'}\n\n{result.summary()}\n\n```\n{result.output[-10_000:]}\n```",
        description=f"Output of the {gate.name} gate",
    )
    (logger.info if result.ok else logger.error)("Gate %r: %s", gate.name, result.summary())
    return result


@task(name="deploy", cache_policy=NO_CACHE)
def deploy_to(environment: str, settings: RunbookSettings) -> CommandResult:
    """Run the deploy command of one environment (§1.3)."""
    command = settings.predeploy.deploy_commands[environment]
    get_run_logger().warning("Deploying to %s: %s", environment, command[0])
    return run_command(
        command, timeout_s=settings.predeploy.deploy_timeout_seconds, env_names=settings.predeploy.deploy_env,
        cwd=settings.predeploy.project_dir, secrets=known_secrets(settings),
    )


@flow(name="predeploy-check")
@expected_failures
def predeploy_check(params: PredeployParameters = PredeployParameters()) -> Any:
    """The gate before a deploy (§1.1–1.2): every secret of §0 exists (names only, never
    a value), every configured gate command (production check, security scan, performance
    test, e2e test) passes within its timeout; no gate configured is not ready. With deploy: staging, deploy-verify,
    production, deploy-verify (§1.3–1.4), stopping at the first failure."""
    logger = get_run_logger()
    settings = load_settings()
    if params.deploy:
        absent = [env for env in ORDER if not settings.predeploy.deploy_commands.get(env)]
        if absent:
            raise ConfigError(f"RUNBOOK_PREDEPLOY__DEPLOY_COMMANDS has no command for {', '.join(absent)}")
        if not settings.predeploy.gates:
            raise ConfigError(f"RUNBOOK_PREDEPLOY__GATES: {NO_GATES}; nothing was deployed")
    found = locate_secrets_task(settings.predeploy.secrets, settings.predeploy.secret_source)
    checks = secret_checks(found, settings.predeploy.secret_source)
    if not settings.predeploy.gates:  # no gate is "not ready", never a pass
        checks.append(CheckResult(name="gates", ok=False, detail=f"{NO_GATES} (RUNBOOK_PREDEPLOY__GATES)"))
    for gate in settings.predeploy.gates:
        result = run_gate(gate, settings)
        checks.append(CheckResult(name=f"gate:{gate.name}", ok=result.ok, detail=result.summary()))

    deployed: list[dict[str, Any]] = []
    gate_passed = not failed(checks, critical_only=True)
    if params.deploy and not gate_passed:
        logger.error("Not deploying: the gate failed")
    if params.deploy and gate_passed:
        for environment in ORDER:
            result = deploy_to(environment, settings)
            entry: dict[str, Any] = {"environment": environment, "deploy": result.summary(), "deployed": result.ok}
            deployed.append(entry)
            checks.append(CheckResult(name=f"deploy:{environment}", ok=result.ok, detail=result.summary()))
            if not result.ok:
                break
            state = deploy_verify(DeployVerifyParameters(environment=Environment(environment)), return_state=True)
            verified = state.is_completed()
            entry["verified"] = verified
            checks.append(CheckResult(name=f"deploy-verify:{environment}", ok=verified, detail=state.message or ""))
            if not verified:
                break

    return conclude(
        checks, {"gate_passed": gate_passed, "deployed": deployed},
        passed="pre-deploy check passed" + (f"; deployed to {', '.join(d['environment'] for d in deployed)}" if deployed else ""),
        failed_as="pre-deploy check failed", after_failure="; nothing was deployed" if params.deploy and not gate_passed else "",
        artifact=("predeploy-check", "Pre-deploy check"), description="Secrets, gates and deploys",
    )
