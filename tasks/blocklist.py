"""The blocklist the platform reads (block-ip / unblock-ip, §5.4), in the platform's
database: RUNBOOK_SECURITY__BLOCK__TABLE (``ip_blocklist``) in
RUNBOOK_SECURITY__BLOCK__TABLE_SCHEMA (unset: the security state's schema), created if
missing. Every name is built with psycopg.sql.

One row per block. A block is active while ``lifted_at`` is NULL, and at most one
active row exists per network (a partial unique index), so blocking twice can never
make a second row. The platform refuses an address when an active row's network holds
it and ``expires_at`` is NULL (permanent) or still ahead::

    SELECT 1 FROM runbook_security.ip_blocklist
     WHERE network >>= $1::inet AND lifted_at IS NULL AND (expires_at IS NULL OR expires_at > now())

An expired block is lifted by ``lift_expired_blocks`` (security-watch runs it every 5
minutes): its Cloudflare rule deleted, the row marked lifted (``lift_reason``
'expired'), the audit told. A lifted row is never made active again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from psycopg import sql
from psycopg.rows import dict_row

from runbook.errors import ConfigError, RunbookError, TransientError
from runbook.retry import RETRIES, backoff, retry_transient
from runbook.security.actions import Preview
from runbook.security.blocking import jsonable, block_preview, cloudflare_configuration, enforcement_problems, no_active_block, unblock_preview
from runbook.security.targets import BROADEST, Network
from runbook.settings import RunbookSettings
from tasks import secstate
from tasks.cloudflare import CloudflareScope, delete_rule, find_rules, get_rule, resolve_cloudflare
from tasks.secstate import SecurityState

DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {t} (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    network             cidr NOT NULL,
    reason              text NOT NULL,
    created_by          text NOT NULL,
    created_at          timestamptz NOT NULL,
    expires_at          timestamptz,
    lifted_at           timestamptz,
    lifted_by           text,
    lift_reason         text,
    cloudflare_rule_id  text,
    run_id              text,
    CHECK (expires_at IS NULL OR expires_at > created_at),
    CHECK ((lifted_at IS NULL) = (lifted_by IS NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS {one_active} ON {t} (network) WHERE lifted_at IS NULL;
CREATE INDEX IF NOT EXISTS {expiring} ON {t} (expires_at) WHERE lifted_at IS NULL;
"""
EXPIRY_ACTOR = "runbook (expiry)"


@dataclass
class Blocklist:
    """Where the blocklist is: the security state (connection, audit) and the table."""

    state: SecurityState
    schema: str
    table: str

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def qualified(self) -> sql.Composed:
        return secstate.q(self.schema, self.table)

    def connect(self, autocommit: bool = True) -> psycopg.Connection[Any]:
        """A connection to the platform's database, with the audit and this table in place."""
        conn = self.state.connect(autocommit=autocommit)
        key = f"blocklist:{self.schema}.{self.table}"
        if key not in self.state.ready:
            ensure_table(conn, self)
            self.state.ready.add(key)
        if not autocommit:
            conn.commit()
        return conn


def blocklist(settings: RunbookSettings, state: SecurityState) -> Blocklist:
    block = settings.security.block
    return Blocklist(state=state, schema=block.table_schema or state.schema, table=block.table)


def ensure_table(conn: psycopg.Connection[Any], bl: Blocklist) -> None:
    """Create the table and its indexes if missing (idempotent, under an advisory lock)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"runbook-security-ddl:{bl.schema}",))
        conn.execute(sql.SQL(DDL).format(s=sql.Identifier(bl.schema), t=bl.qualified,
                                         one_active=sql.Identifier(f"{bl.table}_one_active"),
                                         expiring=sql.Identifier(f"{bl.table}_expiring")))


def _rows(conn: psycopg.Connection[Any], query: sql.Composable, args: tuple[Any, ...]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, args)
        return [{**row, "network": str(row["network"])} for row in cur.fetchall()] if cur.description else []


def active_block(conn: psycopg.Connection[Any], bl: Blocklist, network: Network) -> dict[str, Any] | None:
    """The network's active row (lifted_at NULL), expired or not; None if there is none."""
    rows = _rows(conn, sql.SQL("SELECT * FROM {} WHERE network = %s::cidr AND lifted_at IS NULL").format(bl.qualified), (str(network),))
    return rows[0] if rows else None


def read_block(conn: psycopg.Connection[Any], bl: Blocklist, block_id: int) -> dict[str, Any] | None:
    rows = _rows(conn, sql.SQL("SELECT * FROM {} WHERE id = %s").format(bl.qualified), (block_id,))
    return rows[0] if rows else None


def blocks_of(conn: psycopg.Connection[Any], bl: Blocklist, network: Network) -> list[dict[str, Any]]:
    """Every row of exactly this network, oldest first (the history of its blocks)."""
    return _rows(conn, sql.SQL("SELECT * FROM {} WHERE network = %s::cidr ORDER BY id").format(bl.qualified), (str(network),))


