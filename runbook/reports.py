"""Small helpers for the reports flows leave in the Prefect UI."""

from __future__ import annotations

import re


def artifact_key(*parts: str) -> str:
    """An artifact key from parts: Prefect accepts lowercase letters, digits and dashes only."""
    text = "-".join(parts).lower()
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text)).strip("-")


def expected_failures(fn):  # type: ignore[no-untyped-def]
    """At a flow's edge: an error runbook raised on purpose (it names the problem and
    the fix) ends the run Failed with that message, without a traceback in the logs.
    Anything else, a bug, propagates with its traceback."""
    import functools
    import inspect
    import typing

    from runbook.errors import RunbookError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        from prefect import get_run_logger
        from prefect.states import Failed

        try:
            return fn(*args, **kwargs)
        except RunbookError as err:
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            get_run_logger().error("%s: %s", type(err).__name__, message)
            return Failed(message=message, data=err)

    # Prefect builds the parameter model from the signature; resolve its annotations
    # here, in the flow's own module, since the wrapper lives in another one.
    wrapper.__annotations__ = typing.get_type_hints(fn)
    wrapper.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    return wrapper
