"""Data retention as data (runbook §4.5): each policy names a table, a time column, an
age (or "expired"), extra conditions and an action. Validation against the catalog and
the SQL that selects a policy's rows are built here from checked names only, quoted.
So are the batch key (one or several primary-key columns, walked in key order), how the
journal keeps a key, and a policy's fingerprint (a run resumes only an unchanged policy).
No I/O: the catalog comes in as data."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from psycopg import sql
from pydantic import BaseModel, Field, field_validator, model_validator

from runbook.errors import ConfigError, RunbookError

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
    """What the catalog says of one table: its columns and types, its primary key, and
    whether it is a table or a view (information_schema's table_type)."""

    columns: dict[str, str]
    primary_key: list[str]
    kind: str = "BASE TABLE"


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
        if info.kind == "VIEW":
            problems.append(f"{where}: {policy.table} is a view, not a table")
        for condition in policy.conditions:
            if condition.column not in info.columns:
                problems.append(f"{where}: {policy.table} has no column {condition.column!r}")
        if policy.action is Action.SET_ARCHIVED and info.columns.get(policy.archived_column) != "boolean":
            problems.append(f"{where}: set-archived needs a boolean column {policy.archived_column!r} in {policy.table}")
    return problems


def check_policies(policies: list[Policy], catalog: dict[str, TableInfo]) -> None:
    problems = validate_policies(policies, catalog)
    if problems:
        raise ConfigError("invalid clean-up policy: " + "; ".join(problems))


def batching_problem(policy: Policy, info: TableInfo) -> str | None:
    """Why a valid policy cannot be applied to its table, or None. Not bad input: the
    policy is right, the table is what it is; the other policies go on without it."""
    if not info.primary_key:
        return (
            f"{policy.table} has no primary key: data-cleanup changes rows in short batches walked by primary key"
            " (each one transaction, resumed after the last key), and without one it cannot do so safely;"
            " add a primary key, or clean this table by hand"
        )
    return None


class PolicyFailed(RunbookError):
    """A policy stopped in its batches: what it had done until then comes with it (its
    journal entry stays unfinished, so the next run resumes it)."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message, result)
        self.result = result

    def __str__(self) -> str:
        return str(self.args[0])


# --------------------------------------------------------------------------- batch keys

INTEGER_TYPES = ("bigint", "integer", "smallint")
_OPERATORS = {"<", "<=", ">", ">=", "="}


class BatchKey(BaseModel):
    """The primary key a policy's batches walk, its columns in key order with their types.
    A single integer key walks arithmetic windows; any other key (uuid, text, composite)
    reads each window's end from the key index, a composite one by row comparison
    ``(a, b) > (x, y)``, which a btree index on ``(a, b)`` serves."""

    columns: list[str] = Field(min_length=1)
    types: list[str]

    @classmethod
    def of(cls, info: TableInfo) -> "BatchKey":
        return cls(columns=list(info.primary_key), types=[info.columns.get(c, "") for c in info.primary_key])

    @property
    def integer(self) -> bool:
        return len(self.columns) == 1 and self.types[0] in INTEGER_TYPES

    @property
    def composite(self) -> bool:
        return len(self.columns) > 1

    def encode(self, values: Sequence[Any]) -> str:
        """A key as the journal and the plan keep it: one column's text as it is (what
        journals kept before composite keys, so their rows read the same), several
        columns as a JSON list of their texts."""
        texts = [str(v) for v in values]
        return json.dumps(texts) if self.composite else texts[0]

    def decode(self, text: str | None) -> list[Any] | None:
        """The key's values from ``encode``'s text, as query parameters (text for
        PostgreSQL to read as the column's type; an int for an integer key)."""
        if text is None:
            return None
        if not self.composite:
            return [int(text) if self.integer else text]
        values = json.loads(text)
        if not isinstance(values, list) or len(values) != len(self.columns):
            raise ValueError(f"key {text!r} is not a key of ({', '.join(self.columns)})")
        return values

    def names(self, direction: str = "") -> sql.Composed:
        """The key's columns, comma-separated (``direction``: "DESC" for ORDER BY)."""
        suffix = sql.SQL(" DESC" if direction == "DESC" else "")
        return sql.SQL(", ").join(sql.SQL("{}{}").format(sql.Identifier(c), suffix) for c in self.columns)

    def texts(self) -> sql.Composed:
        """The key as an array of its columns' texts (any type reads back from its text)."""
        return sql.SQL("ARRAY[{}]").format(sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in self.columns))

    def display(self) -> sql.Composed:
        """The key as shown in a plan's samples: a single key's value, several as a row."""
        if not self.composite:
            return sql.SQL("{}" if self.integer else "{}::text").format(sql.Identifier(self.columns[0]))
        return sql.SQL("ROW({})::text").format(self.names())

    def compare(self, op: str, name: str) -> sql.Composed:
        """``key op (%(name_0)s, ...)``: a plain comparison for one column, a row
        comparison for several (lexicographic, in key order)."""
        if op not in _OPERATORS:
            raise ValueError(f"no operator {op!r}")
        values = sql.SQL(", ").join(sql.Placeholder(f"{name}_{i}") for i in range(len(self.columns)))
        if not self.composite:
            return sql.SQL("{} {} {}").format(sql.Identifier(self.columns[0]), sql.SQL(op), values)
        return sql.SQL("({}) {} ({})").format(self.names(), sql.SQL(op), values)

    def params(self, name: str, values: Sequence[Any] | None) -> dict[str, Any]:
        return {f"{name}_{i}": (values[i] if values is not None else None) for i in range(len(self.columns))}


