"""runbook's own log records: never a secret, and one JSON object per line when asked.

Prefect configures Python logging when it loads (its ``logging.yml``: a console handler
on the root logger, API handlers that ship flow- and task-run records to the server).
runbook adds no logging system of its own; it configures those handlers, each time a
run's settings are built (:func:`runbook.settings.load_settings`) and once at the CLI's
start (:func:`configure`):

- :class:`MaskSecrets`, a filter on every handler, masks every form of every secret this
  process knows (``tasks.shell.known_secrets``: the DSNs, the platform token, the
  secrets of §0 and cloud keys in the environment; plus what :func:`hide` is given, such
  as a DSN read from a Secret block) in a record's message, arguments, extra fields,
  exception and stack text, before any handler formats it: the console, the Prefect UI
  and any handler an operator adds see the same masked record;
- with ``RUNBOOK_LOG_FORMAT=json`` the console handlers write :class:`JsonLines`: one JSON
  object per line with ``time`` (UTC), ``level``, ``logger``, ``message``, the flow and
  task run (``flow_run_name``, ``task_run_name``... when the record has a run), any
  extra fields, and ``exception`` / ``stack`` text. The line is masked once more as a
  whole, so nothing unmasked leaves even through a formatter used without the filter.

Records Prefect writes before the settings are built (a deployed run's first lines,
before the flow's code starts) keep Prefect's own format; set Prefect's
``PREFECT_LOGGING_HANDLERS_CONSOLE_FORMATTER=json`` on the work pool too if those must be
JSON as well (the filter is installed only from the settings on).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import threading
import warnings
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from runbook.masking import mask_forms, secret_forms

if TYPE_CHECKING:
    from runbook.settings import RunbookSettings

# The attributes every LogRecord has: anything else on a record is an extra field.
STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
RUN_FIELDS = ("flow_run_name", "flow_run_id", "flow_name", "task_run_name", "task_run_id")
SKIPPED_EXTRAS = frozenset({"send_to_api"})  # Prefect's switch for its API handler, not information
_MARK = "_runbook_masked"  # on a record: the generation of secrets it was masked with

_lock = threading.Lock()
_from_settings: frozenset[str] = frozenset()  # the secrets of the settings built last
_hidden: set[str] = set()  # secrets read since (kept for the life of the process)
_forms: list[str] = []  # every form of all of them, longest first
_generation = 0


@functools.lru_cache(maxsize=4096)
def _forms_of(secret: str) -> frozenset[str]:
    return frozenset(secret_forms(secret))


def _rebuild() -> None:
    """The forms to mask, from both sets (the caller holds the lock)."""
    global _forms, _generation
    forms: set[str] = set()
    for secret in _from_settings | _hidden:
        forms |= _forms_of(secret)
    _forms = sorted(forms, key=lambda form: (-len(form), form))
    _generation += 1


def know(secrets: list[str]) -> None:
    """The secrets of the settings just built: they replace those of earlier settings
    (a process holds one platform's settings; a test session many, one after another)."""
    global _from_settings
    fresh = frozenset(value for value in secrets if value)
    if fresh == _from_settings:
        return
    with _lock:
        _from_settings = fresh
        _rebuild()


def hide(*values: str | None) -> None:
    """Mask these values, in every form, in every record from now on (a secret read
    after the settings, e.g. from a Secret block). Empty values are ignored."""
    fresh = {value for value in values if value and value not in _hidden}
    if not fresh:
        return
    with _lock:
        _hidden.update(fresh)
        _rebuild()


def masked(text: str) -> str:
    """``text`` with every known secret masked."""
    forms = _forms
    return mask_forms(text, forms) if forms else text


def _masked_value(value: Any) -> Any:
    if isinstance(value, str):
        return masked(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    try:  # a dict or list extra stays structured, masked through its JSON text
        return json.loads(masked(json.dumps(value, default=str)))
    except (TypeError, ValueError):
        return masked(repr(value))


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The record's extra fields (``logger.info(..., extra={...})``, Prefect's run names)."""
    return {
        key: value for key, value in vars(record).items()
        if key not in STANDARD_ATTRIBUTES and key not in SKIPPED_EXTRAS and not key.startswith("_")
    }


class MaskSecrets(logging.Filter):
    """Masks every known secret in a record, in place, once per set of secrets: the
    message is formatted with its arguments first (an argument can be the secret), the
    exception becomes its masked text (``exc_info`` is dropped, so no formatter can
    render the raw exception again). Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _forms or getattr(record, _MARK, None) == _generation:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the record
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = masked(message), None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = masked(record.exc_text)
        if record.stack_info:
            record.stack_info = masked(record.stack_info)
        for key, value in extras(record).items():
            setattr(record, key, _masked_value(value))
        setattr(record, _MARK, _generation)
        return True


def _run_context() -> dict[str, str]:
    """The current flow and task run, for a record logged without them (a library's
    logger inside a task)."""
    context = sys.modules.get("prefect.context")
    if context is None:
        return {}
    found: dict[str, str] = {}
    flow_run = getattr(context.FlowRunContext.get(), "flow_run", None)
    task_run = getattr(context.TaskRunContext.get(), "task_run", None)
    if flow_run is not None:
        found.update(flow_run_name=str(flow_run.name), flow_run_id=str(flow_run.id))
    if task_run is not None:
        found.update(task_run_name=str(task_run.name), task_run_id=str(task_run.id))
    return found


class JsonLines(logging.Formatter):
    """One JSON object per record, on one line. Prefect's own JsonFormatter dumps the
    whole record (``args``, ``pathname``, ``process``...) and renders exceptions from
    ``exc_info``; this one keeps what an operator searches on."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = extras(record)
        if not any(key in fields for key in RUN_FIELDS):
            fields = {**_run_context(), **fields}
        for key in RUN_FIELDS:
            if fields.get(key) is not None:
                out[key] = str(fields.pop(key))
        for key, value in fields.items():
            out[key if key not in out else f"extra.{key}"] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return masked(json.dumps(out, default=str))


# --------------------------------------------------------------------------- Prefect's handlers

_FILTER = MaskSecrets()
_JSON = JsonLines()


def _handlers() -> list[logging.Handler]:
    """Every handler of the root logger and of every logger made so far (Prefect's
    console, API and debug handlers among them), once each."""
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [entry for entry in list(logging.Logger.manager.loggerDict.values()) if isinstance(entry, logging.Logger)]
    found: dict[int, logging.Handler] = {}
    for logger in loggers:
        for handler in list(logger.handlers):
            found.setdefault(id(handler), handler)
    return list(found.values())


def _is_console(handler: logging.Handler) -> bool:
    """Prefect's console handlers and plain stream handlers (not pytest's capture)."""
    return type(handler) is logging.StreamHandler or type(handler).__module__.startswith("prefect.logging")


def _use_json(handler: logging.Handler, json_lines: bool) -> None:
    saved = getattr(handler, "_runbook_text", None)
    if json_lines and saved is None:
        console = getattr(handler, "console", None)  # PrefectConsoleHandler prints through rich
        handler._runbook_text = (handler.formatter, console)  # type: ignore[attr-defined]
        handler.setFormatter(_JSON)
        if console is not None:
            from rich.console import Console

            # plain text: no colours, markup or emoji codes rewritten inside the JSON
            handler.console = Console(  # type: ignore[attr-defined]
                file=getattr(handler, "stream", None), color_system=None, highlight=False, markup=False, emoji=False, soft_wrap=True
            )
    elif not json_lines and saved is not None:
        handler.setFormatter(saved[0])
        if saved[1] is not None:
            handler.console = saved[1]  # type: ignore[attr-defined]
        del handler._runbook_text  # type: ignore[attr-defined]


def _warning_record(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` in JSON mode: a warning is a record of ``py.warnings``."""
    text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
    logging.getLogger("py.warnings").warning("%s", text)


