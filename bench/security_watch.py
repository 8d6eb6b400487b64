"""Benchmark: ``security-watch`` over 1 M authentication events against the plain SQL of
its auth detectors (issue 12 §6: "should cost about what the plain SQL of its detectors
costs"), side by side in one run, on the same data.

    /work/main/.venv/bin/python bench/security_watch.py --repeat 3

Everything happens on this machine: a sandbox PostgreSQL (pgserver wheel, Unix socket)
under ``bench/.work/security``, a throwaway Prefect server (``prefect_test_harness``) on
127.0.0.1, an audit hook refusing non-loopback connections (``backup_verify.py``'s
harness, reused).

Data (generated in SQL, ``setseed``; reused while the database's comment names the same
parameters): ``--rows`` auth_events (default 1,000,000) over the 7 days before a fixed
anchor: 50,000 users (skewed), 200,000 addresses (Zipf-like, density ~ k^-1/2), ~8%
failures, a dozen user agents; in the last hour a brute force from one address, a
credential stuffing across 200 users from one address and a slow attack just under the
brute-force threshold (which must not fire). A few thousand api_requests and
security_events beside them (not measured: the detectors are restricted to auth).

Measured (each ``--repeat`` times, the order rotated, medians reported), for the span
of a full replay (``since`` = anchor - 7 days, ``until`` = anchor: the detectors read
every row) and for the span of a normal 5-minute run (``since`` = anchor - 5 min):

- runbook: the ``security-watch`` flow, ``WatchParameters(since, until, notify=False)``
  (a replay: the checkpoint is not involved), a real flow run, wall time of the call,
  with the detectors restricted to brute-force, credential-stuffing and
  auth-failure-spike (RUNBOOK_SECURITY__DETECTORS / __SPIKES);
- plain SQL: one statement per detector computing its findings (window functions with
  ``RANGE BETWEEN ... PRECEDING``, a self-join for the distinct count, the spike's
  eight counts and its verdict), through psycopg on one new connection, nothing
  computed in Python.

Both must give the same findings (group, count, first and last time); a mismatch is
printed loudly and the exit code is 1. Extras: the runbook detectors without Prefect
(tasks.security + runbook.security.detectors called directly), and the task runs read
from the Prefect API: the flow's time split into detector tasks and the rest.

Writes bench/results/security-watch-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import backup_verify as bv  # noqa: E402 - the shared harness (network guard installed on import)

ROOT = bv.ROOT
ANCHOR = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)  # fixed: the data and the spans do not move
SEED = 0.4212
USERS = 50_000
ADDRESSES = 200_000
FAILURE_RATE = 0.08
BRUTE, STUFFER, SLOW = "185.220.101.7", "45.95.147.12", "103.77.192.5"
TARGET_RATIO = 2.0  # "about what the plain SQL costs": flagged above 2x
AUTH_DETECTORS = ("brute-force", "credential-stuffing")
SPIKES = ("auth-failure-spike",)

# --------------------------------------------------------------------------- data

SEED_SQL = """
SELECT setseed(%(seed)s);
TRUNCATE auth_events, api_requests, security_events, user_sessions, user_alerts, users RESTART IDENTITY CASCADE;

INSERT INTO users (id, email, name, plan, created_at, updated_at)
SELECT i, 'user' || i || '@' || (ARRAY['gmail.com', 'outlook.com', 'yahoo.com', 'proton.me', 'example.org'])[1 + i %% 5],
       'User ' || i, (ARRAY['free', 'free', 'free', 'pro', 'team'])[1 + (i * 7) %% 5],
       %(anchor)s::timestamptz - interval '400 days' + i * interval '7 minutes', %(anchor)s::timestamptz - interval '1 day'
FROM generate_series(1, %(users)s) AS i;

