"""What the integrity checks know of a database's tables: plain data, read from the
catalog by tasks.postgres and checked by tasks.validation (also in a worker process)."""

from __future__ import annotations

from dataclasses import dataclass


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
