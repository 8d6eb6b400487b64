"""The alert state in PostgreSQL: alerts, silences, incidents and their timeline, the
audit trail, and the delivery ledger (an outbox), in a schema of runbook's own.

Guarantees, and how:
- two monitor runs never double-send: each evaluation holds the ``cycle`` row's lock
  for its transaction, and one that comes less than ``min_interval`` after the last is
  skipped (it still delivers); every notification has a unique ``dedup_key``, so a
  second insert of it is a no-op;
- each (incident, round, level) is paged once: the ``page`` table's primary key;
- nothing is lost: a notification is committed to the outbox before any channel is
  tried; a delivery claimed by a run that died (``sending`` past its lease) is tried
  again, so a crash between the send and its record can repeat a message but never
  drop one.

Every name is built with psycopg.sql; the schema name is a setting.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from runbook.alerting.engine import AlertState, Notice, Policy, evaluate, fingerprint, new_state
from runbook.alerting.escalation import Incident, Level, due_pages, level_of, resume_after_ack
from runbook.alerting.messages import alert_message, escalation_message, statuspage_message
from runbook.alerting.model import FALLBACK_ORDER, Delivery, Message, Sample, Severity
from runbook.alerting.rules import Rule
from runbook.alerting.silences import Silence, silenced_by
from runbook.errors import ConfigError

SCHEMA_VERSION = 1
PAGE_KINDS = ("firing", "repeat", "flapping", "stable", "escalation", "ack-expired", "run-failed")
ESCALATION_KINDS = ("escalation", "ack-expired")

_DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.cycle (id int PRIMARY KEY CHECK (id = 1), last_at timestamptz);
INSERT INTO {s}.cycle (id, last_at) VALUES (1, NULL) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS {s}.alert (
    fingerprint text PRIMARY KEY,
    rule        text NOT NULL,
    resource    text NOT NULL,
    status      text NOT NULL,
    state       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.silence (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    matchers    jsonb NOT NULL,
    author      text NOT NULL,
    reason      text NOT NULL,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    created_at  timestamptz NOT NULL,
    expired_by  text,
    expired_at  timestamptz
);
CREATE TABLE IF NOT EXISTS {s}.audit (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL,
    actor   text NOT NULL,
    action  text NOT NULL,
    object  text NOT NULL,
    detail  jsonb NOT NULL DEFAULT '{{}}'
);
CREATE TABLE IF NOT EXISTS {s}.incident (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fingerprint       text NOT NULL,
    rule              text NOT NULL,
    resource          text NOT NULL,
    severity          text NOT NULL,
    status            text NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved')),
    signal_at         timestamptz NOT NULL,
    opened_at         timestamptz NOT NULL,
    chain             jsonb NOT NULL,
    round             int NOT NULL DEFAULT 0,
    round_started_at  timestamptz,
    round_level       int NOT NULL DEFAULT 1,
    reached_level     int NOT NULL DEFAULT 0,
    acked_by          text,
    acked_at          timestamptz,
    ack_note          text,
    ack_expires_at    timestamptz,
    resolved_at       timestamptz,
    statuspage_id     text
);
CREATE UNIQUE INDEX IF NOT EXISTS incident_one_open ON {s}.incident (fingerprint) WHERE status <> 'resolved';
CREATE TABLE IF NOT EXISTS {s}.page (
    incident_id  bigint NOT NULL REFERENCES {s}.incident (id),
    round        int NOT NULL,
    level        int NOT NULL,
    paged_at     timestamptz NOT NULL,
    PRIMARY KEY (incident_id, round, level)
);
CREATE TABLE IF NOT EXISTS {s}.timeline (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id  bigint NOT NULL REFERENCES {s}.incident (id),
    at           timestamptz NOT NULL,
    kind         text NOT NULL,
    level        int,
    actor        text NOT NULL,
    detail       text NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS {s}.outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dedup_key        text NOT NULL UNIQUE,
    page_key         text NOT NULL,
    channel          text NOT NULL,
    recipient        text,
    kind             text NOT NULL,
    severity         text NOT NULL,
    fingerprint      text,
    incident_id      bigint,
    message          jsonb NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'dead', 'cancelled')),
    attempts         int NOT NULL DEFAULT 0,
    last_error       text,
    created_at       timestamptz NOT NULL,
    next_attempt_at  timestamptz NOT NULL,
    claimed_at       timestamptz,
    sent_at          timestamptz,
    external_id      text,
    fallback         boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS outbox_due ON {s}.outbox (next_attempt_at) WHERE status IN ('pending', 'failed', 'sending');
CREATE INDEX IF NOT EXISTS outbox_page ON {s}.outbox (page_key);
CREATE TABLE IF NOT EXISTS {s}.metric_history (
    metric    text NOT NULL,
    resource  text NOT NULL,
    at        timestamptz NOT NULL,
    value     double precision NOT NULL,
    PRIMARY KEY (metric, resource, at)
);
CREATE INDEX IF NOT EXISTS metric_history_at ON {s}.metric_history (at);
INSERT INTO {s}.meta (key, value) VALUES ('schema_version', '1') ON CONFLICT DO NOTHING;
"""