def nearby_blocks(conn: psycopg.Connection[Any], bl: Blocklist, network: Network, limit: int = 10) -> list[dict[str, Any]]:
    """Active blocks overlapping the /16 (IPv4) or /32 (IPv6) around ``network``."""
    around = network.supernet(new_prefix=min(BROADEST[network.version], network.prefixlen))
    return _rows(conn, sql.SQL("SELECT * FROM {} WHERE lifted_at IS NULL AND network && %s::cidr ORDER BY network LIMIT %s").format(
        bl.qualified), (str(around), limit))


def insert_block(conn: psycopg.Connection[Any], bl: Blocklist, *, network: Network, reason: str, by: str, at: datetime,
                 expires_at: datetime | None, rule_id: str | None, run_id: str | None) -> dict[str, Any] | None:
    """The new active row; None when the network already has one (it stays as it is)."""
    rows = _rows(conn, sql.SQL(
        "INSERT INTO {} (network, reason, created_by, created_at, expires_at, cloudflare_rule_id, run_id)"
        " VALUES (%s::cidr, %s, %s, %s, %s, %s, %s) ON CONFLICT (network) WHERE lifted_at IS NULL DO NOTHING RETURNING *"
    ).format(bl.qualified), (str(network), reason, by, at, expires_at, rule_id, run_id))
    return rows[0] if rows else None


def mark_lifted(conn: psycopg.Connection[Any], bl: Blocklist, block_id: int, *, at: datetime, by: str, reason: str) -> dict[str, Any] | None:
    """Lift an active row; None when it was lifted already (by someone else: it stays so)."""
    rows = _rows(conn, sql.SQL(
        "UPDATE {} SET lifted_at = %s, lifted_by = %s, lift_reason = %s WHERE id = %s AND lifted_at IS NULL RETURNING *"
    ).format(bl.qualified), (at, by, reason, block_id))
    return rows[0] if rows else None


def expired_blocks(conn: psycopg.Connection[Any], bl: Blocklist, now: datetime) -> list[dict[str, Any]]:
    """Active rows whose expiry has passed."""
    return _rows(conn, sql.SQL("SELECT * FROM {} WHERE lifted_at IS NULL AND expires_at <= %s ORDER BY expires_at, id").format(
        bl.qualified), (now,))


def _run_id() -> str | None:
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


def lift_block(bl: Blocklist, scope: CloudflareScope | None, row: dict[str, Any], *, now: datetime) -> dict[str, Any] | None:
    """Lift one expired block: delete its Cloudflare rule (already gone is fine), then
    mark the row lifted and audit phase 'expired', in one transaction. None when
    someone else lifted it meanwhile."""
    rule_id = row.get("cloudflare_rule_id")
    if rule_id:
        if scope is None:
            raise RunbookError(f"block #{row['id']} of {row['network']} has the Cloudflare rule {rule_id}, but Cloudflare is not "
                               "configured (RUNBOOK_SECURITY__BLOCK__CLOUDFLARE__*): not lifted, so the table and Cloudflare agree")
        delete_rule(scope.client(), scope, rule_id)
    with bl.connect(autocommit=False) as conn, conn.transaction():
        lifted = mark_lifted(conn, bl, row["id"], at=now, by=EXPIRY_ACTOR, reason="expired")
        if lifted is not None:
            secstate.record(conn, bl.state.schema, at=now, actor=EXPIRY_ACTOR, action="block-ip", target=row["network"],
                            reason=f"the block expired at {row['expires_at'].isoformat(timespec='seconds')}", phase="expired",
                            run_id=_run_id(), before={"active_block": jsonable(row)}, after={"lifted_block": jsonable(lifted)})
    return lifted


def lift_expired(bl: Blocklist, scope: CloudflareScope | None, now: datetime) -> dict[str, Any]:
    """Lift every block whose expiry has passed. One failing block does not stop the
    others; a transient failure is raised at the end (the whole is idempotent: a retry
    finds only what is still active), a final one is reported in ``failed``."""
    with bl.connect() as conn:
        due = expired_blocks(conn, bl, now)
    lifted, failed, transient = [], [], False
    for row in due:
        try:
            done = lift_block(bl, scope, row, now=now)
        except RunbookError as err:
            transient = transient or isinstance(err, TransientError)
            failed.append({"id": row["id"], "network": row["network"], "problem": str(err).splitlines()[0]})
            continue
        if done is not None:
            lifted.append(jsonable(done))
    if transient:
        raise TransientError(f"{len(failed)} expired block(s) not lifted: " + "; ".join(f["problem"] for f in failed))
    return {"due": len(due), "lifted": lifted, "failed": failed}