-- The background: skewed users and addresses, ~8%% failures, microsecond times over 7 days.
-- An address index k in 1..200,000 is drawn with density ~ k^-1/2 (the top address sends
-- about 0.2%% of the traffic) and spread over 11.0.0.0/8 by an odd multiplier (a bijection).
-- Built in a scratch table, then written in time order: an append-only log's rows sit in
-- the table in about the order of their times (what the created_at index scans rely on).
CREATE TEMP TABLE ev (user_id bigint, email text, ip inet, success boolean, user_agent text, created_at timestamptz) ON COMMIT DROP;
INSERT INTO ev (user_id, email, ip, success, user_agent, created_at)
SELECT r.u, u.email, '11.0.0.0'::inet + ((r.k * 2654435761) %% 16777216), r.ok, r.ua, r.at
FROM (
    SELECT 1 + floor(%(users)s * random() ^ 1.5)::int AS u,
           1 + floor(%(addresses)s * random() ^ 2)::bigint AS k,
           random() >= %(failure_rate)s AS ok,
           (ARRAY['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36',
                  'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15',
                  'Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148',
                  'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile Safari/537.36',
                  'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0',
                  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36',
                  'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36',
                  'Mozilla/5.0 (iPad; CPU OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148',
                  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Edg/131.0',
                  'platform-mobile/4.12.0 (Android 13)', 'platform-mobile/4.12.0 (iOS 18.1)', 'okhttp/4.12.0'])
               [1 + floor(12 * random() ^ 2)::int] AS ua,
           %(anchor)s::timestamptz - random() * interval '7 days' AS at
    FROM generate_series(1, %(background)s) AS i
    OFFSET 0  -- keeps each random() evaluated once per row
) AS r JOIN users u ON u.id = r.u;

-- The attacks, all in the last hour before the anchor.
-- Brute force: %(brute)s failed logins from one address at a few admin accounts, one every 2 s.
INSERT INTO ev (user_id, email, ip, success, user_agent, created_at)
SELECT NULL, (ARRAY['admin@example.org', 'root@example.org', 'support@example.org'])[1 + i %% 3], %(brute_ip)s::inet, false,
       'python-requests/2.31.0', %(anchor)s::timestamptz - interval '50 minutes' + i * interval '2 seconds'
FROM generate_series(0, %(brute)s - 1) AS i;
-- Credential stuffing: 200 different real users from one address, one every 9 s (and a few that worked).
INSERT INTO ev (user_id, email, ip, success, user_agent, created_at)
SELECT u.id, u.email, %(stuffer_ip)s::inet, i %% 40 = 7, 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0',
       %(anchor)s::timestamptz - interval '32 minutes' + i * interval '9 seconds'
FROM generate_series(0, 204) AS i JOIN users u ON u.id = 1 + (i * 233) %% %(users)s;
-- Slow: one attempt every 10 min / 19 + 1 s for the whole hour: at most 19 in any 10 minutes (threshold 20).
INSERT INTO ev (user_id, email, ip, success, user_agent, created_at)
SELECT NULL, 'root@example.org', %(slow_ip)s::inet, false, 'curl/8.5.0',
       %(anchor)s::timestamptz - interval '60 minutes' + i * (interval '10 minutes' / 19 + interval '1 second')
FROM generate_series(0, 109) AS i;
INSERT INTO auth_events (user_id, email, ip, success, user_agent, created_at)
SELECT user_id, email, ip, success, user_agent, created_at FROM ev ORDER BY created_at;

INSERT INTO api_requests (api_key, ip, path, status, created_at)
SELECT 'key-' || floor(300 * random() ^ 2)::int, '11.0.0.0'::inet + ((1 + floor(%(addresses)s * random() ^ 2)::bigint) * 2654435761 %% 16777216),
       (ARRAY['/api/market/prices', '/api/dashboard', '/api/learning/lessons', '/api/health'])[1 + floor(4 * random())::int],
       (ARRAY[200, 200, 200, 200, 200, 200, 200, 304, 401, 429])[1 + floor(10 * random())::int],
       %(anchor)s::timestamptz - random() * interval '1 day'