def q(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def ensure_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create runbook's alerting schema where missing (idempotent; one transaction)."""
    with conn.transaction():
        # a lock, so that two first runs do not race each other's CREATEs
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"runbook-alerting-ddl:{schema}",))
        conn.execute(sql.SQL(_DDL).format(s=sql.Identifier(schema)))
        row = conn.execute(sql.SQL("SELECT value FROM {} WHERE key = 'schema_version'").format(q(schema, "meta"))).fetchone()
    if row is None or int(row[0]) != SCHEMA_VERSION:
        raise ConfigError(f"RUNBOOK_ALERTS__STATE_SCHEMA: schema {schema!r} is at version {row and row[0]}, this runbook needs {SCHEMA_VERSION}")


# --------------------------------------------------------------------------- audit


def audit(conn: psycopg.Connection[Any], schema: str, now: datetime, actor: str, action: str, obj: str, detail: dict[str, Any]) -> None:
    conn.execute(
        sql.SQL("INSERT INTO {} (at, actor, action, object, detail) VALUES (%s, %s, %s, %s, %s)").format(q(schema, "audit")),
        (now, actor, action, obj, Jsonb(detail)),
    )


def audit_trail(conn: psycopg.Connection[Any], schema: str, limit: int = 100) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT at, actor, action, object, detail FROM {} ORDER BY id DESC LIMIT %s").format(q(schema, "audit")), (limit,))
        return cur.fetchall()


# --------------------------------------------------------------------------- silences


def add_silence(conn: psycopg.Connection[Any], schema: str, silence: Silence, now: datetime) -> Silence:
    with conn.transaction():
        row = conn.execute(
            sql.SQL("INSERT INTO {} (matchers, author, reason, starts_at, ends_at, created_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id")
            .format(q(schema, "silence")),
            (Jsonb(silence.matchers), silence.author, silence.reason, silence.starts_at, silence.ends_at, now),
        ).fetchone()
        assert row is not None
        saved = silence.model_copy(update={"id": int(row[0])})
        audit(conn, schema, now, silence.author, "silence.add", f"silence #{saved.id}",
              {"matchers": silence.matchers, "reason": silence.reason, "ends_at": silence.ends_at.isoformat()})
    return saved


def list_silences(conn: psycopg.Connection[Any], schema: str, now: datetime, *, include_ended: bool = False) -> list[dict[str, Any]]:
    where = sql.SQL("") if include_ended else sql.SQL("WHERE ends_at > %(now)s")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL("SELECT id, matchers, author, reason, starts_at, ends_at, expired_by, expired_at FROM {} {} ORDER BY id")
            .format(q(schema, "silence"), where),
            {"now": now},
        )
        return cur.fetchall()


def expire_silence(conn: psycopg.Connection[Any], schema: str, silence_id: int, by: str, now: datetime) -> dict[str, Any]:
    """End a silence now (its alerts notify on the next evaluation if they still fire)."""
    with conn.transaction():
        row = conn.execute(
            sql.SQL("UPDATE {} SET ends_at = %s, expired_by = %s, expired_at = %s WHERE id = %s AND ends_at > %s RETURNING id")
            .format(q(schema, "silence")),
            (now, by, now, silence_id, now),
        ).fetchone()
        if row is None:
            exists = conn.execute(sql.SQL("SELECT ends_at FROM {} WHERE id = %s").format(q(schema, "silence")), (silence_id,)).fetchone()
            if exists is None:
                raise ConfigError(f"silence #{silence_id} does not exist (runbook silence list shows them)")
            return {"id": silence_id, "expired": False, "detail": f"silence #{silence_id} had already ended at {exists[0].isoformat()}"}
        audit(conn, schema, now, by, "silence.expire", f"silence #{silence_id}", {})
    return {"id": silence_id, "expired": True, "detail": f"silence #{silence_id} expired by {by}"}


def _active_silences(conn: psycopg.Connection[Any], schema: str, now: datetime) -> list[Silence]:
    rows = conn.execute(
        sql.SQL("SELECT id, matchers, author, reason, starts_at, ends_at FROM {} WHERE starts_at <= %s AND ends_at > %s")
        .format(q(schema, "silence")),
        (now, now),
    ).fetchall()
    return [Silence(id=r[0], matchers=r[1], author=r[2], reason=r[3], starts_at=r[4], ends_at=r[5]) for r in rows]


# --------------------------------------------------------------------------- the cycle


@dataclass
class CycleConfig:
    """What one evaluation needs besides the samples."""

    schema: str
    recipients: Callable[[str, str | None], list[str | None]]  # channel, contact's to -> rows to write ([] unconfigured)
    rules: list[Rule] = field(default_factory=list)
    policy: Policy = field(default_factory=Policy)
    chain: list[Level] = field(default_factory=list)
    ack_ttl: timedelta = timedelta(minutes=30)
    min_interval: timedelta = timedelta(0)
    link: str | None = None
    history_every: timedelta | None = None  # keep one sample per metric and resource this often (None: no history)
    history_keep: timedelta = timedelta(days=400)


