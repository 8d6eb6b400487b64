"""restrict-db-access / restore-db-access on the real server: roles of their own per test
(roles are cluster-wide and two workers run at once), connecting as them before, during
and after; the ACL and rolcanlogin come back exactly; refusals touch nothing."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from flows.restore_db_access import RestoreDbAccessParameters, restore_db_access
from flows.restrict_db_access import RestrictDbAccessParameters, restrict_db_access
from runbook.security.dbaccess import AclItem, Privilege, RoleState, acl_text, blocked_grantees, plan_acl, refusals
from tasks import secstate
from tasks.postgres import parse_dsn
from tests.conftest import Platform, runbook_here

PASSWORD = "app-Pw-0ne"


class Roles:
    """Roles made for one test, dropped (with their grants) afterwards."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.made: list[str] = []

    def make(self, prefix: str = "app", *, login: bool = True, in_role: str | None = None) -> str:
        name = f"{prefix}_{secrets.token_hex(3)}"
        with self.platform.connect() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} {} PASSWORD {}").format(
                sql.Identifier(name), sql.SQL("LOGIN" if login else "NOLOGIN"), sql.Literal(PASSWORD)))
            if in_role:
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(in_role), sql.Identifier(name)))
        self.made.append(name)
        return name

    def drop(self) -> None:
        with self.platform.connect() as conn:
            for name in reversed(self.made):
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))  # their grants on this database
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def roles(platform: Platform) -> Iterator[Roles]:
    made = Roles(platform)
    yield made
    made.drop()


def connect_as(platform: Platform, role: str) -> psycopg.Connection[Any]:
    host = parse_dsn(platform.admin_dsn)["host"]
    return psycopg.connect(host=host, dbname=platform.database, user=role, password=PASSWORD, connect_timeout=5, autocommit=True)


def can_connect(platform: Platform, role: str) -> str:
    """"ok", or why the server refused the role."""
    try:
        with connect_as(platform, role) as conn:
            conn.execute("SELECT 1")
        return "ok"
    except psycopg.OperationalError as err:
        text = str(err)
        return "no login" if "not permitted to log in" in text else ("no connect" if "permission denied" in text else text)


def state(platform: Platform, names: list[str]) -> tuple[list[str] | None, dict[str, bool]]:
    with platform.connect() as conn:
        row = conn.execute("SELECT datacl::text[] FROM pg_database WHERE datname = current_database()").fetchone()
        logins = dict(conn.execute("SELECT rolname::text, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s)", (names,)).fetchall())
    assert row is not None
    return row[0], logins


def configure(monkeypatch: pytest.MonkeyPatch, names: list[str], mode: str = "both") -> None:
    monkeypatch.setenv("RUNBOOK_SECURITY__DB_ACCESS__ROLES", json.dumps(names))
    monkeypatch.setenv("RUNBOOK_SECURITY__DB_ACCESS__MODE", mode)


def audit(platform: Platform, action: str) -> list[dict[str, Any]]:
    with platform.connect() as conn:
        return list(reversed(secstate.audit_rows(conn, "runbook_security", action=action)))


def restrict(**kw: Any) -> Any:
    return restrict_db_access(RestrictDbAccessParameters(by="ana", reason="leaked app password", **kw), return_state=True)


def restore(**kw: Any) -> Any:
    return restore_db_access(RestoreDbAccessParameters(by="ben", reason="password rotated", **kw), return_state=True)


