"""security-scan as real flow runs: the scanners are small Python commands printing the
fixture reports of tests/fixtures/security, exiting with a code that differs from the
outcome, so only the parsed output can decide."""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

import flows.security_scan as scan_flow
from flows.security_scan import SecurityScanParameters, configured_scanners, security_scan
from runbook.settings import load_settings
from tests.conftest import runbook_here

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "security"
PRINT = "import sys; sys.stdout.write(open(sys.argv[1]).read()); sys.exit(int(sys.argv[2]))"


def printing(name: str, kind: str, fixture: str, exit_code: int = 1, **extra: Any) -> dict[str, Any]:
    """A scanner that prints a fixture report and exits ``exit_code``."""
    return {"name": name, "kind": kind, "command": [sys.executable, "-c", PRINT, str(FIXTURES / fixture), str(exit_code)],
            "timeout_seconds": 30, **extra}


def configure(monkeypatch: pytest.MonkeyPatch, *scanners: dict[str, Any], ignores: list[dict[str, Any]] | None = None) -> None:
    monkeypatch.setenv("RUNBOOK_SECURITY__SCANNERS", json.dumps(list(scanners)))
    monkeypatch.setenv("RUNBOOK_SECURITY__IGNORES", json.dumps(ignores or []))
    monkeypatch.setattr(scan_flow, "today", lambda zone: date(2026, 6, 1))


def _run(**kwargs: Any) -> tuple[Any, dict[str, Any]]:
    state = security_scan(SecurityScanParameters(**kwargs), return_state=True)
    return state, state.result(raise_on_failure=False)


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_clean_reports_pass_although_the_scanners_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, printing("pip", "pip-audit", "pip-audit-clean.json"), printing("npm", "npm-audit", "npm-v7-clean.json"))
    state, report = _run()
    assert state.is_completed(), state.message
    assert [s["status"] for s in report["scanners"]] == ["clean", "clean"] and report["findings"] == []


def test_a_high_finding_fails_the_run_although_the_scanner_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, printing("npm", "npm-audit", "npm-v7.json", exit_code=0))
    state, report = _run()
    assert state.is_failed() and "scan:npm" in state.message and "1 high, 1 low" in state.message
    failing = [(r["package"], r["severity"]) for r in report["findings"] if r["fails"]]
    assert failing == [("lodash", "high")] and len(report["findings"]) == 2
    result = runbook_here("security-scan", env={}, monkeypatch=monkeypatch)  # the CLI: exit 1, the findings listed
    assert result.returncode == 1 and "FAIL high      lodash <4.17.19  GHSA-p6mc-m468-83gw  fix: lodash@4.17.21" in result.stdout


def test_low_findings_only_are_a_warning_and_the_threshold_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, printing("npm", "npm-audit", "npm-v6.json"))  # moderate and critical
    monkeypatch.setenv("RUNBOOK_SECURITY__FAIL_AT", "critical")
    state, report = _run()
    assert state.is_failed() and "1 critical, 2 moderate" in state.message
    ignore = [{"id": "GHSA-p6mc-m468-83gw", "reason": "lodash is dev-only here", "expires": "2026-06-30"}]
    configure(monkeypatch, printing("npm", "npm-audit", "npm-v6.json"), ignores=ignore)
    state, report = _run()
    assert state.is_completed() and report["outcome"] == "passed-with-warnings"
    assert not _checks(report)["scan:npm"]["critical"] and "2 moderate; 1 ignored" in _checks(report)["scan:npm"]["detail"]