@dataclass
class CycleReport:
    skipped: str | None = None
    evaluated: int = 0
    firing: list[dict[str, Any]] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)
    opened: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    pages: list[dict[str, Any]] = field(default_factory=list)
    queued: int = 0
    unrouted: list[str] = field(default_factory=list)


def _enqueue(
    conn: psycopg.Connection[Any], schema: str, now: datetime, *, dedup_key: str, page_key: str, channel: str,
    recipient: str | None, message: Message, fingerprint_: str | None, incident_id: int | None, fallback: bool = False,
) -> int | None:
    """One ledger row (its id), or None when that dedup key is already there."""
    row = conn.execute(
        sql.SQL(
            "INSERT INTO {} (dedup_key, page_key, channel, recipient, kind, severity, fingerprint, incident_id, message,"
            " status, created_at, next_attempt_at, fallback)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'pending', %s, %s, %s) ON CONFLICT (dedup_key) DO NOTHING RETURNING id"
        ).format(q(schema, "outbox")),
        (dedup_key, page_key, channel, recipient, message.kind, message.severity.value, fingerprint_, incident_id,
         Jsonb(message.model_dump(mode="json")), now, now, fallback),
    ).fetchone()
    return None if row is None else int(row[0])


def _route(conn: psycopg.Connection[Any], cfg: CycleConfig, now: datetime, page_key: str, channels: list[tuple[str, str | None]],
           message: Message, fp: str | None, incident_id: int | None, report: CycleReport) -> int:
    """One notification on each (channel, to): a ledger row per recipient."""
    ids = enqueue(conn, cfg, now, page_key, channels, message, fp, incident_id, report)
    return len(ids)


def enqueue(conn: psycopg.Connection[Any], cfg: CycleConfig, now: datetime, page_key: str, channels: list[tuple[str, str | None]],
            message: Message, fp: str | None, incident_id: int | None, report: CycleReport) -> list[int]:
    """Queue ``message`` on each (channel, to) that can send; the new rows' ids."""
    ids: list[int] = []
    for channel, to in channels:
        recipients = cfg.recipients(channel, to)
        if not recipients:
            report.unrouted.append(f"{page_key}: {channel} is not configured")
            continue
        for recipient in recipients:
            key = f"{page_key}|{channel}|{recipient or '-'}"
            row_id = _enqueue(conn, cfg.schema, now, dedup_key=key, page_key=page_key, channel=channel, recipient=recipient,
                              message=message, fingerprint_=fp, incident_id=incident_id)
            if row_id is not None:
                ids.append(row_id)
    report.queued += len(ids)
    return ids


def active_resources(conn: psycopg.Connection[Any], schema: str, rules: list[str]) -> dict[str, set[str]]:
    """The resources of these rules whose alert is pending or firing, by rule."""
    rows = conn.execute(sql.SQL("SELECT rule, resource FROM {} WHERE rule = ANY(%s) AND status <> 'inactive'").format(
        q(schema, "alert")), (rules,)).fetchall()
    out: dict[str, set[str]] = {r: set() for r in rules}
    for rule, res in rows:
        out[rule].add(res)
    return out


def _load_states(conn: psycopg.Connection[Any], schema: str) -> dict[str, AlertState]:
    rows = conn.execute(sql.SQL("SELECT state FROM {}").format(q(schema, "alert"))).fetchall()
    return {r[0]["fingerprint"]: AlertState.model_validate(r[0]) for r in rows}


def _save_states(conn: psycopg.Connection[Any], schema: str, states: list[AlertState], now: datetime) -> None:
    """Every state in one statement, sent as one JSON array (one parameter to encode)."""
    if not states:
        return
    conn.execute(
        sql.SQL(
            "INSERT INTO {t} (fingerprint, rule, resource, status, state, updated_at)"
            " SELECT e->>'fingerprint', e->>'rule', e->>'resource', e->>'status', e, %s FROM jsonb_array_elements(%s::jsonb) AS e"
            " ON CONFLICT (fingerprint) DO UPDATE SET status = excluded.status, state = excluded.state, updated_at = excluded.updated_at"
        ).format(t=q(schema, "alert")),
        (now, "[" + ",".join(s.model_dump_json() for s in states) + "]"),
    )


# --------------------------------------------------------------------------- metric history


def record_history(conn: psycopg.Connection[Any], schema: str, samples: list[Sample], now: datetime, *, every: timedelta,
                   keep: timedelta) -> int:
    """Keep each sample with a value, at most one per metric and resource per ``every``
    (the monitor evaluates each minute; the performance and capacity reviews need
    months, not minutes), and forget what is older than ``keep``. How many were kept."""
    rows = [{"metric": s.metric, "resource": s.resource, "value": s.value} for s in samples if s.value is not None]
    kept = 0
    if rows:
        cur = conn.execute(
            sql.SQL(
                "INSERT INTO {h} (metric, resource, at, value)"
                " SELECT e->>'metric', e->>'resource', %s, (e->>'value')::double precision FROM jsonb_array_elements(%s::jsonb) AS e"
                " WHERE NOT EXISTS (SELECT 1 FROM {h} h WHERE h.metric = e->>'metric' AND h.resource = e->>'resource'"
                " AND h.at > %s) ON CONFLICT DO NOTHING"
            ).format(h=q(schema, "metric_history")),
            (now, Jsonb(rows), now - every),
        )
        kept = cur.rowcount
    conn.execute(sql.SQL("DELETE FROM {} WHERE at < %s").format(q(schema, "metric_history")), (now - keep,))
    return kept


