"""PostgreSQL's command-line tools: finding a ``pg_dump``/``pg_restore`` that can
handle the server, streaming a dump through zstd into the store, restoring one.

The dump pipeline reads ``pg_dump -Fc -Z0`` from a pipe, compresses it with zstd
(worker threads release the GIL), hashes the compressed bytes and hands them to a
store writer, in one pass: the dump is never read twice nor kept on local disk.
Passwords travel to the tools in ``PGPASSWORD``, never on a command line.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import zstandard

from runbook.errors import BackupError, ConfigError, RunbookError
from tasks.postgres import libpq_env
from tasks.store import StoreWriter

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class PgTools:
    bin_dir: Path
    major: int
    version: str
    version_line: str = ""  # ``pg_dump --version`` as printed: names the build
    bundled: bool = False  # pgserver's copy rather than the distribution's

    @property
    def pg_dump(self) -> Path:
        return self.bin_dir / "pg_dump"

    @property
    def pg_restore(self) -> Path:
        return self.bin_dir / "pg_restore"


def parse_tool_version(output: str) -> tuple[int, str]:
    """``pg_dump (PostgreSQL) 16.4 (Debian 16.4-1.pgdg120+1)`` -> (16, "16.4")."""
    match = re.search(r"\(PostgreSQL\)\s+(\d+)((?:\.\d+)*)", output) or re.search(r"(\d+)((?:\.\d+)*)", output)
    if not match:
        raise ConfigError(f"cannot read the version in {output.strip()!r}")
    return int(match.group(1)), match.group(1) + match.group(2)


def tool_version(binary: Path) -> tuple[int, str, str]:
    """(major, version, the line ``--version`` printed) of a PostgreSQL tool."""
    output = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    try:
        major, version = parse_tool_version(output)
    except ConfigError:
        raise ConfigError(f"cannot read the version of {binary}: {output.strip()!r}") from None
    return major, version, output.strip()


def bundled_bin_dir() -> Path | None:
    """The bin folder of the PostgreSQL that the pgserver wheel bundles (the sandbox's)."""
    try:
        from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError:  # pgserver is only needed by the sandbox
        return None
    return Path(POSTGRES_BIN_PATH)


def candidate_bin_dirs() -> list[Path]:
    """Where pg_dump may be: the distribution's versioned folders, PATH, then the
    pgserver wheel."""
    found: list[Path] = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    on_path = shutil.which("pg_dump")
    if on_path:
        found.append(Path(on_path).resolve().parent)
    bundled = bundled_bin_dir()
    if bundled is not None:
        found.append(bundled)
    return found


def choose_pg_tools(
    server_major: int,
    bin_dir: Path | None = None,
    candidates: Iterable[Path] | None = None,
    bundled_dir: Path | None = None,
) -> PgTools:
    """The pg_dump/pg_restore to use for a server: ``bin_dir`` if given (it must be
    new enough), else the newest one found whose major version is >= the server's.
    At the same major version the distribution's tools win over the copy bundled
    with pgserver (``bundled_dir``, by default pgserver's): they get the
    distribution's minor releases and security fixes."""
    bundled = bundled_dir if bundled_dir is not None else bundled_bin_dir()
    if bin_dir is not None:
        tools = _tools_in(bin_dir, bundled)
        if tools.major < server_major:
            raise ConfigError(
                f"RUNBOOK_PG_BIN_DIR: {bin_dir / 'pg_dump'} is version {tools.version} but the server is {server_major}; "
                f"point RUNBOOK_PG_BIN_DIR at a PostgreSQL {server_major} (or newer) bin folder"
            )
        return tools
    seen: list[str] = []
    best: PgTools | None = None
    for folder in candidates if candidates is not None else candidate_bin_dirs():
        if not (os.access(folder / "pg_dump", os.X_OK) and os.access(folder / "pg_restore", os.X_OK)):
            continue
        try:
            found = _tools_in(folder, bundled)
        except (OSError, subprocess.SubprocessError, ConfigError):
            continue
        seen.append(f"{folder / 'pg_dump'} ({found.version})")
        # newest major first; at the same major the distribution's before the bundled
        if found.major >= server_major and (best is None or (found.major, not found.bundled) > (best.major, not best.bundled)):
            best = found
    if best is None:
        found = ", ".join(seen) or "none"
        raise ConfigError(
            f"no pg_dump of version >= {server_major} (the server's) was found (found: {found}); "
            f"set RUNBOOK_PG_BIN_DIR to a PostgreSQL {server_major} bin folder"
        )
    return best


def _tools_in(folder: Path, bundled: Path | None) -> PgTools:
    """The tools of one bin folder, with their version and whether they are pgserver's."""
    major, version, line = tool_version(folder / "pg_dump")
    return PgTools(
        bin_dir=folder, major=major, version=version, version_line=line,
        bundled=bundled is not None and _same_folder(folder, bundled),
    )


def _same_folder(one: Path, other: Path) -> bool:
    try:
        return one.resolve() == other.resolve()
    except OSError:
        return False


@dataclass(frozen=True)
class DumpResult:
    size_bytes: int
    raw_bytes: int
    sha256: str


def _drain(stream, sink: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    for line in stream:
        sink.append(line)


def stream_dump(
    tools: PgTools,
    dsn: str,
    writer: StoreWriter,
    *,
    snapshot_id: str | None = None,
    zstd_level: int = 3,
    zstd_threads: int = 2,
    on_progress: Callable[[int], None] | None = None,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
    lock_wait_timeout_s: int | None = None,
    time_limit_s: float | None = None,
) -> DumpResult:
    """Run pg_dump and stream its output, zstd-compressed, into ``writer``.
    The caller commits or aborts the writer.

    ``lock_wait_timeout_s``: pg_dump gives up when a table lock it needs is held by
    another session that long (instead of waiting for ever and holding up every
    later backup). ``time_limit_s``: pg_dump is stopped when the dump runs longer."""
    conninfo, env_extra = libpq_env(dsn)
    command = [str(tools.pg_dump), "--format=custom", "--compress=0", f"--dbname={conninfo}"]
    if snapshot_id:
        command.append(f"--snapshot={snapshot_id}")
    if lock_wait_timeout_s:
        # milliseconds: the one unit every pg_dump version accepts
        command.append(f"--lock-wait-timeout={int(lock_wait_timeout_s * 1000)}")
    if time_limit_s is not None and time_limit_s <= 0:
        raise BackupTimeLimit("no time was left for pg_dump within the backup's time limit")
    env = {**os.environ, **env_extra}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, bufsize=0)
    _widen_pipe(process.stdout)
    if on_start:
        on_start(process)
    # The watchdog stops pg_dump at the time limit: the read below then sees the end of
    # the pipe, wherever pg_dump was (waiting on the server, or writing).
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        _stop(process)

    watchdog = threading.Timer(time_limit_s, expire) if time_limit_s is not None else None
    if watchdog:
        watchdog.daemon = True
        watchdog.start()
    errors: list[bytes] = []
    drain = threading.Thread(target=_drain, args=(process.stderr, errors), daemon=True)
    drain.start()
    digest = hashlib.sha256()
    size = raw = 0
    compressor = zstandard.ZstdCompressor(level=zstd_level, threads=zstd_threads, write_checksum=True).compressobj(
        size=-1
    )

    def emit(data: bytes) -> None:
        nonlocal size
        if data:
            digest.update(data)
            writer.write(data)
            size += len(data)

    try:
        assert process.stdout is not None
        read = process.stdout.read
        while chunk := read(CHUNK):
            raw += len(chunk)
            emit(compressor.compress(chunk))
            if on_progress:
                on_progress(raw)
        emit(compressor.flush())
    except BaseException:
        _stop(process)
        raise
    finally:
        code = process.wait()
        if watchdog:
            watchdog.cancel()
        drain.join(timeout=10)
    if expired.is_set():
        raise BackupTimeLimit("pg_dump did not finish within the backup's time limit and was stopped")
    if code != 0:
        message = b"".join(errors).decode(errors="replace").strip()
        # pg_dump applies --lock-wait-timeout as a statement_timeout on its LOCK TABLE
        if lock_wait_timeout_s and "timeout" in message and "LOCK TABLE" in message:
            raise BackupError(_lock_wait_message(message, lock_wait_timeout_s))
        first = message.splitlines()[0] if message else f"exit code {code}"
        if code < 0:
            first = f"pg_dump was killed by signal {signal.Signals(-code).name}"
        raise BackupError(f"pg_dump failed: {first}")
    if raw == 0:
        raise BackupError("pg_dump produced no output")
    return DumpResult(size_bytes=size, raw_bytes=raw, sha256=digest.hexdigest())


class BackupTimeLimit(BackupError):
    """The backup ran past RUNBOOK_BACKUP__TIMEOUT_SECONDS."""


def _lock_wait_message(stderr: str, lock_wait_timeout_s: int) -> str:
    """pg_dump's lock timeout, said plainly: which table, and what to look at."""
    # one table, or (pg_dump >= 16 locks them in batches) a list of them
    tables = re.search(r"LOCK TABLE (.+?) IN \w+ SHARE MODE", stderr)
    named = tables.group(1).split(", ") if tables else []
    on = f" on {named[0]}" if len(named) == 1 else f" on one of {len(named)} tables" if named else ""
    return (
        f"pg_dump gave up waiting for a table lock{on} after {lock_wait_timeout_s} s "
        "(RUNBOOK_BACKUP__LOCK_WAIT_TIMEOUT_SECONDS): another session holds a conflicting lock "
        "(an ALTER, a VACUUM FULL, a LOCK TABLE); find it in pg_locks / pg_stat_activity"
    )


def _widen_pipe(stream) -> None:  # type: ignore[no-untyped-def]
    """A 1 MiB pipe instead of 64 KiB: fewer wake-ups of pg_dump and of the reader."""
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, CHUNK)
    except (ImportError, AttributeError, OSError):  # not Linux, or above the system's limit
        pass


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@dataclass(frozen=True)
class FetchResult:
    size_bytes: int
    sha256: str
    raw_bytes: int


