"""Security logs out of PostgreSQL into the backup store (``export-security-logs``).

Each source is read through a server-side cursor, ``fetch_rows`` at a time, and
streamed as gzip'd JSON lines into the store (a multipart upload on S3): a million
rows never sit in memory. PostgreSQL renders each line (json_build_object of the
columns the source's mapping names, or the whole row when it names none), so types
such as inet and jsonb come out as JSON. The sha256 is of the object's bytes, taken
while they are written, and checked again by reading the object back.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from psycopg import sql

from runbook.errors import ConfigError, VerificationFailed
from runbook.retry import RETRIES, backoff, retry_transient
from runbook.security.sources import SourceMapping
from tasks.postgres.connection import connect, translate_pg_error
from tasks.security import _field
from tasks.store import BackupStore

SETTING = "RUNBOOK_SECURITY__LOG_EXPORT__SOURCES"
GZIP = 16 + zlib.MAX_WBITS  # zlib's wbits for a gzip stream (header and trailer)
FLUSH_BYTES = 1024 * 1024


def _table(mapping: SourceMapping) -> sql.Composed:
    schema, table = mapping.schema_table
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def check_export_source(conn: psycopg.Connection[Any], name: str, mapping: SourceMapping) -> None:
    """Refuse (ConfigError naming the source, listing the real columns) a table, time
    column or mapped column that does not exist; before anything is written."""
    schema, table = mapping.schema_table
    rows = conn.execute(
        "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'v') AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum", (schema, table),
    ).fetchall()
    if not rows:
        raise ConfigError(f"{SETTING}: source {name!r}: no table {mapping.table!r} in the platform's database")
    columns = [r[0] for r in rows]
    missing = [f"{field} -> {path}" for field, path in {"(time)": mapping.time_column, **mapping.fields}.items()
               if path.split(".")[0] not in columns]
    if missing:
        raise ConfigError(f"{SETTING}: source {name!r}: {mapping.table} has no column for {', '.join(missing)}"
                          f" (its columns: {', '.join(columns)})")


def _where() -> sql.Composable:
    return sql.SQL("{t} >= %(since)s AND {t} < %(until)s")


def count_rows(conn: psycopg.Connection[Any], mapping: SourceMapping, since: datetime, until: datetime) -> int:
    """Rows of the source with ``since <= time < until``."""
    query = sql.SQL("SELECT count(*) FROM {} AS s WHERE ").format(_table(mapping)) + _where().format(
        t=sql.Identifier(mapping.time_column))
    row = conn.execute(query, {"since": since, "until": until}).fetchone()
    assert row is not None
    return int(row[0])


def line_query(mapping: SourceMapping) -> sql.Composed:
    """One JSON text per row, oldest first: the mapped fields and ``time``, or the whole row."""
    time = sql.Identifier(mapping.time_column)
    if mapping.fields:
        pairs = [sql.SQL("{}, {}").format(sql.Literal("time"), sql.SQL("s.{}").format(time))]
        pairs += [sql.SQL("{}, {}").format(sql.Literal(name), _field(path)) for name, path in mapping.fields.items()]
        line = sql.SQL("json_build_object({})::text").format(sql.SQL(", ").join(pairs))
    else:
        line = sql.SQL("row_to_json(s)::text")
    return sql.SQL("SELECT {} FROM {} AS s WHERE ").format(line, _table(mapping)) + _where().format(t=time) + sql.SQL(
        " ORDER BY s.{}").format(time)


class _Sink:
    """Compress, hash and count on the way into a store writer."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write
        self.compressor = zlib.compressobj(6, zlib.DEFLATED, GZIP)
        self.digest = hashlib.sha256()
        self.size = 0
        self.pending: list[bytes] = []
        self.pending_bytes = 0

    def _emit(self, data: bytes) -> None:
        if data:
            self.digest.update(data)
            self.size += len(data)
            self.write(data)

    def add(self, line: str) -> None:
        self.pending.append(line.encode() + b"\n")
        self.pending_bytes += len(self.pending[-1])
        if self.pending_bytes >= FLUSH_BYTES:
            self._emit(self.compressor.compress(b"".join(self.pending)))
            self.pending, self.pending_bytes = [], 0

    def close(self) -> None:
        self._emit(self.compressor.compress(b"".join(self.pending)) + self.compressor.flush())


