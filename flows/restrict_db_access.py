"""``restrict-db-access`` (runbook §5.4 restrict database access): the configured
application roles lose CONNECT on the platform's database and/or LOGIN, and their open
connections end. The exact previous state (each role's rolcanlogin, the database's
datacl) is recorded first; ``restore-db-access`` puts it back."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.approval import run_action
from runbook.reports import artifact_key, conclude, expected_failures
from runbook.security.actions import ActionRequest
from runbook.settings import load_settings
from runbook.target import resolve_target
from tasks.dbaccess import apply_restriction_task, preview_restriction_task, verify_restriction_task
from tasks.secstate import security_state


class RestrictDbAccessParameters(ActionRequest):
    """Who restricts the application roles (RUNBOOK_SECURITY__DB_ACCESS__ROLES) and why."""


@flow(name="restrict-db-access")
@expected_failures
def restrict_db_access(params: RestrictDbAccessParameters) -> Any:
    """Restrict the application roles' access to the platform's database (§5.4):
    REVOKE CONNECT (made effective: PUBLIC's CONNECT becomes explicit grants to every
    other login role), NOLOGIN, or both, then end their sessions. Refuses a missing
    role, runbook's own roles, the owner and superusers before anything is touched.
    Previewed, approved, audited; the previous state is recorded for restore-db-access,
    and every enforcement point is read back."""
    settings = load_settings()
    access = settings.security.db_access
    target = resolve_target(settings)
    state = security_state(settings, target.dsn)
    preview = preview_restriction_task(state, access)
    result = run_action(params, preview, lambda p: apply_restriction_task(state, access, p, params.by), state,
                        timeout_s=settings.security.approval_timeout_seconds)
    if result["outcome"] != "applied":
        return conclude([], result, passed=_not_applied(result["outcome"]), failed_as="")
    checks = verify_restriction_task(state, preview)
    return conclude(checks, result, passed=f"restricted {preview.target}; undo: {preview.undo}",
                    failed_as=f"restricted {preview.target}, but the read-back failed",
                    artifact=(artifact_key("restrict-db-access", preview.target), f"restrict-db-access {preview.target}"))


def _not_applied(outcome: str) -> str:
    if outcome == "noop":
        return "the roles are restricted already: nothing to change"
    return "preview only: nothing was changed"