_showwarning_before: Any = None


def _warnings_as_records(json_lines: bool) -> None:
    # Not logging.captureWarnings: its "already captured" flag is process-wide (Great
    # Expectations sets it at import) and outlives whoever restored showwarning since.
    global _showwarning_before
    if json_lines and warnings.showwarning is not _warning_record:
        _showwarning_before, warnings.showwarning = warnings.showwarning, _warning_record
    elif not json_lines and warnings.showwarning is _warning_record:
        warnings.showwarning, _showwarning_before = _showwarning_before, None


def install(json_lines: bool) -> None:
    """The filter on every handler there is; the JSON formatter on the console ones
    (or Prefect's text again). In JSON, Python's warnings become records too (logger
    ``py.warnings``), so that no line of the console is anything but JSON."""
    for handler in _handlers():
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
        if _is_console(handler):
            _use_json(handler, json_lines)
    _warnings_as_records(json_lines)


def apply(settings: "RunbookSettings") -> None:
    """What every run does when it builds its settings: know its secrets; and, once
    Prefect has configured logging in this process, configure Prefect's handlers."""
    from tasks.shell import known_secrets

    know(known_secrets(settings))
    configuration = sys.modules.get("prefect.logging.configuration")
    if configuration is not None and configuration.PROCESS_LOGGING_CONFIG:
        install(settings.log_format == "json")


def configure(settings: "RunbookSettings") -> None:
    """At a process's start (the CLI): Prefect's logging set up now, then :func:`apply`.
    Importing ``prefect.main`` (what ``from prefect import flow`` does anyway) is what sets
    it up; setting it up first by hand made that import set it up a second time."""
    import prefect.main  # noqa: F401 - configures Prefect's logging, once

    apply(settings)