FROM generate_series(1, 5000);
INSERT INTO security_events (severity, type, details, created_at)
SELECT (ARRAY['LOW', 'LOW', 'MEDIUM', 'HIGH'])[1 + floor(4 * random())::int],
       (ARRAY['rate_limited', 'csrf_rejected', 'webhook_signature_invalid', 'admin_login'])[1 + floor(4 * random())::int],
       jsonb_build_object('ip', host('11.0.0.0'::inet + floor(16777216 * random())::bigint)),
       %(anchor)s::timestamptz - random() * interval '7 days'
FROM generate_series(1, 2000);
"""
ATTACK_ROWS = {"brute": 900, "stuffer": 205, "slow": 110}


def seed_signature(rows: int) -> str:
    return (f"security-watch bench: rows={rows} anchor={ANCHOR.isoformat()} seed={SEED} users={USERS} addresses={ADDRESSES} "
            f"failures={FAILURE_RATE} attacks={ATTACK_ROWS['brute']}/{ATTACK_ROWS['stuffer']}/{ATTACK_ROWS['slow']} v3")


def prepare_data(work: Path, rows: int, reseed: bool) -> tuple[str, dict[str, Any], Any]:
    """The sandbox under ``work/security`` with the benchmark's rows (seeded unless the
    database's comment already names the same parameters)."""
    import psycopg
    from psycopg import sql

    from sandbox.platform import DATABASE, Sandbox

    box = Sandbox(work / "security")
    was_running = box.is_running()
    bv.say(f"starting the sandbox PostgreSQL under {box.pgdata}")
    dsn = box.up()
    try:
        bv.Ours.postmaster_pid = int((box.pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        bv.say("cannot read the sandbox postmaster's pid: its CPU will count as foreign load")
    wanted = seed_signature(rows)
    with psycopg.connect(dsn, autocommit=True) as conn:
        comment = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                               (DATABASE,)).fetchone()[0]
        seed_seconds = None
        if reseed or comment != wanted:
            background = rows - sum(ATTACK_ROWS.values())
            bv.say(f"seeding {rows:,} auth_events (found: {comment or 'not seeded'}); about {max(10, rows // 40_000)} s")
            started = time.perf_counter()
            conn.execute("SET synchronous_commit = off")
            with conn.transaction(), psycopg.ClientCursor(conn) as cur:  # client-side binding: several statements
                cur.execute(SEED_SQL, {
                    "seed": SEED, "anchor": ANCHOR, "users": USERS, "addresses": ADDRESSES, "failure_rate": FAILURE_RATE,
                    "background": background, "brute": ATTACK_ROWS["brute"], "brute_ip": BRUTE, "stuffer_ip": STUFFER,
                    "slow_ip": SLOW,
                })
                conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(DATABASE), sql.Literal(wanted)))
            conn.execute("VACUUM ANALYZE")
            seed_seconds = round(time.perf_counter() - started, 1)
        else:
            bv.say(f"reusing the seeded database: {comment}")
        conn.execute("DROP SCHEMA IF EXISTS runbook_security CASCADE")  # earlier runs' findings: each run starts clean
        stats = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT success), count(DISTINCT ip), count(DISTINCT email), count(DISTINCT user_agent),"
            " min(created_at), max(created_at), count(*) FILTER (WHERE created_at >= %s - interval '1 hour') FROM auth_events",
            (ANCHOR,)).fetchone()
        top = conn.execute("SELECT host(ip), count(*) FROM auth_events GROUP BY ip ORDER BY 2 DESC LIMIT 3").fetchall()
        size = conn.execute("SELECT pg_total_relation_size('auth_events')").fetchone()[0]
        version = conn.execute("SHOW server_version").fetchone()[0]
    meta = {
        "signature": wanted, "seed_seconds": seed_seconds, "auth_events": stats[0], "failures": stats[1], "addresses": stats[2],
        "users": stats[3], "user_agents": stats[4], "first_at": stats[5].isoformat(), "last_at": stats[6].isoformat(),
        "last_hour": stats[7], "top_addresses": [[ip, n] for ip, n in top], "auth_events_bytes": size, "server_version": version,
        "started_server": not was_running,
    }
    return dsn, meta, box