@pytest.mark.parametrize(
    ("scanner", "problem"),
    [
        (printing("pip", "pip-audit", "malformed.json"), "not JSON"),
        (printing("pip", "pip-audit", "empty.json", exit_code=0), "printed nothing"),
        ({"name": "pip", "kind": "pip-audit", "command": [sys.executable, "-c", "raise SystemExit('crashed')"]}, "printed nothing"),
        ({"name": "pip", "kind": "pip-audit", "command": [sys.executable, "-c", "import os; os.abort()"]}, "exited -6"),
        ({"name": "pip", "kind": "pip-audit", "command": ["pip-audit-not-installed-here", "--format", "json"]},
         "'pip-audit-not-installed-here' not found"),
        ({"name": "pip", "kind": "pip-audit", "command": [sys.executable, "-c", "import time; time.sleep(30)"], "timeout_seconds": 1},
         "still running after 1 s"),
    ],
    ids=["malformed", "empty", "crash", "abort", "missing", "timeout"],
)
def test_a_scanner_that_fails_to_report_is_a_scan_error_never_clean(
    monkeypatch: pytest.MonkeyPatch, scanner: dict[str, Any], problem: str
) -> None:
    configure(monkeypatch, scanner, printing("npm", "npm-audit", "npm-v7-clean.json"))
    state, report = _run()
    assert state.is_failed() and "scan:pip (scan error" in state.message and problem in state.message
    assert [s["status"] for s in report["scanners"]] == ["error", "clean"]


def test_an_ignore_holds_until_it_expires_then_counts_again_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    ignore = [{"id": "CVE-2024-35195", "reason": "verify=False is never used", "expires": "2026-06-01"},
              {"id": "PYSEC-2024-15", "reason": "templates are trusted", "expires": "2027-01-01"}]
    configure(monkeypatch, printing("pip", "pip-audit", "pip-audit-findings.json"), ignores=ignore)
    state, report = _run()
    assert state.is_completed(), state.message
    assert {r["package"]: r["state"] for r in report["findings"]} == {
        "requests": "ignored until 2026-06-01 (verify=False is never used)",
        "jinja2": "ignored until 2027-01-01 (templates are trusted)",
    }
    monkeypatch.setattr(scan_flow, "today", lambda zone: date(2026, 6, 2))
    state, report = _run()
    assert state.is_failed() and "ignore of GHSA-9wx4-h78v-vm56 expired 2026-06-01" in state.message
    assert [(r["package"], r["fails"]) for r in report["findings"]] == [("requests", True), ("jinja2", False)]


def test_an_ignore_without_reason_or_expiry_exits_2_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    scanners = json.dumps([printing("pip", "pip-audit", "pip-audit-findings.json")])
    result = runbook_here("security-scan", env={
        "RUNBOOK_SECURITY__SCANNERS": scanners, "RUNBOOK_SECURITY__IGNORES": json.dumps([{"id": "PYSEC-2024-15", "expires": "2027-01-01"}]),
    }, monkeypatch=monkeypatch)
    assert result.returncode == 2 and "RUNBOOK_SECURITY__IGNORES: the ignore of 'PYSEC-2024-15' has no reason" in result.stderr
    monkeypatch.setenv("RUNBOOK_SECURITY__IGNORES", json.dumps([{"id": "PYSEC-2024-15", "reason": "trusted"}]))
    result = runbook_here("security-scan", env={}, monkeypatch=monkeypatch)
    assert result.returncode == 2 and "RUNBOOK_SECURITY__IGNORES: the ignore of 'PYSEC-2024-15' has no expires" in result.stderr


def test_the_defaults_are_pip_audit_and_npm_audit_in_the_platform_checkout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RUNBOOK_SECURITY__SCANNERS", raising=False)
    monkeypatch.delenv("RUNBOOK_PREDEPLOY__PROJECT_DIR", raising=False)
    assert [s.command for s in configured_scanners(load_settings())] == [scan_flow.PIP_AUDIT]
    monkeypatch.setenv("RUNBOOK_PREDEPLOY__PROJECT_DIR", str(tmp_path))
    npm = configured_scanners(load_settings())[1]
    assert (npm.kind, npm.command, npm.cwd) == ("npm-audit", ["npm", "audit", "--json"], tmp_path)
    monkeypatch.setenv("RUNBOOK_SECURITY__SCANNERS", "[]")
    state, _ = _run()
    assert state.is_failed() and "RUNBOOK_SECURITY__SCANNERS" in state.message