@task(name="lift-expired-blocks", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def lift_expired_blocks(state: SecurityState, settings: RunbookSettings, now: datetime) -> dict[str, Any]:
    """Lift every block-ip block past its expiry (§5.4): its Cloudflare rule deleted, the
    row marked lifted ('expired'), audited as phase 'expired'. Safe to run from several
    flows at once and as often as wanted (security-watch: every 5 minutes)."""
    bl = blocklist(settings, state)
    scope = resolve_cloudflare(settings.security.block.cloudflare)
    result = lift_expired(bl, scope, now)
    logger = get_run_logger()
    for row in result["lifted"]:
        logger.info("Block #%s of %s expired at %s: lifted", row["id"], row["network"], row["expires_at"])
    for problem in result["failed"]:
        logger.error("Expired block #%s of %s not lifted: %s", problem["id"], problem["network"], problem["problem"])
    return result


_RETRY: dict[str, Any] = dict(retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)


@task(name="read-block", **_RETRY)
def read_active_block(bl: Blocklist, network: Network) -> dict[str, Any] | None:
    """The network's active block in the blocklist table, if any (reads only)."""
    with bl.connect() as conn:
        return active_block(conn, bl, network)


@task(name="read-nearby-blocks", **_RETRY)
def read_nearby_blocks(bl: Blocklist, network: Network) -> list[dict[str, Any]]:
    """Active blocks around the network (what unblock-ip lists when it is not blocked)."""
    with bl.connect() as conn:
        return nearby_blocks(conn, bl, network)


@task(name="read-block-by-id", **_RETRY)
def read_block_task(bl: Blocklist, block_id: int) -> dict[str, Any] | None:
    """One row of the blocklist table, read back by its id."""
    with bl.connect() as conn:
        return read_block(conn, bl, block_id)


@task(name="insert-block", **_RETRY)
def insert_block_task(bl: Blocklist, **values: Any) -> dict[str, Any] | None:
    """Insert the active row of a block (None: the network already has one)."""
    with bl.connect() as conn:
        row = insert_block(conn, bl, **values)
    if row is not None:
        get_run_logger().info("%s: block #%s of %s inserted", bl.name, row["id"], row["network"])
    return row


@task(name="lift-block", **_RETRY)
def mark_lifted_task(bl: Blocklist, block_id: int, **values: Any) -> dict[str, Any] | None:
    """Mark one block lifted (None: it was lifted already)."""
    with bl.connect() as conn:
        row = mark_lifted(conn, bl, block_id, **values)
    if row is not None:
        get_run_logger().info("%s: block #%s of %s lifted", bl.name, row["id"], row["network"])
    return row


@task(name="preview-block", **_RETRY)
def preview_block(bl: Blocklist, scope: CloudflareScope | None, network: Network, *, now: datetime, expires_at: datetime | None,
                  overridden: list[str]) -> Preview:
    """What block-ip will change (reads only): the network's active block, the rules
    Cloudflare already has for it."""
    with bl.connect() as conn:
        active = active_block(conn, bl, network)
    rules = find_rules(scope.client(), scope, cloudflare_configuration(network)) if scope is not None else []
    return block_preview(network, now=now, expires_at=expires_at, active=active, table=bl.name,
                         cloudflare=scope.label if scope else None, existing_rules=rules, overridden=overridden)


@task(name="preview-unblock", **_RETRY)
def preview_unblock(bl: Blocklist, scope: CloudflareScope | None, network: Network) -> Preview:
    """What unblock-ip will change (reads only). A network without an active block is a
    ConfigError naming it and what is blocked near it; a block with a Cloudflare rule
    while Cloudflare is not configured is refused (it would be lifted only in half)."""
    with bl.connect() as conn:
        active = active_block(conn, bl, network)
        nearby = [] if active is not None else nearby_blocks(conn, bl, network)
    if active is None:
        raise no_active_block(network, nearby)
    if active["cloudflare_rule_id"] and scope is None:
        raise ConfigError(f"RUNBOOK_SECURITY__BLOCK__CLOUDFLARE__ZONE_ID (or ACCOUNT_ID) and API_TOKEN: block #{active['id']} of "
                          f"{network} has the Cloudflare rule {active['cloudflare_rule_id']}, and Cloudflare is not configured "
                          "to delete it: nothing was changed")
    return unblock_preview(network, active=active, table=bl.name, cloudflare=scope.label if scope else None)


@task(name="read-back-enforcement", **_RETRY)
def read_enforcement(bl: Blocklist, scope: CloudflareScope | None, network: Network, block_id: int | None,
                     rule_id: str | None, *, want_active: bool) -> list[str]:
    """Read back every enforcement point of one block, the table's row and the
    Cloudflare rule; each that does not hold what the action left (empty: all hold)."""
    with bl.connect() as conn:
        row = read_block(conn, bl, block_id) if block_id is not None else active_block(conn, bl, network)
    rule = get_rule(scope.client(), scope, rule_id) if scope is not None and rule_id else None
    problems = enforcement_problems(network=network, row=row, want_active=want_active, rule_id=rule_id, rule=rule,
                                    cloudflare=scope.label if scope and (rule_id or want_active) else None, table=bl.name)
    logger = get_run_logger()
    logger.info("Read back %s: %s", network, "; ".join(problems) if problems else
                f"{bl.name} row {'active' if want_active else 'lifted'}" + (f", Cloudflare rule {rule_id} "
                f"{'present' if want_active else 'gone'}" if rule_id else ""))
    return problems
