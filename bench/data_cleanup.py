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
        conn.execute("CHECKPOINT")  # the copy's WAL and dirty pages are not written during the measurement
    return dsn


def write_every_10ms(dsn: str, stop: Any, out: Any) -> None:
    """Every 10 ms: insert a log row and update the hot row, one transaction; its latency.
    Runs in its own process, as the platform's writers do (a thread here would also
    measure this process's GIL)."""
    import psycopg

    latencies: list[tuple[float, float]] = []  # (wall clock at the start, milliseconds)
    with psycopg.connect(dsn) as conn:
        for _ in range(100_000):  # bounded: 1000 s at most
            if stop.is_set():
                break
            started = time.perf_counter()
            with conn.transaction():
                conn.execute("INSERT INTO system_logs (level, message) VALUES ('INFO', 'live')")
                conn.execute("UPDATE hot SET n = n + 1 WHERE id = 1")
            latencies.append((time.time() - (time.perf_counter() - started), (time.perf_counter() - started) * 1000))
            time.sleep(max(0.0, 0.010 - (time.perf_counter() - started)))
    out.send(latencies)


class Writer:
    def __init__(self, dsn: str) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.stop = context.Event()
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(target=write_every_10ms, args=(dsn, self.stop, send), daemon=True)
        self.latencies: list[tuple[float, float]] = []

    def start(self) -> None:
        self._process.start()

    def join(self, timeout: float) -> None:
        if self._receive.poll(timeout):
            self.latencies = self._receive.recv()
        self._process.join(timeout)

    @property
    def inserted(self) -> int:
        return len(self.latencies)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else 0.0


def measure(admin: str, name: str, batch_size: int, method: str) -> dict[str, Any]:
    import psycopg

    from runbook.cleanup import DEFAULT_POLICIES

    policy = DEFAULT_POLICIES[0]
    dsn = fresh_copy(admin, name)
    with psycopg.connect(dsn) as conn:
        cutoff = policy.cutoff(conn.execute("SELECT now()").fetchone()[0])  # type: ignore[index]
        old = conn.execute("SELECT count(*) FROM system_logs WHERE created_at < %s", (cutoff,)).fetchone()[0]  # type: ignore[index]
    writer = Writer(dsn)
    writer.start()
    time.sleep(2.0)  # the writer's process starts, then its baseline before the clean-up
    started, wall_start = time.perf_counter(), time.time()
    if method == "single":
        with psycopg.connect(dsn) as conn:  # §4.5 as written, with the same cutoff as the batched run
            deleted = conn.execute("DELETE FROM system_logs WHERE created_at < %s", (cutoff,)).rowcount
            conn.commit()
        seconds = time.perf_counter() - started
        longest_ms, plan_seconds = seconds * 1000, 0.0
    else:
        from tasks.cleanup import Bounds, ensure_journal, plan_policy, run_policy

        with psycopg.connect(dsn) as conn:
            ensure_journal(conn)
            planning = time.perf_counter()
            plan = plan_policy(conn, policy, "id", cutoff)  # the flow's plan step: count, key range, samples
            plan_seconds = time.perf_counter() - planning
        started, wall_start = time.perf_counter(), time.time()
        result = run_policy(
            dsn, policy, "id", "bigint", "bench", cutoff, batch_size=batch_size, lock_timeout_ms=2000,
            statement_timeout_ms=30000, max_lock_waits=0, long_transaction_s=60, connect_timeout=10,
            bounds=Bounds(first=plan.first_key, last=plan.last_key, rows=plan.rows),
        )
        seconds = time.perf_counter() - started
        deleted, longest_ms = result["rows"], result["longest_batch_ms"]
    wall_end = time.time()
    time.sleep(0.5)
    writer.stop.set()
    writer.join(timeout=10)
    with psycopg.connect(dsn) as conn:
        left = conn.execute("SELECT count(*) FROM system_logs WHERE created_at < %s", (cutoff,)).fetchone()[0]  # type: ignore[index]
    during = [ms for at, ms in writer.latencies if wall_start <= at <= wall_end]
    before = [ms for at, ms in writer.latencies if at < wall_start]
    return {
        "method": method, "batch_size": batch_size if method != "single" else None, "old_rows": old, "deleted": deleted, "left": left,
        "seconds": seconds, "rows_per_s": deleted / seconds if seconds else 0.0, "plan_seconds": plan_seconds, "longest_transaction_ms": longest_ms,
        "writer_p50_ms": pct(during, 50), "writer_p99_ms": pct(during, 99), "writer_max_ms": max(during) if during else 0.0,
        "writer_rows": writer.inserted, "writer_samples_during": len(during), "writer_p99_before_ms": pct(before[-100:], 99),
        "writer_during_ms": [round(ms, 3) for ms in during],
    }


