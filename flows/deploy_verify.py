"""``deploy-verify`` (runbook §1.4–1.5): the last step of a deploy pipeline. Checks
that the platform answers as it should after a deploy and, when a critical check
fails in production, rolls the deploy back and verifies again."""

from __future__ import annotations

import time
from enum import Enum
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, Field, field_validator

from runbook.checks import CheckResult, checks_markdown, outcome
from runbook.deploy import Sample, endpoint_checks, endpoint_rows, should_roll_back
from runbook.errors import ConfigError
from runbook.reports import artifact_key, conclude, expected_failures
from runbook.settings import HookStep, RunbookSettings, check_http_url, load_settings
from tasks.hooks import run_hook_step
from tasks.shell import known_secrets
from tasks.http import probe_endpoints


class Environment(str, Enum):
    STAGING = "staging"
    PRODUCTION = "production"


class DeployVerifyParameters(BaseModel):
    """Which deploy to verify."""

    environment: Environment = Field(Environment.STAGING, description="A critical failure in production triggers the rollback.")
    base_url: str | None = Field(
        None, description="The platform's base URL. Unset: RUNBOOK_DEPLOY__URLS for the environment, else RUNBOOK_PLATFORM_URL."
    )
    expected_version: str | None = Field(None, description="The version the deploy should serve (X-Platform-Version header).")
    samples: int | None = Field(None, ge=1, le=500, description="Requests per endpoint. Unset: RUNBOOK_DEPLOY__SAMPLES (5).")
    rollback: bool = Field(True, description="Allow the automatic rollback in production (off: report only).")

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return check_http_url(value) if value else None


def verify_round(
    base_url: str, settings: RunbookSettings, samples: int, expected_version: str | None
) -> tuple[list[CheckResult], dict[str, list[Sample]]]:
    """One round: every endpoint ``samples`` times, concurrently, judged."""
    deploy = settings.deploy
    measured, anonymous = probe_endpoints(
        base_url, deploy.endpoints, samples, settings.platform_token, deploy.concurrency, deploy.timeout_seconds, deploy.ca_bundle
    )
    by_path: dict[str, list[Sample]] = {e.path: [] for e in deploy.endpoints}
    for sample in measured:
        by_path[sample.path].append(sample)
    checks: list[CheckResult] = []
    for endpoint in deploy.endpoints:
        checks += endpoint_checks(
            endpoint, by_path[endpoint.path], expected_version=expected_version,
            warning_ms=deploy.warning_ms, critical_ms=deploy.critical_ms,
        )
    for sample in anonymous:
        refused = sample.status in (401, 403)
        checks.append(
            CheckResult(
                name=f"auth-required:{sample.path}",
                ok=refused,
                detail=f"HTTP {sample.status} without the token" if sample.status else f"no answer: {sample.error}",
            )
        )
    return checks, by_path


def roll_back(settings: RunbookSettings) -> str:
    """Run the configured rollback command (§1.5), then wait for it to take effect."""
    step = HookStep(
        name="rollback", command=settings.deploy.rollback_command, timeout_seconds=settings.deploy.rollback_timeout_seconds,
        env=settings.deploy.rollback_env,
    )
    summary = run_hook_step(step, {}, known_secrets(settings))
    get_run_logger().warning("Rolled back (%s); verifying again in %.0f s", summary, settings.deploy.rollback_wait_seconds)
    time.sleep(settings.deploy.rollback_wait_seconds)
    return summary


