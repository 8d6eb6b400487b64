"""Checks are data: every check is a named result, and reports are built from the list."""

from __future__ import annotations

from pydantic import BaseModel


class CheckResult(BaseModel):
    """One named check: did it pass, what was seen, does a failure fail the run."""

    name: str
    ok: bool
    detail: str = ""
    critical: bool = True


def failed(checks: list[CheckResult], *, critical_only: bool = False) -> list[CheckResult]:
    return [check for check in checks if not check.ok and (check.critical or not critical_only)]


def describe(checks: list[CheckResult], limit: int | None = None) -> str:
    """``name (detail), ...`` of the first ``limit`` checks: what a failure message names."""
    return ", ".join(f"{check.name} ({check.detail})" for check in checks[:limit])


def outcome(checks: list[CheckResult]) -> str:
    """``passed``, ``passed-with-warnings`` or ``failed`` (a critical check failed)."""
    if failed(checks, critical_only=True):
        return "failed"
    if failed(checks):
        return "passed-with-warnings"
    return "passed"


def checks_markdown(checks: list[CheckResult]) -> str:
    lines = ["| check | result | critical | detail |", "|---|---|---|---|"]
    for check in checks:
        result = "ok" if check.ok else "FAILED"
        detail = check.detail.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {check.name} | {result} | {'yes' if check.critical else 'no'} | {detail} |")
    return "\n".join(lines)
