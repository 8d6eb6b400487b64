"""``security-incident`` (runbook §5.3): the six phases of a security incident, each
recorded in the incident's timeline: detect, assess (severity and scope), contain (the
§5.4 actions, offered with their previews), investigate (root cause), recover, learn.

It pauses for typed input in the Prefect UI at assess, contain, investigate and learn,
unless the answer was given as a parameter (the CLI, a pipeline). At contain, the
approver types the phrase of each preview to apply, one per line: that is the action's
approval, and the action runs (audited as usual) with the incident as its reason."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.input import RunInput
from prefect.states import Completed, Failed
from pydantic import BaseModel, Field, field_validator

from flows.asking import ask as ask_in_ui
from runbook.errors import ConfigError
from runbook.reports import artifact_key, expected_failures
from runbook.retry import RETRIES, backoff, retry_transient
from runbook.security import incident as rules
from runbook.security.incident import Severity, Suggestion
from runbook.target import prepare
from tasks import secstate, security
from tasks.secstate import SecurityState, security_state


def utcnow() -> datetime:
    """The incident's clock (a function, so tests set it)."""
    return datetime.now(timezone.utc)


class IncidentParameters(BaseModel):
    """What was detected and who leads; each phase's answer can be given here, else the run asks."""

    title: str = Field(description="What was detected, in a line (e.g. 'credential stuffing on /login').")
    by: str = Field(description="Who leads the incident (kept in the timeline and the actions' audit).")
    severity: Severity | None = Field(None, description="Assess: low, medium, high or critical; unset: asked in the UI.")
    scope: str | None = Field(None, description="Assess: what is affected; unset: asked in the UI.")
    contain: list[str] | None = Field(
        None, description="Contain: the phrases of the previews to apply (e.g. 'block-ip 93.184.216.34/32'); [] applies none; "
        "unset: the previews are shown and asked for in the UI.")
    root_cause: str | None = Field(None, description="Investigate: the root cause; unset: asked in the UI.")
    lessons: str | None = Field(None, description="Learn: what to change; unset: asked in the UI.")
    findings_hours: int = Field(24, ge=1, le=24 * 30, description="Detect: the watch's findings of this many hours are shown.")

    @field_validator("title", "by")
    @classmethod
    def _not_blank(cls, value: str, info: Any) -> str:
        if not value.strip():
            raise ValueError(f"{info.field_name}: must not be empty")
        return value.strip()


class Assessment(RunInput):
    """Assess (§5.3): how bad, and what is affected."""

    severity: Severity = Field(description="low, medium, high or critical")
    scope: str = Field(description="What is affected: users, data, services.")


class Containment(RunInput):
    """Contain (§5.3): type the phrase of each preview to apply, one per line (empty: none)."""

    apply: str = Field("", description="e.g. block-ip 93.184.216.34/32")


class Investigation(RunInput):
    """Investigate (§5.3): the root cause."""

    root_cause: str = Field(description="What made it possible.")
    notes: str = Field("", description="Anything else found.")


class Lessons(RunInput):
    """Learn (§5.3): what to change so that it does not happen again."""

    lessons: str = Field(description="What to change.")
    follow_ups: str = Field("", description="Tickets, owners, dates.")


# --------------------------------------------------------------------------- steps


