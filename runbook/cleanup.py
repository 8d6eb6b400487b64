"""Data retention as data (runbook §4.5): each policy names a table, a time column, an
age (or "expired"), extra conditions and an action. Validation against the catalog and
the SQL that selects a policy's rows are built here from checked names only, quoted.
No I/O: the catalog comes in as data."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum

from psycopg import sql
from pydantic import BaseModel, Field, field_validator, model_validator

from runbook.errors import ConfigError

TIME_TYPES = {"timestamp with time zone", "timestamp without time zone", "date"}


class Action(str, Enum):
    DELETE = "delete"
    SET_ARCHIVED = "set-archived"
    ARCHIVE_THEN_DELETE = "archive-then-delete"  # rows to the backup store first, checked, then deleted


class Condition(BaseModel):
    """An extra condition: ``column = value`` (or ``IS NULL`` / ``IS NOT NULL``)."""

    column: str = Field(min_length=1)
    equals: bool | int | str | None = Field(None, description="The value; with is_null unset, None is refused.")
    is_null: bool | None = Field(None, description="True: IS NULL; False: IS NOT NULL.")

    @model_validator(mode="after")
    def _one(self) -> "Condition":
        if (self.is_null is None) == (self.equals is None):
            raise ValueError(f"condition on {self.column!r} needs exactly one of equals or is_null")
        return self


class Policy(BaseModel):
    """One retention rule."""

    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$", description="lowercase-with-dashes")
    table: str = Field(min_length=1, description="table or schema.table (default schema public)")
    time_column: str = Field(min_length=1)
    older_than_days: int | None = Field(None, description="Rows whose time column is older than this many days (> 0).")
    expired: bool = Field(False, description="Rows whose time column (an expiry) lies in the past.")
    conditions: list[Condition] = Field(default_factory=list)
    action: Action = Action.DELETE
    archived_column: str = Field("archived", description="The flag set by set-archived.")

    @field_validator("table")
    @classmethod
    def _qualified(cls, value: str) -> str:
        return value if "." in value else f"public.{value}"

    @model_validator(mode="after")
    def _age(self) -> "Policy":
        if self.expired == (self.older_than_days is not None):
            raise ValueError(f"policy {self.name!r} needs exactly one of older_than_days or expired")
        if self.older_than_days is not None and self.older_than_days <= 0:
            raise ValueError(f"policy {self.name!r}: older_than_days must be > 0, not {self.older_than_days}")
        return self

    def cutoff(self, now: datetime) -> datetime:
        return now if self.expired else now - timedelta(days=self.older_than_days or 0)


DEFAULT_POLICIES = [  # §4.5
    Policy(name="system-logs", table="system_logs", time_column="created_at", older_than_days=90, action=Action.DELETE),
    Policy(
        name="resolved-alerts",
        table="user_alerts",
        time_column="resolved_at",
        older_than_days=30,
        conditions=[Condition(column="resolved", equals=True)],
        action=Action.SET_ARCHIVED,
    ),
    Policy(name="expired-sessions", table="user_sessions", time_column="expires_at", expired=True, action=Action.DELETE),
]


class TableInfo(BaseModel):
    """What the catalog says of one table: its columns and types, its primary key."""

    columns: dict[str, str]
    primary_key: list[str]


def validate_policies(policies: list[Policy], catalog: dict[str, TableInfo]) -> list[str]:
    """Every problem with the policies against the catalog (empty: all valid). Names
    are only ever used after this check, and always quoted."""
    problems: list[str] = []
    names = [p.name for p in policies]
    for duplicate in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"two policies are named {duplicate!r}")
    for policy in policies:
        where = f"policy {policy.name!r}"
        info = catalog.get(policy.table)
        if info is None:
            problems.append(f"{where}: no table {policy.table} (tables: {', '.join(sorted(catalog)) or 'none'})")
            continue
        kind = info.columns.get(policy.time_column)
        if kind is None:
            problems.append(f"{where}: {policy.table} has no column {policy.time_column!r}")
        elif kind not in TIME_TYPES:
            problems.append(f"{where}: {policy.table}.{policy.time_column} is {kind}, not a timestamp or date")
        for condition in policy.conditions:
            if condition.column not in info.columns:
                problems.append(f"{where}: {policy.table} has no column {condition.column!r}")
        if len(info.primary_key) != 1:
            problems.append(f"{where}: {policy.table} needs a single-column primary key to work in batches")
        if policy.action is Action.SET_ARCHIVED and info.columns.get(policy.archived_column) != "boolean":
            problems.append(f"{where}: set-archived needs a boolean column {policy.archived_column!r} in {policy.table}")
    return problems


def check_policies(policies: list[Policy], catalog: dict[str, TableInfo]) -> None:
    problems = validate_policies(policies, catalog)
    if problems:
        raise ConfigError("invalid clean-up policy: " + "; ".join(problems))


def qualified(table: str) -> sql.Composed:
    schema, _, name = table.partition(".")
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def selection(policy: Policy, cutoff: datetime) -> tuple[sql.Composed, dict[str, object]]:
    """The WHERE clause of a policy (composed from quoted identifiers) and its parameters.
    A set-archived policy leaves out rows already archived, so re-runs touch nothing twice."""
    parts = [sql.SQL("{} < %(cutoff)s").format(sql.Identifier(policy.time_column))]
    params: dict[str, object] = {"cutoff": cutoff}
    for index, condition in enumerate(policy.conditions):
        column = sql.Identifier(condition.column)
        if condition.is_null is not None:
            parts.append(sql.SQL("{} IS NULL" if condition.is_null else "{} IS NOT NULL").format(column))
        else:
            parts.append(sql.SQL("{} = %(c{})s").format(column, sql.SQL(str(index))))
            params[f"c{index}"] = condition.equals
    if policy.action is Action.SET_ARCHIVED:
        parts.append(sql.SQL("{} IS NOT TRUE").format(sql.Identifier(policy.archived_column)))
    return sql.SQL(" AND ").join(parts), params


class PolicyPlan(BaseModel):
    """What a policy would touch: exact count at planning time, a few sample keys, and the
    smallest and largest key selected (the apply walks only that key range)."""

    policy: str
    table: str
    action: Action
    cutoff: datetime
    rows: int
    sample_keys: list[int | str] = Field(default_factory=list)
    first_key: str | None = None
    last_key: str | None = None


class ArchivedBatch(BaseModel):
    """One batch of rows written to the store before they were deleted: zstd-compressed
    JSON lines, one row each, with the sha256 of the stored bytes and the row count."""

    policy: str
    table: str
    run_id: str
    batch: int
    rows: int
    first_key: str
    last_key: str
    sha256: str
    size_bytes: int
    cutoff: datetime


def archive_key(database: str, policy: str, run_id: str, batch: int) -> str:
    """Where a batch goes; a retried batch (same run, same number) overwrites itself."""
    return f"{database}/archive/{policy}/{run_id}/batch_{batch:06d}.jsonl.zst"
