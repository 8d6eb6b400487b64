"""Benchmark: runbook's ``backup`` and ``backup-verify`` flows against the raw tools
doing the same work, side by side in one run, on a sandbox database of >= 1 GiB.

    /work/main/.venv/bin/python bench/backup_verify.py --scale 28

Everything happens on this machine: a sandbox PostgreSQL (pgserver wheel, Unix
socket) under ``bench/.work/``, a local folder as backup store, and a throwaway
Prefect server (``prefect_test_harness``) on 127.0.0.1. An audit hook refuses any
connection this process would open to a non-loopback address.

Measured (each ``--repeat`` times, the order rotated, the median reported):

- runbook backup: the ``backup`` flow (``prune=False``), a real flow run, wall time;
- raw ``pg_dump -Fc`` (default compression) to a file, then ``sha256sum`` of it;
- raw pipeline with runbook's settings: ``pg_dump -Fc -Z0 | zstd -3 -T2 | tee file | sha256sum``, then fsync;
- runbook verify: the ``backup-verify`` flow on the backup just made, wall time;
- raw verify of the same stored file: ``sha256sum`` + ``zstd -d`` (concurrently),
  ``createdb``, ``pg_restore -j 2``, ``count(*)`` of each table with psql, ``dropdb``.

Extras (first repetition only, ``--no-extras`` skips them) show where runbook's time
goes: the pg_dump floor, runbook's own dump pipeline and fetch without Prefect, the
row counting it does during a backup, both backups with zstd level 1 instead of 3,
and the import time of Great Expectations (with and without a bytecode cache).

Other people's jobs on the machine skew wall times: before each measurement the
benchmark waits (``--quiet-wait``) for the machine to be idle, and it reports the CPU
time other processes used during each measurement (marked CONTENDED when > 5%).
``--code HEAD`` measures the last commit (extracted with git archive) instead of the
working tree, for a stable copy while the tree is being edited.

Prints a table, PASS/MISS per target, and writes bench/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform as pyplatform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Before Prefect or Great Expectations are imported: no telemetry, a private Prefect home.
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["GX_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

MIN_BYTES = 1 << 30  # the issue asks for a database of at least 1 GB; 1 GiB to be safe
MB = 1_000_000
ZSTD = "/usr/bin/zstd"
TABLES = ("users", "user_alerts", "market_data", "system_logs", "user_sessions")


def quoted(table: str) -> str:
    """A table name quoted for SQL text (pgserver's ``sql`` and ``psql -c`` take strings)."""
    from psycopg import sql

    return sql.Identifier(*table.split(".")).as_string(None)

# The targets.
TARGET_SPEEDUP_VS_FC = 2.0  # runbook backup >= 2x faster than pg_dump -Fc + sha256sum
TARGET_SIZE_VS_FC = 1.10  # ... at <= 1.1x its size
TARGET_VS_PIPELINE = 1.15  # runbook backup <= 1.15x the raw pipeline with the same compression
TARGET_VERIFY = 1.30  # runbook verify <= 1.3x the raw verify work


# --------------------------------------------------------------------------- no network


BLOCKED: list[str] = []


def _is_local(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host in (None, "", "localhost") or str(host).endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _network_guard(event: str, args: tuple[Any, ...]) -> None:
    """Refuse, in this process, any connection or name lookup that is not loopback."""
    if event == "socket.connect":
        sock, address = args[0], args[1]
        if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            BLOCKED.append(f"connect {address[0]}:{address[1]}")
            raise PermissionError(f"benchmark: no network allowed (connect to {address[0]})")
    elif event == "socket.getaddrinfo":
        if not _is_local(args[0]):
            BLOCKED.append(f"getaddrinfo {args[0]!r}")
            raise PermissionError(f"benchmark: no network allowed (lookup of {args[0]!r})")


sys.addaudithook(_network_guard)


# --------------------------------------------------------------------------- helpers


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


HZ = os.sysconf("SC_CLK_TCK")


def _cpu_ticks() -> tuple[int, int, int]:
    """System-wide (busy, total, steal) jiffies from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    total = sum(fields[:8])
    return total - idle, total, steal


class Ours:
    """CPU seconds used so far by this benchmark: this process, its children (Prefect
    server, pg_dump, zstd...) and the sandbox PostgreSQL (postmaster and backends).
    Whatever else the machine did meanwhile is foreign load (e.g. someone's test run)."""

    postmaster_pid: int | None = None

    @classmethod
    def seconds(cls) -> float:
        import psutil

        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
        roots: list[Any] = []
        try:
            roots = psutil.Process().children(recursive=True)
        except psutil.Error:
            pass
        if cls.postmaster_pid:
            try:
                postmaster = psutil.Process(cls.postmaster_pid)
                roots += [postmaster, *postmaster.children(recursive=True)]
            except psutil.Error:
                pass
        for process in roots:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
            if process.pid == cls.postmaster_pid:  # backends that exited: reaped by the postmaster
                total += times.children_user + times.children_system
        return total


def wait_quiet(max_wait: float, threshold: float = 0.25) -> dict[str, Any]:
    """Before a measurement: wait (up to max_wait s) until the machine is idle apart from
    us: two consecutive 1 s samples with less than ``threshold`` CPU-seconds of load."""
    started = time.monotonic()
    calm = 0
    load = 0.0
    while True:
        busy0, _, _ = _cpu_ticks()
        ours0 = Ours.seconds()
        time.sleep(1.0)
        busy1, _, _ = _cpu_ticks()
        load = max(0.0, (busy1 - busy0) / HZ - (Ours.seconds() - ours0))
        calm = calm + 1 if load < threshold else 0
        waited = time.monotonic() - started
        if calm >= 2 or waited >= max_wait:
            return {"waited_s": round(waited, 1), "quiet": calm >= 2, "last_foreign_load_cpu_s_per_s": round(load, 2)}


class Meter:
    """Wall time plus CPU accounting of one measured step."""

    def __init__(self) -> None:
        self.start = 0.0
        self.seconds = 0.0
        self.info: dict[str, Any] = {}

    def __enter__(self) -> "Meter":
        self._ticks = _cpu_ticks()
        self._ours = Ours.seconds()
        self._self = resource.getrusage(resource.RUSAGE_SELF)
        self._children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start
        busy0, total0, steal0 = self._ticks
        busy1, total1, steal1 = _cpu_ticks()
        ours = Ours.seconds() - self._ours
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        span = max(total1 - total0, 1)
        busy_s = (busy1 - busy0) / HZ
        self.info = {
            "machine_cpu_busy_pct": round(100.0 * (busy1 - busy0) / span, 1),
            "machine_cpu_steal_pct": round(100.0 * (steal1 - steal0) / span, 1),
            "this_process_cpu_s": round((me.ru_utime - self._self.ru_utime) + (me.ru_stime - self._self.ru_stime), 2),
            "child_processes_cpu_s": round(
                (kids.ru_utime - self._children.ru_utime) + (kids.ru_stime - self._children.ru_stime), 2
            ),
            "benchmark_cpu_s": round(ours, 2),
            "foreign_cpu_s": round(max(0.0, busy_s - ours), 2),
        }


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    completed = subprocess.run(command, capture_output=True, check=False, **kwargs)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])}... failed ({completed.returncode}): {completed.stderr.decode()[-500:]}")
    return completed


