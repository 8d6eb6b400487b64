"""Security events out of PostgreSQL (or a JSON-lines log): the rows of one source
between two times, mapped to the detectors' fields. Every name goes through
psycopg.sql; a json path is read with ``->`` / ``->>`` and literal keys.

For a watch over millions of rows, a detector's filter and a necessary condition of its
threshold run in PostgreSQL (``HAVING count(*) >= threshold`` over the whole range,
grouped as the detector groups): only the events of groups that could fire come back,
and the exact windows are then judged in Python (runbook/security/detectors.py)."""

from __future__ import annotations

import ipaddress
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from runbook.errors import ConfigError
from runbook.security.detectors import Detector, Event, SpikeDetector
from runbook.times import parse_time
from runbook.security.sources import SourceMapping


def _field(path: str) -> sql.Composable:
    column, *keys = path.split(".")
    expr: sql.Composable = sql.Identifier(column)
    for i, key in enumerate(keys):
        op = sql.SQL("->>") if i == len(keys) - 1 else sql.SQL("->")
        expr = sql.SQL("({} {} {})").format(expr, op, sql.Literal(key))
    return expr


def check_source(conn: psycopg.Connection[Any], name: str, mapping: SourceMapping) -> None:
    """Refuse (ConfigError, exit 2) a source whose table or columns do not exist."""
    schema, table = mapping.schema_table
    rows = conn.execute(
        "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
        (schema, table),
    ).fetchall()
    if not rows:
        raise ConfigError(f"RUNBOOK_SECURITY__SOURCES__{name.upper()}__TABLE: no table {mapping.table!r}")
    columns = {r[0] for r in rows}
    missing = [f"{field} -> {path}" for field, path in {"(time)": mapping.time_column, **mapping.fields}.items()
               if path.split(".")[0] not in columns]
    if missing:
        raise ConfigError(f"RUNBOOK_SECURITY__SOURCES__{name.upper()}: {mapping.table} has no column for {', '.join(missing)}"
                          f" (columns: {', '.join(sorted(columns))})")


def _plain(value: Any) -> Any:
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return str(value).split("/")[0]
    return value


def read_events(conn: psycopg.Connection[Any], mapping: SourceMapping, since: datetime, until: datetime, *,
                limit: int = 2_000_000) -> list[Event]:
    """The rows with ``since <= time < until``, oldest first, as detector events."""
    schema, table = mapping.schema_table
    names = list(mapping.fields)
    query = sql.SQL("SELECT {t}, {f} FROM {s}.{tb} WHERE {t} >= %s AND {t} < %s ORDER BY {t} LIMIT %s").format(
        t=sql.Identifier(mapping.time_column), f=sql.SQL(", ").join(_field(mapping.fields[n]) for n in names),
        s=sql.Identifier(schema), tb=sql.Identifier(table),
    )
    rows = conn.execute(query, (since, until, limit)).fetchall()
    return [Event(at=row[0], fields={n: _plain(v) for n, v in zip(names, row[1:])}) for row in rows]


def _is_path(mapping: SourceMapping, field: str) -> bool:
    return "." in mapping.fields[field]


def _column(mapping: SourceMapping, field: str, name: str) -> sql.Composable:
    if field not in mapping.fields:
        raise ConfigError(f"RUNBOOK_SECURITY__DETECTORS: detector {name!r} reads field {field!r}, which source"
                          f" {mapping.where} does not map (fields: {', '.join(sorted(mapping.fields))})")
    return _field(mapping.fields[field])


def _text(value: Any) -> str:
    """A value as ``->>`` gives it out of a json document (true, 401, "CRITICAL" -> CRITICAL)."""
    return json.dumps(value) if not isinstance(value, str) else value