@flow(name="deploy-verify")
@expected_failures
def deploy_verify(params: DeployVerifyParameters = DeployVerifyParameters()) -> Any:
    """Verify a deploy (§1.4): health, the dashboard with its token (and refused without),
    every configured endpoint's status and JSON shape, latency p50/p95 against §7.1,
    cache headers against §7.3, the expected version. In production a critical failure
    runs the rollback command (§1.5), waits, and verifies again. Fails when the deploy is bad."""
    logger = get_run_logger()
    settings = load_settings()
    base_url = params.base_url or settings.deploy.urls.get(params.environment.value) or settings.platform_url
    if not base_url:
        raise ConfigError(
            f"no platform URL for {params.environment.value}: pass base_url (CLI --base-url), "
            f"set RUNBOOK_DEPLOY__URLS ({{\"{params.environment.value}\": ...}}) or RUNBOOK_PLATFORM_URL"
        )
    if any(e.auth for e in settings.deploy.endpoints) and settings.platform_token is None:
        raise ConfigError("an endpoint needs the dashboard's Bearer token: set RUNBOOK_PLATFORM_TOKEN")
    samples = params.samples or settings.deploy.samples
    logger.info("Verifying the %s deploy at %s", params.environment.value, base_url)

    checks, by_path = verify_round(base_url, settings, samples, params.expected_version)
    rounds = [{"round": "after deploy", "checks": checks, "samples": by_path}]
    command = settings.deploy.rollback_command if params.rollback else []
    roll, why = should_roll_back(params.environment.value, checks, command)
    rollback: dict[str, Any] = {"done": False, "reason": why}
    if roll:
        logger.error("Critical failures in production: rolling back (%s)", " ".join(command))
        try:
            rollback.update(done=True, result=roll_back(settings))
            after, after_samples = verify_round(base_url, settings, samples, None)
            rounds.append({"round": "after rollback", "checks": after, "samples": after_samples})
            rollback["verified"] = outcome(after)
        except Exception as err:  # noqa: BLE001 - a failed rollback is reported, loudly
            rollback.update(done=False, error=str(err).splitlines()[0])
            logger.error("The rollback failed: %s", rollback["error"])

    report = {
        "environment": params.environment.value,
        "base_url": base_url,
        "outcome": outcome(checks),
        "checks": [c.model_dump() for c in checks],
        "rollback": rollback,
        "rounds": [
            {"round": r["round"], "outcome": outcome(r["checks"]), "endpoints": endpoint_rows(r["samples"])} for r in rounds
        ],
    }
    if len(rounds) > 1:
        report["after_rollback"] = [c.model_dump() for c in rounds[1]["checks"]]
    _publish(report, rounds, params)
    if rollback.get("done"):
        after_failure = f"; rolled back, verification after it: {rollback.get('verified')}"
    elif rollback.get("error"):
        after_failure = f"; the rollback FAILED: {rollback['error']}"
    else:
        after_failure = f"; not rolled back: {why}"
    return conclude(
        checks, report, passed=f"the {params.environment.value} deploy is good: {outcome(checks)}",
        failed_as=f"the {params.environment.value} deploy is bad", limit=5, after_failure=after_failure,
    )


def _publish(report: dict[str, Any], rounds: list[dict[str, Any]], params: DeployVerifyParameters) -> None:
    env = params.environment.value
    lines = [f"# Deploy verification ({env}, {report['base_url']}): {report['outcome']}", ""]
    rollback = report["rollback"]
    if rollback.get("done"):
        lines.append(f"Rolled back ({rollback['result']}); verification after it: **{rollback.get('verified')}**.")
    elif rollback.get("error"):
        lines.append(f"**The rollback failed**: {rollback['error']}")
    else:
        lines.append(f"No rollback: {rollback['reason']}.")
    for item in rounds:
        lines += ["", f"## {item['round']}: {outcome(item['checks'])}", "", checks_markdown(item["checks"]), ""]
        lines += [
            "| endpoint | samples | p50 ms | p95 ms | DNS ms | connect ms | TLS ms | slowest TTFB ms | statuses |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for row in endpoint_rows(item["samples"]):
            lines.append(
                f"| {row['path']} | {row['samples']} | {row['p50_ms']} | {row['p95_ms']} | {row['new_connection_dns_ms']} | "
                f"{row['new_connection_connect_ms']} | {row['new_connection_tls_ms']} | {row['slowest_ttfb_ms']} | {row['statuses']} |"
            )
    create_markdown_artifact(key=artifact_key("deploy-verify", env), markdown="\n".join(lines), description=f"Deploy verification, {env}")
    create_table_artifact(key=artifact_key("deploy-verify-endpoints", env), table=report["rounds"][0]["endpoints"], description=f"Endpoints after the {env} deploy")


