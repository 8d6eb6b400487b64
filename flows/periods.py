"""What daily-, weekly- and monthly-maintenance share (runbook §4.1-§4.3, §8): run the
period's items, each a procedure as a subflow or an edge task, one after the other; a
failing item never stops the rest; tick the §8 checklist from their results; ask the
items only a person can answer as typed input in the Prefect UI; keep the checklist
as an artifact and in the history (PostgreSQL).

Which items each period runs, with which parameters, and which are critical, is data
(RUNBOOK_CALENDAR__DAILY / __WEEKLY / __MONTHLY, defaults in runbook/calendar.py). A
procedure is found by name in the registry when the run starts, so one this version
of runbook lacks is an item "not available (no such procedure)", never a crash.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Completed, Failed
from pydantic import BaseModel, Field, create_model

from runbook.calendar import (
    Answer,
    CalendarItem,
    ChecklistEntry,
    ItemOutcome,
    ItemStatus,
    PeriodPlan,
    checklist_markdown,
    critical_failures,
    slug,
    tick_checklist,
)
from runbook.errors import ConfigError
from runbook.reports import artifact_key
from runbook.settings import RunbookSettings
from runbook.target import Target, prepare
from runbook.times import show
from tasks.backups import first_line
from tasks.checklists import record_checklist_task
from tasks.edge import export_key, run_edge_task, store_export_task
from tasks.shell import known_secrets
from tasks.store import open_backup_store


class PeriodParameters(BaseModel):
    """Answers for the checklist items only a person can answer, and whether to ask for the rest."""

    answers: dict[str, Answer] = Field(
        default_factory=dict,
        description='Checklist items a person answers, by their text (e.g. {"cost review": "done"}). Unanswered ones are asked.',
    )
    answered_by: str | None = Field(None, description="Who gives these answers (required with answers).")
    ask_people: bool = Field(
        True, description="Pause and ask the unanswered items in the Prefect UI (the CLI cannot: it records them not confirmed).",
    )


class PeopleAnswers(RunInput):
    """The base of the typed input: who answers; one field per checklist item follows."""

    answered_by: str = Field(min_length=1, description="Who answers this checklist.")
    notes: str = Field("", description="Anything worth keeping beside the answers.")


# --------------------------------------------------------------------------- running the items


def run_procedure(item: CalendarItem) -> ItemOutcome:
    """One procedure as a subflow; its own final state and message are the outcome."""
    from runbook.procedures import PROCEDURES  # looked up now: a procedure may be added later

    assert item.procedure is not None
    base = dict(name=item.name, kind=item.procedure, critical=item.critical)
    procedure = PROCEDURES.get(item.procedure)
    if procedure is None:
        return ItemOutcome(**base, status=ItemStatus.NOT_AVAILABLE, message=f"not available (no such procedure {item.procedure!r})")
    try:
        model = procedure.parameter_model()
        if model is None and item.parameters:
            raise ConfigError(f"{item.procedure} takes no parameters, got {', '.join(item.parameters)}")
        kwargs = {"params": model.model_validate({**item.parameters, **procedure.mode})} if model else {}
        state = procedure.flow()(**kwargs, return_state=True)
    except Exception as err:  # noqa: BLE001 - an item that cannot start is a failed item, the rest still run
        return ItemOutcome(**base, status=ItemStatus.FAILED, message=first_line(err))
    result = state.result(raise_on_failure=False) if state.is_completed() or state.is_failed() else None
    flow_run_id = state.state_details.flow_run_id
    return ItemOutcome(
        **base,
        status=ItemStatus.COMPLETED if state.is_completed() else ItemStatus.FAILED,
        message=state.message or (f"{state.name}" if not state.is_completed() else "completed"),
        flow_run_id=str(flow_run_id) if flow_run_id else None,
        result=result if isinstance(result, dict) else None,
    )


def run_edge(item: CalendarItem, settings: RunbookSettings, target: Target) -> ItemOutcome:
    """One edge task: its configured command or HTTP call; unset is "not configured"."""
    assert item.edge is not None
    field = item.edge.replace("-", "_")
    setting = f"RUNBOOK_CALENDAR__EDGE__{field.upper()}"
    base = dict(name=item.name, kind=f"edge:{item.edge}", critical=item.critical)
    call = getattr(settings.calendar.edge, field)
    if call is None:
        return ItemOutcome(**base, status=ItemStatus.NOT_CONFIGURED, message=f"not configured ({setting}): not done")
    try:
        done = run_edge_task(item.edge, call, setting, known_secrets(settings))
        message, result = done.summary, None
        if item.edge == "workers-export":
            store = open_backup_store(target.store_url, settings.s3_endpoint_url, settings.backup.part_size_mb)
            key = export_key(target.instance, settings.calendar.edge.export_prefix, datetime.now(timezone.utc))
            result = store_export_task(store, key, done.output)
            message += f"; stored as {key} in {store.url}, sha256 {result['sha256']} (read back: ok)"
    except Exception as err:  # noqa: BLE001 - a failed edge task is a failed item, the rest still run
        return ItemOutcome(**base, status=ItemStatus.FAILED, message=first_line(err))
    return ItemOutcome(**base, status=ItemStatus.COMPLETED, message=message, result=result)


# --------------------------------------------------------------------------- asking people


def answer_model(entries: list[ChecklistEntry], period: str) -> type[RunInput]:
    """The typed input: who answers, notes, and one choice per item (unset: not confirmed)."""
    fields: dict[str, Any] = {
        e.key: (Answer | None, Field(None, description=f"{e.text} (leave empty if not confirmed)")) for e in entries
    }
    return create_model(f"{period.title()}ChecklistAnswers", __base__=PeopleAnswers, **fields)


@flow(name="checklist-questions")
def checklist_questions(period: str, texts: list[str], timeout_s: int) -> dict[str, Any]:
    """Asks the checklist items only a person can answer (support inquiries, feedback,
    training, cost review...) as typed input: resume this run in the Prefect UI and
    answer. A subflow of its own, so that no answer in time leaves the period's run
    going: this run fails, and the items are recorded as not confirmed."""
    entries = [ChecklistEntry(text=text) for text in texts]
    get_run_logger().warning("Waiting for answers to the %s checklist: %s", period, ", ".join(texts))
    answer = pause_flow_run(wait_for_input=answer_model(entries, period), timeout=timeout_s, poll_interval=2, key=f"{period}-checklist")
    return answer.model_dump(mode="json")


def ask_people(entries: list[ChecklistEntry], period: str, timeout_s: int) -> tuple[dict[str, Answer | None], str | None, str, str]:
    """(answers by key, who, notes, the reason for what stays unanswered)."""
    state = checklist_questions(period, [e.text for e in entries], timeout_s, return_state=True)
    if not state.is_completed():
        return {}, None, "", f"not confirmed (no answer within {timeout_s} s)"
    data = state.result()
    answers = {e.key: Answer(data[e.key]) if data.get(e.key) else None for e in entries}
    return answers, data["answered_by"], data.get("notes", ""), "not confirmed (left unanswered)"


def given_answers(params: PeriodParameters, plan: PeriodPlan) -> dict[str, Answer]:
    """The answers passed as parameters, by entry key; refuses an item the checklist does not ask."""
    asked = {e.key: e for e in plan.people()}
    answers = {}
    for text, answer in params.answers.items():
        key = slug(text)
        if key not in asked:
            raise ConfigError(f"answers: {text!r} is not a checklist item a person answers here (those are: "
                              f"{', '.join(e.text for e in plan.people()) or 'none'})")
        answers[key] = answer
    if answers and not (params.answered_by or "").strip():
        raise ConfigError("answered_by: say who gives the answers (CLI --by)")
    return answers


# --------------------------------------------------------------------------- the period's run


def run_period(period: str, params: PeriodParameters) -> Any:
    """Run the period's items, tick its checklist, ask people, record, and end the run
    Failed when a critical item failed (naming each), Completed otherwise."""
    logger = get_run_logger()
    settings, target = prepare()
    plan = settings.calendar.plan(period)
    answers: dict[str, Answer | None] = dict(given_answers(params, plan))
    started = datetime.now(timezone.utc)

    outcomes: list[ItemOutcome] = []
    for item in plan.items:
        logger.info("%s item %s: %s", period, item.name, item.procedure or f"edge {item.edge}")
        outcome = run_procedure(item) if item.procedure else run_edge(item, settings, target)
        (logger.info if outcome.status is ItemStatus.COMPLETED else logger.warning)("%s: %s: %s", item.name, outcome.status.value, outcome.message)
        outcomes.append(outcome)

    by, notes = (params.answered_by or "").strip() or None, ""
    missing = [e for e in plan.people() if e.key not in answers]
    unanswered = "not confirmed (asked only in the UI)"
    if missing and params.ask_people:
        asked, who, notes, unanswered = ask_people(missing, period, settings.calendar.people_timeout_seconds)
        answers.update({k: v for k, v in asked.items() if v is not None})
        by = who or by
    lines = tick_checklist(plan, {o.name: o for o in outcomes}, answers, by=by, unanswered=unanswered, now=datetime.now(timezone.utc), notes=notes)

    bad = critical_failures(outcomes)
    verdict = "failed" if bad else "passed"
    markdown = checklist_markdown(period, lines, outcomes, show(started, settings.timezone))
    create_markdown_artifact(key=artifact_key(f"{period}-checklist", target.instance), markdown=markdown,
                             description=f"The {period} checklist (§8) of {target.instance}: {verdict}")
    line_dicts = [line.model_dump(mode="json") for line in lines]
    item_dicts = [o.model_dump(mode="json", exclude={"result"}) for o in outcomes]
    checklist_id = record_checklist_task(
        target.dsn, settings.calendar.state_schema, settings.connect_timeout, period=period, at=started,
        flow_run_id=str(flow_run.get_id() or "") or None, outcome=verdict, answered_by=by, lines=line_dicts, items=item_dicts,
    )
    done = sum(1 for line in lines if line.tick.value == "done")
    counts = {s.value: sum(1 for o in outcomes if o.status is s) for s in ItemStatus}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    report = {"period": period, "instance": target.instance, "outcome": verdict, "items": item_dicts, "checklist": line_dicts,
              "checklist_id": checklist_id}
    tail = f"{len(outcomes)} items ({summary}); checklist {done}/{len(lines)} done"
    if bad:
        report["message"] = f"{period} maintenance failed: " + ", ".join(f"{o.name} ({o.message})" for o in bad) + f"; {tail}"
        logger.error(report["message"])
        return Failed(message=report["message"], data=report)
    report["message"] = f"{period} maintenance: {tail}"
    logger.info(report["message"])
    return Completed(message=report["message"], data=report)
