"""Benchmark: runbook's batched clean-up of ``system_logs`` next to the single DELETE of
§4.5, each on a fresh copy of the same data, with a concurrent writer, in one run.

    /work/main/.venv/bin/python bench/data_cleanup.py --rows 5000000 --repeat 2

Data (not timed): a sandbox database with ``--rows`` system_logs rows, 40 % of them
older than 90 days, and a one-row ``hot`` table; each measurement gets its own copy
(CREATE DATABASE ... TEMPLATE). A writer inserts a log row and updates the hot row
every 10 ms during each measurement and records its latency.

- single DELETE: ``DELETE FROM system_logs WHERE created_at < now() - interval '90 days'``
  in one transaction (§4.5 as written);
- runbook: the apply step of data-cleanup (tasks.cleanup.apply_policy, without the
  Prefect wrapper: its journal, short batches, timeouts and pressure checks included).

Reported: rows/s of both, the longest transaction (the single statement holds one for
the whole delete), the writer's p50/p99/max latency during each. Targets (issue 5):
throughput >= 0.7x the single statement; no transaction longer than 2 s; the writer's
p99 during the clean-up no worse than during the single statement.
Writes bench/results/data-cleanup-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import backup_verify as bv  # noqa: E402 - shared harness (network guard, sandbox, quiet wait)

TEMPLATE = "cleanup_template"


def seed(admin: Any, rows: int) -> None:
    import psycopg
    from psycopg import sql

    from sandbox.platform import load_schema

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    from tasks.postgres import with_database

    dsn = with_database(admin, TEMPLATE)
    load_schema(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO system_logs (level, message, context, created_at)
            SELECT CASE WHEN g %% 10 = 0 THEN 'ERROR' ELSE 'INFO' END, 'request handled ' || g, '{}'::jsonb,
                   now() - ((%(rows)s - g)::float / %(rows)s * interval '150 days')
            FROM generate_series(1, %(rows)s) g
            """,
            {"rows": rows},
        )
        conn.execute("CREATE TABLE hot (id int PRIMARY KEY, n bigint NOT NULL)")
        conn.execute("INSERT INTO hot VALUES (1, 0)")
        conn.execute("VACUUM ANALYZE")


