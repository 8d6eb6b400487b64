"""Benchmark: one monitor evaluation of 50 rules over 1,000 open alerts, beside the
plain SQL that evaluation runs (the same statements, through psycopg, with nothing
computed in Python).

    /work/main/.venv/bin/python bench/monitor.py [--rules 50] [--alerts 1000] [--repeat 15]

A sandbox PostgreSQL (pgserver wheel, Unix socket) under ``bench/.work/``; no network.
The measured evaluation is the steady state of a minute: every alert already fires
and was told, so it reads and writes every state and queues nothing. The first
evaluation (all 1,000 start firing and queue their notifications) is shown too.
Target (issue 11): well under a second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from runbook.alerting.engine import Policy  # noqa: E402
from runbook.alerting.escalation import DEFAULT_CHAIN  # noqa: E402
from runbook.alerting.model import METRICS, Sample  # noqa: E402
from runbook.alerting.rules import Rule  # noqa: E402
from tasks import alertstate  # noqa: E402
from tasks.postgres import with_database  # noqa: E402

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)
SCHEMA = "runbook_alerting"


def rules_and_samples(n_rules: int, n_alerts: int) -> tuple[list[Rule], list[Sample]]:
    metrics = [m for m in METRICS if m not in ("database_up", "health_up", "signal_up")]
    rules = [
        Rule.model_validate({"name": f"rule-{i:02d}", "metric": metrics[i % len(metrics)], "comparison": ">=", "threshold": i,
                             "severity": "warning", "for": 1, "channels": ["slack", "email"]})
        for i in range(n_rules)
    ]
    per_rule = max(1, n_alerts // n_rules)  # each rule sees per_rule resources of its metric: n_rules * per_rule alerts
    samples = [Sample(metric=m, resource=f"node-{j:04d}", value=1e6 + j) for m in sorted({r.metric for r in rules}) for j in range(per_rule)]
    return rules, samples


def recipients(channel: str, to: str | None) -> list[str | None]:
    return [to] if to else [None]


def plain_sql(conn: psycopg.Connection, states_json: str) -> float:
    """The statements of one steady-state evaluation, values prepared beforehand."""
    started = time.perf_counter()
    with conn.transaction():
        conn.execute(sql.SQL("SELECT last_at FROM {} WHERE id = 1 FOR UPDATE").format(alertstate.q(SCHEMA, "cycle"))).fetchone()
        conn.execute(sql.SQL("SELECT state FROM {}").format(alertstate.q(SCHEMA, "alert"))).fetchall()
        conn.execute(sql.SQL("SELECT id, matchers, author, reason, starts_at, ends_at FROM {} WHERE starts_at <= %s AND ends_at > %s")
                     .format(alertstate.q(SCHEMA, "silence")), (T0, T0)).fetchall()
        conn.execute(sql.SQL("SELECT * FROM {} WHERE status <> 'resolved' FOR UPDATE").format(alertstate.q(SCHEMA, "incident"))).fetchall()
        conn.execute(
            sql.SQL("INSERT INTO {t} (fingerprint, rule, resource, status, state, updated_at)"
                    " SELECT e->>'fingerprint', e->>'rule', e->>'resource', e->>'status', e, %s FROM jsonb_array_elements(%s::jsonb) AS e"
                    " ON CONFLICT (fingerprint) DO UPDATE SET status = excluded.status, state = excluded.state, updated_at = excluded.updated_at")
            .format(t=alertstate.q(SCHEMA, "alert")),
            (T0, states_json),
        )
        conn.execute(sql.SQL("UPDATE {} SET last_at = last_at WHERE id = 1").format(alertstate.q(SCHEMA, "cycle")))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--alerts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    from sandbox.platform import Sandbox

    box = Sandbox(BENCH / ".work" / "monitor")
    admin = box._server().get_uri()
    name = "bench_alerts"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    rules, samples = rules_and_samples(args.rules, args.alerts)
    cfg = alertstate.CycleConfig(schema=SCHEMA, rules=rules, policy=Policy(), chain=list(DEFAULT_CHAIN), ack_ttl=timedelta(minutes=30),
                                 min_interval=timedelta(seconds=30), recipients=recipients)
    with psycopg.connect(with_database(admin, name), autocommit=True) as conn:
        alertstate.ensure_schema(conn, SCHEMA)
        started = time.perf_counter()
        first = alertstate.run_cycle(conn, cfg, samples, T0)
        first_s = time.perf_counter() - started
        ours, raw = [], []
        for i in range(1, args.repeat + 1):
            started = time.perf_counter()
            report = alertstate.run_cycle(conn, cfg, samples, T0 + i * timedelta(minutes=1))
            ours.append(time.perf_counter() - started)
            assert report.skipped is None and report.queued == 0
            states_json = conn.execute(sql.SQL("SELECT jsonb_agg(state)::text FROM {}").format(alertstate.q(SCHEMA, "alert"))).fetchone()[0]
            raw.append(plain_sql(conn, states_json))
    box.down()
    result = {
        "rules": len(rules), "open_alerts": first.evaluated, "first_evaluation_s": round(first_s, 3), "queued_first": first.queued,
        "evaluation_median_s": round(statistics.median(ours), 4), "plain_sql_median_s": round(statistics.median(raw), 4),
    }
    result["ratio"] = round(result["evaluation_median_s"] / result["plain_sql_median_s"], 2)
    print(f"{len(rules)} rules, {first.evaluated} open alerts")
    print(f"  first evaluation (all start firing, {first.queued} deliveries queued): {first_s:.3f} s")
    print(f"  one evaluation (steady state), median of {args.repeat}: {result['evaluation_median_s']:.4f} s")
    print(f"  the plain SQL it runs, median:                     {result['plain_sql_median_s']:.4f} s  (ratio {result['ratio']})")
    print("  target: well under 1 s ->", "PASS" if result["evaluation_median_s"] < 0.5 else "MISS")
    out = BENCH / "results" / f"monitor-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