def _condition(mapping: SourceMapping, where: dict[str, Any], name: str) -> tuple[sql.Composable, list[Any]]:
    """``where`` as SQL: equality, or ``= ANY`` for a list; json paths compare as text."""
    parts: list[sql.Composable] = [sql.SQL("TRUE")]
    args: list[Any] = []
    for field, wanted in where.items():
        expr = _column(mapping, field, name)
        values = wanted if isinstance(wanted, list) else [wanted]
        if _is_path(mapping, field):
            values = [_text(v) for v in values]
        if isinstance(wanted, list):
            parts.append(sql.SQL("{} = ANY(%s)").format(expr))
            args.append(values)
        else:
            parts.append(sql.SQL("{} = %s").format(expr))
            args.append(values[0])
    return sql.SQL(" AND ").join(parts), args


def _typed(mapping: SourceMapping, where: dict[str, Any]) -> dict[str, Any]:
    """``where`` with json-path fields' values as text, as read_events returns them."""
    out: dict[str, Any] = {}
    for field, wanted in where.items():
        if field in mapping.fields and _is_path(mapping, field):
            out[field] = [_text(v) for v in wanted] if isinstance(wanted, list) else _text(wanted)
        else:
            out[field] = wanted
    return out


def candidate_events(conn: psycopg.Connection[Any], mapping: SourceMapping, detector: Detector, lo: datetime,
                     hi: datetime, since: datetime, *, limit: int = 2_000_000) -> tuple[list[Event], Detector]:
    """The events in ``[lo, hi)`` of the groups that could fire (the filter and a
    necessary condition of the threshold run in PostgreSQL, and only groups with an event
    at or after ``since`` are new), and the detector to judge them with (its values typed
    as the rows come back).

    The table is read once: the matching rows go into a materialized CTE, grouped there
    for the necessary condition, and the candidate groups' rows come back out of it (a
    second scan of the range, or a hash of the groups rebuilt by every parallel worker,
    cost two to three times as much over a week of events)."""
    schema, table = mapping.schema_table
    time = sql.Identifier(mapping.time_column)
    groups = [_column(mapping, f, detector.name) for f in detector.group_by]
    cond, cond_args = _condition(mapping, detector.where, detector.name)
    names = list(mapping.fields)
    keys = [sql.Identifier(f"k{i}") for i in range(len(groups))]
    columns: list[sql.Composable] = [sql.SQL("{} AS t").format(time)]
    columns += [sql.SQL("{} AS {}").format(g, k) for g, k in zip(groups, keys)]
    columns += [sql.SQL("{} AS {}").format(_field(mapping.fields[n]), sql.Identifier(f"f{i}")) for i, n in enumerate(names)]
    column_args: list[Any] = []
    need: list[sql.Composable] = []
    need_args: list[Any] = []
    if detector.distinct:
        columns.append(sql.SQL("{} AS dv").format(_column(mapping, detector.distinct, detector.name)))
        need.append(sql.SQL("count(DISTINCT dv) >= %s"))
    else:
        need.append(sql.SQL("count(*) >= %s"))
    need_args.append(detector.threshold)
    if detector.ratio is not None:
        ratio_cond, ratio_args = _condition(mapping, detector.ratio_where, detector.name)
        columns.append(sql.SQL("({}) AS rw").format(ratio_cond))
        column_args += ratio_args
        need.append(sql.SQL("count(*) FILTER (WHERE rw) >= %s"))
        need_args.append(math.ceil(detector.threshold * detector.ratio))
    need.append(sql.SQL("max(t) >= %s"))
    need_args.append(since)
    query = sql.SQL(
        "WITH m AS MATERIALIZED (SELECT {columns} FROM {s}.{tb} WHERE {time} >= %s AND {time} < %s AND {cond}),"
        " c AS (SELECT {keys} FROM m GROUP BY {keys} HAVING {need})"
        " SELECT t, {fields} FROM m WHERE ({keys}) IN (SELECT * FROM c) ORDER BY t LIMIT %s"
    ).format(columns=sql.SQL(", ").join(columns), s=sql.Identifier(schema), tb=sql.Identifier(table), time=time, cond=cond,
             keys=sql.SQL(", ").join(keys), need=sql.SQL(" AND ").join(need),
             fields=sql.SQL(", ").join(sql.Identifier(f"f{i}") for i in range(len(names))))
    rows = conn.execute(query, (*column_args, lo, hi, *cond_args, *need_args, limit)).fetchall()
    events = [Event.model_construct(at=row[0], fields={n: _plain(v) for n, v in zip(names, row[1:])}) for row in rows]
    judged = detector.model_copy(update={"where": _typed(mapping, detector.where), "ratio_where": _typed(mapping, detector.ratio_where)})
    return events, judged


