"""What the integrity checks know of a database's tables: plain data, read from the
catalog by tasks.postgres and checked by tasks.validation (also in a worker process)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, Field


@dataclass(frozen=True)
class TableShape:
    """What the integrity checks need to know of a table."""

    table: str
    primary_key: list[str]
    time_columns: list[str]
    primary_key_enforced: bool = False  # a primary key constraint with a valid index


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: str
    columns: list[str]
    ref_table: str
    ref_columns: list[str]
    validated: bool = False  # PostgreSQL checked every row (not NOT VALID)


class TableSecurity(BaseModel):
    """Who may touch a table, as the catalog says: row-level security and grants."""

    rls: bool = False
    forced: bool = False
    policies: list[str] = Field(default_factory=list)
    grants: list[str] = Field(default_factory=list, description="'grantee:PRIVILEGE', PUBLIC for everyone; the owner left out")


class SecurityPosture(BaseModel):
    """The security-relevant catalog of a database, recorded with each backup so that a
    recovery can check it came back (§6.4 post-recovery security checks)."""

    tables: dict[str, TableSecurity] = Field(default_factory=dict)

    @property
    def roles(self) -> list[str]:
        """Roles named in grants (roles live in the cluster, not in a database's dump)."""
        return sorted({g.split(":", 1)[0] for t in self.tables.values() for g in t.grants} - {"PUBLIC"})
