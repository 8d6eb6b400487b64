"""Database access of the application roles (§5.4 restrict database access): read the
roles and the database's ACL, restrict them (REVOKE CONNECT, NOLOGIN, terminate their
sessions), record the exact previous state, and put it back.

Every change of one restriction or restore commits in one transaction with its record
in ``{schema}.db_access``: there is never a restriction without the snapshot that
undoes it. All names go through psycopg.sql.Identifier. Plain functions take the
connection first; the @task wrappers retry only transient errors, and never the steps
that change something.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import psycopg
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from runbook.checks import CheckResult
from runbook.errors import ConfigError
from runbook.retry import RETRIES, backoff, retry_transient
from runbook.security.actions import Preview
from runbook.security.dbaccess import (
    AclItem,
    Privilege,
    RoleState,
    acl_text,
    blocked_grantees,
    foreign_grantors,
    plan_acl,
    refusals,
    snapshot,
)
from runbook.settings import DbAccessSettings
from tasks.postgres.connection import translate_pg_error
from tasks.secstate import SecurityState, q

DDL = """
CREATE TABLE IF NOT EXISTS {s}.db_access (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL,
    database     text NOT NULL,
    roles        text[] NOT NULL,
    actor        text NOT NULL,
    before       jsonb NOT NULL,
    after        jsonb,
    restored_at  timestamptz,
    restored_by  text
);
"""
ROLES_SETTING = "RUNBOOK_SECURITY__DB_ACCESS__ROLES"
TERMINATE_WAIT_MS = 5000  # pg_terminate_backend waits this long for each session to end


def feature() -> tuple[str, str]:
    return ("db_access", DDL)


# --------------------------------------------------------------------------- reading


def read_acl(conn: psycopg.Connection[Any]) -> tuple[str, str, list[str] | None, list[AclItem]]:
    """The platform database's name, owner, ``datacl`` as text (None: NULL, the default)
    and its effective items in their order (the default's when NULL)."""
    row = conn.execute(
        "SELECT d.datname, o.rolname, d.datacl::text[] FROM pg_database d JOIN pg_roles o ON o.oid = d.datdba"
        " WHERE d.datname = current_database()"
    ).fetchone()
    assert row is not None
    database, owner, datacl = row
    rows = conn.execute(
        "SELECT u.n, coalesce(ge.rolname, '') AS grantee, a.grantee = 0 AS public, gr.rolname, a.privilege_type, a.is_grantable"
        " FROM pg_database d"
        " CROSS JOIN LATERAL unnest(coalesce(d.datacl, acldefault('d', d.datdba))) WITH ORDINALITY AS u(item, n)"
        " CROSS JOIN LATERAL aclexplode(ARRAY[u.item]) a"
        " LEFT JOIN pg_roles ge ON ge.oid = a.grantee JOIN pg_roles gr ON gr.oid = a.grantor"
        " WHERE d.datname = current_database() ORDER BY u.n"
    ).fetchall()
    items: dict[int, AclItem] = {}
    for n, grantee, public, grantor, privilege, grantable in rows:
        item = items.setdefault(n, AclItem(grantee=None if public else grantee, grantor=grantor, privileges=[]))
        item.privileges.append(Privilege(name=privilege, grantable=grantable))
    return database, owner, (list(datacl) if datacl is not None else None), list(items.values())


def read_roles(conn: psycopg.Connection[Any], names: list[str]) -> list[RoleState]:
    """Each named role as the catalog has it (``exists`` False when it has none)."""
    states = []
    for name in names:
        row = conn.execute(
            "SELECT r.rolsuper, r.rolcanlogin, has_database_privilege(r.oid, current_database(), 'CONNECT'),"
            " ARRAY(SELECT g.rolname::text FROM pg_roles g WHERE g.oid <> r.oid AND pg_has_role(r.oid, g.oid, 'USAGE')"
            "       ORDER BY g.rolname COLLATE \"C\"),"
            " (SELECT count(*) FROM pg_stat_activity s WHERE s.usesysid = r.oid AND s.datname = current_database()"
            "  AND s.pid <> pg_backend_pid())"
            " FROM pg_roles r WHERE r.rolname = %s",
            (name,),
        ).fetchone()
        if row is None:
            states.append(RoleState(name=name, exists=False))
            continue
        superuser, login, connect, groups, sessions = row
        states.append(RoleState(name=name, superuser=superuser, can_login=login, can_connect=connect,
                                inherits_from=list(groups), connections=int(sessions)))
    return states


def own_roles(conn: psycopg.Connection[Any]) -> set[str]:
    """runbook's own roles (current_user, session_user) and every role they are members
    of, read from pg_auth_members (pg_has_role calls a superuser a member of every role)."""
    rows = conn.execute(
        "WITH RECURSIVE mine(oid) AS ("
        "  SELECT oid FROM pg_roles WHERE rolname IN (current_user, session_user)"
        "  UNION SELECT m.roleid FROM pg_auth_members m JOIN mine ON m.member = mine.oid)"
        " SELECT r.rolname FROM pg_roles r JOIN mine USING (oid)"
    ).fetchall()
    return {r[0] for r in rows}


def privileges_of_runbook(conn: psycopg.Connection[Any]) -> tuple[bool, bool, bool]:
    """(superuser, acts as the database's owner, may ALTER ROLE) of runbook's own role."""
    row = conn.execute(
        "SELECT r.rolsuper, r.rolsuper OR pg_has_role(current_user, d.datdba, 'USAGE'), r.rolsuper OR r.rolcreaterole"
        " FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()"
    ).fetchone()
    assert row is not None
    return bool(row[0]), bool(row[1]), bool(row[2])


def login_roles_with_connect(conn: psycopg.Connection[Any]) -> list[str]:
    """Every role that can log in and connect to this database now (superusers and
    PostgreSQL's own pg_ roles aside: they need no grant)."""
    rows = conn.execute(
        "SELECT rolname FROM pg_roles WHERE rolcanlogin AND NOT rolsuper AND rolname !~ '^pg_'"
        " AND has_database_privilege(oid, current_database(), 'CONNECT') ORDER BY rolname COLLATE \"C\""
    ).fetchall()
    return [r[0] for r in rows]


def open_snapshot(conn: psycopg.Connection[Any], schema: str, database: str) -> dict[str, Any] | None:
    """The newest restriction of ``database`` not restored yet, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {} WHERE database = %s AND restored_at IS NULL ORDER BY id DESC LIMIT 1").format(
            q(schema, "db_access")), (database,))
        return cur.fetchone()


# --------------------------------------------------------------------------- the plans


@dataclass
class Restriction:
    """What restrict-db-access will do, computed from the catalog (the preview shows it)."""

    database: str
    owner: str
    datacl: list[str] | None
    items: list[AclItem]
    planned: list[AclItem] | None  # the ACL after; None: the ACL is not touched (nologin)
    roles: list[RoleState]
    mode: str
    terminate: bool
    kept: list[str]  # roles granted CONNECT explicitly so that they keep it
    blocked_groups: list[str]  # groups the roles inherit CONNECT from, which lose it too
    others: list[str]  # the other login roles that can connect now (and still can after)

    def before(self) -> dict[str, Any]:
        return snapshot(database=self.database, owner=self.owner, datacl=self.datacl, items=self.items, roles=self.roles,
                        mode=self.mode, terminate=self.terminate, others_connect=self.others)

    @property
    def target(self) -> str:
        return f"{self.database}:{','.join(sorted(r.name for r in self.roles))}"


def plan_restriction(conn: psycopg.Connection[Any], access: DbAccessSettings) -> Restriction:
    """Read everything the restriction touches and decide it; ConfigError (nothing was
    touched) for a role that may not be restricted or an ACL runbook cannot write back."""
    if not access.roles:
        raise ConfigError(f"{ROLES_SETTING}: no roles to restrict; set the application roles, e.g. '[\"platform_app\"]'")
    database, owner, datacl, items = read_acl(conn)
    roles = read_roles(conn, access.roles)
    problems = refusals(roles, own_roles=own_roles(conn), owner=owner)
    if problems:
        raise ConfigError(f"{ROLES_SETTING}: " + "; ".join(problems) + ": nothing was changed")
    superuser, acts_as_owner, alters_roles = privileges_of_runbook(conn)
    revoke = access.mode in ("revoke-connect", "both")
    if revoke and not acts_as_owner:
        raise ConfigError(f"{ROLES_SETTING}: runbook's role is neither a superuser nor the owner {owner!r} of {database!r}: "
                          "it cannot change who may connect; nothing was changed")
    if access.mode in ("nologin", "both") and not alters_roles:
        raise ConfigError(f"{ROLES_SETTING}: runbook's role may not ALTER ROLE (needs CREATEROLE or a superuser); nothing was changed")
    planned, kept, groups = None, [], []
    others = [r for r in login_roles_with_connect(conn) if r not in {role.name for role in roles}]
    if revoke:
        foreign = foreign_grantors(items, owner)
        if foreign:
            raise ConfigError(f"{ROLES_SETTING}: the ACL of {database!r} holds items granted by another role than its owner "
                              f"({', '.join(foreign)}), which runbook could not restore exactly; nothing was changed")
        blocked = blocked_grantees(roles)
        mine = own_roles(conn)
        if blocked & mine:
            raise ConfigError(f"{ROLES_SETTING}: the roles inherit CONNECT from runbook's own role(s) "
                              f"{', '.join(sorted(blocked & mine))}; restricting them would lock out the team; nothing was changed")
        planned = plan_acl(items, blocked=blocked, keep=others, owner=owner)
        direct = {i.grantee for i in items if i.has("CONNECT")}
        kept = [i.grantee for i in planned if i.grantee is not None and i.grantee not in direct]
        groups = sorted(g for g in blocked - {r.name for r in roles} if any(i.grantee == g and i.has("CONNECT") for i in items))
    return Restriction(database=database, owner=owner, datacl=datacl, items=items, planned=planned, roles=roles,
                       mode=access.mode, terminate=access.terminate, kept=kept, blocked_groups=groups, others=others)


def restriction_preview(plan: Restriction) -> Preview:
    """The preview of a restriction: the roles, whether each can log in and connect now,
    the ACL before and after, the sessions that will be terminated, the undo."""
    revoke, nologin = plan.planned is not None, plan.mode in ("nologin", "both")
    changes, warnings = [], []
    if revoke:
        changes.append(f"datacl of {plan.database!r} before: {acl_text(None) if plan.datacl is None else acl_text(plan.items)}")
        changes.append(f"datacl after: {acl_text(plan.planned)}")
        if plan.kept:
            changes.append(f"GRANT CONNECT to the {len(plan.kept)} login role(s) that had it through PUBLIC or a group: "
                           + ", ".join(plan.kept))
        if any(i.grantee is None and i.has("CONNECT") for i in plan.items):
            warnings.append("PUBLIC loses CONNECT: a role created before restore-db-access cannot connect until granted")
        for group in plan.blocked_groups:
            warnings.append(f"group {group!r} loses CONNECT too: the restricted roles inherit it from there")
    for role in plan.roles:
        if nologin and role.can_login:
            changes.append(f"ALTER ROLE {role.name} NOLOGIN (cluster-wide)")
        if revoke and role.can_connect:
            changes.append(f"{role.name} loses CONNECT on {plan.database!r}")
        if plan.terminate and role.connections:
            changes.append(f"terminate the {role.connections} open connection(s) of {role.name} to {plan.database!r}")
    restricted = all((not revoke or not r.can_connect) and (not nologin or not r.can_login) for r in plan.roles)
    sessions = sum(r.connections for r in plan.roles) if plan.terminate else 0
    return Preview(
        action="restrict-db-access",
        target=plan.target,
        summary=f"{plan.mode} for {len(plan.roles)} role(s) on {plan.database!r}"
        + (f", terminating {sessions} connection(s)" if sessions else ""),
        changes=changes,
        counts={"roles": len(plan.roles), "connections to terminate": sessions, "roles granted CONNECT explicitly": len(plan.kept)},
        samples=[{"role": r.name, "rolcanlogin": r.can_login, "can connect": r.can_connect, "open connections": r.connections,
                  "inherits from": ", ".join(r.inherits_from)} for r in plan.roles],
        warnings=warnings,
        undo="runbook restore-db-access --by NAME --reason TEXT --confirm",
        noop=restricted and sessions == 0,
        before=plan.before(),
    )


# --------------------------------------------------------------------------- writing


def _grantee(name: str | None) -> sql.Composable:
    return sql.SQL("PUBLIC") if name is None else sql.Identifier(name)


def write_acl(conn: psycopg.Connection[Any], database: str, current: list[AclItem], target: list[AclItem]) -> None:
    """Make the ACL exactly ``target``, item for item and in order: every current
    grantee's privileges are revoked (leaving an empty ACL), then each target item is
    granted in turn (a GRANT appends its grantee). Inside the caller's transaction, so
    nobody sees the empty ACL."""
    db = sql.Identifier(database)
    for grantee in dict.fromkeys(i.grantee for i in current):
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(db, _grantee(grantee)))
    for item in target:
        for grantable in (False, True):
            privileges = [p.name for p in item.privileges if p.grantable is grantable]
            if privileges:
                conn.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                    sql.SQL(", ").join(sql.SQL(p) for p in privileges), db, _grantee(item.grantee),
                    sql.SQL(" WITH GRANT OPTION" if grantable else "")))


def _lock(conn: psycopg.Connection[Any]) -> None:
    """One restriction or restore of this database at a time (until the transaction ends)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('runbook-db-access:' || current_database()))")


