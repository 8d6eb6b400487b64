"""The platform's logs (runbook §2.4-§2.5, §8's daily error-log review): where each field
of a log row lives, and what the report says about a window of rows. No I/O: the
catalog and the aggregates come in as data.

§0 names only ``system_logs.created_at``. Every other field is a setting
(``RUNBOOK_LOGS__*``): a column, or ``column.key[.key...]``, a path into a json or jsonb
column; ``action`` and ``response_time`` may be ``none`` when the rows carry none. The
shape is resolved against the catalog before any log row is read, and a setting that
names nothing is a ConfigError naming the setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from runbook.checks import CheckResult
from runbook.errors import ConfigError
from runbook.masking import mask_forms, secret_forms_sorted
from runbook.times import show

if TYPE_CHECKING:
    from runbook.settings import LogsSettings

NONE = "none"  # the value of an optional field the rows do not carry
JSON_TYPES = {"json", "jsonb"}
NUMBER_TYPES = {"smallint", "integer", "bigint", "numeric", "real", "double precision"}
TEXT_TYPES = {"text", "character varying", "character", "USER-DEFINED", "name", "citext"}
TIME_TYPES = {"timestamp with time zone", "timestamp without time zone"}
PERCENTILES = (0.5, 0.9, 0.95, 0.99)

# How messages are grouped: what the SQL's regexp_replace does, in order, said in the report.
NORMALISATION = (
    "messages are grouped with UUIDs replaced by `<uuid>`, hex ids of 8+ characters (with a digit "
    "and a letter, or 0x...) by `<hex>` and every other number by `<n>`: `request served #123` "
    "and `request served #124` are one group, `request served #<n>`"
)


@dataclass(frozen=True)
class LogField:
    """Where one field of a log row lives: a column, or a path of keys into a json column."""

    setting: str  # RUNBOOK_LOGS__LEVEL
    column: str
    column_type: str
    path: tuple[str, ...] = ()

    @property
    def display(self) -> str:
        return ".".join((self.column, *self.path))

    @property
    def is_json(self) -> bool:
        return self.column_type in JSON_TYPES

    @property
    def is_number(self) -> bool:
        return self.column_type in NUMBER_TYPES


@dataclass(frozen=True)
class LogShape:
    """The log table and its fields, checked against the catalog."""

    schema: str
    table: str
    time: LogField
    level: LogField
    message: LogField
    action: LogField | None
    response_time: LogField | None
    error_levels: tuple[str, ...]

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.table}"

    def fields(self) -> dict[str, str | None]:
        return {
            "time": self.time.display, "level": self.level.display, "message": self.message.display,
            "action": self.action.display if self.action else None,
            "response_time": self.response_time.display if self.response_time else None,
        }


def split_table(value: str) -> tuple[str, str]:
    """``schema.table`` split on the first dot (``table`` alone: schema public)."""
    schema, dot, name = value.partition(".")
    return (schema, name) if dot else ("public", value)


def _field(setting: str, spec: str, table: str, columns: dict[str, str], *, kind: str = "text") -> tuple[LogField | None, str | None]:
    """(the field, None) or (None, the problem)."""
    if spec in columns:  # a whole column wins over a path: a column may have a dot in its name
        field = LogField(setting=setting, column=spec, column_type=columns[spec])
    else:
        column, dot, rest = spec.partition(".")
        keys = tuple(rest.split(".")) if dot else ()
        if column not in columns:
            names = ", ".join(sorted(columns))
            return None, f"{setting}: {table} has no column {column!r} (columns: {names}); set a column, column.key into a json column" + (
                f", or {NONE}" if setting.endswith(("ACTION", "RESPONSE_TIME")) else ""
            )
        if columns[column] not in JSON_TYPES:
            return None, f"{setting}: {table}.{column} is {columns[column]}, not json or jsonb: {spec!r} needs a json column for the path"
        if any(not key for key in keys):
            return None, f"{setting}: {spec!r} has an empty key"
        field = LogField(setting=setting, column=column, column_type=columns[column], path=keys)
    if kind == "time" and (field.path or field.column_type not in TIME_TYPES):
        return None, f"{setting}: {table}.{spec} is {field.column_type if not field.path else 'a json path'}, not a timestamp column"
    if kind == "number" and not (field.is_number or field.is_json or field.column_type in TEXT_TYPES):
        return None, f"{setting}: {table}.{field.column} is {field.column_type}, not a number, text or json"
    if kind == "text" and not (field.is_json or field.column_type in TEXT_TYPES | NUMBER_TYPES):
        return None, f"{setting}: {table}.{field.column} is {field.column_type}, not text or json"
    return field, None


def resolve_shape(logs: "LogsSettings", columns: dict[str, str] | None) -> LogShape:
    """The fields of ``logs`` found in the table's ``columns`` (name -> information_schema
    data_type; None: no such table or view). One ConfigError naming every setting that
    names nothing, before any log row is read."""
    schema, name = split_table(logs.table)
    table = f"{schema}.{name}"
    if columns is None:
        raise ConfigError(f"RUNBOOK_LOGS__TABLE: no table or view {table} visible to this role (schema.table, split on the first dot)")
    problems: list[str] = []
    time, problem = _field("RUNBOOK_LOGS__TIME_COLUMN", logs.time_column, table, columns, kind="time")
    problems += [problem] if problem else []
    found: dict[str, LogField | None] = {}
    for key, spec, optional, number in (
        ("level", logs.level, False, False),
        ("message", logs.message, False, False),
        ("action", logs.action, True, False),
        ("response_time", logs.response_time, True, True),
    ):
        setting = f"RUNBOOK_LOGS__{key.upper()}"
        if spec.lower() == NONE:
            if not optional:
                problems.append(f"{setting}: a log row needs its {key}; name a column or a json path")
            found[key] = None
            continue
        found[key], problem = _field(setting, spec, table, columns, kind="number" if number else "text")
        problems += [problem] if problem else []
    if problems:
        raise ConfigError("log-report: " + "; ".join(problems))
    assert time is not None and found["level"] is not None and found["message"] is not None
    return LogShape(
        schema=schema, table=name, time=time, level=found["level"], message=found["message"], action=found["action"],
        response_time=found["response_time"], error_levels=tuple(logs.error_levels),
    )


def resolve_endpoint(spec: str, logs: "LogsSettings", columns: dict[str, str]) -> LogField | None:
    """Where a log row's endpoint is (RUNBOOK_PERFORMANCE__ENDPOINT), or None for ``none``:
    no per-endpoint breakdown. A name the table does not have is a ConfigError."""
    if spec.lower() == NONE:
        return None
    schema, name = split_table(logs.table)
    field, problem = _field("RUNBOOK_PERFORMANCE__ENDPOINT", spec, f"{schema}.{name}", columns, kind="text")
    if problem:
        raise ConfigError(f"performance-report: {problem}; or none for no per-endpoint breakdown")
    return field


# --------------------------------------------------------------------------- what the database answers


class ErrorGroup(BaseModel):
    """Error rows of one action with one (normalised) message."""

    action: str | None
    message: str
    rows: int
    first_seen: datetime
    last_seen: datetime


class TopError(BaseModel):
    """Error rows with one (normalised) message, whatever their action."""

    message: str
    rows: int
    actions: int
    first_seen: datetime
    last_seen: datetime


class ResponseTimes(BaseModel):
    """Percentiles of the rows that carry a numeric response time (computed in PostgreSQL)."""

    rows: int  # rows with a number: the percentiles' population
    without: int  # rows of the window without one (no key, null)
    not_numbers: int  # rows whose value is not a number (left out too)
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None


class LogSummary(BaseModel):
    """A window of log rows, as aggregates."""

    start: datetime
    end: datetime
    rows: int
    levels: dict[str, int]
    errors: int
    groups: list[ErrorGroup]
    group_count: int  # all groups, of which ``groups`` are the top
    top_errors: list[TopError]
    message_count: int
    response_time: ResponseTimes | None  # None: RUNBOOK_LOGS__RESPONSE_TIME=none

    @property
    def error_pct(self) -> float:
        return 100.0 * self.errors / self.rows if self.rows else 0.0


def masked(summary: LogSummary, secrets: list[str]) -> LogSummary:
    """The summary with every form of every known secret masked in the platform's own
    messages and actions, which the report shows: logs may hold what they should not."""
    forms = secret_forms_sorted(secrets)
    if not forms:
        return summary
    groups = [g.model_copy(update={"message": mask_forms(g.message, forms), "action": mask_forms(g.action, forms) if g.action else None}) for g in summary.groups]
    tops = [t.model_copy(update={"message": mask_forms(t.message, forms)}) for t in summary.top_errors]
    levels: dict[str, int] = {}
    for level, rows in summary.levels.items():
        levels[mask_forms(level, forms)] = levels.get(mask_forms(level, forms), 0) + rows
    return summary.model_copy(update={"groups": groups, "top_errors": tops, "levels": levels})


# --------------------------------------------------------------------------- judging and showing


def log_checks(summary: LogSummary, shape: LogShape, logs: "LogsSettings") -> list[CheckResult]:
    """Warnings only: a report that finds many errors has done its job; the monitor pages."""
    checks = [
        CheckResult(
            name="logs:rows", ok=summary.rows > 0, critical=False,
            detail=f"{summary.rows} rows in {shape.display}" if summary.rows
            else f"no row in {shape.display} in the window: is the platform writing its logs there?",
        ),
        CheckResult(
            name="logs:error-rate", ok=summary.error_pct < logs.error_pct_warning, critical=False,
            detail=f"{summary.errors} of {summary.rows} rows are {'/'.join(shape.error_levels)} "
            f"({summary.error_pct:.1f} %, warning from {logs.error_pct_warning:g} %)",
        ),
    ]
    times = summary.response_time
    if shape.response_time is not None and times is not None:
        field = shape.response_time.display
        left_out = f"; {times.without + times.not_numbers} rows left out ({times.not_numbers} not numbers)" if times.without or times.not_numbers else ""
        if times.rows == 0 or times.p95 is None:
            checks.append(CheckResult(
                name="logs:response-time", ok=summary.rows == 0, critical=False,
                detail=f"no row of the window carries a numeric {field}" + (f" ({times.not_numbers} not numbers)" if times.not_numbers else ""),
            ))
        else:
            checks.append(CheckResult(
                name="logs:response-time", ok=times.p95 < logs.p95_warning_ms, critical=False,
                detail=f"p95 {times.p95:.0f} ms over {times.rows} rows (warning from {logs.p95_warning_ms:g} ms){left_out}",
            ))
    return checks


def _cell(text: str | None, limit: int = 200) -> str:
    """Platform text in a markdown table cell: one line, bounded, no table breaks."""
    if text is None:
        return "-"
    flat = " ".join(text.split())
    flat = flat if len(flat) <= limit else flat[: limit - 1] + "…"
    return "`" + flat.replace("`", "'").replace("|", "\\|") + "`"


def group_rows(summary: LogSummary, zone: str) -> list[dict[str, Any]]:
    """The table artifact: one row per error group."""
    return [
        {"action": g.action or "-", "message": g.message, "rows": g.rows,
         "first_seen": show(g.first_seen, zone), "last_seen": show(g.last_seen, zone)}
        for g in summary.groups
    ]


def report_dict(summary: LogSummary, shape: LogShape, zone: str) -> dict[str, Any]:
    """The flow's result: what the CLI prints and ``--json`` gives."""
    return {
        "table": shape.display,
        "fields": shape.fields(),
        "start": show(summary.start, zone),
        "end": show(summary.end, zone),
        "rows": summary.rows,
        "levels": summary.levels,
        "errors": summary.errors,
        "error_pct": round(summary.error_pct, 2),
        "error_groups": group_rows(summary, zone),
        "group_count": summary.group_count,
        "top_errors": [
            {"message": t.message, "rows": t.rows, "pct_of_errors": round(100.0 * t.rows / summary.errors, 1) if summary.errors else 0.0,
             "actions": t.actions, "first_seen": show(t.first_seen, zone), "last_seen": show(t.last_seen, zone)}
            for t in summary.top_errors
        ],
        "message_count": summary.message_count,
        "response_time": summary.response_time.model_dump() if summary.response_time else None,
        "normalisation": NORMALISATION,
    }


