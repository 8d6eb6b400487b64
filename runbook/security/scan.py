"""The vulnerability scan (§5.2, §3.5): scanners' JSON outputs read into findings, the
ignores applied, the verdict. Pure; no I/O.

Three outcomes per scanner, never read from the exit code alone (pip-audit and
``npm audit`` both exit 1 when they find something): ``clean``, ``findings``, or
``error``. A scanner that is missing, times out, exits with an unexpected code, prints
nothing or prints something that is not its report is an error, never "no
vulnerabilities"."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

SEVERITIES = ("info", "low", "moderate", "high", "critical")  # npm's scale, lowest first
ALIASES = {"medium": "moderate", "none": "info", "informational": "info"}
Status = Literal["clean", "findings", "error"]


class ScanOutputError(ValueError):
    """The output is not the scanner's report: the scan is an error."""


@dataclass(frozen=True)
class Finding:
    """One advisory affecting one installed package."""

    scanner: str
    package: str
    version: str  # the installed version, or npm v7's vulnerable range (it names no version)
    advisory: str
    severity: str
    fix_versions: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    title: str = ""

    @property
    def ids(self) -> set[str]:
        return {self.advisory.lower(), *(a.lower() for a in self.aliases)}


@dataclass(frozen=True)
class ScanOutcome:
    scanner: str
    status: Status
    findings: tuple[Finding, ...] = ()
    problem: str = ""  # why the scan is an error
    skipped: int = 0  # dependencies the scanner could not audit (pip-audit's skip_reason)


def severity(value: Any, default: str) -> str:
    """A scanner's severity word on the npm scale; an unknown one is ``default``."""
    word = str(value or "").strip().lower()
    word = ALIASES.get(word, word)
    return word if word in SEVERITIES else default


def at_least(level: str, threshold: str) -> bool:
    return SEVERITIES.index(level) >= SEVERITIES.index(threshold)


def _load(text: str | None) -> Any:
    if text is None or not text.strip():
        raise ScanOutputError("printed nothing")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        first = text.strip().splitlines()[0][:120]
        raise ScanOutputError(f"output is not JSON ({err.msg} at line {err.lineno}): {first!r}") from None


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(str(v) for v in value if isinstance(v, (str, int)))


def parse_pip_audit(text: str | None, scanner: str = "pip-audit", default_severity: str = "high") -> tuple[list[Finding], int]:
    """pip-audit ``--format json``: ``{"dependencies": [{"name", "version", "vulns": [...]}]}``
    (older versions: the list alone). It names no severity: each finding gets
    ``default_severity``. Returns the findings and the count of skipped dependencies."""
    data = _load(text)
    dependencies = data.get("dependencies") if isinstance(data, dict) else data
    if not isinstance(dependencies, list):
        raise ScanOutputError('not a pip-audit report: no "dependencies" list')
    findings, skipped = [], 0
    for dep in dependencies:
        if not isinstance(dep, dict) or not isinstance(dep.get("name"), str):
            raise ScanOutputError(f"not a pip-audit report: dependency {str(dep)[:80]!r}")
        if dep.get("skip_reason"):
            skipped += 1
        vulns = dep.get("vulns", [])
        if not isinstance(vulns, list):
            raise ScanOutputError(f"not a pip-audit report: vulns of {dep['name']!r}")
        for vuln in vulns:
            if not isinstance(vuln, dict) or not vuln.get("id"):
                raise ScanOutputError(f"not a pip-audit report: a vulnerability of {dep['name']!r} without id")
            findings.append(Finding(
                scanner, dep["name"], str(dep.get("version", "")), str(vuln["id"]), default_severity,
                _strings(vuln.get("fix_versions")), _strings(vuln.get("aliases")),
                str(vuln.get("description") or "").strip().splitlines()[0][:200] if vuln.get("description") else "",
            ))
    return findings, skipped


def _advisory_id(via: dict[str, Any]) -> str:
    url = str(via.get("url") or "")
    ghsa = re.search(r"GHSA(-[23456789cfghjmpqrvwx]{4}){3}", url)
    return ghsa.group(0) if ghsa else str(via.get("source") or via.get("id") or url or via.get("title") or "unknown")


def _npm_fix(fix: Any) -> tuple[str, ...]:
    if isinstance(fix, dict) and fix.get("name"):
        return (f"{fix['name']}@{fix.get('version', '')}" + (" (semver-major)" if fix.get("isSemVerMajor") else ""),)
    return ("npm audit fix",) if fix is True else ()


def _npm_total(data: dict[str, Any]) -> int | None:
    counts = (data.get("metadata") or {}).get("vulnerabilities")
    if not isinstance(counts, dict):
        return None
    if "total" in counts:
        return int(counts["total"])
    return sum(int(v) for k, v in counts.items() if k in SEVERITIES)