def terminate_sessions(conn: psycopg.Connection[Any], roles: list[str]) -> dict[str, int]:
    """End the roles' sessions on this database (waiting for each to end); how many per role."""
    rows = conn.execute(
        "SELECT usename::text, count(*) FILTER (WHERE pg_terminate_backend(pid, %s)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND usename::text = ANY(%s) AND pid <> pg_backend_pid() GROUP BY usename",
        (TERMINATE_WAIT_MS, roles),
    ).fetchall()
    return {name: 0 for name in roles} | {r[0]: int(r[1]) for r in rows}


def apply_restriction(conn: psycopg.Connection[Any], schema: str, access: DbAccessSettings, preview: Preview, *,
                      actor: str) -> dict[str, Any]:
    """Restrict the roles exactly as previewed, with the snapshot recorded in the same
    transaction; then terminate their sessions. Refuses (nothing changed) when the
    catalog changed since the preview."""
    try:
        with conn.transaction():
            _lock(conn)
            plan = plan_restriction(conn, access)
            if plan.before() != preview.before:
                raise ConfigError("the roles or the ACL changed since the preview: nothing was changed; run the action again")
            if open_snapshot(conn, schema, plan.database) is not None:
                raise ConfigError(f"{plan.database!r} is restricted already: run restore-db-access first; nothing was changed")
            row = conn.execute(sql.SQL("INSERT INTO {} (at, database, roles, actor, before) VALUES (%s, %s, %s, %s, %s) RETURNING id")
                               .format(q(schema, "db_access")),
                               (datetime.now(timezone.utc), plan.database, [r.name for r in plan.roles], actor, Jsonb(plan.before()))
                               ).fetchone()
            assert row is not None
            if plan.planned is not None:
                write_acl(conn, plan.database, plan.items, plan.planned)
            if plan.mode in ("nologin", "both"):
                for role in plan.roles:
                    if role.can_login:
                        conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role.name)))
            after = current_state(conn, [r.name for r in plan.roles])
            conn.execute(sql.SQL("UPDATE {} SET after = %s WHERE id = %s").format(q(schema, "db_access")), (Jsonb(after), row[0]))
    except psycopg.Error as err:
        raise translate_pg_error(err, "", "restrict-db-access") from None
    terminated = terminate_sessions(conn, [r.name for r in plan.roles]) if plan.terminate else {}
    return {**after, "snapshot": int(row[0]), "terminated": terminated}