def spike_counts(conn: psycopg.Connection[Any], mapping: SourceMapping, detector: SpikeDetector,
                 until: datetime) -> tuple[int, list[int], list[Event]]:
    """The matching events in ``[until - window, until)``, the same window on each of the
    previous ``days`` days, and a few samples of the current window."""
    schema, table = mapping.schema_table
    time = sql.Identifier(mapping.time_column)
    cond, args = _condition(mapping, detector.where, detector.name)
    rows = conn.execute(
        sql.SQL("SELECT d, (SELECT count(*) FROM {s}.{t} WHERE {time} >= %s - d * interval '1 day' - %s"
                " AND {time} < %s - d * interval '1 day' AND {cond}) FROM generate_series(0, %s) AS d ORDER BY d").format(
            s=sql.Identifier(schema), t=sql.Identifier(table), time=time, cond=cond),
        (until, detector.window, until, *args, detector.days),
    ).fetchall()
    counts = [int(r[1]) for r in rows]
    names = list(mapping.fields)
    sample_rows = conn.execute(
        sql.SQL("SELECT {time}, {fields} FROM {s}.{t} WHERE {time} >= %s AND {time} < %s AND {cond} ORDER BY {time} LIMIT 5").format(
            s=sql.Identifier(schema), t=sql.Identifier(table), time=time, cond=cond,
            fields=sql.SQL(", ").join(_field(mapping.fields[n]) for n in names)),
        (until - detector.window, until, *args),
    ).fetchall() if counts and counts[0] else []
    samples = [Event.model_construct(at=r[0], fields={n: _plain(v) for n, v in zip(names, r[1:])}) for r in sample_rows]
    return counts[0], counts[1:], samples


def _dig(document: Any, path: str) -> Any:
    for key in path.split("."):
        document = document.get(key) if isinstance(document, dict) else None
    return document


def read_file_events(path: Path, mapping: SourceMapping, since: datetime, until: datetime, *,
                     limit: int = 2_000_000) -> tuple[list[Event], int]:
    """The lines of a JSON-lines security log with ``since <= time < until`` as events,
    oldest first, and how many lines could not be read (kept apart, never guessed)."""
    events: list[Event] = []
    unreadable = 0
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except OSError as err:
        raise ConfigError(f"RUNBOOK_SECURITY__SOURCES: cannot read the security log {str(path)!r}: {err.strerror}") from None
    with handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                document = json.loads(line)
                at = parse_time(str(_dig(document, mapping.time_column)))
                if at.tzinfo is None:
                    raise ValueError("a time without an offset")
            except (ValueError, TypeError):
                unreadable += 1
                continue
            if since <= at < until and len(events) < limit:
                events.append(Event.model_construct(at=at, fields={f: _dig(document, p) for f, p in mapping.fields.items()}))
    events.sort(key=lambda e: e.at)
    return events, unreadable


# --------------------------------------------------------------------------- the watch's state