def export_source(conn: psycopg.Connection[Any], store: BackupStore, key: str, mapping: SourceMapping, since: datetime,
                  until: datetime, *, fetch_rows: int, report: Callable[[int], None] = lambda rows: None) -> dict[str, Any]:
    """Stream one source's rows in the range into ``key`` (gzip'd JSON lines); returns the
    file's entry of the manifest: key, rows, bytes, sha256. ``conn`` must not be in
    autocommit (a server-side cursor lives in a transaction)."""
    writer = store.open_writer(key)
    sink = _Sink(writer.write)
    rows = 0
    try:
        with conn.transaction():
            conn.execute("SET LOCAL TimeZone = 'UTC'")  # times in the lines in UTC, whatever the role's default
            with conn.cursor(name="runbook_export") as cur:
                cur.itersize = fetch_rows
                cur.execute(line_query(mapping), {"since": since, "until": until})
                for (line,) in cur:
                    sink.add(line)
                    rows += 1
                    if rows % fetch_rows == 0:
                        report(rows)
        sink.close()
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    report(rows)
    return {"source": key.rsplit("/", 1)[-1].removesuffix(".jsonl.gz"), "key": key, "table": mapping.table, "rows": rows,
            "bytes": sink.size, "sha256": sink.digest.hexdigest()}


def read_back(store: BackupStore, entry: dict[str, Any]) -> dict[str, Any]:
    """Read one exported object back: its sha256, byte size and number of lines, and
    whether they are the manifest's (VerificationFailed naming the file otherwise)."""
    digest = hashlib.sha256()
    inflater = zlib.decompressobj(GZIP)
    size = lines = 0
    for chunk in store.iter_chunks(entry["key"]):
        digest.update(chunk)
        size += len(chunk)
        lines += inflater.decompress(chunk).count(b"\n")
    lines += inflater.flush().count(b"\n")
    found = {"sha256": digest.hexdigest(), "bytes": size, "rows": lines}
    wrong = [f"{k} {found[k]} (manifest: {entry[k]})" for k in ("sha256", "bytes", "rows") if found[k] != entry[k]]
    if wrong or not inflater.eof:
        raise VerificationFailed(f"{entry['key']} in {store.url}: " + ("; ".join(wrong) or "the gzip stream is cut off"))
    return found


# --------------------------------------------------------------------------- Prefect tasks


def _connect(dsn: str, connect_timeout: int, autocommit: bool) -> psycopg.Connection[Any]:
    return connect(dsn, application="runbook-export-security-logs", connect_timeout=connect_timeout, statement_timeout_s=None,
                   autocommit=autocommit)


@task(name="count-security-logs", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient,
      cache_policy=NO_CACHE)
def count_sources_task(dsn: str, sources: dict[str, SourceMapping], since: datetime, until: datetime,
                       connect_timeout: int = 10) -> dict[str, int]:
    """Check every source against the catalog, and count its rows in the range."""
    with _connect(dsn, connect_timeout, autocommit=True) as conn:
        for name, mapping in sources.items():
            check_export_source(conn, name, mapping)
        counts = {name: count_rows(conn, mapping, since, until) for name, mapping in sources.items()}
    get_run_logger().info("Security logs in the range: %s", ", ".join(f"{n} {c}" for n, c in counts.items()))
    return counts


@task(name="export-security-log", cache_policy=NO_CACHE)
def export_source_task(dsn: str, store: BackupStore, key: str, mapping: SourceMapping, since: datetime, until: datetime,
                       fetch_rows: int, report: Callable[[int], None], connect_timeout: int = 10) -> dict[str, Any]:
    """Stream one source into the store (no retry: a failed object is aborted, and the
    next run writes a new export)."""
    get_run_logger().info("Exporting %s to %s in %s", mapping.table, key, store.url)
    try:
        with _connect(dsn, connect_timeout, autocommit=False) as conn:
            return export_source(conn, store, key, mapping, since, until, fetch_rows=fetch_rows, report=report)
    except psycopg.Error as err:
        raise translate_pg_error(err, dsn, f"export {mapping.table}") from None


@task(name="read-back-export", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient,
      cache_policy=NO_CACHE)
def read_back_task(store: BackupStore, entry: dict[str, Any]) -> dict[str, Any]:
    """Read an exported object back from the store and check it against the manifest."""
    get_run_logger().info("Reading back %s from %s", entry["key"], store.url)
    return read_back(store, entry)