def current_state(conn: psycopg.Connection[Any], roles: list[str]) -> dict[str, Any]:
    """The state a restriction or restore is judged by: datacl as text and each role's rolcanlogin."""
    _, _, datacl, _ = read_acl(conn)
    logins = dict(conn.execute("SELECT rolname::text, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s)", (roles,)).fetchall())
    return {"datacl": datacl, "roles": {name: {"rolcanlogin": logins.get(name)} for name in roles}}


def verify_restriction(conn: psycopg.Connection[Any], preview: Preview) -> list[CheckResult]:
    """Read back every enforcement point: each role's rolcanlogin and CONNECT, the ACL's
    items, no session left, and runbook itself still able to connect."""
    before = preview.before
    revoke, nologin = before["mode"] in ("revoke-connect", "both"), before["mode"] in ("nologin", "both")
    checks = []
    for role in read_roles(conn, list(before["roles"])):
        if nologin:
            checks.append(CheckResult(name=f"nologin:{role.name}", ok=not role.can_login, detail=f"rolcanlogin={role.can_login}"))
        if revoke:
            checks.append(CheckResult(name=f"connect:{role.name}", ok=not role.can_connect, detail=f"CONNECT={role.can_connect}"))
        if before["terminate"]:
            checks.append(CheckResult(name=f"sessions:{role.name}", ok=role.connections == 0, detail=f"{role.connections} open"))
    if revoke:
        still = set(login_roles_with_connect(conn))
        lost = [r for r in before["others_connect"] if r not in still]
        checks.append(CheckResult(name="others-keep-connect", ok=not lost,
                                  detail=f"lost CONNECT: {', '.join(lost)}" if lost else "every other login role keeps CONNECT"))
    row = conn.execute("SELECT has_database_privilege(current_user, current_database(), 'CONNECT')").fetchone()
    checks.append(CheckResult(name="runbook-connects", ok=bool(row and row[0]), detail="runbook's own role keeps CONNECT"))
    return checks


