"""Typed input in the Prefect UI, asked in a subflow of its own (not a procedure).

A paused run that nobody resumes in time is failed by the server with its own message
("The flow was paused and never resumed."), whatever the flow says afterwards. Asked
in a subflow, only the question's run carries that message: the procedure goes on
and ends with its own words (what timed out, and that nothing was changed). The
approver resumes the question's run (``typed-input``, named after what it asks) in
the UI, as the checklists and the acceptance test are asked.
"""

from __future__ import annotations

import importlib
from typing import Any, TypeVar

from prefect import flow, get_run_logger
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from runbook.errors import RunbookError

Answer = TypeVar("Answer", bound=RunInput)

PAUSE_TIMED_OUT = "never resumed"  # in the server's message for a pause that timed out


@flow(name="typed-input", flow_run_name="{key}")
def typed_input(model: str, key: str, description: str, timeout_s: int, waiting: str) -> dict[str, Any]:
    """Pause for the typed input ``model`` (``module:Class``, a RunInput) with the form's
    ``description``, at most ``timeout_s``; the answer's fields."""
    module, _, name = model.partition(":")
    form: type[RunInput] = getattr(importlib.import_module(module), name)
    get_run_logger().warning("%s: resume this run in the Prefect UI (%d s)", waiting, timeout_s)
    answer = pause_flow_run(wait_for_input=form.with_initial_data(description=description), timeout=timeout_s, poll_interval=2, key=key)
    return answer.model_dump(mode="json")


def ask(model: type[Answer], *, key: str, description: str, timeout_s: int, waiting: str) -> Answer | None:
    """The answer, or None when nobody answered within ``timeout_s``. Any other end of
    the question's run is a RunbookError saying how it ended."""
    state = typed_input(f"{model.__module__}:{model.__qualname__}", key, description, timeout_s, waiting, return_state=True)
    if state.is_completed():
        return model.model_validate(state.result())
    if PAUSE_TIMED_OUT in (state.message or ""):
        return None
    raise RunbookError(f"asking for {key} ended {state.type.value.lower()}: {state.message or 'no message'}")