def read_history(conn: psycopg.Connection[Any], schema: str, metric: str, since: datetime, until: datetime, *,
                 resource: str | None = None) -> list[tuple[str, datetime, float]]:
    """(resource, at, value) of one metric in ``[since, until)``, oldest first."""
    query = sql.SQL("SELECT resource, at, value FROM {} WHERE metric = %s AND at >= %s AND at < %s{} ORDER BY at, resource").format(
        q(schema, "metric_history"), sql.SQL(" AND resource = %s") if resource is not None else sql.SQL(""))
    args: tuple[Any, ...] = (metric, since, until) + ((resource,) if resource is not None else ())
    return [(r[0], r[1], float(r[2])) for r in conn.execute(query, args).fetchall()]


def _incident_from(row: dict[str, Any]) -> Incident:
    return Incident(
        id=row["id"], fingerprint=row["fingerprint"], severity=row["severity"], status=row["status"], signal_at=row["signal_at"],
        chain=[Level.model_validate(lv) for lv in row["chain"]], round=row["round"], round_started_at=row["round_started_at"],
        round_level=row["round_level"], reached_level=row["reached_level"], ack_expires_at=row["ack_expires_at"],
    )


def _open_incidents(conn: psycopg.Connection[Any], schema: str) -> dict[str, dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {} WHERE status <> 'resolved' FOR UPDATE").format(q(schema, "incident")))
        return {row["fingerprint"]: row for row in cur.fetchall()}


def timeline_add(conn: psycopg.Connection[Any], schema: str, incident_id: int, now: datetime, kind: str, actor: str,
                 detail: str = "", level: int | None = None) -> None:
    conn.execute(
        sql.SQL("INSERT INTO {} (incident_id, at, kind, level, actor, detail) VALUES (%s, %s, %s, %s, %s, %s)").format(q(schema, "timeline")),
        (incident_id, now, kind, level, actor, detail),
    )


def _cancel_escalations(conn: psycopg.Connection[Any], schema: str, incident_id: int, why: str) -> int:
    cur = conn.execute(
        sql.SQL("UPDATE {} SET status = 'cancelled', last_error = %s WHERE incident_id = %s AND kind = ANY(%s)"
                " AND status IN ('pending', 'failed')").format(q(schema, "outbox")),
        (why, incident_id, list(ESCALATION_KINDS)),
    )
    return cur.rowcount


def _statuspage_in(chain: list[Level]) -> bool:
    return any(c.channel == "statuspage" for lv in chain for c in lv.contacts)


def _statuspage(conn: psycopg.Connection[Any], cfg: CycleConfig, now: datetime, incident: dict[str, Any], kind: str, note: str,
                report: CycleReport, tag: str) -> None:
    chain = [Level.model_validate(lv) for lv in incident["chain"]]
    if not _statuspage_in(chain):
        return
    if kind != "incident-open":
        opened = conn.execute(sql.SQL("SELECT 1 FROM {} WHERE incident_id = %s AND kind = 'incident-open'").format(q(cfg.schema, "outbox")),
                              (incident["id"],)).fetchone()
        if opened is None:
            return
    message = statuspage_message(kind, incident["id"], incident["rule"], incident["resource"], Severity(incident["severity"]), now, note)
    _route(conn, cfg, now, f"statuspage:{incident['id']}:{tag}", [("statuspage", None)], message, incident["fingerprint"],
           incident["id"], report)


def run_cycle(conn: psycopg.Connection[Any], cfg: CycleConfig, samples: list[Sample], now: datetime, *,
              scheduled: bool = True) -> CycleReport:
    """One evaluation of every rule on every sample, in one transaction: alert states,
    notices into the ledger, incidents opened and resolved, escalation pages due.
    ``scheduled`` (the monitor's evaluation) is skipped when the previous one is too
    recent; an event's evaluation (a failed run, a missed backup) of a few rules is not,
    and leaves the monitor's clock alone. Both hold the same lock."""
    report = CycleReport()
    schema = cfg.schema
    with conn.transaction():
        last = conn.execute(sql.SQL("SELECT last_at FROM {} WHERE id = 1 FOR UPDATE").format(q(schema, "cycle"))).fetchone()
        if scheduled and last and last[0] is not None and now - last[0] < cfg.min_interval:
            report.skipped = f"the previous evaluation ran at {last[0].isoformat()}, less than {cfg.min_interval} ago"
            return report
        states = _load_states(conn, schema)
        silences = _active_silences(conn, schema, now)
        incidents = _open_incidents(conn, schema)
        by_metric: dict[str, list[Sample]] = defaultdict(list)
        for sample in samples:
            by_metric[sample.metric].append(sample)
        changed: list[AlertState] = []
        firing_now: set[tuple[str, str]] = set()
        rules = {r.name: r for r in cfg.rules}
        for rule in _inhibitors_first(cfg.rules):
            for sample in by_metric.get(rule.metric, []):
                if rule.resource is not None and sample.resource != rule.resource:
                    continue
                fp = fingerprint(rule.name, sample.resource)
                before = states.get(fp) or new_state(rule, sample.resource)
                suppressed = _suppression(rule, sample.resource, silences, firing_now, now)
                after, notices = evaluate(before, rule, sample.value, now, cfg.policy, suppressed=suppressed, detail=sample.detail)
                states[fp] = after
                changed.append(after)
                report.evaluated += 1
                if after.status == "firing":
                    firing_now.add((rule.name, sample.resource))
                    report.firing.append({"rule": rule.name, "resource": sample.resource, "severity": rule.severity.value,
                                          "value": after.last_value, "since": after.firing_since, "suppressed": after.suppressed,
                                          "flapping": after.flapping})
                for notice in notices:
                    _notify(conn, cfg, now, rule, after, notice, report)
                if rule.severity is Severity.critical:
                    _incident_step(conn, cfg, now, rule, after, incidents, report)
        if scheduled:
            _resolve_orphans(conn, cfg, now, incidents, rules, report)
        _escalate(conn, cfg, now, incidents, states, report)
        _save_states(conn, schema, changed, now)
        if scheduled:
            conn.execute(sql.SQL("UPDATE {} SET last_at = %s WHERE id = 1").format(q(schema, "cycle")), (now,))
            if cfg.history_every is not None:
                record_history(conn, schema, samples, now, every=cfg.history_every, keep=cfg.history_keep)
    return report


def _inhibitors_first(rules: list[Rule]) -> list[Rule]:
    """Rules ordered so that each is evaluated after the rules that inhibit it."""
    ordered: list[Rule] = []
    placed: set[str] = set()
    pending = list(rules)
    for _ in range(len(rules) + 1):  # bounded: a cycle of inhibitions ends in the fallback below
        rest = []
        for rule in pending:
            if all(name in placed or name == rule.name for name in rule.inhibited_by):
                ordered.append(rule)
                placed.add(rule.name)
            else:
                rest.append(rule)
        pending = rest
        if not pending:
            break
    return ordered + pending


def _suppression(rule: Rule, resource: str, silences: list[Silence], firing_now: set[tuple[str, str]], now: datetime) -> str | None:
    silence = silenced_by(silences, {"rule": rule.name, "resource": resource, "severity": rule.severity.value}, now)
    if silence is not None:
        return f"silenced by {silence.label()} ({silence.author}: {silence.reason}) until {silence.ends_at.isoformat(timespec='minutes')}"
    for other in rule.inhibited_by:
        if (other, resource) in firing_now:
            return f"inhibited by {other}"
        if rule.inhibit_any_resource:
            on = next((r for name, r in sorted(firing_now) if name == other), None)
            if on is not None:
                return f"inhibited by {other} on {on}"
    return None


def _notify(conn: psycopg.Connection[Any], cfg: CycleConfig, now: datetime, rule: Rule, state: AlertState, notice: Notice,
            report: CycleReport) -> None:
    message = alert_message(rule, state, notice, now, cfg.link)
    report.notices.append({"kind": notice.kind, "rule": rule.name, "resource": state.resource, "title": message.title})
    _route(conn, cfg, now, notice.dedup_key, [(c, None) for c in rule.routes()], message, state.fingerprint, None, report)


def _incident_step(conn: psycopg.Connection[Any], cfg: CycleConfig, now: datetime, rule: Rule, state: AlertState,
                   incidents: dict[str, dict[str, Any]], report: CycleReport) -> None:
    open_row = incidents.get(state.fingerprint)
    if state.status == "firing" and open_row is None and not state.suppressed:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (fingerprint, rule, resource, severity, status, signal_at, opened_at, chain)"
                    " VALUES (%s, %s, %s, %s, 'open', %s, %s, %s) RETURNING *"
                ).format(q(cfg.schema, "incident")),
                (state.fingerprint, rule.name, state.resource, rule.severity.value, state.active_since or now, now,
                 Jsonb([lv.model_dump(mode="json") for lv in cfg.chain])),
            )
            row = cur.fetchone()
        assert row is not None
        incidents[state.fingerprint] = row
        report.opened.append(row["id"])
        timeline_add(conn, cfg.schema, row["id"], now, "opened", "monitor", f"{rule.name} on {state.resource}: {rule.describe(state.last_value)}")
    elif state.status == "inactive" and not state.flapping and open_row is not None:
        conn.execute(sql.SQL("UPDATE {} SET status = 'resolved', resolved_at = %s WHERE id = %s").format(q(cfg.schema, "incident")),
                     (now, open_row["id"]))
        cancelled = _cancel_escalations(conn, cfg.schema, open_row["id"], "resolved")
        timeline_add(conn, cfg.schema, open_row["id"], now, "resolved", "monitor",
                     f"{rule.describe(state.last_value)}" + (f"; {cancelled} pending page(s) cancelled" if cancelled else ""))
        _statuspage(conn, cfg, now, open_row, "incident-resolved", "Resolved.", report, "resolved")
        report.resolved.append(open_row["id"])
        del incidents[state.fingerprint]