# --------------------------------------------------------------------------- restoring


@dataclass
class Restore:
    """What restore-db-access will put back: the newest unrestored snapshot."""

    snapshot_id: int
    recorded: dict[str, Any]  # the snapshot's before: the state to restore
    current: dict[str, Any]  # the state now (the audit's before of the restore)
    items: list[AclItem]  # the ACL now
    superuser: bool

    @property
    def target(self) -> str:
        return f"{self.recorded['database']}:{','.join(sorted(self.recorded['roles']))}"


def plan_restore(conn: psycopg.Connection[Any], schema: str) -> Restore:
    """The newest unrestored snapshot of this database and the state now; ConfigError
    (nothing touched) when there is none or it cannot be put back exactly."""
    database, owner, _, items = read_acl(conn)
    found = open_snapshot(conn, schema, database)
    if found is None:
        raise ConfigError(f"restore-db-access: {database!r} has no restriction to restore (none recorded, or all restored already)")
    recorded = found["before"]
    roles = list(recorded["roles"])
    exists = {r[0] for r in conn.execute("SELECT rolname::text FROM pg_roles").fetchall()}
    missing = sorted({*roles, *(i["grantee"] for i in recorded["acl"] if i["grantee"] is not None)} - exists)
    if missing:
        raise ConfigError(f"restore-db-access: role(s) {', '.join(missing)} of the recorded state no longer exist; "
                          "nothing was changed (restore by hand from the audit's before)")
    if recorded["owner"] != owner or foreign_grantors(items, owner):
        raise ConfigError(f"restore-db-access: the owner or grantors of {database!r} changed since the restriction; nothing was changed")
    superuser, _, _ = privileges_of_runbook(conn)
    return Restore(snapshot_id=int(found["id"]), recorded=recorded, current=current_state(conn, roles), items=items, superuser=superuser)


