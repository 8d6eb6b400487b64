"""The scanners' JSON outputs read into findings (fixtures in tests/fixtures/security),
the three outcomes, the ignores and the verdict. Pure: no scanner runs here."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from runbook.security.scan import (
    ScanOutputError, apply_ignores, failing, interpret, parse_npm_audit, parse_pip_audit, summary,
)
from runbook.settings import SecurityIgnore

FIXTURES = Path(__file__).parent / "fixtures" / "security"


def text(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_pip_audit_findings_carry_package_version_advisory_fixes_and_the_configured_severity() -> None:
    findings, skipped = parse_pip_audit(text("pip-audit-findings.json"), default_severity="high")
    assert [(f.package, f.version, f.advisory, f.fix_versions, f.severity) for f in findings] == [
        ("requests", "2.31.0", "GHSA-9wx4-h78v-vm56", ("2.32.0",), "high"),
        ("jinja2", "3.1.2", "PYSEC-2024-15", ("3.1.3",), "high"),
    ]
    assert findings[1].aliases == ("CVE-2024-22195", "GHSA-h5c8-rqwp-cp95") and skipped == 0
    findings, _ = parse_pip_audit(text("pip-audit-findings.json"), default_severity="moderate")
    assert {f.severity for f in findings} == {"moderate"}


def test_a_clean_pip_audit_report_has_no_findings_and_counts_what_it_skipped() -> None:
    assert parse_pip_audit(text("pip-audit-clean.json")) == ([], 1)


def test_npm_v7_one_finding_per_advisory_with_its_own_severity_not_repeated_through_dependents() -> None:
    findings = parse_npm_audit(text("npm-v7.json"))
    rows = {(f.package, f.advisory, f.severity, f.version, f.fix_versions) for f in findings}
    assert rows == {
        ("lodash", "GHSA-p6mc-m468-83gw", "high", "<4.17.19", ("lodash@4.17.21",)),
        ("debug", "GHSA-gxpj-cx7g-858c", "low", ">=2.0.0 <2.6.9", ("npm audit fix",)),
    }  # express is affected only through debug: debug's finding, not a second one
    assert parse_npm_audit(text("npm-v7-clean.json")) == []


def test_the_older_npm_v6_advisories_shape_is_read_one_finding_per_installed_version() -> None:
    findings = parse_npm_audit(text("npm-v6.json"))
    assert sorted((f.package, f.version, f.advisory, f.severity) for f in findings) == [
        ("lodash", "4.17.15", "GHSA-p6mc-m468-83gw", "critical"),
        ("minimist", "0.0.8", "1179", "moderate"),
        ("minimist", "1.2.0", "1179", "moderate"),
    ]
    assert "CVE-2020-7598" in findings[0].aliases + findings[1].aliases


@pytest.mark.parametrize(
    ("kind", "fixture", "message"),
    [
        ("pip-audit", "malformed.json", "not JSON"),
        ("npm-audit", "malformed.json", "not JSON"),
        ("pip-audit", "empty.json", "printed nothing"),
        ("npm-audit", "empty.json", "printed nothing"),
        ("npm-audit", "npm-error.json", "existing lockfile"),
        ("npm-audit", "pip-audit-clean.json", "not an npm audit report"),
        ("pip-audit", "npm-v7.json", "not a pip-audit report"),
    ],
)
def test_output_that_is_not_the_report_is_a_scan_error_never_clean(kind: str, fixture: str, message: str) -> None:
    outcome = interpret("s", kind, exit_code=0, problem=None, stdout=text(fixture))
    assert outcome.status == "error" and message in outcome.problem and not outcome.findings


def test_counts_without_listed_vulnerabilities_are_an_error() -> None:
    with pytest.raises(ScanOutputError, match="counts 2"):
        parse_npm_audit('{"vulnerabilities": {}, "metadata": {"vulnerabilities": {"high": 2, "total": 2}}}')


def test_the_exit_code_never_decides_alone() -> None:
    clean = interpret("s", "pip-audit", exit_code=1, problem=None, stdout=text("pip-audit-clean.json"))
    assert clean.status == "clean"  # exit 1 with a clean report is clean
    found = interpret("s", "npm-audit", exit_code=0, problem=None, stdout=text("npm-v7.json"))
    assert found.status == "findings" and len(found.findings) == 2  # exit 0 with findings is findings
    crashed = interpret("s", "pip-audit", exit_code=-11, problem=None, stdout=text("pip-audit-clean.json"))
    assert crashed.status == "error" and "exited -11" in crashed.problem
    missing = interpret("s", "pip-audit", exit_code=None, problem="command 'pip-audit' not found", stdout=None)
    assert missing.status == "error" and "pip-audit" in missing.problem


def test_an_ignore_holds_until_its_expiry_day_then_the_finding_counts_again() -> None:
    findings = parse_npm_audit(text("npm-v7.json"))
    ignores = [SecurityIgnore(id="ghsa-p6mc-m468-83gw", reason="not reachable: server-side only", expires=date(2026, 3, 31))]
    judged = apply_ignores(findings, ignores, date(2026, 3, 31))
    lodash = next(j for j in judged if j.finding.package == "lodash")
    assert lodash.state == "ignored" and not lodash.counts and lodash.ignore_reason.startswith("not reachable")
    assert failing(judged, "high") == [] and "1 ignored" in summary(judged)
    judged = apply_ignores(findings, ignores, date(2026, 4, 1))
    lodash = next(j for j in judged if j.finding.package == "lodash")
    assert lodash.state == "ignore-expired" and lodash.counts
    assert [j.finding.package for j in failing(judged, "high")] == ["lodash"]
    assert "ignore of GHSA-p6mc-m468-83gw expired 2026-03-31" in summary(judged)


def test_an_alias_matches_and_the_threshold_is_configurable() -> None:
    findings, _ = parse_pip_audit(text("pip-audit-findings.json"))
    judged = apply_ignores(findings, [SecurityIgnore(id="CVE-2024-22195", reason="templates are ours", expires=date(2030, 1, 1))], date(2026, 1, 1))
    assert [j.state for j in judged] == ["open", "ignored"]
    low = apply_ignores(parse_npm_audit(text("npm-v7.json")), [], date(2026, 1, 1))
    assert len(failing(low, "high")) == 1 and len(failing(low, "low")) == 2 and failing(low, "critical") == []


def test_an_ignore_needs_a_reason_and_an_expiry() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="has no reason"):
        SecurityIgnore(id="GHSA-x", reason="  ", expires=date(2030, 1, 1))
    with pytest.raises(ValidationError, match="has no expires"):
        SecurityIgnore.model_validate({"id": "GHSA-x", "reason": "why"})