def report_markdown(report: dict[str, Any], checks_table: str, title: str) -> str:
    """The markdown artifact: levels, error groups, top errors, percentiles, checks."""
    lines = [
        f"# {title}",
        "",
        f"`{report['table']}` from {report['start']} to {report['end']}: {report['rows']} rows, "
        f"{report['errors']} errors ({report['error_pct']:.1f} %).",
        "",
        "## Levels",
        "",
        "| level | rows | % |",
        "|---|---:|---:|",
    ]
    for level, rows in report["levels"].items():
        lines.append(f"| {_cell(level, 40)} | {rows} | {100.0 * rows / report['rows']:.1f} |")
    action = report["fields"]["action"]
    shown = f"top {len(report['error_groups'])} of {report['group_count']}"
    lines += ["", f"## Errors by {'action and ' if action else ''}message ({shown})", "",
              "| action | message | rows | first seen | last seen |", "|---|---|---:|---|---|"]
    for g in report["error_groups"]:
        lines.append(f"| {_cell(g['action'] if action else None, 60)} | {_cell(g['message'])} | {g['rows']} | {g['first_seen']} | {g['last_seen']} |")
    lines += ["", f"## Top errors (top {len(report['top_errors'])} of {report['message_count']} messages)", "",
              "| message | rows | % of errors | actions | first seen | last seen |", "|---|---:|---:|---:|---|---|"]
    for t in report["top_errors"]:
        lines.append(f"| {_cell(t['message'])} | {t['rows']} | {t['pct_of_errors']:.1f} | {t['actions']} | {t['first_seen']} | {t['last_seen']} |")
    lines += ["", f"Grouping: {report['normalisation']}.", ""]
    times = report["response_time"]
    field = report["fields"]["response_time"]
    lines += [f"## Response time ({f'`{field}`' if field else 'not recorded'})", ""]
    if times is None:
        lines.append("RUNBOOK_LOGS__RESPONSE_TIME is `none`: the rows carry no response time.")
    else:
        def number(value: float | None) -> str:
            return "-" if value is None else f"{value:.0f}"

        lines += ["| rows | p50 | p90 | p95 | p99 | max |", "|---:|---:|---:|---:|---:|---:|",
                  f"| {times['rows']} | {number(times['p50'])} | {number(times['p90'])} | {number(times['p95'])} | {number(times['p99'])} | {number(times['max'])} |",
                  "", f"Percentiles of the rows that carry a number: {times['without']} rows without one and "
                  f"{times['not_numbers']} whose value is not a number are left out."]
    lines += ["", "## Checks", "", checks_table]
    return "\n".join(lines)