# --------------------------------------------------------------------------- plain SQL

# brute-force: failed logins per address in any window of 10 minutes >= 20. runbook's
# window ending at an event holds the events less than 10 minutes older (half open), so
# the frame is RANGE 10 minutes - 1 microsecond PRECEDING (timestamptz's resolution).
# The densest window per address (the earliest on a tie), kept when its last event is
# in this run's span.
BRUTE_SQL = """
WITH w AS (
    SELECT ip, created_at, count(*) OVER f AS n, min(created_at) OVER f AS first_at
    FROM auth_events
    WHERE created_at >= %(lo)s AND created_at < %(hi)s AND NOT success
    WINDOW f AS (PARTITION BY ip ORDER BY created_at RANGE BETWEEN %(frame)s PRECEDING AND CURRENT ROW)
), densest AS (
    SELECT DISTINCT ON (ip) ip, n, first_at, created_at AS last_at FROM w ORDER BY ip, n DESC, created_at
)
SELECT host(ip), n, first_at, last_at FROM densest WHERE n >= %(threshold)s AND last_at >= %(since)s ORDER BY 1
"""

# credential-stuffing: distinct users with failed logins per address in any 30-minute
# window >= 10 (count(DISTINCT) is not a window function: a self-join of the failures).
STUFFING_SQL = """
WITH f AS MATERIALIZED (
    SELECT ip, email, created_at FROM auth_events WHERE created_at >= %(lo)s AND created_at < %(hi)s AND NOT success
), w AS (
    SELECT a.ip, a.created_at AS last_at, count(DISTINCT b.email) AS n, min(b.created_at) AS first_at
    FROM f AS a JOIN f AS b ON b.ip = a.ip AND b.created_at <= a.created_at AND b.created_at > a.created_at - %(window)s
    GROUP BY a.ip, a.created_at
), densest AS (
    SELECT DISTINCT ON (ip) ip, n, first_at, last_at FROM w ORDER BY ip, n DESC, last_at
)
SELECT host(ip), n, first_at, last_at FROM densest WHERE n >= %(threshold)s AND last_at >= %(since)s ORDER BY 1
"""

# auth-failure-spike: the failures of the last 60 minutes against the same window on each
# of the previous 7 days; fires at >= 50 and >= 3x the days' mean.
SPIKE_SQL = """
WITH c AS (
    SELECT d, (SELECT count(*) FROM auth_events
               WHERE created_at >= %(until)s - d * interval '1 day' - %(window)s AND created_at < %(until)s - d * interval '1 day'
                 AND NOT success) AS n
    FROM generate_series(0, %(days)s) AS d
), v AS (
    SELECT max(n) FILTER (WHERE d = 0) AS current, avg(n) FILTER (WHERE d > 0) AS mean FROM c
)
SELECT current, mean, current >= %(min_count)s AND current >= %(factor)s * mean FROM v
"""