def wait_all(processes: list[tuple[str, subprocess.Popen[bytes]]]) -> dict[str, bytes]:
    """Wait for a pipeline; raise naming the first stage that failed."""
    outputs: dict[str, bytes] = {}
    errors = []
    for name, process in processes:
        if any(stream is not None and not stream.closed for stream in (process.stdout, process.stderr)):
            out, err = process.communicate()
        else:
            out, err = b"", b""
            process.wait()
        outputs[name] = out or b""
        if process.returncode != 0:
            errors.append(f"{name} exited {process.returncode}: {(err or b'').decode(errors='replace')[-300:]}")
    if errors:
        raise RuntimeError("; ".join(errors))
    return outputs


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Db:
    """The sandbox server as the raw tools see it (conninfo, binaries)."""

    def __init__(self, dsn: str) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        self.dsn = dsn
        self.bin = Path(POSTGRES_BIN_PATH)
        self.params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v not in (None, "")}
        self.env = {**os.environ}
        if "password" in self.params:
            self.env["PGPASSWORD"] = self.params.pop("password")
        self.conninfo = make_conninfo("", **self.params)
        self.database = self.params.get("dbname", "platform")

    def tool(self, name: str) -> str:
        return str(self.bin / name)

    def conninfo_for(self, dbname: str) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo("", **{**self.params, "dbname": dbname})

    def sql(self, statement: str, dbname: str | None = None) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.conninfo_for(dbname or self.database), autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def settle(self, max_wait: float) -> dict[str, Any]:
        """Between measurements: flush dirty buffers so one step's writes do not land on
        the next, then wait for the machine to be quiet (other people's jobs)."""
        self.sql("CHECKPOINT")
        os.sync()
        quiet = wait_quiet(max_wait)
        if not quiet["quiet"]:
            say(f"    machine still busy after {quiet['waited_s']} s "
                f"({quiet['last_foreign_load_cpu_s_per_s']} CPU-s/s of foreign load): measuring anyway")
        return quiet


# --------------------------------------------------------------------------- sandbox