def _resolve_orphans(conn: psycopg.Connection[Any], cfg: CycleConfig, now: datetime, incidents: dict[str, dict[str, Any]],
                     rules: dict[str, Rule], report: CycleReport) -> None:
    """An incident whose rule left the configuration can never resolve by itself, and
    would page forever: resolve it, saying why (only the monitor's full evaluation
    knows every rule)."""
    for fp, row in list(incidents.items()):
        if row["rule"] in rules:
            continue
        conn.execute(sql.SQL("UPDATE {} SET status = 'resolved', resolved_at = %s WHERE id = %s").format(q(cfg.schema, "incident")),
                     (now, row["id"]))
        cancelled = _cancel_escalations(conn, cfg.schema, row["id"], "rule removed")
        timeline_add(conn, cfg.schema, row["id"], now, "resolved", "monitor",
                     f"rule {row['rule']} is no longer configured (RUNBOOK_ALERTS__RULES)"
                     + (f"; {cancelled} pending page(s) cancelled" if cancelled else ""))
        _statuspage(conn, cfg, now, row, "incident-resolved", "Resolved.", report, "resolved")
        report.resolved.append(row["id"])
        del incidents[fp]


def _escalate(conn: psycopg.Connection[Any], cfg: CycleConfig, now: datetime, incidents: dict[str, dict[str, Any]],
              states: dict[str, AlertState], report: CycleReport) -> None:
    for fp, row in incidents.items():
        state = states.get(fp)
        if state is not None and state.suppressed and state.suppressed.startswith("silenced"):
            continue  # a silence holds the pages too
        incident = _incident_from(row)
        resumed = resume_after_ack(incident, now)
        if resumed is not None:
            incident = resumed
            conn.execute(
                sql.SQL("UPDATE {} SET status = 'open', round = %s, round_started_at = %s, round_level = %s, ack_expires_at = NULL"
                        " WHERE id = %s").format(q(cfg.schema, "incident")),
                (incident.round, incident.round_started_at, incident.round_level, incident.id),
            )
            timeline_add(conn, cfg.schema, incident.id, now, "ack-expired", "monitor",
                         f"the acknowledgement by {row['acked_by']} ran out while {row['rule']} still fires; "
                         f"escalation resumes at level {incident.round_level}")
        for page in due_pages(incident, now):
            inserted = conn.execute(
                sql.SQL("INSERT INTO {} (incident_id, round, level, paged_at) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING level")
                .format(q(cfg.schema, "page")),
                (incident.id, page.round, page.level, now),
            ).fetchone()
            if inserted is None:
                continue
            level = level_of(incident.chain, page.level)
            again = page.round > 0 and page.level == incident.round_level
            message = escalation_message(incident.id, level, row["rule"], row["resource"], incident.severity, row["opened_at"], now,
                                         cfg.link, resumed=again)
            contacts = [(c.channel, c.to) for c in level.contacts if c.channel != "statuspage"]
            queued = _route(conn, cfg, now, f"esc:{incident.id}:{page.round}:{page.level}", contacts, message, fp, incident.id, report)
            if any(c.channel == "statuspage" for c in level.contacts):
                first = conn.execute(sql.SQL("SELECT 1 FROM {} WHERE incident_id = %s AND kind = 'incident-open'").format(q(cfg.schema, "outbox")),
                                     (incident.id,)).fetchone() is None
                _statuspage(conn, cfg, now, row, "incident-open" if first else "incident-update",
                            f"Investigating: {row['rule']} on {row['resource']}." if first else f"Escalated to level {page.level}.",
                            report, f"{page.round}:{page.level}")
            conn.execute(sql.SQL("UPDATE {} SET reached_level = GREATEST(reached_level, %s) WHERE id = %s").format(q(cfg.schema, "incident")),
                         (page.level, incident.id))
            channels = ", ".join(sorted({c for c, _ in contacts})) or "no channel"
            timeline_add(conn, cfg.schema, incident.id, now, "paged", "monitor",
                         f"level {level.level} ({level.name}) via {channels}: {queued} notification(s)" + (" (ack expired)" if again else ""),
                         level=level.level)
            report.pages.append({"incident": incident.id, "round": page.round, "level": page.level, "name": level.name, "queued": queued})


