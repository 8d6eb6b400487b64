"""``cert-check`` (runbook §4.3, certificate renewal): days to expiry of each host's
certificate, its chain and hostname; runs the renewal command when one is due."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, Field

from runbook.checks import CheckResult, outcome
from runbook.deploy import certificate_checks
from runbook.errors import ConfigError
from runbook.reports import conclude, expected_failures
from runbook.settings import CertSettings, HookStep, load_settings
from tasks.hooks import run_hook_step
from tasks.shell import known_secrets
from tasks.tls import CertInfo, inspect_certificate_task, now_utc


class CertParameters(BaseModel):
    """Which hosts (default: RUNBOOK_CERTS__HOSTS), and whether renewal may run."""

    hosts: list[str] = Field(default_factory=list, description='"host" or "host:port"; empty: RUNBOOK_CERTS__HOSTS.')
    renew: bool = Field(True, description="Run RUNBOOK_CERTS__RENEW_COMMAND when a certificate is due, then check again.")


def check_all(hosts: list[str], certs: CertSettings) -> tuple[list[CertInfo], list[CheckResult]]:
    infos = [inspect_certificate_task(host, certs.ca_bundle, certs.timeout_seconds) for host in hosts]
    checks: list[CheckResult] = []
    now = now_utc()
    for info in infos:
        days = (info.not_after - now).total_seconds() / 86400 if info.not_after else None
        checks += certificate_checks(
            info.target, days_left=days, chain_ok=info.chain_ok, hostname_ok=info.hostname_ok, problem=info.problem,
            warning_days=certs.warning_days, critical_days=certs.critical_days,
        )
    return infos, checks


def _rows(infos: list[CertInfo]) -> list[dict[str, Any]]:
    now = now_utc()
    return [
        {
            "host": i.target,
            "expires": i.not_after.isoformat(timespec="minutes") if i.not_after else "-",
            "days_left": round((i.not_after - now).total_seconds() / 86400, 1) if i.not_after else None,
            "chain": "ok" if i.chain_ok else "FAILED",
            "hostname": "ok" if i.hostname_ok else "FAILED",
            "issuer": i.issuer,
        }
        for i in infos
    ]


@flow(name="cert-check")
@expected_failures
def cert_check(params: CertParameters = CertParameters()) -> Any:
    """Certificate renewal (§4.3): days to expiry of each host's TLS certificate (warning
    below 30 days, critical below 7), the chain and the hostname. When one is due and a
    renewal command is configured, runs it and checks again."""
    logger = get_run_logger()
    settings = load_settings()
    certs = settings.certs
    hosts = params.hosts or certs.hosts
    if not hosts:
        raise ConfigError('no host to check: pass hosts or set RUNBOOK_CERTS__HOSTS (JSON list, e.g. ["example.com"])')
    infos, checks = check_all(hosts, certs)
    renewal: dict[str, Any] = {"ran": False}
    due = [c for c in checks if c.name.endswith(":expiry") and not c.ok]
    if due and params.renew and certs.renew_command:
        logger.warning("Renewing: %s", ", ".join(c.name.removeprefix("cert:").removesuffix(":expiry") for c in due))
        step = HookStep(
            name="renew certificates", command=certs.renew_command, timeout_seconds=certs.renew_timeout_seconds, env=certs.renew_env
        )
        try:
            renewal = {"ran": True, "result": run_hook_step(step, {}, known_secrets(settings))}
        except Exception as err:  # noqa: BLE001 - a failed renewal is a finding
            renewal = {"ran": True, "error": str(err).splitlines()[0]}
            checks.append(CheckResult(name="renewal", ok=False, detail=renewal["error"]))
        infos, after = check_all(hosts, certs)
        checks = [c for c in checks if c.name == "renewal"] + after
    elif due and params.renew:
        renewal["reason"] = "no renewal command configured (RUNBOOK_CERTS__RENEW_COMMAND)"
    rows = _rows(infos)
    create_table_artifact(key="cert-check", table=rows, description="TLS certificates and their expiry")
    return conclude(
        checks, {"certificates": rows, "renewal": renewal},
        passed=f"certificates: {outcome(checks)}", failed_as="certificates need attention", artifact=("cert-check-report", "Certificates"),
    )
