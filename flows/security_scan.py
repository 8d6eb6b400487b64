"""``security-scan`` (runbook §5.2, §3.5): the dependency vulnerability scan. Runs the
configured scanners (pip-audit; ``npm audit`` in the platform's checkout), reads their
JSON reports into findings, applies the ignores, and fails at "high"."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from runbook.checks import CheckResult
from runbook.errors import ConfigError
from runbook.reports import artifact_key, conclude, expected_failures
from runbook.security.scan import ScanOutcome, apply_ignores, failing, interpret, summary
from runbook.settings import RunbookSettings, ScannerCommand, load_settings
from tasks.shell import known_secrets, run_command

PIP_AUDIT = ["pip-audit", "--format", "json", "--progress-spinner", "off"]
NPM_AUDIT = ["npm", "audit", "--json"]


class SecurityScanParameters(BaseModel):
    """Which scanners (default: all of RUNBOOK_SECURITY__SCANNERS)."""

    scanners: list[str] = Field(default_factory=list, description="Names of the scanners to run; empty: all configured.")


def today(zone: str) -> date:
    """The team's date, against which ignores expire (a function, so tests set the day)."""
    return datetime.now(ZoneInfo(zone)).date()


def configured_scanners(settings: RunbookSettings) -> list[ScannerCommand]:
    """RUNBOOK_SECURITY__SCANNERS, or the defaults: pip-audit, and npm audit in the
    platform's checkout when RUNBOOK_PREDEPLOY__PROJECT_DIR names one."""
    scanners = settings.security.scanners
    if scanners is not None:
        if not scanners:
            raise ConfigError("RUNBOOK_SECURITY__SCANNERS: an empty list scans nothing; unset it for the defaults")
        names = [s.name for s in scanners]
        if len(set(names)) != len(names):
            raise ConfigError(f"RUNBOOK_SECURITY__SCANNERS: scanner names must be unique, got {names}")
        return scanners
    defaults = [ScannerCommand(name="pip-audit", kind="pip-audit", command=PIP_AUDIT)]
    if settings.predeploy.project_dir:
        defaults.append(ScannerCommand(name="npm-audit", kind="npm-audit", command=NPM_AUDIT, cwd=settings.predeploy.project_dir))
    return defaults


@task(name="run-scanner", cache_policy=NO_CACHE)
def run_scanner(scanner: ScannerCommand, settings: RunbookSettings) -> ScanOutcome:
    """Run one scanner with its timeout and minimal environment; its outcome (clean,
    findings, error) is read from its JSON report, never from its exit code alone. Its
    output goes to an artifact."""
    logger = get_run_logger()
    logger.info("Scanner %r: running %s", scanner.name, scanner.command[0])
    if scanner.cwd is not None and not scanner.cwd.is_dir():
        return ScanOutcome(scanner.name, "error", problem=f"folder {str(scanner.cwd)!r} does not exist")
    result = run_command(
        scanner.command, timeout_s=scanner.timeout_seconds, env_names=scanner.env, cwd=scanner.cwd,
        secrets=known_secrets(settings), keep_stdout=True,
    )
    outcome = interpret(
        scanner.name, scanner.kind, exit_code=result.exit_code, problem=result.problem, stdout=result.stdout,
        exit_codes=scanner.exit_codes, default_severity=scanner.severity,
    )
    create_markdown_artifact(
        key=artifact_key("security-scanner", scanner.name),
        markdown=f"# Scanner {scanner.name}: {outcome.status}\n\n{outcome.problem or result.summary()}\n\n"
        f"```\n{result.output[-10_000:]}\n```",
        description=f"Output of the {scanner.name} scanner",
    )
    if outcome.status == "error":
        logger.error("Scanner %r: scan error: %s", scanner.name, outcome.problem)
    else:
        logger.info("Scanner %r: %s, %d finding(s)", scanner.name, outcome.status, len(outcome.findings))
    return outcome


@flow(name="security-scan")
@expected_failures
def security_scan(params: SecurityScanParameters = SecurityScanParameters()) -> Any:
    """Vulnerability scan (§5.2, §3.5): runs each configured scanner (pip-audit; npm audit
    in the platform's checkout), reads its JSON report into findings (package, version,
    advisory, severity, fixes). A scanner that is missing, crashes, times out or prints
    no report is a scan error, never "no vulnerabilities". Ignores need a reason and an
    expiry; an expired one counts again. Fails on any finding at RUNBOOK_SECURITY__FAIL_AT
    (high) or above, or any scan error."""
    settings = load_settings()
    security = settings.security
    scanners = configured_scanners(settings)
    if params.scanners:
        unknown = sorted(set(params.scanners) - {s.name for s in scanners})
        if unknown:
            raise ConfigError(f"unknown scanner {', '.join(unknown)}: configured are {', '.join(s.name for s in scanners)}")
        scanners = [s for s in scanners if s.name in params.scanners]
    day = today(settings.timezone)

    checks: list[CheckResult] = []
    rows: list[dict[str, Any]] = []
    per_scanner: list[dict[str, Any]] = []
    for scanner in scanners:
        outcome = run_scanner(scanner, settings)
        judged = apply_ignores(outcome.findings, security.ignores, day)
        blocking = failing(judged, security.fail_at)
        name = f"scan:{scanner.name}"
        if outcome.status == "error":
            checks.append(CheckResult(name=name, ok=False, detail=f"scan error: {outcome.problem}"))
        elif outcome.status == "clean":
            checks.append(CheckResult(name=name, ok=True, detail="clean: no known vulnerabilities"))
        elif blocking:
            checks.append(CheckResult(name=name, ok=False, detail=f"{summary(judged)} (fails at {security.fail_at})"))
        else:  # findings below the threshold, or all ignored: a warning, not a failure
            counted = any(j.counts for j in judged)
            checks.append(CheckResult(name=name, ok=not counted, critical=False, detail=summary(judged)))
        per_scanner.append({
            "name": scanner.name, "kind": scanner.kind, "status": outcome.status, "problem": outcome.problem,
            "findings": len(judged), "failing": len(blocking), "skipped": outcome.skipped,
        })
        for j in judged:
            f = j.finding
            state = {
                "open": "open",
                "ignored": f"ignored until {j.ignore_expires} ({j.ignore_reason})",
                "ignore-expired": f"ignore EXPIRED {j.ignore_expires}: counts again",
            }[j.state]
            rows.append({
                "scanner": f.scanner, "package": f.package, "version": f.version, "advisory": f.advisory,
                "severity": f.severity, "fix_versions": ", ".join(f.fix_versions) or "-", "state": state,
                "fails": j in blocking, "title": f.title,
            })

    create_table_artifact(
        key=artifact_key("security-scan", "findings"), table=rows or [{"scanner": "-", "package": "no findings"}],
        description=f"Vulnerability findings ({len(rows)}); failing at {security.fail_at} or above",
    )
    return conclude(
        checks, {"scanners": per_scanner, "findings": rows, "fail_at": security.fail_at, "today": day.isoformat()},
        passed=f"security scan: {len(rows)} finding(s), none failing at {security.fail_at}",
        failed_as="security scan failed",
        artifact=(artifact_key("security-scan", "report"), "Security scan"), description="Scanners and their outcome",
    )
