"""``invalidate-sessions`` (runbook §5.4): end the platform's active sessions, all of
them, one user's or one address's. It cannot be undone, by design: the preview says so."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.states import Completed
from pydantic import Field

from flows.approval import run_action, utcnow
from runbook import progress
from runbook.checks import CheckResult
from runbook.reports import artifact_key, conclude, expected_failures
from runbook.security.actions import ActionRequest, Preview
from runbook.security.sessions import session_scope
from runbook.settings import load_settings
from runbook.target import resolve_target
from tasks.secstate import security_state
from tasks.sessions import check_sessions_table_task, invalidate_sessions_task, preview_sessions_task, read_back_task


class InvalidateSessionsParameters(ActionRequest):
    """Whose sessions to end, who asks and why."""

    scope: Literal["all", "user", "ip"] = Field(description="all sessions, one user's, or one address's (an IP or a CIDR).")
    user: str | None = Field(None, description="scope user: the user, as RUNBOOK_SECURITY__SESSIONS__USER_COLUMN holds it.")
    ip: str | None = Field(None, description="scope ip: an address (192.0.2.7) or a network (192.0.2.0/24).")


@flow(name="invalidate-sessions")
@expected_failures
def invalidate_sessions(params: InvalidateSessionsParameters) -> Any:
    """Invalidate user sessions (§5.4): every active session in scope (all, a user, an IP
    or CIDR) gets its expiry set to the time of the action; no row is deleted and expired
    sessions stay as they are. The preview counts the sessions, their users and the
    admin sessions among them (a warning), and says it cannot be undone; nothing runs
    without the typed approval (or --confirm). Batched, each batch its own transaction;
    a re-run finishes an interrupted one. Verified by reading back: no active session
    left in scope, the sessions out of scope untouched."""
    settings = load_settings()
    target = resolve_target(settings)
    scope = session_scope(params.scope, params.user, params.ip)
    config = settings.security.sessions
    state = security_state(settings, target.dsn)
    table = check_sessions_table_task(target.dsn, config, scope, settings.connect_timeout)
    preview = preview_sessions_task(target.dsn, table, scope, utcnow(), config.batch_rows, config.samples, settings.connect_timeout)

    def apply(approved: Preview) -> dict[str, Any]:
        at = utcnow()  # the time of the action: the sessions' new expiry
        what = f"invalidate-sessions {scope.target}"
        progress_id = create_progress_artifact(progress=0.0, description=f"Invalidating the sessions of {scope.target}")
        shown = [0.0]

        def on_batch(done: int, total: int) -> None:
            progress.report(what, done, total)
            if time.monotonic() - shown[0] >= 1.0:  # one API call a second, not one per batch
                update_progress_artifact(progress_id, 100.0 * done / total if total else 100.0)
                shown[0] = time.monotonic()

        after = invalidate_sessions_task(target.dsn, table, scope, at, config.batch_rows, on_batch, settings.connect_timeout)
        update_progress_artifact(progress_id, 100.0)
        return after

    outcome = run_action(params, preview, apply, state, timeout_s=settings.security.approval_timeout_seconds)
    report: dict[str, Any] = {"scope": scope.target, "table": table.display, **outcome}
    if outcome["outcome"] != "applied":
        report["message"] = ("preview only: nothing was changed" if outcome["outcome"] == "preview"
                             else f"no active session of {scope.target}: nothing to change")
        get_run_logger().info(report["message"])
        return Completed(message=report["message"], data=report)

    after = outcome["after"]
    del report["outcome"]  # applied: the read-back decides between passed and failed
    back = read_back_task(target.dsn, table, scope, datetime.fromisoformat(after["at"]), settings.connect_timeout)
    report["read_back"] = back
    checks = [
        CheckResult(name="sessions:in-scope", ok=back["active_left_in_scope"] == 0,
                    detail=f"{after['invalidated']} session(s) invalidated in {after['batches']} batch(es); "
                           f"{back['active_left_in_scope']} active session(s) of {scope.target} left"
                           + (" (new logins since? block the address first, then run it again; set "
                              "RUNBOOK_SECURITY__SESSIONS__CREATED_COLUMN to tell them apart)"
                              if back["active_left_in_scope"] and table.created is None else "")),
        CheckResult(name="sessions:out-of-scope", ok=back["out_of_scope_invalidated"] == 0
                    and back["out_of_scope_active"] == after["out_of_scope_active"],
                    detail=f"active sessions out of scope: {after['out_of_scope_active']} before, {back['out_of_scope_active']} after;"
                           f" {back['out_of_scope_invalidated']} out of scope carry the action's time"),
    ]
    if back["new_logins_in_scope"] is not None:
        checks.append(CheckResult(
            name="sessions:new-logins", ok=back["new_logins_in_scope"] == 0, critical=False,
            detail=f"{back['new_logins_in_scope']} session(s) of {scope.target} begun since the action"
                   + (": whoever it was logged in again; block the address (block-ip) or lock the account, then run it again"
                      if back["new_logins_in_scope"] else ""),
        ))
    return conclude(checks, report, passed=f"invalidated {after['invalidated']} session(s) of {scope.target}; cannot be undone",
                    failed_as="invalidate-sessions: read-back failed",
                    artifact=(artifact_key("invalidate-sessions", "verification"), f"Sessions of {scope.target}"),
                    description="Read back after the invalidation")