@task(name="incident-entry", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def record(state: SecurityState, incident_id: int, phase: str, actor: str, entry: str, detail: dict[str, Any] | None = None,
           **update: Any) -> None:
    """One timeline entry (and the incident's severity, scope or status when given)."""
    with state.connect(("incident", secstate.INCIDENT_DDL)) as conn, conn.transaction():
        if update:
            secstate.update_incident(conn, state.schema, incident_id, **update)
        secstate.add_entry(conn, state.schema, incident_id, at=utcnow(), phase=phase, actor=actor, entry=entry, detail=detail)
    get_run_logger().info("[%s] %s", phase, entry.splitlines()[0] if entry else "")


@task(name="open-incident", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def open_incident(state: SecurityState, title: str, by: str, run_id: str | None) -> int:
    with state.connect(("incident", secstate.INCIDENT_DDL)) as conn:
        return secstate.open_incident(conn, state.schema, title=title, by=by, at=utcnow(), run_id=run_id)


@task(name="read-findings", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def read_findings(state: SecurityState, since: datetime) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The watch's findings since ``since`` and the offence counts of their addresses."""
    with state.connect(("watch", security.WATCH_DDL)) as conn:
        found = security.recent_findings(conn, state.schema, since)
        ips = sorted({f["resource"].split(" ip=", 1)[1].split(",")[0] for f in found if " ip=" in f["resource"]})
        offences = {ip: row["offences"] for ip, row in security.read_offences(conn, state.schema, ips).items()}
    return found, offences


@task(name="read-timeline", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def read_timeline(state: SecurityState, incident_id: int) -> list[dict[str, Any]]:
    with state.connect(("incident", secstate.INCIDENT_DDL)) as conn:
        return secstate.incident_timeline(conn, state.schema, incident_id)


def ask(model: type[RunInput], key: str, description: str, timeout_s: int) -> Any:
    """Typed input in the UI (flows/asking.py); a timeout ends the run (what was recorded stays)."""
    answer = ask_in_ui(model, key=key, description=description, timeout_s=timeout_s, waiting=f"Waiting for input ({key})")
    if answer is None:
        raise ConfigError(f"no answer at {key} within {timeout_s} s: the incident stays open with its timeline so far")
    return answer


def _action(name: str) -> tuple[Any, type[BaseModel]]:
    from runbook.procedures import PROCEDURES

    procedure = PROCEDURES[name]
    model = procedure.parameter_model()
    assert model is not None
    return procedure.flow(), model


def preview_actions(offers: list[Suggestion], by: str, reason: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each suggestion's preview, by its approval phrase (a preview-only run of the
    action: it changes nothing); the offers that cannot run, with why."""
    previews: dict[str, dict[str, Any]] = {}
    unavailable: list[str] = []
    for offer in offers:
        fn, model = _action(offer.action)
        state = fn(model(**offer.params, by=by, reason=reason, preview_only=True), return_state=True)
        result = state.result(raise_on_failure=False)
        if not state.is_completed() or not isinstance(result, dict) or "preview" not in result:
            unavailable.append(f"{offer.action} {offer.params or ''}: {state.message}")
            continue
        p = result["preview"]
        phrase = f"{p['action']} {p['target']}"
        previews[phrase] = {"offer": offer.model_dump(), "preview": p, "noop": p.get("noop", False)}
    return previews, unavailable


def apply_action(offer: dict[str, Any], by: str, reason: str) -> dict[str, Any]:
    """Run one chosen action, approved (the phrase was typed at contain)."""
    fn, model = _action(offer["action"])
    state = fn(model(**offer["params"], by=by, reason=reason, confirm=True), return_state=True)
    result = state.result(raise_on_failure=False)
    data = result if isinstance(result, dict) else {}
    return {"action": offer["action"], "ok": state.is_completed(), "message": state.message,
            "undo": (data.get("preview") or {}).get("undo"), "outcome": data.get("outcome")}


def contain_markdown(previews: dict[str, dict[str, Any]], unavailable: list[str]) -> str:
    lines = ["# Contain: the actions offered", "", "Type the phrase of each action to apply, one per line. Anything else applies nothing.", ""]
    for phrase, item in previews.items():
        p = item["preview"]
        lines += [f"## `{phrase}`", "", item["offer"]["why"], "", p["summary"], ""]
        lines += [f"- {c}" for c in p["changes"]] + [f"- **{w}**" for w in p["warnings"]]
        lines += ["", f"Undo: `{p['undo']}`" if p.get("undo") else "**This cannot be undone.**", ""]
    if unavailable:
        lines += ["## Not available", ""] + [f"- {u}" for u in unavailable]
    return "\n".join(lines)


def findings_entry(found: list[dict[str, Any]]) -> str:
    if not found:
        return "no security-watch findings in the window"
    return f"{len(found)} finding(s): " + "; ".join(f"{f['severity']} {f['resource']} ({f['count']})" for f in found[:10])


# --------------------------------------------------------------------------- the flow


@flow(name="security-incident")
@expected_failures
def security_incident(params: IncidentParameters) -> Any:
    """The §5.3 incident procedure: detect (the watch's recent findings), assess (severity
    and scope), contain (the §5.4 actions with their previews; the typed phrase applies
    one), investigate (root cause), recover (what to undo when), learn (lessons). Every
    step goes into the incident's timeline, stored and shown as an artifact."""
    settings, target = prepare()
    state = security_state(settings, target.dsn)
    wait = settings.security.incident_wait_seconds
    from prefect.runtime import flow_run

    incident_id = open_incident(state, params.title, params.by, str(flow_run.id) if flow_run.id else None)
    reason = f"security incident #{incident_id}: {params.title}"
    by = params.by

    # 1. detect
    found, offences = read_findings(state, utcnow() - timedelta(hours=params.findings_hours))
    record(state, incident_id, "detect", by, f"{params.title}. {findings_entry(found)}", {"findings": len(found)})

    # 2. assess
    severity, scope = params.severity, params.scope
    if severity is None or scope is None:
        answer = ask(Assessment, "assess", f"# Incident #{incident_id}: {params.title}\n\n{findings_entry(found)}", wait)
        severity, scope = severity or answer.severity, scope or answer.scope
    record(state, incident_id, "assess", by, f"severity {severity}; scope: {scope}", severity=severity, scope=scope)

    # 3. contain
    offers = rules.suggestions(found, offences, base=timedelta(minutes=settings.security.watch.block_base_minutes),
                               cap=timedelta(minutes=settings.security.watch.block_cap_minutes),
                               db_roles=bool(settings.security.db_access.roles),
                               kill_switch=settings.security.kill_switch.disable is not None,
                               sessions_by_ip=bool(settings.security.sessions.ip_column))
    previews, unavailable = preview_actions(offers, by, reason)
    offered = contain_markdown(previews, unavailable)
    create_markdown_artifact(key=artifact_key("security-incident-contain", str(incident_id)), markdown=offered,
                             description=f"Incident #{incident_id}: containment offered")
    typed = "\n".join(params.contain) if params.contain is not None else ask(Containment, "contain", offered, wait).apply
    picked, unknown = rules.chosen(typed, previews)
    record(state, incident_id, "contain", by, f"offered: {', '.join(previews) or 'nothing'}"
           + (f"; not available: {'; '.join(unavailable)}" if unavailable else ""))
    for line in unknown:
        record(state, incident_id, "contain", by, f"refused {line!r}: not one of the offered previews, nothing applied")
    applied: list[dict[str, Any]] = []
    for phrase in picked:
        outcome = apply_action(previews[phrase]["offer"], by, reason)
        applied.append({"phrase": phrase, **outcome})
        record(state, incident_id, "contain", by, f"{phrase}: {'done' if outcome['ok'] else 'FAILED'}: {outcome['message']}", outcome)
    if not picked:
        record(state, incident_id, "contain", by, "no containment action applied")

    # 4. investigate
    root_cause, notes = params.root_cause, ""
    if root_cause is None:
        answer = ask(Investigation, "investigate", f"# Incident #{incident_id}: the root cause", wait)
        root_cause, notes = answer.root_cause, answer.notes
    record(state, incident_id, "investigate", by, f"root cause: {root_cause}" + (f"\nnotes: {notes}" if notes else ""))

    # 5. recover
    undo = [a["undo"] for a in applied if a["ok"] and a.get("undo")]
    record(state, incident_id, "recover", by,
           ("undo when safe: " + "; ".join(f"`{u}`" for u in undo)) if undo else "nothing to undo",
           {"undo": undo}, status="recovering" if undo else "recovered")

    # 6. learn
    lessons, follow_ups = params.lessons, ""
    if lessons is None:
        answer = ask(Lessons, "learn", f"# Incident #{incident_id}: lessons", wait)
        lessons, follow_ups = answer.lessons, answer.follow_ups
    record(state, incident_id, "learn", by, f"lessons: {lessons}" + (f"\nfollow-ups: {follow_ups}" if follow_ups else ""),
           status="closed", closed_at=utcnow())

    rows = read_timeline(state, incident_id)
    create_markdown_artifact(key=artifact_key("security-incident", str(incident_id)),
                             markdown=rules.timeline_markdown(incident_id, params.title, rows),
                             description=f"Security incident #{incident_id}: timeline")
    failed = [a for a in applied if not a["ok"]]
    result = {"incident": incident_id, "severity": severity, "scope": scope, "offered": list(previews), "applied": applied,
              "unknown": unknown, "undo": undo, "timeline": [{**r, "at": r["at"].isoformat()} for r in rows]}
    if failed:
        message = f"incident #{incident_id}: containment failed: " + "; ".join(f"{a['phrase']} ({a['message']})" for a in failed)
        return Failed(message=message, data=result)
    return Completed(message=f"incident #{incident_id} closed: {len(applied)} action(s) applied, {len(undo)} to undo", data=result)

