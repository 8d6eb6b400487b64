"""The epilogue every flow shares (runbook.reports.conclude), in real flow runs."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import Artifact

from runbook.checks import CheckResult
from runbook.reports import conclude


@flow(name="conclude-probe")
def _probe(checks: list[CheckResult], key: str) -> Any:
    return conclude(checks, {"database": "x"}, passed="all good", failed_as="probe failed", limit=1,
                    after_failure="; nothing was changed", artifact=(key, "Probe"))


def test_a_critical_failure_ends_the_run_failed_naming_it_and_the_report_keeps_every_check() -> None:
    checks = [
        CheckResult(name="a", ok=False, detail="broken"),
        CheckResult(name="b", ok=False, detail="also broken"),
        CheckResult(name="c", ok=False, detail="only a warning", critical=False),
    ]
    state = _probe(checks, "conclude-probe-failed", return_state=True)
    assert state.is_failed()
    assert state.message == "probe failed: a (broken); nothing was changed"
    report = state.result(raise_on_failure=False)
    assert report["outcome"] == "failed" and report["failed"] == ["a", "b", "c"] and report["message"] == state.message
    markdown = Artifact.get("conclude-probe-failed")
    assert markdown is not None and "# Probe: failed" in markdown.data and "| b | FAILED |" in markdown.data


def test_warnings_alone_complete_the_run_with_its_message() -> None:
    state = _probe([CheckResult(name="w", ok=False, detail="slow", critical=False)], "conclude-probe-ok", return_state=True)
    assert state.is_completed() and state.message == "all good"
    assert state.result()["outcome"] == "passed-with-warnings"