# --------------------------------------------------------------------------- acknowledgements


def acknowledge(conn: psycopg.Connection[Any], schema: str, incident_id: int, by: str, note: str, now: datetime, ttl: timedelta,
                recipients: Callable[[str, str | None], list[str | None]] | None = None) -> dict[str, Any]:
    """Acknowledge an incident: every pending page stops at once; the ack holds until
    ``now + ttl`` while the alert fires. A resolved incident stays resolved (a resolve
    beats a concurrent ack: both take the incident's row lock)."""
    if not by.strip():
        raise ConfigError("acknowledge: --by NAME is needed (who takes the incident)")
    with conn.transaction():
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql.SQL("SELECT * FROM {} WHERE id = %s FOR UPDATE").format(q(schema, "incident")), (incident_id,))
            row = cur.fetchone()
        if row is None:
            raise ConfigError(f"acknowledge: there is no incident #{incident_id}")
        if row["status"] == "resolved":
            timeline_add(conn, schema, incident_id, now, "ack-refused", by, f"already resolved at {row['resolved_at'].isoformat()}")
            return {"incident": incident_id, "acknowledged": False,
                    "detail": f"incident #{incident_id} was already resolved at {row['resolved_at'].isoformat(timespec='seconds')}"}
        expires = now + ttl
        conn.execute(
            sql.SQL("UPDATE {} SET status = 'acknowledged', acked_by = %s, acked_at = %s, ack_note = %s, ack_expires_at = %s WHERE id = %s")
            .format(q(schema, "incident")),
            (by, now, note, expires, incident_id),
        )
        cancelled = _cancel_escalations(conn, schema, incident_id, f"acknowledged by {by}")
        timeline_add(conn, schema, incident_id, now, "acknowledged", by,
                     (note + "; " if note else "") + f"holds until {expires.isoformat(timespec='minutes')}"
                     + (f"; {cancelled} pending page(s) cancelled" if cancelled else ""),
                     level=row["reached_level"] or None)
        audit(conn, schema, now, by, "incident.acknowledge", f"incident #{incident_id}", {"note": note, "expires": expires.isoformat()})
        if recipients is not None:
            _statuspage(conn, CycleConfig(schema=schema, recipients=recipients), now, row, "incident-update", f"Identified: {by} is on it.", CycleReport(), f"ack:{now.isoformat()}")
    return {"incident": incident_id, "acknowledged": True, "by": by, "expires_at": expires, "cancelled_pages": cancelled,
            "detail": f"incident #{incident_id} acknowledged by {by} until {expires.isoformat(timespec='minutes')}"}