def restore_preview(plan: Restore) -> Preview:
    recorded, current = plan.recorded, plan.current
    acl = [AclItem.model_validate(i) for i in recorded["acl"]]
    changes = []
    if recorded["mode"] in ("revoke-connect", "both"):
        changes.append(f"datacl now: {acl_text(plan.items)}")
        changes.append(f"datacl back to: {acl_text(None) if recorded['datacl'] is None else acl_text(acl)}")
    for role, state in recorded["roles"].items():
        now = current["roles"][role]["rolcanlogin"]
        if now != state["rolcanlogin"]:
            changes.append(f"ALTER ROLE {role} {'LOGIN' if state['rolcanlogin'] else 'NOLOGIN'} (rolcanlogin {now} -> {state['rolcanlogin']})")
    warnings = []
    if recorded["datacl"] is None and recorded["mode"] != "nologin" and not plan.superuser:
        warnings.append("datacl was NULL (the default): without a superuser it comes back as the same default written out")
    return Preview(
        action="restore-db-access", target=plan.target,
        summary=f"put back the access of {len(recorded['roles'])} role(s) to {recorded['database']!r} as recorded by restriction #{plan.snapshot_id}",
        changes=changes, counts={"roles": len(recorded["roles"])}, warnings=warnings,
        undo="runbook restrict-db-access --by NAME --reason TEXT --confirm",
        before={**current, "snapshot": plan.snapshot_id},
    )


def apply_restore(conn: psycopg.Connection[Any], schema: str, preview: Preview, *, actor: str) -> dict[str, Any]:
    """Put back exactly the recorded state, and mark the snapshot restored, in one transaction."""
    try:
        with conn.transaction():
            _lock(conn)
            plan = plan_restore(conn, schema)
            if {**plan.current, "snapshot": plan.snapshot_id} != preview.before:
                raise ConfigError("the roles or the ACL changed since the preview: nothing was changed; run the action again")
            recorded = plan.recorded
            if recorded["mode"] in ("revoke-connect", "both"):
                write_acl(conn, recorded["database"], plan.items, [AclItem.model_validate(i) for i in recorded["acl"]])
                if recorded["datacl"] is None and plan.superuser:
                    # the items are the default's now (PUBLIC and the owner, which pg_shdepend
                    # does not track): NULL again leaves no dependency behind
                    conn.execute("UPDATE pg_catalog.pg_database SET datacl = NULL WHERE datname = current_database()"
                                 " AND datacl::text[] = acldefault('d', datdba)::text[]")
            for role, state in recorded["roles"].items():
                conn.execute(sql.SQL("ALTER ROLE {} {}").format(sql.Identifier(role), sql.SQL("LOGIN" if state["rolcanlogin"] else "NOLOGIN")))
            after = current_state(conn, list(recorded["roles"]))
            conn.execute(sql.SQL("UPDATE {} SET restored_at = %s, restored_by = %s WHERE id = %s").format(q(schema, "db_access")),
                         (datetime.now(timezone.utc), actor, plan.snapshot_id))
    except psycopg.Error as err:
        raise translate_pg_error(err, "", "restore-db-access") from None
    return {**after, "snapshot": plan.snapshot_id}