def prepare_sandbox(work: Path, scale: int, reseed: bool) -> tuple[str, dict[str, Any]]:
    from sandbox.platform import Sandbox

    box = Sandbox(work / "sandbox")
    was_running = box.is_running()
    say(f"starting the sandbox PostgreSQL under {box.pgdata}")
    dsn = box.up()
    comment = box.describe()
    seeded = re.search(r"scale=(\d+)", comment or "")
    seed_seconds = None
    if reseed or not seeded or int(seeded.group(1)) != scale:
        say(f"seeding scale {scale} (found: {comment or 'not seeded'}); this takes about {2 * scale} s")
        started = time.perf_counter()
        box.seed(scale)
        seed_seconds = round(time.perf_counter() - started, 1)
        comment = box.describe()
    else:
        say(f"reusing the seeded database: {comment}")
    db = Db(dsn)
    try:
        Ours.postmaster_pid = int((box.pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        say("cannot read the sandbox postmaster's pid: its CPU will count as foreign load")
    size = int(db.sql("SELECT pg_database_size(current_database())")[0][0])
    rows = {t: int(db.sql(f"SELECT count(*) FROM {quoted(t)}")[0][0]) for t in TABLES}  # also warms the OS cache
    version = db.sql("SHOW server_version")[0][0]
    return dsn, {
        "scale": scale,
        "seed_comment": comment,
        "seed_seconds": seed_seconds,
        "database_bytes": size,
        "at_least_1GiB": size >= MIN_BYTES,
        "rows": rows,
        "server_version": version,
        "started_server": not was_running,
    }


# --------------------------------------------------------------------------- raw side


def raw_dump_fc(db: Db, scratch: Path) -> dict[str, Any]:
    """pg_dump -Fc (default compression) to a file, then sha256sum of the file."""
    target = scratch / "raw_fc.dump"
    with Meter() as total:
        with Meter() as dump:
            run([db.tool("pg_dump"), "--format=custom", f"--file={target}", f"--dbname={db.conninfo}"], env=db.env)
        with Meter() as digest:
            sha = run(["sha256sum", str(target)]).stdout.split()[0].decode()
    size = target.stat().st_size
    target.unlink()
    return {
        "seconds": total.seconds,
        "size_bytes": size,
        "sha256": sha,
        "parts": {"pg_dump -Fc -f": dump.seconds, "sha256sum": digest.seconds},
        "cpu": total.info,
    }


def raw_pipeline(db: Db, scratch: Path, level: int = 3) -> dict[str, Any]:
    """pg_dump -Fc -Z0 | zstd -3 -T2 | tee file | sha256sum, then fsync the file
    (runbook's local store fsyncs on commit, and pg_dump -f syncs too)."""
    target = scratch / "raw_pipeline.dump.zst"
    with Meter() as total:
        with Meter() as pipe:
            dump = subprocess.Popen(
                [db.tool("pg_dump"), "--format=custom", "--compress=0", f"--dbname={db.conninfo}"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=db.env,
            )
            zstd = subprocess.Popen([ZSTD, f"-{level}", "-T2", "-q", "-c"], stdin=dump.stdout, stdout=subprocess.PIPE)
            tee = subprocess.Popen(["tee", str(target)], stdin=zstd.stdout, stdout=subprocess.PIPE)
            sha = subprocess.Popen(["sha256sum"], stdin=tee.stdout, stdout=subprocess.PIPE)
            for upstream in (dump.stdout, zstd.stdout, tee.stdout):
                upstream.close()  # type: ignore[union-attr]
            digest = sha.communicate()[0].split()[0].decode()
            wait_all([("pg_dump", dump), ("zstd", zstd), ("tee", tee), ("sha256sum", sha)])
        with Meter() as sync:
            fsync_path(target)
    size = target.stat().st_size
    target.unlink()
    return {
        "seconds": total.seconds,
        "size_bytes": size,
        "sha256": digest,
        "parts": {f"pg_dump -Z0 | zstd -{level} -T2 | tee | sha256sum": pipe.seconds, "fsync": sync.seconds},
        "cpu": total.info,
    }


def raw_verify(db: Db, stored: Path, scratch: Path, expected_sha: str) -> dict[str, Any]:
    """Read the stored dump: sha256sum and zstd -d at once; createdb, pg_restore -j 2,
    count(*) per table, dropdb."""
    dump_file = scratch / "raw_verify.dump"
    name = f"bench_raw_verify_{os.getpid()}"
    target = db.conninfo_for(name)
    parts: dict[str, float] = {}
    counts: dict[str, int] = {}
    with Meter() as total:
        try:
            with Meter() as fetch:
                sha = subprocess.Popen(["sha256sum", str(stored)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                unzstd = subprocess.Popen(
                    [ZSTD, "-d", "-q", "-f", str(stored), "-o", str(dump_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )
                outputs = wait_all([("sha256sum", sha), ("zstd -d", unzstd)])
            parts["sha256sum + zstd -d"] = fetch.seconds
            digest = outputs["sha256sum"].split()[0].decode()
            with Meter() as create:
                run([db.tool("createdb"), f"--maintenance-db={db.conninfo}", name], env=db.env)
            parts["createdb"] = create.seconds
            with Meter() as restore:
                run(
                    [db.tool("pg_restore"), f"--dbname={target}", "--jobs=2", "--exit-on-error", "--no-owner", str(dump_file)],
                    env=db.env,
                )
            parts["pg_restore -j 2"] = restore.seconds
            with Meter() as count:
                command = [db.tool("psql"), f"--dbname={target}", "-At", "-v", "ON_ERROR_STOP=1"]
                for table in TABLES:
                    command += ["-c", f"SELECT count(*) FROM {quoted(table)}"]
                lines = run(command, env=db.env).stdout.decode().split()
            parts["count(*) x5 (psql)"] = count.seconds
            counts = dict(zip(TABLES, (int(v) for v in lines), strict=True))
        finally:
            with Meter() as drop:
                run([db.tool("dropdb"), f"--maintenance-db={db.conninfo}", "--if-exists", "--force", name], env=db.env)
            parts["dropdb"] = drop.seconds
    dump_file.unlink(missing_ok=True)
    return {
        "seconds": total.seconds,
        "parts": parts,
        "sha256_ok": digest == expected_sha,
        "rows": counts,
        "cpu": total.info,
    }


# --------------------------------------------------------------------------- runbook side


def flow_breakdown(flow_run_id: Any, wall: float) -> dict[str, Any]:
    """The flow run's own duration and its task runs' durations, from the Prefect API.
    Task run states reach the server as events, so poll until they are all final."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 20
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            settled = flow_run.end_time is not None and all(
                tr.end_time is not None or (tr.state and tr.state.is_final()) for tr in task_runs
            )
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    tasks: list[dict[str, Any]] = []
    for tr in sorted(task_runs, key=lambda r: r.start_time or r.expected_start_time or datetime.now(timezone.utc)):
        seconds = (tr.end_time - tr.start_time).total_seconds() if tr.start_time and tr.end_time else None
        tasks.append({"task": re.sub(r"-[0-9a-f]{3}$", "", tr.name), "seconds": seconds, "state": tr.state_name})
    flow_seconds = (
        (flow_run.end_time - flow_run.start_time).total_seconds() if flow_run.start_time and flow_run.end_time else None
    )
    task_sum = sum(t["seconds"] or 0.0 for t in tasks)
    return {
        "flow_run_id": str(flow_run_id),
        "flow_run_seconds": flow_seconds,
        "tasks": tasks,
        "outside_tasks_seconds": wall - task_sum,
    }


def runbook_backup(env: dict[str, str] | None = None) -> dict[str, Any]:
    from flows.backup import BackupParameters, backup

    saved = {key: os.environ.get(key) for key in (env or {})}
    os.environ.update(env or {})
    try:
        with Meter() as wall:
            state = backup(params=BackupParameters(prune=False), return_state=True)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    result = state.result(raise_on_failure=True)
    breakdown = flow_breakdown(state.state_details.flow_run_id, wall.seconds)
    return {
        "seconds": wall.seconds,
        "size_bytes": result["size_bytes"],
        "raw_bytes": result["raw_bytes"],
        "sha256": result["sha256"],
        "backup_id": result["backup_id"],
        "manifest_seconds": result["seconds"],
        "parts": {t["task"]: t["seconds"] for t in breakdown["tasks"]}
        | {"(outside tasks: flow run setup, artifacts, teardown)": breakdown["outside_tasks_seconds"]},
        "prefect": breakdown,
        "cpu": wall.info,
    }


def runbook_verify(backup_id: str) -> dict[str, Any]:
    from flows.backup_verify import VerifyParameters, backup_verify

    with Meter() as wall:
        state = backup_verify(params=VerifyParameters(backup_id=backup_id), return_state=True)
    try:
        report = state.result(raise_on_failure=False)
    except BaseException as err:  # noqa: BLE001 - a crashed run: report it
        report = {"outcome": f"crashed: {err}"}
    breakdown = flow_breakdown(state.state_details.flow_run_id, wall.seconds)
    report = report if isinstance(report, dict) else {"outcome": str(report)}
    return {
        "seconds": wall.seconds,
        "completed": state.is_completed(),
        "outcome": report.get("outcome"),
        "failed_checks": report.get("failed"),
        "checks": len(report.get("checks") or []),
        "parts": {t["task"]: t["seconds"] for t in breakdown["tasks"]}
        | {"(outside tasks: flow run setup, artifacts, teardown)": breakdown["outside_tasks_seconds"]},
        "prefect": breakdown,
        "cpu": wall.info,
    }


# --------------------------------------------------------------------------- extras


def extras(db: Db, stored: Path, scratch: Path, max_wait: float) -> dict[str, Any]:
    """Where runbook's time goes, measured piece by piece."""
    from tasks.pgtools import choose_pg_tools, fetch_dump, stream_dump
    from tasks.store import LocalStore

    out: dict[str, Any] = {}

    db.settle(max_wait)
    say("extra: pg_dump -Fc -Z0 > /dev/null (the floor of any single-stream dump)")
    with Meter() as floor, open(os.devnull, "wb") as null:
        subprocess.run(
            [db.tool("pg_dump"), "--format=custom", "--compress=0", f"--dbname={db.conninfo}"], stdout=null, env=db.env, check=True
        )
    out["pg_dump -Fc -Z0 > /dev/null"] = {"seconds": floor.seconds, "cpu": floor.info}

    db.settle(max_wait)
    say("extra: runbook's stream_dump alone (tasks.pgtools, no Prefect, no snapshot, no row counts)")
    tools = choose_pg_tools(16)
    store = LocalStore(scratch / "extra-store")
    writer = store.open_writer("x.dump.zst")
    with Meter() as pipe:
        result = stream_dump(tools, db.dsn, writer, zstd_level=3, zstd_threads=2)
        writer.commit()
    out["stream_dump (python: pipe -> zstandard T2 -> sha256 -> file)"] = {
        "seconds": pipe.seconds, "size_bytes": result.size_bytes, "cpu": pipe.info,
    }

    db.settle(max_wait)
    say("extra: count(*) of every table (what runbook's backup does beside the dump)")
    with Meter() as counts:
        for table in TABLES:
            db.sql(f"SELECT count(*) FROM {quoted(table)}")
    out["count(*) x5 (runbook backup does this concurrently with the dump)"] = {"seconds": counts.seconds, "cpu": counts.info}

    db.settle(max_wait)
    say("extra: runbook's fetch_dump alone (sha256 + zstandard decompress to a file)")
    with Meter() as fetch:
        fetch_dump(LocalStore(stored.parents[1]).iter_chunks(f"{stored.parent.name}/{stored.name}"), scratch / "fetched.dump")
    (scratch / "fetched.dump").unlink(missing_ok=True)
    out["fetch_dump (python: read -> sha256 -> zstandard -d -> file)"] = {"seconds": fetch.seconds, "cpu": fetch.info}
    shutil.rmtree(scratch / "extra-store", ignore_errors=True)

    db.settle(max_wait)
    say("extra: raw pipeline and runbook backup with zstd level 1 instead of 3")
    fast = raw_pipeline(db, scratch, level=1)
    out["raw pg_dump -Z0 | zstd -1 -T2 | tee | sha256sum; fsync"] = {
        "seconds": fast["seconds"], "size_bytes": fast["size_bytes"], "cpu": fast["cpu"],
    }
    db.settle(max_wait)
    level1 = runbook_backup({"RUNBOOK_BACKUP__ZSTD_LEVEL": "1"})
    out["runbook backup flow, RUNBOOK_BACKUP__ZSTD_LEVEL=1"] = {
        "seconds": level1["seconds"], "size_bytes": level1["size_bytes"], "cpu": level1["cpu"], "parts": level1["parts"],
    }

    db.settle(max_wait)
    say("extra: import great_expectations in a fresh interpreter")
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false"}
    with Meter() as gx:
        subprocess.run([sys.executable, "-c", "import great_expectations, great_expectations.expectations"], env=env, check=True, capture_output=True)
    out["import great_expectations (fresh python, no bytecode cache: as here)"] = {"seconds": gx.seconds, "cpu": gx.info}
    # This machine sets PYTHONDONTWRITEBYTECODE=1 and the venv holds no .pyc: every process
    # compiles every module. With a bytecode cache (a normal pip install) the import is cheaper.
    cached = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"PYTHONPYCACHEPREFIX": str(WORK / "pycache")}
    gx_import = [sys.executable, "-c", "import great_expectations, great_expectations.expectations"]
    if not (WORK / "pycache").is_dir():
        subprocess.run(gx_import, env=cached, check=True, capture_output=True)  # fills the cache
    with Meter() as gx_cached:
        subprocess.run(gx_import, env=cached, check=True, capture_output=True)
    out["import great_expectations (fresh python, warm bytecode cache)"] = {"seconds": gx_cached.seconds, "cpu": gx_cached.info}
    with Meter() as pf:
        subprocess.run([sys.executable, "-c", "import flows.backup, flows.backup_verify"], env=env, check=True, capture_output=True, cwd=CODE_DIR)
    out["import prefect + runbook flows (fresh python)"] = {"seconds": pf.seconds, "cpu": pf.info}
    return out


# --------------------------------------------------------------------------- report


def contended(entry: dict[str, Any]) -> bool:
    """Other jobs used more than 5% of the machine's CPU during the measurement."""
    return entry["cpu"]["foreign_cpu_s"] > 0.05 * entry["seconds"] * (os.cpu_count() or 1)


def measure_one(
    db: Db, label: str, measure: Callable[[], dict[str, Any]], args: argparse.Namespace, retry: bool = True
) -> dict[str, Any]:
    """Settle, measure; measure again (up to --retry-contended times) when other jobs
    took a share of the CPU meanwhile, and keep the least contended attempt."""
    attempts: list[dict[str, Any]] = []
    while True:
        before = db.settle(args.quiet_wait)
        say(label)
        result = measure() | {"before": before}
        attempts.append(result)
        noisy = contended(result)
        say(f"    {result['seconds']:.2f} s" + (f"  CONTENDED ({result['cpu']['foreign_cpu_s']} CPU-s of other jobs)" if noisy else ""))
        if noisy and retry and len(attempts) <= args.retry_contended:
            say("    measuring again")
            continue
        break
    best = min(attempts, key=lambda a: a["cpu"]["foreign_cpu_s"])
    best["contended"] = contended(best)
    best["discarded_contended_seconds"] = [a["seconds"] for a in attempts if a is not best]
    return best


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(reps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    names: list[str] = []
    for rep in reps:
        names += [name for name in rep if name not in names and name != "extras"]
    for name in names:
        runs = [rep[name] for rep in reps if name in rep]
        entry: dict[str, Any] = {"seconds": median([r["seconds"] for r in runs]), "all_seconds": [r["seconds"] for r in runs]}
        sizes = [r["size_bytes"] for r in runs if r.get("size_bytes")]
        if sizes:
            entry["size_bytes"] = median(sizes)
        part_names: list[str] = []
        for r in runs:
            part_names += [p for p in r.get("parts", {}) if p not in part_names]
        entry["parts"] = {
            p: median([r["parts"][p] for r in runs if r.get("parts", {}).get(p) is not None]) for p in part_names
        }
        summary[name] = entry
    return summary


LABELS = {
    "raw_fc": "raw pg_dump -Fc (default gzip) -f file; sha256sum",
    "raw_pipeline": "raw pg_dump -Fc -Z0 | zstd -3 -T2 | tee file | sha256sum; fsync",
    "runbook_backup": "runbook backup flow (prune=False)",
    "raw_verify": "raw verify: sha256sum+zstd -d, createdb, pg_restore -j2, count(*), dropdb",
    "runbook_verify": "runbook backup-verify flow (1st in process: GX import)",
    "runbook_verify_warm": "runbook backup-verify flow, later runs (GX already imported)",
}
MEASUREMENTS = tuple(LABELS)


def evaluate(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rb, fc, pipe = summary["runbook_backup"], summary["raw_fc"], summary["raw_pipeline"]
    rv, raw_v = summary["runbook_verify"], summary["raw_verify"]
    speedup = fc["seconds"] / rb["seconds"]
    size_ratio = rb["size_bytes"] / fc["size_bytes"]
    vs_pipe = rb["seconds"] / pipe["seconds"]
    vs_verify = rv["seconds"] / raw_v["seconds"]
    return [
        {"target": "runbook backup >= 2x faster than raw pg_dump -Fc + sha256sum", "value": speedup,
         "shown": f"{speedup:.2f}x faster ({rb['seconds']:.1f} s vs {fc['seconds']:.1f} s)",
         "limit": f">= {TARGET_SPEEDUP_VS_FC:.2f}x", "pass": speedup >= TARGET_SPEEDUP_VS_FC},
        {"target": "runbook backup size <= 1.1x raw pg_dump -Fc", "value": size_ratio,
         "shown": f"{size_ratio:.3f}x ({rb['size_bytes'] / MB:.1f} MB vs {fc['size_bytes'] / MB:.1f} MB)",
         "limit": f"<= {TARGET_SIZE_VS_FC:.2f}x", "pass": size_ratio <= TARGET_SIZE_VS_FC},
        {"target": "runbook backup <= 1.15x raw pipeline, same compression", "value": vs_pipe,
         "shown": f"{vs_pipe:.2f}x ({rb['seconds']:.1f} s vs {pipe['seconds']:.1f} s)",
         "limit": f"<= {TARGET_VS_PIPELINE:.2f}x", "pass": vs_pipe <= TARGET_VS_PIPELINE},
        {"target": "runbook verify (1st in process) <= 1.3x raw verify", "value": vs_verify,
         "shown": f"{vs_verify:.2f}x ({rv['seconds']:.1f} s vs {raw_v['seconds']:.1f} s)",
         "limit": f"<= {TARGET_VERIFY:.2f}x", "pass": vs_verify <= TARGET_VERIFY},
    ] + ([
        {"target": "(info) runbook verify, later runs in process <= 1.3x raw verify",
         "value": summary["runbook_verify_warm"]["seconds"] / raw_v["seconds"],
         "shown": f"{summary['runbook_verify_warm']['seconds'] / raw_v['seconds']:.2f}x "
                  f"({summary['runbook_verify_warm']['seconds']:.1f} s vs {raw_v['seconds']:.1f} s)",
         "limit": f"<= {TARGET_VERIFY:.2f}x", "pass": summary["runbook_verify_warm"]["seconds"] / raw_v["seconds"] <= TARGET_VERIFY,
         "info_only": True},
    ] if "runbook_verify_warm" in summary else [])


def render(meta: dict[str, Any], summary: dict[str, dict[str, Any]], reps: list[dict[str, Any]], targets: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    db = meta["database"]
    lines.append(
        f"runbook backup/verify benchmark  {meta['started_at']}  ({meta['repeat']} repetition(s), medians shown)"
    )
    lines.append(
        f"database: {db['database_bytes'] / MB:,.0f} MB (pg_database_size, {db['database_bytes'] / (1 << 30):.2f} GiB), "
        f"scale {db['scale']}, PostgreSQL {db['server_version']}, {sum(db['rows'].values()):,} rows"
        + ("" if db["at_least_1GiB"] else "  ** below 1 GiB: not the size the issue asks for **")
    )
    lines.append(f"machine: {meta['machine']['cpus']} CPUs ({meta['machine']['cpu_model']}), zstd {meta['tools']['zstd']}, "
                 f"prefect {meta['tools']['prefect']}, great_expectations {meta['tools']['great_expectations']}")
    code, git = meta["runbook_code"], meta["git"]
    if code["code"] == "worktree":
        lines.append(f"runbook code: working tree at {git['commit'][:12]} + {len(git['modified'])} uncommitted change(s)")
    else:
        lines.append(f"runbook code: {code['code']} = {code['commit'][:12]}")
    lines.append(f"Prefect test server started in {meta.get('prefect_server_startup_seconds')} s (not counted)")
    lines.append("")
    lines.append(f"{'measurement':<74} {'seconds':>9} {'size MB':>9}  {'runs (s)'}")
    lines.append("-" * 110)
    for name in (n for n in MEASUREMENTS if n in summary):
        entry = summary[name]
        size = f"{entry['size_bytes'] / MB:9.1f}" if entry.get("size_bytes") else f"{'':>9}"
        runs = ", ".join(f"{s:.1f}" for s in entry["all_seconds"])
        lines.append(f"{LABELS[name]:<74} {entry['seconds']:9.2f} {size}  {runs}")
        for part, seconds in entry["parts"].items():
            lines.append(f"    {part:<70} {seconds:9.2f}")
    first = reps[0]
    if "runbook_verify" in first:
        rv = first["runbook_verify"]
        lines.append(f"    (verify outcome: {rv['outcome']}, {rv['checks']} checks, failed: {rv['failed_checks'] or 'none'})")
    if "runbook_backup" in first:
        rb = first["runbook_backup"]
        lines.append(f"    (backup: {rb['raw_bytes'] / MB:,.1f} MB raw dump, manifest dump time {rb['manifest_seconds']} s)")
    if "extras" in first:
        lines.append("")
        lines.append("where the time goes (extras, first repetition):")
        for name, entry in first["extras"].items():
            size = f"{entry['size_bytes'] / MB:9.1f}" if entry.get("size_bytes") else f"{'':>9}"
            lines.append(f"    {name:<70} {entry['seconds']:9.2f} {size}")
    lines.append("")
    lines.append(
        "CPU per measurement: machine busy %, CPU-s of the benchmark (this process + children + sandbox PostgreSQL),"
    )
    lines.append("of this process alone, and foreign CPU-s (other jobs on the machine; > 5% of wall x cores = contended)")
    n_contended = 0
    for index, rep in enumerate(reps):
        for name in (n for n in MEASUREMENTS if n in rep):
            entry = rep[name]
            cpu = entry["cpu"]
            noisy = contended(entry)
            n_contended += noisy
            lines.append(
                f"    #{index + 1} {name:<19} {entry['seconds']:7.2f} s  busy {cpu['machine_cpu_busy_pct']:5.1f}%  "
                f"benchmark {cpu['benchmark_cpu_s']:6.2f}  self {cpu['this_process_cpu_s']:6.2f}  "
                f"foreign {cpu['foreign_cpu_s']:6.2f}{'  CONTENDED' if noisy else ''}"
                + (f"  (discarded contended runs: {entry['discarded_contended_seconds']})" if entry.get("discarded_contended_seconds") else "")
            )
    if n_contended:
        lines.append(f"    ** {n_contended} measurement(s) shared the CPU with other jobs: rerun on a quiet machine **")
    lines.append("")
    lines.append("targets (the issue's):")
    for t in targets:
        lines.append(f"  {'PASS' if t['pass'] else 'MISS'}  {t['target']:<66} {t['shown']}  (target {t['limit']})")
    if BLOCKED:
        lines.append(f"\nnetwork attempts refused: {len(BLOCKED)} ({', '.join(sorted(set(BLOCKED))[:5])})")
    else:
        lines.append("\nnetwork: no non-loopback connection was attempted by this process")
    return "\n".join(lines)


def machine_meta() -> dict[str, Any]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": pyplatform.python_version(), "kernel": pyplatform.release()}


def tool_versions(db: Db) -> dict[str, str]:
    from importlib.metadata import version

    zstd = run([ZSTD, "--version"]).stdout.decode()
    match = re.search(r"v(\d+\.\d+\.\d+)", zstd)
    return {
        "pg_dump": run([db.tool("pg_dump"), "--version"]).stdout.decode().strip(),
        "zstd": match.group(1) if match else zstd.strip(),
        "prefect": version("prefect"),
        "great_expectations": version("great_expectations"),
        "zstandard": version("zstandard"),
    }


CODE_PACKAGES = ("flows", "tasks", "runbook", "sandbox")
CODE_DIR = ROOT  # where flows/, tasks/, runbook/, sandbox/ are imported from
WORK = BENCH / ".work"


def use_code(rev: str, work: Path) -> dict[str, Any]:
    """Import runbook from the working tree (default) or from a commit, extracted with
    ``git archive`` under the work folder: a stable copy while others edit the tree."""
    global CODE_DIR
    if rev == "worktree":
        return {"code": "worktree"}
    commit = run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT).stdout.decode().strip()
    target = work / "code" / commit
    if not (target / "flows").is_dir():
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        archive = subprocess.Popen(["git", "archive", commit, *CODE_PACKAGES], cwd=ROOT, stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(target)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise RuntimeError(f"git archive {commit} failed")
    sys.path.insert(0, str(target))  # before the editable install's finder (it is on sys.meta_path, after PathFinder)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    CODE_DIR = target
    return {"code": rev, "commit": commit, "path": str(target)}


def point_runbook_at(dsn: str, store_dir: Path, work: Path) -> None:
    """The environment every flow of the benchmark reads: the sandbox database, a store
    and homes under the work folder."""
    os.environ["RUNBOOK_DATABASE_URL"] = dsn
    os.environ["RUNBOOK_BACKUP_STORE"] = str(store_dir)
    # backups under <store>/<database>/, where the benchmark reads the dumps back
    from tasks.postgres import database_name

    os.environ["RUNBOOK_INSTANCE"] = database_name(dsn)
    os.environ["RUNBOOK_HOME"] = str(work / "home")
    os.environ["PREFECT_HOME"] = str(work / "prefect-home")


def run_meta(started_at: datetime, repeat: int, db_meta: dict[str, Any], db: Db) -> dict[str, Any]:
    """What a results file says about the run: when, how, on what data, machine and code."""
    return {
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "repeat": repeat,
        "database": db_meta,
        "machine": machine_meta(),
        "tools": tool_versions(db),
        "git": git_state(),
    }


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    return {"commit": git("rev-parse", "HEAD"), "modified": [line for line in changed if "bench/.work/" not in line]}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=28, help="sandbox seed scale (28 gives ~1.1 GB; 1 is ~40 MB)")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions of every measurement (median reported)")
    parser.add_argument("--work", type=Path, default=BENCH / ".work", help="folder of the sandbox, store and scratch files")
    parser.add_argument("--reseed", action="store_true", help="seed again even if the database already has this scale")
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0,
        help="before each measurement wait up to this many seconds for other load on the machine to stop",
    )
    parser.add_argument(
        "--code", default="worktree",
        help="runbook code to measure: 'worktree' (default) or a git revision such as HEAD (extracted under --work)",
    )
    parser.add_argument(
        "--retry-contended", type=int, default=1,
        help="measure again (this many times) when other jobs used > 5%% of the CPU meanwhile",
    )
    parser.add_argument("--keep-server", action="store_true", help="leave the sandbox PostgreSQL running at the end")
    parser.add_argument("--no-extras", dest="extras", action="store_false", help="skip the where-the-time-goes extras")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")

    global WORK
    work = WORK = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    scratch = work / "scratch"
    store_dir = work / "store"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(store_dir, ignore_errors=True)  # last run's backups: this run measures its own
    scratch.mkdir()
    started_at = datetime.now(timezone.utc)

    code = use_code(args.code, work)
    if code["code"] != "worktree":
        say(f"measuring runbook as of {code['commit'][:12]} (from {code['path']})")
    dsn, db_meta = prepare_sandbox(work, args.scale, args.reseed)
    db = Db(dsn)
    say(f"database: {db_meta['database_bytes'] / MB:,.0f} MB, rows {db_meta['rows']}")
    if not db_meta["at_least_1GiB"]:
        say(f"WARNING: {db_meta['database_bytes'] / MB:,.0f} MB is below 1 GiB; use --scale 28 or more for the real benchmark")

    point_runbook_at(dsn, store_dir, work)

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    import flows.backup  # noqa: F401 - imported before timing: a process imports them once
    import flows.backup_verify  # noqa: F401

    meta = run_meta(started_at, args.repeat, db_meta, db)
    meta["runbook_code"] = code | {"flows_imported_from": str(Path(flows.backup.__file__).parent.parent)}
    reps: list[dict[str, Any]] = []
    say("starting the Prefect test server (prefect_test_harness)")
    harness_started = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=120):
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            meta["prefect_server_startup_seconds"] = round(time.perf_counter() - harness_started, 1)
            say(f"Prefect server up in {meta['prefect_server_startup_seconds']} s")
            for index in range(args.repeat):
                rep: dict[str, Any] = {}
                # Rotate the order of the three dumps so none always runs first (warmest or coldest).
                dumps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
                    ("raw_fc", lambda: raw_dump_fc(db, scratch)),
                    ("raw_pipeline", lambda: raw_pipeline(db, scratch)),
                    ("runbook_backup", runbook_backup),
                ]
                shift = index % len(dumps)
                for name, measure in dumps[shift:] + dumps[:shift]:
                    rep[name] = measure_one(db, f"[{index + 1}/{args.repeat}] {LABELS[name]}", measure, args)
                backup_id = rep["runbook_backup"]["backup_id"]
                stored = store_dir / db.database / f"{backup_id}.dump.zst"
                verifies: list[tuple[str, Callable[[], dict[str, Any]]]] = [
                    ("raw_verify", lambda: raw_verify(db, stored, scratch, rep["runbook_backup"]["sha256"])),
                    ("runbook_verify", lambda: runbook_verify(backup_id)),
                ]
                if index % 2:
                    verifies.reverse()
                for name, measure in verifies:
                    if name == "runbook_verify" and index > 0:
                        name = "runbook_verify_warm"
                    # The first verify in this process pays the Great Expectations import, as every
                    # real flow run process does; measured again it would be warm, so it is not retried.
                    rep[name] = measure_one(
                        db, f"[{index + 1}/{args.repeat}] {LABELS[name]}", measure, args, retry=name != "runbook_verify"
                    )
                if index == 0 and args.extras:
                    rep["extras"] = extras(db, stored, scratch, args.quiet_wait)
                reps.append(rep)

    summary = summarize(reps)
    targets = evaluate(summary)
    meta["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta["network_refused"] = BLOCKED
    text = render(meta, summary, reps, targets)
    print(text, flush=True)

    results_dir = BENCH / "results"
    results_dir.mkdir(exist_ok=True)
    out = results_dir / f"{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps({"meta": meta, "summary": summary, "targets": targets, "runs": reps}, indent=2, default=str))
    print(f"\nresults: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    shutil.rmtree(scratch, ignore_errors=True)
    if db_meta["started_server"] and not args.keep_server:
        from sandbox.platform import Sandbox

        Sandbox(work / "sandbox").down()
        say("stopped the sandbox PostgreSQL (it was not running before; --keep-server leaves it up)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