def per_run(group: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['writer_p99_ms']:.1f}" for r in group)


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
            entry["repetition"] = index
            runs.append(entry)
            bv.say(f"[{index + 1}] {method} {size or ''}: {entry['deleted']:,} rows in {entry['seconds']:.2f} s "
                   f"({entry['rows_per_s']:,.0f} rows/s), longest tx {entry['longest_transaction_ms']:.0f} ms, "
                   f"writer p99 {entry['writer_p99_ms']:.1f} ms")
    single = [r for r in runs if r["method"] == "single"]
    single_rate = statistics.median(r["rows_per_s"] for r in single)
    pooled = lambda group: [ms for r in group for ms in r["writer_during_ms"]]  # noqa: E731 - all repetitions' samples
    single_p99 = pct(pooled(single), 99)
    lines = [f"data-cleanup benchmark {datetime.now(timezone.utc).isoformat(timespec='seconds')}: {args.rows:,} rows, "
             f"{single[0]['old_rows']:,} older than 90 days, writer every 10 ms",
             f"single DELETE: {single_rate:,.0f} rows/s, longest transaction {statistics.median(r['longest_transaction_ms'] for r in single):,.0f} ms, "
             f"writer p50/p99/max {pct(pooled(single), 50):.1f}/{single_p99:.1f}/{max(pooled(single)):.1f} ms "
             f"({len(pooled(single))} samples; p99 per run {per_run(single)})"]
    for size in sizes:
        mine = [r for r in runs if r["method"] == "runbook" and r["batch_size"] == size]
        rate = statistics.median(r["rows_per_s"] for r in mine)
        single_of = {r["repetition"]: r["rows_per_s"] for r in single}
        paired = statistics.median(r["rows_per_s"] / single_of[r["repetition"]] for r in mine)  # each against its own repetition's DELETE
        with_plan = statistics.median(r["deleted"] / (r["seconds"] + r["plan_seconds"]) for r in mine)
        longest = max(r["longest_transaction_ms"] for r in mine)
        p99 = pct(pooled(mine), 99)
        exact = all(r["deleted"] == r["old_rows"] and r["left"] == 0 for r in mine)
        lines.append(
            f"runbook, batches of {size:,}: {rate:,.0f} rows/s ({rate / single_rate:.2f}x; paired by repetition {paired:.2f}x), longest transaction {longest:,.0f} ms, "
            f"writer p50/p99/max {pct(pooled(mine), 50):.1f}/{p99:.1f}/{max(pooled(mine)):.1f} ms "
            f"({len(pooled(mine))} samples; p99 per run {per_run(mine)}), exact counts: {exact}"
        )
        lines.append(
            f"  with its plan step (count and key range, {statistics.median(r['plan_seconds'] for r in mine):.2f} s): "
            f"{with_plan:,.0f} rows/s ({with_plan / single_rate:.2f}x)"
        )
        lines.append(
            f"  {'PASS' if paired >= 0.7 else 'MISS'} throughput >= 0.7x (paired by repetition); "
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