def parse_npm_audit(text: str | None, scanner: str = "npm-audit", default_severity: str = "high") -> list[Finding]:
    """``npm audit --json``: v7+ ``{"vulnerabilities": {name: {"severity", "via", "range",
    "fixAvailable"}}}`` (one finding per advisory a package is named in; a package only
    affected through another is that other's finding), or v6 ``{"advisories": {...}}``.
    npm's own error (``{"error": {...}}``, e.g. no lockfile) is not a clean scan, nor a
    report whose metadata counts vulnerabilities it does not list."""
    data = _load(text)
    if not isinstance(data, dict):
        raise ScanOutputError("not an npm audit report: not a JSON object")
    if data.get("error"):
        error = data["error"]
        summary = error.get("summary") or error.get("code") if isinstance(error, dict) else error
        raise ScanOutputError(f"npm reported an error: {str(summary).strip().splitlines()[0][:200] if summary else error}")
    findings: list[Finding] = []
    if isinstance(data.get("vulnerabilities"), dict):
        for name, entry in data["vulnerabilities"].items():
            if not isinstance(entry, dict) or not isinstance(entry.get("via"), list):
                raise ScanOutputError(f"not an npm audit report: vulnerability {name!r}")
            for via in entry["via"]:
                if isinstance(via, dict):
                    findings.append(Finding(
                        scanner, str(via.get("name") or name), str(via.get("range") or entry.get("range") or ""),
                        _advisory_id(via), severity(via.get("severity") or entry.get("severity"), default_severity),
                        _npm_fix(entry.get("fixAvailable")), (str(via["source"]),) if via.get("source") else (),
                        str(via.get("title") or ""),
                    ))
        # an entry affected only through other packages repeats their findings: not counted twice
        if not findings and data["vulnerabilities"]:
            for name, entry in data["vulnerabilities"].items():  # via names only: keep them rather than lose them
                findings.append(Finding(scanner, name, str(entry.get("range") or ""), f"via {', '.join(map(str, entry['via']))}",
                                        severity(entry.get("severity"), default_severity), _npm_fix(entry.get("fixAvailable"))))
    elif isinstance(data.get("advisories"), dict):
        for key, adv in data["advisories"].items():
            if not isinstance(adv, dict) or not adv.get("module_name"):
                raise ScanOutputError(f"not an npm audit report: advisory {key!r}")
            versions = sorted({str(f.get("version")) for f in adv.get("findings") or [] if isinstance(f, dict)}) or [
                str(adv.get("vulnerable_versions") or "")
            ]
            advisory = _advisory_id({**adv, "source": adv.get("id", key)})
            patched = str(adv.get("patched_versions") or "")
            for version in versions:
                findings.append(Finding(
                    scanner, adv["module_name"], version, advisory, severity(adv.get("severity"), default_severity),
                    (patched,) if patched and patched != "<0.0.0" else (), (str(adv.get("id", key)), *_strings(adv.get("cves"))),
                    str(adv.get("title") or ""),
                ))
    else:
        raise ScanOutputError('not an npm audit report: neither "vulnerabilities" (v7+) nor "advisories" (v6)')
    total = _npm_total(data)
    if total and not findings:
        raise ScanOutputError(f"the report counts {total} vulnerabilities but lists none")
    return findings


def interpret(
    scanner: str, kind: str, *, exit_code: int | None, problem: str | None, stdout: str | None,
    exit_codes: Iterable[int] = (0, 1), default_severity: str = "high",
) -> ScanOutcome:
    """One scanner's outcome from its run: the output decides, the exit code only
    rules out a crash (an exit code outside ``exit_codes``)."""
    if problem:
        return ScanOutcome(scanner, "error", problem=problem)
    if exit_code not in set(exit_codes):
        return ScanOutcome(scanner, "error", problem=f"exited {exit_code} (a completed scan exits {', '.join(map(str, exit_codes))})")
    try:
        if kind == "pip-audit":
            findings, skipped = parse_pip_audit(stdout, scanner, default_severity)
        elif kind == "npm-audit":
            findings, skipped = parse_npm_audit(stdout, scanner, default_severity), 0
        else:
            raise ScanOutputError(f"unknown scanner kind {kind!r}")
    except ScanOutputError as err:
        return ScanOutcome(scanner, "error", problem=str(err))
    return ScanOutcome(scanner, "findings" if findings else "clean", tuple(findings), skipped=skipped)


@dataclass(frozen=True)
class Judged:
    """A finding with what the ignores say of it."""

    finding: Finding
    state: Literal["open", "ignored", "ignore-expired"]
    ignore_reason: str = ""
    ignore_expires: date | None = None
    counts: bool = field(default=True)  # fails the run when at or above the threshold


def apply_ignores(findings: Iterable[Finding], ignores: Iterable[Any], today: date) -> list[Judged]:
    """Each finding open, ignored (an ignore whose id is its advisory or an alias, until
    its expiry day included), or ``ignore-expired``: counted again, and the report says
    so. ``ignores`` have ``id``, ``reason`` and ``expires``."""
    table = list(ignores)
    judged = []
    for finding in findings:
        match = [i for i in table if i.id.lower() in finding.ids]
        live = [i for i in match if i.expires >= today]
        if live:
            best = max(live, key=lambda i: i.expires)
            judged.append(Judged(finding, "ignored", best.reason, best.expires, counts=False))
        elif match:
            last = max(match, key=lambda i: i.expires)
            judged.append(Judged(finding, "ignore-expired", last.reason, last.expires))
        else:
            judged.append(Judged(finding, "open"))
    return judged


def failing(judged: Iterable[Judged], fail_at: str) -> list[Judged]:
    """The counted findings at ``fail_at`` or above: any fails the run (§3.5)."""
    return [j for j in judged if j.counts and at_least(j.finding.severity, fail_at)]


def summary(judged: list[Judged]) -> str:
    """``2 high, 1 low; 1 ignored; ignore of GHSA-x expired 2026-01-31``."""
    counted = [j for j in judged if j.counts]
    by = {s: sum(1 for j in counted if j.finding.severity == s) for s in reversed(SEVERITIES)}
    parts = [", ".join(f"{n} {s}" for s, n in by.items() if n) or "nothing counted"]
    ignored = sum(1 for j in judged if j.state == "ignored")
    if ignored:
        parts.append(f"{ignored} ignored")
    for j in judged:
        if j.state == "ignore-expired":
            parts.append(f"ignore of {j.finding.advisory} expired {j.ignore_expires}")
    return "; ".join(parts)
