"""``diagnose`` (runbook §3): the troubleshooting steps, run for the operator. Each
component's findings are checks; a component that fails carries the advice of §3."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, Field

from runbook.checks import CheckResult, checks_markdown, failed, outcome
from runbook.deploy import Sample, endpoint_checks, endpoint_rows
from runbook.diagnose import ADVICE, COMPONENTS, database_checks
from runbook.errors import ConfigError, RunbookError
from runbook.reports import conclude, expected_failures
from runbook.settings import RunbookSettings
from runbook.target import prepare
from tasks.http import probe_endpoints
from tasks.postgres import diagnose_database_task
from tasks.thirdparty import check_ai_services, check_external_apis, check_payments


class Component(str, Enum):
    API = "api"
    DATABASE = "database"
    EXTERNAL_APIS = "external-apis"
    PAYMENTS = "payments"
    AI = "ai"
    ALL = "all"


class DiagnoseParameters(BaseModel):
    """What to diagnose."""

    component: Component = Field(Component.ALL, description="One component of §3, or all of them.")


def platform_url(settings: RunbookSettings) -> str:
    if not settings.platform_url:
        raise ConfigError("no platform URL: set RUNBOOK_PLATFORM_URL")
    return settings.platform_url


def diagnose_api(settings: RunbookSettings, details: dict[str, Any]) -> list[CheckResult]:
    """Each endpoint's timing breakdown (§3.1): DNS, connect, TLS, first byte, total."""
    base_url = platform_url(settings)
    endpoints = settings.deploy.endpoints
    checks: list[CheckResult] = []
    if settings.platform_token is None and any(e.auth for e in endpoints):
        endpoints = [e for e in endpoints if not e.auth]
        checks.append(CheckResult(name="api:token", ok=False, detail="RUNBOOK_PLATFORM_TOKEN unset: authenticated endpoints skipped", critical=False))
    measured, _ = probe_endpoints(
        base_url, endpoints, settings.diagnose.api_samples, settings.platform_token, settings.deploy.concurrency,
        settings.deploy.timeout_seconds, settings.deploy.ca_bundle,
    )
    by_path: dict[str, list[Sample]] = {e.path: [] for e in endpoints}
    for sample in measured:
        by_path[sample.path].append(sample)
    for endpoint in endpoints:
        checks += endpoint_checks(endpoint, by_path[endpoint.path], warning_ms=settings.deploy.warning_ms, critical_ms=settings.deploy.critical_ms)
    details["api"] = endpoint_rows(by_path)
    return checks


def diagnose_db(settings: RunbookSettings, details: dict[str, Any]) -> list[CheckResult]:
    """Connect time, version, connections, long-running queries, RLS (§3.2)."""
    _, target = prepare()
    found = diagnose_database_task(target.dsn, settings.diagnose.rls_tables, settings.diagnose.long_query_seconds, settings.connect_timeout)
    details["database"] = {"connections": found.connections, "max_connections": found.max_connections, "long_running": len(found.long_running)}
    return database_checks(
        connect_ms=found.connect_ms, server_version=found.server_version, connections=found.connections,
        max_connections=found.max_connections, long_running=found.long_running, rls_off=found.rls_off, missing=found.missing,
        long_query_s=settings.diagnose.long_query_seconds, connections_warning_pct=settings.diagnose.connections_warning_pct,
    )


def diagnose_external(settings: RunbookSettings, details: dict[str, Any]) -> list[CheckResult]:
    return check_external_apis(settings.diagnose, settings.predeploy.secret_source)


def diagnose_payments(settings: RunbookSettings, details: dict[str, Any]) -> list[CheckResult]:
    return check_payments(platform_url(settings), settings.predeploy.secret_source, settings.diagnose.timeout_seconds)


def diagnose_ai(settings: RunbookSettings, details: dict[str, Any]) -> list[CheckResult]:
    return check_ai_services(settings.diagnose, settings.predeploy.secret_source)


DIAGNOSES: dict[str, Callable[[RunbookSettings, dict[str, Any]], list[CheckResult]]] = {
    "api": diagnose_api,
    "database": diagnose_db,
    "external-apis": diagnose_external,
    "payments": diagnose_payments,
    "ai": diagnose_ai,
}


@flow(name="diagnose")
@expected_failures
def diagnose(params: DiagnoseParameters = DiagnoseParameters()) -> Any:
    """Troubleshooting (§3), for one component or all: api (timing breakdown per
    endpoint), database (connections, long queries, RLS), external-apis (CoinMarketCap
    plan usage, CoinGecko), payments (a signed Stripe test event, twice), ai (OpenAI and
    Anthropic model lists). Each failing component carries the advice of §3."""
    logger = get_run_logger()
    settings, _ = prepare()
    components = list(COMPONENTS) if params.component is Component.ALL else [params.component.value]
    results: dict[str, list[CheckResult]] = {}
    details: dict[str, Any] = {}
    for component in components:
        try:
            results[component] = DIAGNOSES[component](settings, details)
        except RunbookError as err:
            if params.component is not Component.ALL:
                raise  # asked for this one: the setting it lacks is the answer (exit 2)
            results[component] = [CheckResult(name=f"{component}:setup", ok=False, detail=str(err).splitlines()[0])]
        logger.info("%s: %s", component, outcome(results[component]))
    checks = [c for component in components for c in results[component]]
    advice = {c: ADVICE[c] for c in components if failed(results[c])}
    report = {"components": {c: outcome(results[c]) for c in components}, "advice": advice, "details": details}
    lines = [f"# Diagnosis ({params.component.value}): {outcome(checks)}", ""]
    for component in components:
        lines += [f"## {component}: {outcome(results[component])}", "", checks_markdown(results[component]), ""]
        if component in advice:
            lines += [f"**Next**: {advice[component]}", ""]
    create_markdown_artifact(key=f"diagnose-{params.component.value}", markdown="\n".join(lines), description="Troubleshooting (§3)")
    if "api" in details:
        create_table_artifact(key="diagnose-api-timings", table=details["api"], description="Timing breakdown per endpoint")
    return conclude(checks, report, passed=f"diagnosis: {outcome(checks)}", failed_as="diagnosis found problems")