# --------------------------------------------------------------------------- resuming only what is unchanged


def definition(policy: Policy, key: BatchKey) -> dict[str, Any]:
    """What a run of a policy depends on: its table, columns, age, conditions and action,
    and the key its journal records positions in. The name is the journal's own key."""
    spec: dict[str, Any] = {
        "table": policy.table,
        "time_column": policy.time_column,
        "older_than_days": policy.older_than_days,
        "expired": policy.expired,
        "conditions": [c.model_dump(mode="json") for c in policy.conditions],
        "action": policy.action.value,
        "key": list(key.columns),
    }
    if policy.action is Action.SET_ARCHIVED:
        spec["archived_column"] = policy.archived_column
    return spec


def fingerprint(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Unfinished(BaseModel):
    """A journal entry neither finished nor abandoned: a run that was killed or failed."""

    run_id: str
    policy: str
    table: str
    action: str
    cutoff: datetime
    last_key: str | None
    rows_done: int
    batches: int
    started_at: datetime
    updated_at: datetime
    fingerprint: str | None = None  # None: written before runbook kept fingerprints
    definition: dict[str, Any] | None = None

    def done(self) -> str:
        verb = "flagged" if self.action == Action.SET_ARCHIVED.value else "deleted"
        return f"{self.rows_done:,} rows {verb} in {self.batches} batches, last key {self.last_key or 'none'}"


def resume_problem(policy: Policy, key: BatchKey, entry: Unfinished) -> str | None:
    """Why an unfinished run of this policy must not be resumed, or None. Its cutoff and
    last key only mean something for the policy it was started with."""
    spec = definition(policy, key)
    if entry.fingerprint == fingerprint(spec):
        return None
    if entry.fingerprint is None or entry.definition is None:
        why = "it was recorded before runbook kept each policy's definition, so it cannot tell whether the policy changed"
    else:
        changed = sorted(k for k in spec.keys() | entry.definition.keys() if spec.get(k) != entry.definition.get(k))
        why = f"the policy changed since ({', '.join(changed) or 'definition'})"
    return (
        f"policy {policy.name!r} has an unfinished run {entry.run_id} (started {entry.started_at:%Y-%m-%d %H:%M %Z},"
        f" {entry.done()}) that cannot be resumed: {why}; restore the old definition to finish it,"
        " or abandon it with --abandon-unfinished (flow parameter abandon_unfinished)"
    )


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
    smallest and largest key selected (the apply walks only that key range; a composite
    key as ``BatchKey.encode`` keeps it). ``problem``: why the policy cannot be applied."""

    policy: str
    table: str
    action: Action
    cutoff: datetime
    rows: int
    sample_keys: list[int | str] = Field(default_factory=list)
    first_key: str | None = None
    last_key: str | None = None
    problem: str | None = None


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


def review_unfinished(policies: list[tuple[Policy, BatchKey]], unfinished: dict[str, Unfinished], abandon: bool) -> list[dict[str, Any]]:
    """What becomes of each chosen policy's unfinished run: resumed (the policy is
    unchanged) or, when asked, abandoned. A run that can be neither is bad input: one
    ConfigError names each, with how to abandon it, before anything is touched."""
    problems: list[str] = []
    rows: list[dict[str, Any]] = []
    for policy, key in policies:
        entry = unfinished.get(policy.name)
        if entry is None:
            continue
        problem = resume_problem(policy, key, entry)
        if problem and not abandon:
            problems.append(problem)
        rows.append(
            entry.model_dump(mode="json", exclude={"definition", "fingerprint"})
            | {"verdict": "abandon" if abandon else "resume", "done": entry.done(), "changed": problem is not None}
        )
    if problems:
        raise ConfigError("; ".join(problems))
    return rows