def fresh_copy(admin: str, name: str) -> str:
    import psycopg
    from psycopg import sql

    from tasks.postgres import with_database

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(TEMPLATE)))
    dsn = with_database(admin, name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE system_logs")
    return dsn


class Writer(threading.Thread):
    """Every 10 ms: insert a log row and update the hot row, one transaction; latency each."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.stop, self.latencies, self.inserted = dsn, threading.Event(), [], 0

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            for _ in range(100_000):  # bounded: 1000 s at most
                if self.stop.is_set():
                    return
                started = time.perf_counter()
                with conn.transaction():
                    conn.execute("INSERT INTO system_logs (level, message) VALUES ('INFO', 'live')")
                    conn.execute("UPDATE hot SET n = n + 1 WHERE id = 1")
                self.latencies.append((time.perf_counter() - started) * 1000)
                self.inserted += 1
                time.sleep(max(0.0, 0.010 - (time.perf_counter() - started)))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else 0.0


def measure(admin: str, name: str, batch_size: int, method: str) -> dict[str, Any]:
    import psycopg

    dsn = fresh_copy(admin, name)
    with psycopg.connect(dsn) as conn:
        old = conn.execute("SELECT count(*) FROM system_logs WHERE created_at < now() - interval '90 days'").fetchone()[0]  # type: ignore[index]
    writer = Writer(dsn)
    writer.start()
    time.sleep(1.0)  # the writer's baseline before the clean-up starts
    started = time.perf_counter()
    if method == "single":
        with psycopg.connect(dsn) as conn:
            deleted = conn.execute("DELETE FROM system_logs WHERE created_at < now() - interval '90 days'").rowcount
            conn.commit()
        seconds = time.perf_counter() - started
        longest_ms = seconds * 1000
    else:
        from runbook.cleanup import DEFAULT_POLICIES
        from tasks.cleanup import ensure_journal, run_policy

        with psycopg.connect(dsn) as conn:
            ensure_journal(conn)
            now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        policy = DEFAULT_POLICIES[0]
        started = time.perf_counter()
        result = run_policy(
            dsn, policy, "id", "bigint", "bench", policy.cutoff(now), batch_size=batch_size, lock_timeout_ms=2000,
            statement_timeout_ms=30000, max_lock_waits=0, long_transaction_s=60, connect_timeout=10,
        )
        seconds = time.perf_counter() - started
        deleted, longest_ms = result["rows"], result["longest_batch_ms"]
    time.sleep(0.5)
    writer.stop.set()
    writer.join(timeout=10)
    during = writer.latencies[100:]  # after the 1 s baseline
    return {
        "method": method, "batch_size": batch_size if method != "single" else None, "old_rows": old, "deleted": deleted,
        "seconds": seconds, "rows_per_s": deleted / seconds if seconds else 0.0, "longest_transaction_ms": longest_ms,
        "writer_p50_ms": pct(during, 50), "writer_p99_ms": pct(during, 99), "writer_max_ms": max(during) if during else 0.0,
        "writer_rows": writer.inserted,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--batch-size", type=int, action="append", help="batch sizes to try (default 10000 and 50000)")
    parser.add_argument("--work", type=Path, default=BENCH / ".work-cleanup")
    args = parser.parse_args(argv)
    sizes = args.batch_size or [10_000, 50_000]
    work = args.work.resolve()
    from sandbox.platform import Sandbox

    box = Sandbox(work / "sandbox")
    box.up()
    admin = box._server().get_uri()
    bv.say(f"seeding {args.rows:,} system_logs rows (40 % older than 90 days)")
    started = time.perf_counter()
    seed(admin, args.rows)
    bv.say(f"seeded in {time.perf_counter() - started:.0f} s")
    runs: list[dict[str, Any]] = []
    for index in range(args.repeat):
        for method, size in [("single", 0), *[("runbook", s) for s in sizes]][:: (1 if index % 2 == 0 else -1)]:
            bv.wait_quiet(20)
            entry = measure(admin, f"cleanup_bench_{method}_{size}", size, method)
            runs.append(entry)
            bv.say(f"[{index + 1}] {method} {size or ''}: {entry['deleted']:,} rows in {entry['seconds']:.2f} s "
                   f"({entry['rows_per_s']:,.0f} rows/s), longest tx {entry['longest_transaction_ms']:.0f} ms, "
                   f"writer p99 {entry['writer_p99_ms']:.1f} ms")
    single = [r for r in runs if r["method"] == "single"]
    single_rate = statistics.median(r["rows_per_s"] for r in single)
    single_p99 = statistics.median(r["writer_p99_ms"] for r in single)
    lines = [f"data-cleanup benchmark {datetime.now(timezone.utc).isoformat(timespec='seconds')}: {args.rows:,} rows, "
             f"{single[0]['old_rows']:,} older than 90 days, writer every 10 ms",
             f"single DELETE: {single_rate:,.0f} rows/s, longest transaction {statistics.median(r['longest_transaction_ms'] for r in single):,.0f} ms, "
             f"writer p50/p99/max {statistics.median(r['writer_p50_ms'] for r in single):.1f}/{single_p99:.1f}/"
             f"{max(r['writer_max_ms'] for r in single):.1f} ms"]
    for size in sizes:
        mine = [r for r in runs if r["method"] == "runbook" and r["batch_size"] == size]
        rate = statistics.median(r["rows_per_s"] for r in mine)
        longest = max(r["longest_transaction_ms"] for r in mine)
        p99 = statistics.median(r["writer_p99_ms"] for r in mine)
        exact = all(r["deleted"] == r["old_rows"] for r in mine)
        lines.append(
            f"runbook, batches of {size:,}: {rate:,.0f} rows/s ({rate / single_rate:.2f}x), longest transaction {longest:,.0f} ms, "
            f"writer p50/p99/max {statistics.median(r['writer_p50_ms'] for r in mine):.1f}/{p99:.1f}/{max(r['writer_max_ms'] for r in mine):.1f} ms, "
            f"exact counts: {exact}"
        )
        lines.append(
            f"  {'PASS' if rate / single_rate >= 0.7 else 'MISS'} throughput >= 0.7x; "
            f"{'PASS' if longest <= 2000 else 'MISS'} no transaction > 2 s; "
            f"{'PASS' if p99 <= single_p99 else 'MISS'} writer p99 no worse than during the single DELETE"
        )
    print("\n".join(lines))
    out = BENCH / "results" / f"data-cleanup-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"runs": runs, "rows": args.rows, "machine": bv.machine_meta()}, indent=2, default=str))
    print(f"results: {out.relative_to(BENCH.parent)}")
    box.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