WATCH_DDL = """
CREATE TABLE IF NOT EXISTS {s}.watch_checkpoint (
    id          int PRIMARY KEY CHECK (id = 1),
    until       timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.offence (
    ip                text PRIMARY KEY,
    offences          int NOT NULL,
    last_offence_at   timestamptz NOT NULL,
    last_evidence_at  timestamptz NOT NULL,
    last_detector     text NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.finding (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    detector    text NOT NULL,
    resource    text NOT NULL,
    severity    text NOT NULL,
    count       int NOT NULL,
    first_at    timestamptz NOT NULL,
    last_at     timestamptz NOT NULL,
    samples     jsonb NOT NULL,
    detail      text NOT NULL,
    found_at    timestamptz NOT NULL,
    run_id      text,
    UNIQUE (detector, resource, first_at, last_at)
);
CREATE INDEX IF NOT EXISTS finding_found_at ON {s}.finding (found_at);
"""
WATCH_LOCK = "runbook-security-watch"


def try_watch_lock(conn: psycopg.Connection[Any], schema: str) -> bool:
    """A session lock: one security-watch at a time per platform (a second one skips)."""
    row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (f"{WATCH_LOCK}:{schema}",)).fetchone()
    return bool(row and row[0])


def read_checkpoint(conn: psycopg.Connection[Any], schema: str) -> datetime | None:
    row = conn.execute(sql.SQL("SELECT until FROM {}.watch_checkpoint WHERE id = 1").format(sql.Identifier(schema))).fetchone()
    return None if row is None else row[0]


def read_offences(conn: psycopg.Connection[Any], schema: str, ips: list[str]) -> dict[str, dict[str, Any]]:
    rows = conn.execute(sql.SQL("SELECT ip, offences, last_offence_at, last_evidence_at FROM {}.offence WHERE ip = ANY(%s)").format(
        sql.Identifier(schema)), (ips,)).fetchall()
    return {r[0]: {"offences": r[1], "last_offence_at": r[2], "last_evidence_at": r[3]} for r in rows}


def save_watch(conn: psycopg.Connection[Any], schema: str, *, until: datetime | None, now: datetime, run_id: str | None,
               findings: list[dict[str, Any]], offences: list[dict[str, Any]]) -> int:
    """Findings, offences and the new checkpoint in one transaction (``until`` None: a
    replay, which leaves the checkpoint alone); how many findings were new."""
    s = sql.Identifier(schema)
    new = 0
    with conn.transaction():
        for f in findings:
            row = conn.execute(sql.SQL(
                "INSERT INTO {}.finding (detector, resource, severity, count, first_at, last_at, samples, detail, found_at, run_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id").format(s),
                (f["detector"], f["resource"], f["severity"], f["count"], f["first_at"], f["last_at"], Jsonb(f["samples"]),
                 f["detail"], now, run_id)).fetchone()
            new += row is not None
        for o in offences:
            conn.execute(sql.SQL(
                "INSERT INTO {}.offence (ip, offences, last_offence_at, last_evidence_at, last_detector) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (ip) DO UPDATE SET offences = EXCLUDED.offences,"
                " last_offence_at = CASE WHEN %s THEN EXCLUDED.last_offence_at ELSE {}.offence.last_offence_at END,"
                " last_evidence_at = GREATEST({}.offence.last_evidence_at, EXCLUDED.last_evidence_at),"
                " last_detector = EXCLUDED.last_detector").format(s, s, s),
                (o["ip"], o["offences"], o["first_at"], o["last_at"], o["detector"], o["new"]))
        if until is not None:
            conn.execute(sql.SQL(
                "INSERT INTO {}.watch_checkpoint (id, until, updated_at) VALUES (1, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET until = GREATEST({}.watch_checkpoint.until, EXCLUDED.until), updated_at = EXCLUDED.updated_at"
            ).format(s, s), (until, now))
    return new


def recent_findings(conn: psycopg.Connection[Any], schema: str, since: datetime, limit: int = 50) -> list[dict[str, Any]]:
    """The findings stored since ``since``, newest first (what an incident's detect phase shows)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT detector, resource, severity, count, first_at, last_at, detail, found_at FROM {}.finding"
                            " WHERE found_at >= %s ORDER BY found_at DESC, id DESC LIMIT %s").format(sql.Identifier(schema)),
                    (since, limit))
        return list(cur.fetchall())
