"""``restore-db-access`` (runbook §5.4): undo the newest ``restrict-db-access`` of the
platform's database, putting back exactly the recorded datacl and rolcanlogin."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.approval import audit, run_action
from runbook.reports import artifact_key, conclude, expected_failures
from runbook.security.actions import ActionRequest
from runbook.settings import load_settings
from runbook.target import resolve_target
from tasks.dbaccess import apply_restore_task, preview_restore_task, verify_restore_task
from tasks.secstate import security_state


class RestoreDbAccessParameters(ActionRequest):
    """Who restores the application roles' database access and why."""


@flow(name="restore-db-access")
@expected_failures
def restore_db_access(params: RestoreDbAccessParameters) -> Any:
    """Put back the access that the newest unrestored restrict-db-access took: the
    database's ACL item for item (NULL again when it was NULL and runbook is a superuser,
    else the same default written out) and each role's rolcanlogin, verified by reading
    back pg_database and pg_roles. Refuses when nothing is restricted."""
    settings = load_settings()
    target = resolve_target(settings)
    state = security_state(settings, target.dsn)
    preview, recorded = preview_restore_task(state)
    result = run_action(params, preview, lambda p: apply_restore_task(state, p, params.by), state,
                        timeout_s=settings.security.approval_timeout_seconds)
    if result["outcome"] != "applied":
        return conclude([], result, passed="preview only: nothing was changed", failed_as="")
    # the restriction's own audit trail ends with its undo
    audit(state, params, preview.model_copy(update={"action": "restrict-db-access"}), "undone", after=result["after"])
    checks = verify_restore_task(state, recorded)
    return conclude(checks, result, passed=f"restored the access of {preview.target} as recorded",
                    failed_as=f"restored {preview.target}, but the read-back differs from the recorded state",
                    artifact=(artifact_key("restore-db-access", preview.target), f"restore-db-access {preview.target}"))