def fetch_dump(chunks: Iterable[bytes], target: Path) -> FetchResult:
    """Write a stored dump to ``target`` uncompressed, hashing the stored bytes on the way.
    Reading and hashing run in one thread, decompressing and writing in this one (both
    release the GIL), so the two overlap. A corrupt or truncated zstd stream raises
    DumpUnreadable, after the whole object was read and hashed."""
    digest = hashlib.sha256()
    size = 0
    failure: list[BaseException] = []
    handoff: queue.Queue[bytes | None] = queue.Queue(maxsize=8)

    def read() -> None:
        nonlocal size
        try:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                handoff.put(chunk)
        except BaseException as err:  # noqa: BLE001 - re-raised by the caller below
            failure.append(err)
        finally:
            handoff.put(None)

    reader = threading.Thread(target=read, name="fetch-dump", daemon=True)
    reader.start()
    raw = 0
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    problem: str | None = None
    with open(target, "wb") as out:
        while (chunk := handoff.get()) is not None:
            if problem is not None or not chunk:
                continue
            if decompressor.eof:
                problem = "unexpected bytes after the end of the dump's zstd stream"
                continue
            try:
                data = decompressor.decompress(chunk)
            except zstandard.ZstdError as err:
                problem = f"the dump does not decompress: {err}"
                continue
            out.write(data)
            raw += len(data)
    reader.join()
    if failure:
        raise failure[0]
    if problem is None and not decompressor.eof:
        problem = "the dump is truncated (the zstd stream does not end)"
    result = FetchResult(size_bytes=size, sha256=digest.hexdigest(), raw_bytes=raw)
    if problem:
        raise DumpUnreadable(problem, result)
    return result


class DumpUnreadable(BackupError):
    def __init__(self, message: str, result: FetchResult) -> None:
        super().__init__(message)
        self.result = result


def restore_dump(tools: PgTools, dump_file: Path, dsn: str, *, jobs: int = 2, timeout_s: int | None = None) -> None:
    """pg_restore a custom-format dump into the (empty) database of ``dsn``."""
    conninfo, env_extra = libpq_env(dsn)
    command = [
        str(tools.pg_restore),
        f"--dbname={conninfo}",
        f"--jobs={jobs}",
        "--exit-on-error",
        "--no-owner",
        str(dump_file),
    ]
    try:
        completed = subprocess.run(
            command, capture_output=True, env={**os.environ, **env_extra}, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise RunbookError(f"pg_restore did not finish within {timeout_s} s") from None
    if completed.returncode != 0:
        message = completed.stderr.decode(errors="replace").strip()
        lines = [line for line in message.splitlines() if "error" in line.lower()] or message.splitlines()
        raise BackupError(f"pg_restore failed: {lines[0] if lines else f'exit code {completed.returncode}'}")