def test_the_default_acl_round_trips_to_null_and_the_role_is_locked_out_meanwhile(
    platform: Platform, roles: Roles, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, other = roles.make("app"), roles.make("other")
    configure(monkeypatch, [app])
    before = state(platform, [app])
    assert before == (None, {app: True}) and can_connect(platform, app) == "ok"
    held = connect_as(platform, app)  # an open session: it is terminated

    done = restrict(confirm=True)
    assert done.is_completed(), done.message
    result = done.result()
    assert result["outcome"] == "applied" and result["after"]["terminated"] == {app: 1}
    preview = result["preview"]
    assert preview["before"]["datacl"] is None and preview["before"]["roles"] == {app: {"rolcanlogin": True}}
    assert preview["counts"]["connections to terminate"] == 1
    assert "datacl after:" in " ".join(preview["changes"]) and preview["undo"].startswith("runbook restore-db-access")
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    held.close()
    datacl, logins = state(platform, [app])
    assert logins == {app: False} and datacl is not None and not any(item.startswith("=") and "c" in item.split("/")[0] for item in datacl)
    assert can_connect(platform, app) == "no login"
    assert can_connect(platform, other) == "ok"  # it had CONNECT through PUBLIC: now its own grant
    assert {c["name"]: c["ok"] for c in result["checks"]} == {
        f"nologin:{app}": True, f"connect:{app}": True, f"sessions:{app}": True, "others-keep-connect": True, "runbook-connects": True}

    undone = restore(confirm=True)
    assert undone.is_completed(), undone.message
    assert state(platform, [app]) == before  # NULL again, rolcanlogin as it was
    assert can_connect(platform, app) == "ok"

    rows = audit(platform, "restrict-db-access")
    assert [(r["phase"], r["actor"]) for r in rows] == [("preview", "ana"), ("applied", "ana"), ("undone", "ben")]
    assert rows[1]["before"]["datacl"] is None and rows[1]["after"]["roles"] == {app: {"rolcanlogin": False}}
    assert rows[2]["after"]["datacl"] is None and rows[2]["after"]["roles"] == {app: {"rolcanlogin": True}}
    assert [r["phase"] for r in audit(platform, "restore-db-access")] == ["preview", "applied"]
    # nothing left to restore
    again = restore(confirm=True)
    assert again.is_failed() and "no restriction to restore" in again.message


def test_an_explicit_acl_and_a_quoted_role_inheriting_connect_round_trip_exactly(
    platform: Platform, roles: Roles, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = roles.make("grp", login=False)
    quoted = roles.make("App Role", in_role=group)  # needs quotes, and has CONNECT through its group
    other = roles.make("other", in_role=group)  # shares the group: keeps its CONNECT
    db = sql.Identifier(platform.database)
    with platform.connect() as conn:
        conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(db))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, sql.Identifier(group)))
        conn.execute(sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {} WITH GRANT OPTION").format(db, sql.Identifier(quoted)))
    configure(monkeypatch, [quoted], mode="revoke-connect")
    before = state(platform, [quoted])
    assert before[0] is not None and f'"{quoted}"=T*/postgres' in before[0]
    assert can_connect(platform, quoted) == "ok"

    done = restrict(confirm=True)
    assert done.is_completed(), done.message
    warnings = " ".join(done.result()["preview"]["warnings"])
    assert f"group {group!r} loses CONNECT" in warnings
    assert can_connect(platform, quoted) == "no connect"
    assert can_connect(platform, other) == "ok"
    datacl, logins = state(platform, [quoted])
    assert logins == {quoted: True}  # revoke-connect only: it may still log in elsewhere
    assert f'"{quoted}"=T*/postgres' in datacl  # its other privilege stays

    assert restore(confirm=True).is_completed()
    assert state(platform, [quoted]) == before  # element for element, in order
    assert can_connect(platform, quoted) == "ok"


def test_without_confirm_the_cli_previews_and_changes_nothing(
    platform: Platform, roles: Roles, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = roles.make("app")
    configure(monkeypatch, [app])
    shown = runbook_here("restrict-db-access", "--by", "ana", "--reason", "drill", env={}, monkeypatch=monkeypatch)
    assert shown.returncode == 0, shown.stderr
    assert "nothing was changed; add --confirm to apply" in shown.stdout
    assert f"ALTER ROLE {app} NOLOGIN" in shown.stdout and "undo: runbook restore-db-access" in shown.stdout
    assert state(platform, [app]) == (None, {app: True})
    assert [r["phase"] for r in audit(platform, "restrict-db-access")] == ["preview"]
    applied = runbook_here("restrict-db-access", "--by", "ana", "--reason", "drill", "--confirm", env={}, monkeypatch=monkeypatch)
    assert applied.returncode == 0, applied.stderr
    assert can_connect(platform, app) == "no login"
    again = runbook_here("restrict-db-access", "--by", "ana", "--reason", "drill", "--confirm", env={}, monkeypatch=monkeypatch)
    assert again.returncode == 0 and "restricted already" in again.stdout  # a no-op, not a second snapshot
    assert runbook_here("restore-db-access", "--by", "ben", "--reason", "ok", "--confirm", env={}, monkeypatch=monkeypatch).returncode == 0
    assert state(platform, [app]) == (None, {app: True})


@pytest.mark.parametrize("who", ["current_user", "missing", "superuser", "unset"])
def test_refusals_exit_2_before_anything_is_touched(
    platform: Platform, roles: Roles, monkeypatch: pytest.MonkeyPatch, who: str
) -> None:
    app = roles.make("app")
    names = {"current_user": [app, "postgres"], "missing": [app, f"nobody_{secrets.token_hex(3)}"], "superuser": [app],
             "unset": []}[who]
    if who == "superuser":
        with platform.connect() as conn:
            conn.execute(sql.SQL("ALTER ROLE {} SUPERUSER").format(sql.Identifier(app)))
    configure(monkeypatch, names)
    done = runbook_here("restrict-db-access", "--by", "ana", "--reason", "x", "--confirm", env={}, monkeypatch=monkeypatch)
    assert done.returncode == 2, done.stdout + done.stderr
    expected = {"current_user": "runbook's own role", "missing": "does not exist", "superuser": "is a superuser",
                "unset": "RUNBOOK_SECURITY__DB_ACCESS__ROLES"}[who]
    assert expected in done.stderr and "RUNBOOK_SECURITY__DB_ACCESS__ROLES" in done.stderr
    assert state(platform, [app])[0] is None and state(platform, [app])[1][app] is True
    assert audit(platform, "restrict-db-access") == []
    nothing = runbook_here("restore-db-access", "--by", "ben", "--reason", "x", "--confirm", env={}, monkeypatch=monkeypatch)
    assert nothing.returncode == 2 and "no restriction to restore" in nothing.stderr


# --------------------------------------------------------------------------- the pure part


def _item(grantee: str | None, *privs: str, grantor: str = "owner") -> AclItem:
    return AclItem(grantee=grantee, grantor=grantor, privileges=[Privilege(name=p) for p in privs])  # type: ignore[arg-type]


def test_the_plan_takes_connect_from_public_and_the_groups_and_grants_it_to_the_others() -> None:
    items = [_item(None, "TEMPORARY", "CONNECT"), _item("owner", "CREATE", "TEMPORARY", "CONNECT"), _item("grp", "CONNECT")]
    app = RoleState(name="app", can_login=True, can_connect=True, inherits_from=["grp"])
    planned = plan_acl(items, blocked=blocked_grantees([app]), keep=["b", "owner", "x y"], owner="owner")
    assert acl_text(planned) == '{=T/owner,owner=CTc/owner,b=c/owner,"x y"=c/owner}'
    assert acl_text(None) == "NULL (the default)"
    assert refusals([RoleState(name="r", exists=False), RoleState(name="me"), RoleState(name="owner"),
                     RoleState(name="su", superuser=True), app], own_roles={"me"}, owner="owner") == [
        "role 'r' does not exist",
        "role 'me' is runbook's own role or one it is a member of: it would lock out the team",
        "role 'owner' owns the database",
        "role 'su' is a superuser (no restriction holds one back)",
    ]