def verify_restore(conn: psycopg.Connection[Any], recorded: dict[str, Any]) -> list[CheckResult]:
    """Read back pg_database and pg_roles against the recorded state."""
    database, owner, datacl, items = read_acl(conn)
    checks = []
    if recorded["mode"] in ("revoke-connect", "both"):
        if recorded["datacl"] is None:
            default = [i.model_dump() for i in items] == recorded["acl"]
            ok = datacl is None or default
            detail = "NULL, as recorded" if datacl is None else (
                "the default written out (NULL needs a superuser)" if default else f"{datacl} is not the default")
        else:
            ok, detail = datacl == recorded["datacl"], f"{datacl} (recorded {recorded['datacl']})"
        checks.append(CheckResult(name="datacl", ok=ok, detail=detail))
    logins = dict(conn.execute("SELECT rolname::text, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s)",
                               (list(recorded["roles"]),)).fetchall())
    for role, state in recorded["roles"].items():
        checks.append(CheckResult(name=f"rolcanlogin:{role}", ok=logins.get(role) == state["rolcanlogin"],
                                  detail=f"{logins.get(role)} (recorded {state['rolcanlogin']})"))
    return checks


# --------------------------------------------------------------------------- tasks


def _connect(state: SecurityState, autocommit: bool = True) -> psycopg.Connection[Any]:
    return state.connect(feature(), autocommit=autocommit)


@task(name="preview-db-restriction", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient,
      cache_policy=NO_CACHE)
def preview_restriction_task(state: SecurityState, access: DbAccessSettings) -> Preview:
    """Read the roles and the database's ACL and show what the restriction will change (reads only)."""
    with _connect(state) as conn:
        return restriction_preview(plan_restriction(conn, access))


@task(name="restrict-db-roles", cache_policy=NO_CACHE)
def apply_restriction_task(state: SecurityState, access: DbAccessSettings, preview: Preview, actor: str) -> dict[str, Any]:
    """Take CONNECT and/or LOGIN from the roles and end their sessions (not retried: it changes things)."""
    get_run_logger().info("Restricting %s (%s)", preview.target, access.mode)
    with _connect(state, autocommit=False) as conn:
        return apply_restriction(conn, state.schema, access, preview, actor=actor)


@task(name="verify-db-restriction", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient,
      cache_policy=NO_CACHE)
def verify_restriction_task(state: SecurityState, preview: Preview) -> list[CheckResult]:
    """Read back pg_roles, pg_database and pg_stat_activity after the restriction."""
    with _connect(state) as conn:
        return verify_restriction(conn, preview)


@task(name="preview-db-restore", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient,
      cache_policy=NO_CACHE)
def preview_restore_task(state: SecurityState) -> tuple[Preview, dict[str, Any]]:
    """Find the newest unrestored restriction and show what putting it back changes (reads only)."""
    with _connect(state) as conn:
        plan = plan_restore(conn, state.schema)
        return restore_preview(plan), plan.recorded


@task(name="restore-db-roles", cache_policy=NO_CACHE)
def apply_restore_task(state: SecurityState, preview: Preview, actor: str) -> dict[str, Any]:
    """Put back the recorded ACL and rolcanlogin (not retried: it changes things)."""
    get_run_logger().info("Restoring the access of %s", preview.target)
    with _connect(state, autocommit=False) as conn:
        return apply_restore(conn, state.schema, preview, actor=actor)


@task(name="verify-db-restore", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient,
      cache_policy=NO_CACHE)
def verify_restore_task(state: SecurityState, recorded: dict[str, Any]) -> list[CheckResult]:
    """Read back pg_database and pg_roles against the recorded state."""
    with _connect(state) as conn:
        return verify_restore(conn, recorded)
