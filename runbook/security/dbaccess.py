"""restrict-db-access (§5.4), the pure part: what the database's ACL becomes, which roles
may be restricted, and the ACL's text as PostgreSQL prints it. No I/O.

Why the ACL is rewritten rather than one REVOKE issued: ``REVOKE CONNECT ... FROM app``
does nothing while PUBLIC has CONNECT (the default, ``datacl`` NULL), nor while ``app``
inherits CONNECT from a group it belongs to. So the restriction takes CONNECT from
PUBLIC and from those groups, and grants it explicitly to every other login role that
had it, so that nobody but the restricted roles loses it.

The undo puts back the recorded items in their recorded order (the ACL reads back
equal, element for element). A NULL ``datacl`` cannot be set back by GRANT or REVOKE:
the undo writes the default's items (``acldefault``), then, as a superuser, sets the
column back to NULL, which leaves no dependency behind because the default's items
(PUBLIC and the owner) have none. Without a superuser the explicit default stays: the
same privileges, and the undo says so.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

# the letters PostgreSQL prints, in its order (ACL_ALL_RIGHTS_STR, the database's part)
LETTERS = {"CREATE": "C", "TEMPORARY": "T", "CONNECT": "c"}
ORDER = "arwdDxtXUCTcsAm"


class Privilege(BaseModel):
    name: Literal["CREATE", "TEMPORARY", "CONNECT"] = Field(description="A database privilege.")
    grantable: bool = False


class AclItem(BaseModel):
    """One item of ``datacl``: a grantee (None: PUBLIC), its grantor, its privileges."""

    grantee: str | None
    grantor: str
    privileges: list[Privilege]

    def has(self, name: str) -> bool:
        return any(p.name == name for p in self.privileges)

    def text(self) -> str:
        """As ``aclitem`` prints: ``grantee=privs/grantor``, names quoted as PostgreSQL does."""
        letters = sorted(self.privileges, key=lambda p: ORDER.index(LETTERS[p.name]))
        privs = "".join(LETTERS[p.name] + ("*" if p.grantable else "") for p in letters)
        return f"{quote_name(self.grantee) if self.grantee is not None else ''}={privs}/{quote_name(self.grantor)}"


def quote_name(name: str) -> str:
    """A role name as aclitem's output writes it (PostgreSQL's putid): quoted unless all
    letters, digits and underscores, with inner quotes doubled."""
    if name and all((ch.isascii() and ch.isalnum()) or ch == "_" for ch in name):
        return name
    return '"' + name.replace('"', '""') + '"'


def acl_text(items: list[AclItem] | None) -> str:
    return "NULL (the default)" if items is None else "{" + ",".join(i.text() for i in items) + "}"


class RoleState(BaseModel):
    """What the catalog says of one role, for the checks and the preview."""

    name: str
    exists: bool = True
    superuser: bool = False
    can_login: bool = False
    can_connect: bool = False  # has_database_privilege(role, db, 'CONNECT')
    inherits_from: list[str] = Field(default_factory=list)  # groups whose privileges it has (pg_has_role USAGE)
    connections: int = 0  # its sessions on the platform's database now


def refusals(roles: list[RoleState], *, own_roles: set[str], owner: str) -> list[str]:
    """Why each role may not be restricted (empty: all may). Never lock out the team:
    not runbook's own role or one it belongs to, not the owner, not a superuser."""
    problems = []
    for role in roles:
        if not role.exists:
            problems.append(f"role {role.name!r} does not exist")
        elif role.name in own_roles:
            problems.append(f"role {role.name!r} is runbook's own role or one it is a member of: it would lock out the team")
        elif role.name == owner:
            problems.append(f"role {role.name!r} owns the database")
        elif role.superuser:
            problems.append(f"role {role.name!r} is a superuser (no restriction holds one back)")
    return problems


def blocked_grantees(roles: list[RoleState]) -> set[str]:
    """The roles that must lose CONNECT: the restricted ones and every group they inherit it from."""
    return {r.name for r in roles} | {g for r in roles for g in r.inherits_from}


def plan_acl(items: list[AclItem], *, blocked: set[str], keep: list[str], owner: str) -> list[AclItem]:
    """The ACL after the restriction: CONNECT taken from PUBLIC and from ``blocked``,
    granted (by the owner) to each role of ``keep`` (those that had it) that would
    otherwise lose it. Every other item stays as it is, in its place."""
    planned: list[AclItem] = []
    for item in items:
        if item.grantee is None or item.grantee in blocked:
            rest = [p for p in item.privileges if p.name != "CONNECT"]
            if rest:
                planned.append(item.model_copy(update={"privileges": rest}))
        else:
            planned.append(item)
    direct = {i.grantee for i in planned if i.has("CONNECT")}
    for role in keep:
        if role not in direct and role not in blocked:
            planned.append(AclItem(grantee=role, grantor=owner, privileges=[Privilege(name="CONNECT")]))
    return planned


def foreign_grantors(items: list[AclItem], owner: str) -> list[str]:
    """Items granted by someone other than the owner: runbook cannot write those back
    (GRANT ... GRANTED BY accepts only the current user), so it refuses to touch the ACL."""
    return [i.text() for i in items if i.grantor != owner]


def snapshot(*, database: str, owner: str, datacl: list[str] | None, items: list[AclItem], roles: list[RoleState],
             mode: str, terminate: bool, others_connect: list[str]) -> dict[str, Any]:
    """The exact state the undo restores (kept in the state table and the audit's ``before``)."""
    return {
        "database": database,
        "owner": owner,
        "datacl": datacl,
        "acl": [i.model_dump() for i in items],
        "roles": {r.name: {"rolcanlogin": r.can_login} for r in roles},
        "mode": mode,
        "terminate": terminate,
        "others_connect": others_connect,  # the other login roles that could connect: they still can after
    }
