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


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: str
    columns: list[str]
    ref_table: str
    ref_columns: list[str]