def plain_sql(dsn: str, since: datetime, until: datetime, detectors: dict[str, Any], spikes: dict[str, Any]) -> dict[str, Any]:
    """The three statements on one new connection; the findings as rows."""
    import psycopg

    bf, cs, sp = detectors["brute-force"], detectors["credential-stuffing"], spikes["auth-failure-spike"]
    parts: dict[str, float] = {}
    found: list[dict[str, Any]] = []
    with bv.Meter() as wall:
        with psycopg.connect(dsn, autocommit=True) as conn:
            started = time.perf_counter()
            rows = conn.execute(BRUTE_SQL, {"lo": since - bf.window, "hi": until, "since": since, "threshold": bf.threshold,
                                            "frame": bf.window - timedelta(microseconds=1)}).fetchall()
            parts["brute-force (window function)"] = time.perf_counter() - started
            found += [{"detector": bf.name, "group": f"ip={ip}", "count": n, "first_at": a, "last_at": b} for ip, n, a, b in rows]
            started = time.perf_counter()
            rows = conn.execute(STUFFING_SQL, {"lo": since - cs.window, "hi": until, "since": since, "threshold": cs.threshold,
                                               "window": cs.window}).fetchall()
            parts["credential-stuffing (self-join)"] = time.perf_counter() - started
            found += [{"detector": cs.name, "group": f"ip={ip}", "count": n, "first_at": a, "last_at": b} for ip, n, a, b in rows]
            started = time.perf_counter()
            current, mean, fires = conn.execute(SPIKE_SQL, {"until": until, "window": sp.window, "days": sp.days,
                                                            "min_count": sp.min_count, "factor": sp.factor}).fetchone()
            parts["auth-failure-spike (8 counts)"] = time.perf_counter() - started
            if fires:
                found.append({"detector": sp.name, "group": f"window={sp.window_minutes:g}m", "count": current,
                              "first_at": None, "last_at": until})
    return {"seconds": wall.seconds, "parts": parts, "findings": found, "spike": {"current": current, "mean": float(mean or 0)},
            "cpu": wall.info}


# --------------------------------------------------------------------------- runbook


def runbook_flow(since: datetime, until: datetime) -> dict[str, Any]:
    """The security-watch flow as a real flow run (a replay, notify off)."""
    from flows.security_watch import WatchParameters, security_watch

    with bv.Meter() as wall:
        state = security_watch(WatchParameters(since=since, until=until, notify=False), return_state=True)
    report = state.result(raise_on_failure=False)
    if not state.is_completed() or not isinstance(report, dict):
        raise RuntimeError(f"security-watch did not complete: {state.message}")
    breakdown = bv.flow_breakdown(state.state_details.flow_run_id, wall.seconds)
    detector_tasks = sum(t["seconds"] or 0.0 for t in breakdown["tasks"] if t["task"].startswith(("detect-", "spike-")))
    other_tasks = sum(t["seconds"] or 0.0 for t in breakdown["tasks"] if not t["task"].startswith(("detect-", "spike-")))
    found = []
    for f in report["findings"]:
        detector, _, group = f["resource"].partition(" ")
        spike = detector in SPIKES
        found.append({"detector": detector, "group": group, "count": f["count"],
                      "first_at": None if spike else datetime.fromisoformat(f["first_at"]),
                      "last_at": datetime.fromisoformat(f["last_at"])})
    return {
        "seconds": wall.seconds,
        "parts": {t["task"]: t["seconds"] for t in breakdown["tasks"]}
        | {"(outside tasks: flow run setup, settings, lock, artifacts, teardown)": breakdown["outside_tasks_seconds"]},
        "detector_tasks_seconds": detector_tasks,
        "other_tasks_seconds": other_tasks,
        "prefect_overhead_seconds": wall.seconds - detector_tasks,
        "findings": found,
        "prefect": breakdown,
        "cpu": wall.info,
    }


def runbook_direct(dsn: str, since: datetime, until: datetime, detectors: dict[str, Any], spikes: dict[str, Any]) -> dict[str, Any]:
    """runbook's detector code without Prefect: tasks.security's reads and the judging of
    runbook.security.detectors, as the flow's tasks call them (one connection each)."""
    import psycopg

    from runbook.security.detectors import detect, spike
    from runbook.security.sources import DEFAULT_SOURCES
    from tasks import security

    mapping = DEFAULT_SOURCES["auth"]
    parts: dict[str, float] = {}
    counts: dict[str, int] = {}
    with bv.Meter() as wall:
        for d in detectors.values():
            started = time.perf_counter()
            with psycopg.connect(dsn) as conn:
                events, judged = security.candidate_events(conn, mapping, d, since - d.window, until, since)
            read = time.perf_counter() - started
            found = [f for f in detect(judged, events, samples=5) if f.last_at >= since]
            parts[f"{d.name}: candidate_events (SQL + rows)"] = read
            parts[f"{d.name}: detect (Python, {len(events)} events)"] = time.perf_counter() - started - read
            counts[d.name] = len(found)
        for sp in spikes.values():
            started = time.perf_counter()
            with psycopg.connect(dsn) as conn:
                current, baseline, _ = security.spike_counts(conn, mapping, sp, until)
            spike(sp, current, baseline)
            parts[f"{sp.name}: spike_counts"] = time.perf_counter() - started
    return {"seconds": wall.seconds, "parts": parts, "findings_per_detector": counts, "cpu": wall.info}


