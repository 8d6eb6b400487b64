"""The step every incident action of §5.4 shares (not a procedure of its own): show the
preview, get the approval, apply, and audit each of these.

    preview (artifact + audit)  ->  approval  ->  apply (audit: before and after)

The approval is ``confirm`` (the CLI's ``--confirm``), or else the approver types the
preview's phrase in the Prefect UI (a paused ``typed-input`` subflow, flows/asking.py). A timeout, a wrong phrase or a
preview-only run change nothing, and say so. A preview with nothing to change applies
nothing (blocking an address twice is a no-op).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.input import RunInput
from pydantic import Field

from flows.asking import ask
from runbook.masking import mask
from runbook.reports import artifact_key
from runbook.retry import RETRIES, backoff, retry_transient
from runbook.security.actions import ActionRequest, NotApproved, Phase, Preview, check_phrase
from tasks import secstate
from tasks.secstate import SecurityState


class Approval(RunInput):
    """Type the phrase the preview shows to apply the action; anything else applies nothing."""

    phrase: str = Field(description="The preview's phrase, e.g. 'block-ip 93.184.216.34/32'.")


def utcnow() -> datetime:
    """The clock of the audit records (a function, so tests can set it)."""
    return datetime.now(timezone.utc)


def run_id() -> str | None:
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


@task(name="audit", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def audit(state: SecurityState, request: ActionRequest, preview: Preview, phase: Phase, *, after: Any = None,
          detail: str = "") -> int:
    """One audit record of this action: who, when, why, the phase, before and after, the run."""
    with state.connect() as conn:
        return secstate.record(conn, state.schema, at=utcnow(), actor=request.by, action=preview.action, target=preview.target,
                               reason=request.reason, phase=phase, run_id=run_id(), preview=preview,
                               before=preview.before or None, after=after, detail=detail)


def show_preview(preview: Preview) -> None:
    create_markdown_artifact(key=artifact_key("preview", preview.action), markdown=preview.markdown(),
                             description=f"Preview of {preview.action} {preview.target}")
    logger = get_run_logger()
    logger.info("Preview of %s: %s", preview.phrase, preview.summary)
    for line in preview.changes[:20]:
        logger.info("  will change: %s", line)
    for line in preview.warnings:
        logger.warning("  %s", line)
    if preview.undo is None:
        logger.warning("  this cannot be undone")


def approve(preview: Preview, request: ActionRequest, state: SecurityState, timeout_s: int) -> None:
    """``confirm``, or the typed phrase in the UI within ``timeout_s``; NotApproved otherwise (audited)."""
    if request.confirm:
        return
    answer = ask(Approval, key=artifact_key("approve", preview.action), description=preview.markdown(), timeout_s=timeout_s,
                 waiting=f"Waiting for approval: type {preview.phrase!r}")
    if answer is None:
        audit(state, request, preview, "timed-out", detail=f"no approval within {timeout_s} s")
        raise NotApproved(f"no approval of {preview.phrase!r} within {timeout_s} s: nothing was changed")
    try:
        check_phrase(preview, answer.phrase)
    except NotApproved as err:
        audit(state, request, preview, "refused", detail=str(err))
        raise


def run_action(request: ActionRequest, preview: Preview, apply: Callable[[Preview], Any], state: SecurityState, *,
               timeout_s: int, secrets: list[str] | None = None, applied_phase: Phase = "applied") -> dict[str, Any]:
    """Preview, approve, apply; each step audited. ``apply`` (a task) gets the preview and
    returns what it changed (recorded as ``after``, in phase ``applied_phase``: an undo
    action records "undone"). The outcome: preview, noop or applied."""
    show_preview(preview)
    audit(state, request, preview, "preview")
    result: dict[str, Any] = {"action": preview.action, "target": preview.target, "preview": preview.model_dump(mode="json")}
    if preview.noop:
        audit(state, request, preview, "noop", detail="nothing to change")
        return {**result, "outcome": "noop"}
    if request.preview_only:
        get_run_logger().info("Preview only: nothing was changed")
        return {**result, "outcome": "preview"}
    approve(preview, request, state, timeout_s)
    try:
        after = apply(preview)
    except Exception as err:
        audit(state, request, preview, "failed", detail=mask(f"{type(err).__name__}: {err}".splitlines()[0], secrets or []))
        raise
    audit(state, request, preview, applied_phase, after=after)
    return {**result, "outcome": "applied", "after": after}
