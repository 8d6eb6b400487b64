"""``acknowledge`` (runbook §9): someone takes an incident; its pending pages stop."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, Failed
from pydantic import BaseModel, Field

from runbook.alerting.report import incident_markdown
from runbook.reports import artifact_key, expected_failures
from runbook.settings import load_settings
from runbook.target import resolve_target
from tasks.alerting import acknowledge_incident, load_alerting, read_timeline


class AckParameters(BaseModel):
    """Who acknowledges which incident (the number in its pages)."""

    incident: int = Field(ge=1, description="The incident's number, as its pages say it (runbook ack <incident>).")
    by: str = Field(min_length=1, description="Who takes it.")
    note: str = Field("", description="What is being done (kept in the timeline).")


@flow(name="acknowledge")
@expected_failures
def acknowledge(params: AckParameters) -> Any:
    """Acknowledge an incident: every pending page of it stops at once. The ack holds
    for RUNBOOK_ALERTS__ESCALATION__ACK_MINUTES (30) while the alert still fires; then
    escalation resumes at the level it had reached. A resolved incident stays resolved."""
    settings = load_settings()
    target = resolve_target(settings) if settings.alerts.state_database_url is None else None
    alerting = load_alerting(settings, target, need_chain=False)
    now = datetime.now(timezone.utc)
    result = acknowledge_incident(alerting, params.incident, params.by, params.note, now,
                                  timedelta(minutes=settings.alerts.escalation.ack_minutes))
    rows = read_timeline(alerting, params.incident)
    create_markdown_artifact(key=artifact_key("incident", target.instance if target else alerting.schema, str(params.incident)),
                             markdown=incident_markdown(params.incident, rows, settings.timezone),
                             description=f"Timeline of incident #{params.incident}")
    result["timeline"] = rows
    get_run_logger().info(result["detail"])
    if not result["acknowledged"]:
        return Failed(message=result["detail"], data=result)
    return Completed(message=result["detail"], data=result)