# --------------------------------------------------------------------------- comparing


def _key(f: dict[str, Any]) -> tuple[Any, ...]:
    return (f["detector"], f["group"], int(f["count"]), f["first_at"], f["last_at"])


def compare(ours: list[dict[str, Any]], plain: list[dict[str, Any]]) -> dict[str, Any]:
    a, b = {_key(f) for f in ours}, {_key(f) for f in plain}
    return {"same": a == b, "findings": len(a), "only_runbook": sorted(map(str, a - b)), "only_plain_sql": sorted(map(str, b - a))}


# --------------------------------------------------------------------------- main

LABELS = {
    "runbook_7d": "runbook security-watch flow, span 7 days (every row)",
    "plain_7d": "plain SQL of its detectors, span 7 days",
    "runbook_5m": "runbook security-watch flow, span 5 minutes (a normal run)",
    "plain_5m": "plain SQL of its detectors, span 5 minutes",
}
SPANS = {"7d": ANCHOR - timedelta(days=7), "5m": ANCHOR - timedelta(minutes=5)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="auth_events rows (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of every measurement (medians reported)")
    parser.add_argument("--work", type=Path, default=BENCH / ".work", help="folder of the sandbox (under <work>/security)")
    parser.add_argument("--reseed", action="store_true", help="seed again even if the data has the same parameters")
    parser.add_argument("--quiet-wait", type=float, default=15.0, help="before each measurement wait up to this many s for other load")
    parser.add_argument("--retry-contended", type=int, default=1, help="measure again (this many times) when other jobs used > 5%% of the CPU")
    parser.add_argument("--no-extras", dest="extras", action="store_false", help="skip runbook's detectors without Prefect")
    parser.add_argument("--keep-server", action="store_true", help="leave the sandbox PostgreSQL running at the end")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.rows < 10_000:
        parser.error("--repeat >= 1 and --rows >= 10000")

    work = args.work.resolve()
    started_at = datetime.now(timezone.utc)
    dsn, data, box = prepare_data(work, args.rows, args.reseed)
    db = bv.Db(dsn)
    bv.say(f"data: {data['auth_events']:,} auth_events ({data['failures']:,} failed) from {data['addresses']:,} addresses, "
           f"{data['users']:,} emails, {data['last_hour']:,} in the last hour; top addresses {data['top_addresses']}")

    from runbook.security.detectors import DEFAULT_DETECTORS, DEFAULT_SPIKES

    detectors = {d.name: d for d in DEFAULT_DETECTORS if d.name in AUTH_DETECTORS}
    spikes = {s.name: s for s in DEFAULT_SPIKES if s.name in SPIKES}
    os.environ.update({
        "RUNBOOK_DATABASE_URL": dsn,
        "RUNBOOK_HOME": str(work / "security-home"),
        "PREFECT_HOME": str(work / "security-prefect-home"),
        # the auth detectors only: the plain SQL covers those
        "RUNBOOK_SECURITY__DETECTORS": json.dumps([d.model_dump(mode="json") for d in detectors.values()]),
        "RUNBOOK_SECURITY__SPIKES": json.dumps([s.model_dump(mode="json") for s in spikes.values()]),
    })
    for key in [k for k in os.environ if k.startswith(("RUNBOOK_SECURITY__SOURCES", "RUNBOOK_SECURITY__BLOCK__CLOUDFLARE"))]:
        os.environ.pop(key)

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    import flows.security_watch  # noqa: F401 - imported before timing: a process imports it once

    meta: dict[str, Any] = {
        "started_at": started_at.isoformat(timespec="seconds"), "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "repeat": args.repeat, "data": data, "anchor": ANCHOR.isoformat(), "machine": bv.machine_meta(), "git": bv.git_state(),
        "detectors": [d.model_dump(mode="json") for d in [*detectors.values(), *spikes.values()]],
    }
    reps: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    bv.say("starting the Prefect test server (prefect_test_harness)")
    harness_started = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=120), temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        meta["prefect_server_startup_seconds"] = round(time.perf_counter() - harness_started, 1)
        bv.say(f"Prefect server up in {meta['prefect_server_startup_seconds']} s; a first flow run (warm-up, not counted)")
        first = runbook_flow(SPANS["5m"], ANCHOR)
        meta["first_flow_run_in_process_seconds"] = round(first["seconds"], 3)
        for index in range(args.repeat):
            rep: dict[str, Any] = {}
            steps: list[tuple[str, Callable[[], dict[str, Any]]]] = []
            for span, since in SPANS.items():
                steps += [(f"runbook_{span}", lambda since=since: runbook_flow(since, ANCHOR)),
                          (f"plain_{span}", lambda since=since: plain_sql(dsn, since, ANCHOR, detectors, spikes))]
            shift = index % len(steps)
            for name, measure in steps[shift:] + steps[:shift]:
                rep[name] = bv.measure_one(db, f"[{index + 1}/{args.repeat}] {LABELS[name]}", measure, args)
            for span in SPANS:
                check = compare(rep[f"runbook_{span}"]["findings"], rep[f"plain_{span}"]["findings"]) | {"span": span, "rep": index + 1}
                checks.append(check)
                if not check["same"]:
                    bv.say(f"!!!!! MISMATCH ({span}): runbook only {check['only_runbook']}; plain SQL only {check['only_plain_sql']}")
            if index == 0 and args.extras:
                rep["extras"] = {}
                for span, since in SPANS.items():
                    db.settle(args.quiet_wait)
                    bv.say(f"extra: runbook's detector code without Prefect, span {span}")
                    rep["extras"][f"direct_{span}"] = runbook_direct(dsn, since, ANCHOR, detectors, spikes)
            reps.append(rep)

    summary = bv.summarize(reps)
    ratios = {span: summary[f"runbook_{span}"]["seconds"] / summary[f"plain_{span}"]["seconds"] for span in SPANS}
    mismatches = [c for c in checks if not c["same"]]
    meta["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta["network_refused"] = bv.BLOCKED
    text = render(meta, summary, reps, ratios, checks)
    print(text, flush=True)
    out = BENCH / "results" / f"security-watch-{started_at:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "summary": summary, "ratios": ratios, "checks": checks, "runs": reps}, indent=2, default=str))
    print(f"\nresults: {out.relative_to(ROOT)}")
    if data["started_server"] and not args.keep_server:
        box.down()
        bv.say("stopped the sandbox PostgreSQL (it was not running before; --keep-server leaves it up)")
    return 1 if mismatches else 0


def render(meta: dict[str, Any], summary: dict[str, Any], reps: list[dict[str, Any]], ratios: dict[str, float],
           checks: list[dict[str, Any]]) -> str:
    d = meta["data"]
    lines = [
        f"security-watch benchmark  {meta['started_at']}  ({meta['repeat']} repetition(s), medians shown)",
        f"data: {d['auth_events']:,} auth_events ({d['auth_events_bytes'] / 1e6:,.0f} MB with indexes), {d['failures']:,} failed, "
        f"{d['addresses']:,} addresses, {d['users']:,} emails, {d['user_agents']} user agents, {d['first_at'][:16]} to {d['last_at'][:16]}; "
        f"PostgreSQL {d['server_version']}",
        f"machine: {meta['machine']['cpus']} CPUs ({meta['machine']['cpu_model']}); code {meta['git']['commit'][:12]}"
        + (f" + {len(meta['git']['modified'])} uncommitted change(s)" if meta["git"]["modified"] else ""),
        f"Prefect test server up in {meta['prefect_server_startup_seconds']} s; first flow run in the process "
        f"{meta['first_flow_run_in_process_seconds']:.2f} s (not counted)",
        "",
        f"{'measurement':<72} {'seconds':>8}  runs (s)",
        "-" * 104,
    ]
    for name in (n for n in LABELS if n in summary):
        entry = summary[name]
        lines.append(f"{LABELS[name]:<72} {entry['seconds']:8.3f}  {', '.join(f'{s:.3f}' for s in entry['all_seconds'])}")
        for part, seconds in entry["parts"].items():
            lines.append(f"    {part:<68} {seconds:8.3f}")
        if name.startswith("runbook_"):
            runs = [rep[name] for rep in reps]
            det = statistics.median(r["detector_tasks_seconds"] for r in runs)
            lines.append(f"    => detector tasks {det:.3f} s, everything else (Prefect, settings, lock, other tasks, artifacts) "
                         f"{statistics.median(r['prefect_overhead_seconds'] for r in runs):.3f} s")
    lines.append("")
    for span, ratio in ratios.items():
        flag = "" if span != "7d" else ("  (about the plain SQL's cost)" if ratio <= TARGET_RATIO else f"  ** above {TARGET_RATIO:g}x **")
        lines.append(f"ratio runbook / plain SQL, span {span}: {ratio:.2f}x "
                     f"({summary[f'runbook_{span}']['seconds']:.3f} s vs {summary[f'plain_{span}']['seconds']:.3f} s){flag}")
    if "extras" in reps[0]:
        lines.append("")
        lines.append("runbook's detector code without Prefect (first repetition):")
        for name, entry in reps[0]["extras"].items():
            lines.append(f"    {name:<68} {entry['seconds']:8.3f}")
            for part, seconds in entry["parts"].items():
                lines.append(f"        {part:<64} {seconds:8.3f}")
    lines.append("")
    lines.append("findings (runbook vs plain SQL):")
    for c in checks:
        lines.append(f"    #{c['rep']} span {c['span']}: {c['findings']} findings, " + ("same" if c["same"] else
                     f"MISMATCH: runbook only {c['only_runbook']}; plain SQL only {c['only_plain_sql']}"))
    first = reps[0]
    for span in SPANS:
        shown = ", ".join(f"{f['detector']} {f['group']} ({f['count']})" for f in first[f"plain_{span}"]["findings"])
        lines.append(f"    span {span}: {shown or 'none'}; spike: {first[f'plain_{span}']['spike']}")
    lines.append("")
    lines.append("CPU per measurement (foreign = other jobs on the machine; > 5% of wall x cores = contended):")
    n_contended = 0
    for index, rep in enumerate(reps):
        for name in (n for n in LABELS if n in rep):
            entry = rep[name]
            cpu = entry["cpu"]
            noisy = bv.contended(entry)
            n_contended += noisy
            lines.append(f"    #{index + 1} {name:<11} {entry['seconds']:7.3f} s  busy {cpu['machine_cpu_busy_pct']:5.1f}%  "
                         f"benchmark {cpu['benchmark_cpu_s']:6.2f}  foreign {cpu['foreign_cpu_s']:6.2f}{'  CONTENDED' if noisy else ''}")
    if n_contended:
        lines.append(f"    ** {n_contended} measurement(s) shared the CPU with other jobs **")
    lines.append("\nnetwork: " + (f"{len(bv.BLOCKED)} attempts refused" if bv.BLOCKED else "no non-loopback connection was attempted"))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