def incidents(conn: psycopg.Connection[Any], schema: str, *, open_only: bool = True, limit: int = 50) -> list[dict[str, Any]]:
    where = sql.SQL("WHERE status <> 'resolved'") if open_only else sql.SQL("")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL("SELECT id, rule, resource, severity, status, signal_at, opened_at, reached_level, round, acked_by, ack_expires_at,"
                    " resolved_at FROM {} {} ORDER BY id DESC LIMIT %s").format(q(schema, "incident"), where),
            (limit,),
        )
        return cur.fetchall()


def timeline(conn: psycopg.Connection[Any], schema: str, incident_id: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT at, kind, level, actor, detail FROM {} WHERE incident_id = %s ORDER BY id").format(q(schema, "timeline")),
                    (incident_id,))
        return cur.fetchall()


# --------------------------------------------------------------------------- delivery


@dataclass
class Attempt:
    id: int
    channel: str
    recipient: str | None
    kind: str
    severity: str
    page_key: str
    title: str
    ok: bool
    detail: str
    status: str
    fallback: bool


Sender = Callable[[str, str | None, Message, str | None], Delivery]


def claim(conn: psycopg.Connection[Any], schema: str, now: datetime, lease: timedelta, *, channel: str | None = None,
          ids: list[int] | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Claim due deliveries (committed at once, so that a concurrent run skips them)."""
    filters = [sql.SQL("((status IN ('pending', 'failed') AND next_attempt_at <= %(now)s) OR (status = 'sending' AND claimed_at < %(stale)s))")]
    if channel is not None:
        filters.append(sql.SQL("channel = %(channel)s"))
    if ids is not None:
        filters.append(sql.SQL("id = ANY(%(ids)s)"))
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL(
                "UPDATE {t} SET status = 'sending', claimed_at = %(now)s, attempts = attempts + 1 WHERE id IN ("
                " SELECT id FROM {t} WHERE {f} ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) RETURNING *"
            ).format(t=q(schema, "outbox"), f=sql.SQL(" AND ").join(filters)),
            {"now": now, "stale": now - lease, "channel": channel, "ids": ids, "limit": limit},
        )
        return sorted(cur.fetchall(), key=lambda r: r["id"])


def retry_delay(attempts: int, retry_after: float | None) -> timedelta:
    """1, 2, 4 ... minutes between attempts (at most 30), or what the channel asked."""
    delay = timedelta(minutes=min(30, 2 ** max(0, attempts - 1)))
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    return delay


def deliver_rows(conn: psycopg.Connection[Any], schema: str, rows: list[dict[str, Any]], send: Sender, now: datetime,
                 max_attempts: int) -> list[Attempt]:
    """Send each claimed row and record what happened. Never raises for a channel's failure."""
    attempts: list[Attempt] = []
    for row in rows:
        message = Message.model_validate(row["message"])
        external_id = None
        if row["kind"] in ("incident-update", "incident-resolved"):
            external_id, wait = _statuspage_id(conn, schema, row)
            if external_id is None:
                if wait:
                    conn.execute(sql.SQL("UPDATE {} SET status = 'pending', attempts = attempts - 1, next_attempt_at = %s WHERE id = %s")
                                 .format(q(schema, "outbox")), (now + timedelta(minutes=1), row["id"]))
                    continue
                delivery = Delivery(ok=False, permanent=True, detail="the status-page incident was never opened")
            else:
                delivery = send(row["channel"], row["recipient"], message, external_id)
        else:
            try:
                delivery = send(row["channel"], row["recipient"], message, None)
            except ConfigError as err:
                delivery = Delivery(ok=False, permanent=True, detail=str(err).splitlines()[0])
        status = "sent" if delivery.ok else ("dead" if delivery.permanent or row["attempts"] >= max_attempts else "failed")
        with conn.transaction():
            conn.execute(
                sql.SQL("UPDATE {} SET status = %s, last_error = %s, sent_at = %s, external_id = COALESCE(%s, external_id),"
                        " next_attempt_at = %s WHERE id = %s").format(q(schema, "outbox")),
                (status, None if delivery.ok else delivery.detail, now if delivery.ok else None, delivery.external_id,
                 now + retry_delay(row["attempts"], delivery.retry_after_seconds), row["id"]),
            )
            if delivery.ok and row["kind"] == "incident-open" and delivery.external_id:
                conn.execute(sql.SQL("UPDATE {} SET statuspage_id = %s WHERE id = %s").format(q(schema, "incident")),
                             (delivery.external_id, row["incident_id"]))
            if not delivery.ok and row["incident_id"] is not None:
                timeline_add(conn, schema, row["incident_id"], now, "delivery-failed", "monitor",
                             f"{row['channel']} {row['recipient'] or ''}: {delivery.detail} ({status})".replace("  ", " "))
        attempts.append(Attempt(id=row["id"], channel=row["channel"], recipient=row["recipient"], kind=row["kind"],
                                severity=row["severity"], page_key=row["page_key"], title=message.title, ok=delivery.ok,
                                detail=delivery.detail, status=status, fallback=row["fallback"]))
    return attempts


def _statuspage_id(conn: psycopg.Connection[Any], schema: str, row: dict[str, Any]) -> tuple[str | None, bool]:
    """The status-page id of the row's incident, or (None, wait?) when it is not known yet."""
    found = conn.execute(sql.SQL("SELECT statuspage_id FROM {} WHERE id = %s").format(q(schema, "incident")), (row["incident_id"],)).fetchone()
    if found and found[0]:
        return found[0], False
    opened = conn.execute(
        sql.SQL("SELECT status FROM {} WHERE incident_id = %s AND kind = 'incident-open' ORDER BY id LIMIT 1").format(q(schema, "outbox")),
        (row["incident_id"],),
    ).fetchone()
    return None, opened is not None and opened[0] in ("pending", "failed", "sending")


def plan_fallbacks(conn: psycopg.Connection[Any], schema: str, attempts: list[Attempt], usable: list[str], now: datetime) -> tuple[list[int], list[str]]:
    """For each critical page tried in this run that reached nobody (every row of it
    failed), queue it on the next channel of FALLBACK_ORDER not tried yet. Returns the
    new rows' ids, and the pages that have no channel left."""
    new_ids: list[int] = []
    undelivered: list[str] = []
    pages = {a.page_key for a in attempts if not a.ok and a.severity == "critical" and a.kind in PAGE_KINDS}
    for page_key in sorted(pages):
        rows = conn.execute(
            sql.SQL("SELECT channel, status, message FROM {} WHERE page_key = %s ORDER BY id").format(q(schema, "outbox")), (page_key,)
        ).fetchall()
        if any(status in ("sent", "pending", "sending") for _, status, _ in rows):
            continue
        tried = {channel for channel, _, _ in rows}
        message = Message.model_validate(rows[0][2])
        nxt = next((c for c in FALLBACK_ORDER if c not in tried and c in usable), None)
        if nxt is None:
            undelivered.append(f"{message.title} (tried {', '.join(sorted(tried))})")
            continue
        with conn.transaction():
            row = conn.execute(
                sql.SQL(
                    "INSERT INTO {} (dedup_key, page_key, channel, recipient, kind, severity, fingerprint, incident_id, message, status,"
                    " created_at, next_attempt_at, fallback) SELECT %s, page_key, %s, NULL, kind, severity, fingerprint, incident_id,"
                    " message, 'pending', %s, %s, true FROM {} WHERE page_key = %s ORDER BY id LIMIT 1"
                    " ON CONFLICT (dedup_key) DO NOTHING RETURNING id"
                ).format(q(schema, "outbox"), q(schema, "outbox")),
                (f"{page_key}|fallback|{nxt}", nxt, now, now, page_key),
            ).fetchone()
        if row is not None:
            new_ids.append(int(row[0]))
    return new_ids, undelivered


def ledger(conn: psycopg.Connection[Any], schema: str, *, limit: int = 100) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL("SELECT id, channel, recipient, kind, severity, status, attempts, last_error, created_at, sent_at,"
                    " message->>'title' AS title FROM {} ORDER BY id DESC LIMIT %s").format(q(schema, "outbox")),
            (limit,),
        )
        return cur.fetchall()
