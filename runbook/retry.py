"""Retry the transient, never the permanent.

``retry_transient`` is the ``retry_condition_fn`` of every task that talks to an
external system: it retries connection refused, timeouts, throttling and 5xx, and
lets bad input, bad credentials and missing things fail at once.
"""

from __future__ import annotations

from typing import Any

from runbook.errors import RunbookError, TransientError

RETRIES = 3


def is_transient(error: BaseException) -> bool:
    if isinstance(error, TransientError):
        return True
    if isinstance(error, RunbookError):
        return False
    if isinstance(error, (TimeoutError, ConnectionError)):
        return True
    try:
        import httpx

        if isinstance(error, (httpx.TransportError,)):
            return True
        if isinstance(error, httpx.HTTPStatusError):
            return error.response.status_code == 429 or error.response.status_code >= 500
    except ImportError:  # pragma: no cover
        pass
    return False


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the failure is transient."""
    try:
        state.result()
    except BaseException as error:  # noqa: BLE001 - we only classify it
        return is_transient(error)
    return False


def backoff(base: float = 2.0, retries: int = RETRIES) -> list[float]:
    """Exponential delays: 2, 4, 8 seconds by default."""
    return [base * (2**attempt) for attempt in range(retries)]
