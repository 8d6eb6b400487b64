"""The PostgreSQL side of database maintenance (§4.4, §7.2, §7.4): what the catalog and
the statistics views say, VACUUM ANALYZE, and building a missing index concurrently."""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from psycopg import sql

from runbook.errors import ConfigError
from runbook.maintenance import RECOMMENDED_SETTINGS, IndexInfo, RecommendedIndex
from tasks import postgres
from tasks.postgres import SYSTEM_SCHEMAS, qualified

UNIT_BYTES = {"B": 1, "kB": 1024, "8kB": 8192, "MB": 1024**2, "GB": 1024**3}


def current_settings(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """The §7.4 settings, memory in bytes."""
    rows = conn.execute("SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)", (list(RECOMMENDED_SETTINGS),)).fetchall()
    return {name: int(setting) * UNIT_BYTES.get(unit or "B", 1) for name, setting, unit in rows}


def indexes(conn: psycopg.Connection[Any]) -> list[IndexInfo]:
    rows = conn.execute(
        """
        SELECT n.nspname || '.' || ic.relname, n.nspname || '.' || t.relname, i.indisvalid, i.indisunique,
               EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid),
               coalesce(s.idx_scan, 0), coalesce(s.idx_tup_read, 0), coalesce(s.idx_tup_fetch, 0),
               pg_relation_size(i.indexrelid), pg_get_indexdef(i.indexrelid),
               ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true)
                            || CASE WHEN (i.indoption[k - 1] & 1) = 1 THEN ' DESC' ELSE '' END
                     FROM generate_series(1, i.indnkeyatts) k ORDER BY k)
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = i.indexrelid
        WHERE n.nspname <> ALL(%s)
        ORDER BY 1
        """,
        (list(SYSTEM_SCHEMAS),),
    ).fetchall()
    return [
        IndexInfo(name=r[0], table=r[1], valid=r[2], unique=r[3], backs_constraint=r[4], scans=r[5], tuples_read=r[6],
                  tuples_fetched=r[7], size_bytes=r[8], definition=r[9], columns=list(r[10]))
        for r in rows
    ]


def table_stats(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Per table: live and dead tuples, last vacuum/analyze, size, and a rough bloat
    estimate (pages on disk vs rows x average width from pg_stats)."""
    rows = conn.execute(
        """
        SELECT s.schemaname || '.' || s.relname, s.n_live_tup, s.n_dead_tup,
               greatest(s.last_vacuum, s.last_autovacuum), greatest(s.last_analyze, s.last_autoanalyze),
               pg_table_size(s.relid), c.reltuples,
               (SELECT sum(avg_width) FROM pg_stats p WHERE p.schemaname = s.schemaname AND p.tablename = s.relname)
        FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
        ORDER BY 1
        """
    ).fetchall()
    out = []
    for table, live, dead, vacuumed, analyzed, size, reltuples, width in rows:
        expected = (reltuples or 0) * ((width or 0) + 28)  # 24-byte tuple header + 4-byte item pointer
        bloat = max(0.0, 1 - expected / size) if size and width and reltuples and reltuples > 0 else None
        out.append(
            {"table": table, "live": live, "dead": dead, "last_vacuum": vacuumed.isoformat() if vacuumed else None,
             "last_analyze": analyzed.isoformat() if analyzed else None, "size_bytes": size,
             "bloat_estimate_pct": round(100 * bloat, 1) if bloat is not None else None}
        )
    return out


def column_statistics(conn: psycopg.Connection[Any], tables: list[str]) -> list[dict[str, Any]]:
    """§4.4, pg_stats: per column of the given tables, null fraction, distinct values, correlation."""
    rows = conn.execute(
        """
        SELECT schemaname || '.' || tablename, attname, null_frac, n_distinct, correlation, avg_width
        FROM pg_stats WHERE schemaname || '.' || tablename = ANY(%s) ORDER BY 1, 2
        """,
        (tables,),
    ).fetchall()
    return [
        {"table": r[0], "column": r[1], "null_frac": round(r[2], 3), "n_distinct": r[3],
         "correlation": round(r[4], 3) if r[4] is not None else None, "avg_width": r[5]}
        for r in rows
    ]


@task(name="read-maintenance-facts", cache_policy=NO_CACHE)
def read_facts(dsn: str, tables: list[str], connect_timeout: int, statement_timeout: int) -> dict[str, Any]:
    """Settings, indexes, table and column statistics, size, statistics reset time."""
    get_run_logger().info("Reading settings, indexes and statistics")
    with postgres.session(dsn, application="runbook db-maintenance", connect_timeout=connect_timeout, statement_timeout_s=statement_timeout) as conn:
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
        reset = conn.execute("SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()").fetchone()
        return {
            "settings": current_settings(conn),
            "indexes": indexes(conn),
            "tables": table_stats(conn),
            "columns": column_statistics(conn, tables),
            "size_bytes": int(size),
            "stats_reset": reset[0].isoformat() if reset and reset[0] else None,
        }


@task(name="vacuum-analyze-tables", cache_policy=NO_CACHE)
def vacuum_analyze_tables(dsn: str, tables: list[str], connect_timeout: int) -> list[str]:
    """VACUUM ANALYZE each existing table of the list (§4.4); returns those done."""
    logger = get_run_logger()
    done = []
    with postgres.session(dsn, application="runbook vacuum", connect_timeout=connect_timeout, statement_timeout_s=None, autocommit=True) as conn:
        present = set(postgres.list_tables(conn))
        for table in tables:
            if table not in present:
                logger.warning("No table %s: not vacuumed", table)
                continue
            logger.info("VACUUM ANALYZE %s", table)
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(qualified(table)))
            done.append(table)
    return done


def _partitions(conn: psycopg.Connection[Any], table: str) -> tuple[str, list[str]]:
    """A table's kind ('r' ordinary, 'p' partitioned) and its direct partitions (schema.table)."""
    schema, _, name = table.partition(".")
    row = conn.execute(
        """
        SELECT c.relkind,
               ARRAY(SELECT cn.nspname || '.' || cc.relname FROM pg_inherits i
                     JOIN pg_class cc ON cc.oid = i.inhrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
                     WHERE i.inhparent = c.oid ORDER BY 1)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = %s
        """,
        (schema, name),
    ).fetchone()
    if row is None:
        raise ConfigError(f"no table {table}: the index cannot be created")
    return str(row[0]), list(row[1])


def partition_index_name(index: str, partition: str) -> str:
    """The name of ``index``'s part on ``partition`` (PostgreSQL's 63-byte limit kept)."""
    name = f"{partition.partition('.')[2]}_{index}"
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name.encode()[:54].decode(errors='ignore')}_{digest}"


def create_index(conn: psycopg.Connection[Any], name: str, table: str, columns: sql.Composable, log: Any) -> None:
    """CREATE INDEX CONCURRENTLY of ``name`` on ``table`` (an autocommit session). A
    partitioned table cannot be indexed concurrently: its index is made ON ONLY the
    table (invalid, no build), each partition's part is built concurrently and
    attached, and the last attachment makes the whole index valid."""
    kind, partitions = _partitions(conn, table)
    schema = table.partition(".")[0]
    if kind != "p":
        conn.execute(sql.SQL("CREATE INDEX CONCURRENTLY {} ON {} ({})").format(sql.Identifier(name), qualified(table), columns))
        return
    conn.execute(sql.SQL("CREATE INDEX {} ON ONLY {} ({})").format(sql.Identifier(name), qualified(table), columns))
    for partition in partitions:
        part = partition_index_name(name, partition)
        log.info("Building %s on partition %s", part, partition)
        create_index(conn, part, partition, columns, log)
        conn.execute(
            sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(
                sql.Identifier(schema, name), sql.Identifier(partition.partition(".")[0], part)
            )
        )


@task(name="create-index-concurrently", cache_policy=NO_CACHE)
def create_index_concurrently(dsn: str, wanted: RecommendedIndex, connect_timeout: int) -> str:
    """CREATE INDEX CONCURRENTLY (no write lock on the table; on a partitioned table,
    partition by partition). A failure leaves an INVALID index, which the next run reports."""
    columns = sql.SQL(", ").join(
        sql.SQL("{} DESC").format(sql.Identifier(c.removesuffix(" DESC"))) if c.endswith(" DESC") else sql.Identifier(c)
        for c in wanted.columns
    )
    logger = get_run_logger()
    logger.warning("Creating index %s on %s (%s) concurrently", wanted.name, wanted.table, wanted.ddl_columns())
    with postgres.session(dsn, application="runbook db-maintenance", connect_timeout=connect_timeout, statement_timeout_s=None, autocommit=True) as conn:
        create_index(conn, wanted.name, wanted.table, columns, logger)
    return wanted.name
