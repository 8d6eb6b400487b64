"""The step every incident action shares: preview, approval, apply, each audited; without
an approval (timeout, wrong phrase, preview only) nothing is applied."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from prefect import flow, task
from prefect.flow_runs import resume_flow_run

from flows.approval import run_action
from runbook.reports import expected_failures
from runbook.security.actions import ActionRequest, NotApproved, Preview, check_phrase
from tasks import secstate
from tasks.secstate import SecurityState
from tests.paused import wait_paused

APPLIED: list[str] = []


@task
def _apply(preview: Preview) -> dict[str, Any]:
    APPLIED.append(preview.target)
    return {"blocked": preview.target}


def _preview(noop: bool = False) -> Preview:
    return Preview(action="demo", target="93.184.216.34/32", summary="block it", changes=["insert a row"],
                   before={"blocked": None}, undo="runbook demo-undo 93.184.216.34/32", noop=noop)


@flow(name="demo-action")
@expected_failures
def demo_action(dsn: str, confirm: bool = False, preview_only: bool = False, noop: bool = False, timeout_s: int = 60) -> Any:
    request = ActionRequest(by="ana", reason="attack", confirm=confirm, preview_only=preview_only)
    return run_action(request, _preview(noop), _apply, SecurityState(dsn=dsn), timeout_s=timeout_s)


def _audit(dsn: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(dsn) as conn:
        return [(r["phase"], r["actor"], r["reason"]) for r in reversed(secstate.audit_rows(conn, "runbook_security"))]


@pytest.fixture(autouse=True)
def _clear() -> None:
    APPLIED.clear()


def test_confirmed_action_is_applied_and_audited_with_before_and_after(platform: Any) -> None:
    result = demo_action(platform.dsn, confirm=True)
    assert result["outcome"] == "applied" and APPLIED == ["93.184.216.34/32"]
    assert _audit(platform.dsn) == [("preview", "ana", "attack"), ("applied", "ana", "attack")]
    with psycopg.connect(platform.dsn) as conn:
        applied = secstate.audit_rows(conn, "runbook_security", action="demo")[0]
    assert applied["before"] == {"blocked": None} and applied["after"] == {"blocked": "93.184.216.34/32"}
    assert applied["run_id"] and applied["preview"]["undo"].startswith("runbook demo-undo")


def test_preview_only_and_noop_change_nothing(platform: Any) -> None:
    assert demo_action(platform.dsn, preview_only=True)["outcome"] == "preview"
    assert demo_action(platform.dsn, confirm=True, noop=True)["outcome"] == "noop"
    assert APPLIED == []
    assert [p for p, _, _ in _audit(platform.dsn)] == ["preview", "preview", "noop"]




@pytest.mark.parametrize("typed, applied", [("demo 93.184.216.34/32", True), ("demo 93.184.216.34", False)])
def test_the_run_pauses_for_the_typed_phrase(platform: Any, typed: str, applied: bool) -> None:
    outcome: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: outcome.update(state=demo_action(platform.dsn, return_state=True)))
    worker.start()
    run = wait_paused("the action")
    assert APPLIED == []  # nothing before the approval
    resume_flow_run(run, run_input={"phrase": typed})
    worker.join(timeout=120)
    state = outcome["state"]
    assert state.is_completed() is applied, state.message
    assert (APPLIED == ["93.184.216.34/32"]) is applied
    assert [p for p, _, _ in _audit(platform.dsn)] == (["preview", "applied"] if applied else ["preview", "refused"])
    if not applied:
        assert "nothing was changed" in state.message


def test_no_approval_within_the_timeout_applies_nothing(platform: Any) -> None:
    state = demo_action(platform.dsn, timeout_s=1, return_state=True)
    # the question was its own run (which the server failed as "paused and never resumed");
    # the action's run says what timed out, and that nothing was changed
    assert state.is_failed() and "no approval of 'demo 93.184.216.34/32' within 1 s: nothing was changed" in state.message
    assert APPLIED == [] and [p for p, _, _ in _audit(platform.dsn)] == ["preview", "timed-out"]


def test_the_phrase_must_match_exactly() -> None:
    check_phrase(_preview(), "  demo 93.184.216.34/32 ")
    with pytest.raises(NotApproved, match="nothing was changed"):
        check_phrase(_preview(), "demo 93.184.216.35/32")
    with pytest.raises(ValueError, match="reason"):
        ActionRequest(by="ana", reason="  ")
    assert "This cannot be undone" in _preview().model_copy(update={"undo": None}).markdown()
