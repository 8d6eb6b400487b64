"""Small helpers for the reports flows leave in the Prefect UI."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runbook.checks import CheckResult


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


def conclude(
    checks: "list[CheckResult]",
    report: dict[str, Any],
    *,
    passed: str,
    failed_as: str,
    limit: int = 6,
    after_failure: str = "",
    artifact: tuple[str, str] | None = None,
    description: str = "",
) -> Any:
    """The epilogue every flow shares: the report gains its outcome, checks and failed
    names; a markdown artifact (``artifact`` = (key, title)) shows the checks; the run
    ends Failed naming the first ``limit`` critical failures (``failed_as: name (detail),
    ...`` then ``after_failure``), or Completed with ``passed``. The message is also the
    report's ``message`` and one log line."""
    from prefect import get_run_logger
    from prefect.artifacts import create_markdown_artifact
    from prefect.states import Completed, Failed

    from runbook.checks import checks_markdown, describe, failed, outcome

    report.setdefault("outcome", outcome(checks))
    report["checks"] = [check.model_dump() for check in checks]
    report["failed"] = [check.name for check in failed(checks)]
    if artifact is not None:
        key, title = artifact
        create_markdown_artifact(
            key=key, markdown=f"# {title}: {report['outcome']}\n\n{checks_markdown(checks)}", description=description or title
        )
    critical = failed(checks, critical_only=True)
    logger = get_run_logger()
    if critical:
        report["message"] = f"{failed_as}: {describe(critical, limit)}{after_failure}"
        logger.error(report["message"])
        return Failed(message=report["message"], data=report)
    report["message"] = passed
    logger.info(report["message"])
    return Completed(message=report["message"], data=report)
