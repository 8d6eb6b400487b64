"""Pure judgements of database maintenance (runbook §4.4, §7.2, §7.4): settings against
the recommendations, the recommended indexes, unused and invalid indexes, dead tuples,
size against the scale-up threshold. Catalog facts in, checks out."""

from __future__ import annotations

from pydantic import BaseModel

from runbook.checks import CheckResult

GB = 1024**3
SIZE_THRESHOLD_BYTES = 80 * GB  # §7.2: scale the database when its size > 80 GB
RECOMMENDED_SETTINGS = {  # §7.4, in bytes for memory settings
    "max_connections": 200,
    "shared_buffers": 1 * GB,
    "effective_cache_size": 4 * GB,
}


class RecommendedIndex(BaseModel):
    name: str
    table: str
    columns: list[str]  # with " DESC" where descending

    def ddl_columns(self) -> str:
        return ", ".join(self.columns)


RECOMMENDED_INDEXES = [  # §7.4
    RecommendedIndex(name="idx_user_alerts_user_created", table="public.user_alerts", columns=["user_id", "created_at DESC"]),
    RecommendedIndex(name="idx_market_data_symbol_timestamp", table="public.market_data", columns=["symbol", "timestamp DESC"]),
]


class IndexInfo(BaseModel):
    name: str  # schema-qualified
    table: str
    columns: list[str]
    valid: bool
    unique: bool
    backs_constraint: bool
    scans: int
    tuples_read: int
    tuples_fetched: int
    size_bytes: int
    definition: str


def human_bytes(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def settings_checks(current: dict[str, int]) -> list[CheckResult]:
    """Each setting of §7.4 against its recommendation: a warning when lower."""
    checks = []
    for name, recommended in RECOMMENDED_SETTINGS.items():
        value = current.get(name)
        if value is None:
            checks.append(CheckResult(name=f"setting:{name}", ok=False, detail="not readable", critical=False))
            continue
        show = (lambda v: str(v)) if name == "max_connections" else human_bytes
        ok = value >= recommended
        checks.append(
            CheckResult(
                name=f"setting:{name}",
                ok=ok,
                detail=f"{show(value)}" + ("" if ok else f", recommended {show(recommended)} (§7.4)"),
                critical=False,
            )
        )
    return checks


def _normal(column: str) -> str:
    return column.replace('"', "").strip().lower()


def index_matches(index: IndexInfo, wanted: RecommendedIndex) -> bool:
    return index.table == wanted.table and [_normal(c) for c in index.columns] == [_normal(c) for c in wanted.columns]


def recommended_index_checks(indexes: list[IndexInfo]) -> tuple[list[CheckResult], list[RecommendedIndex]]:
    """Which indexes of §7.4 exist (valid); returns the checks and the missing ones."""
    checks, missing = [], []
    for wanted in RECOMMENDED_INDEXES:
        found = [i for i in indexes if index_matches(i, wanted)]
        valid = [i for i in found if i.valid]
        if valid:
            checks.append(CheckResult(name=f"index:{wanted.name}", ok=True, detail=f"present as {valid[0].name}", critical=False))
        else:
            state = f" ({found[0].name} exists but is INVALID)" if found else ""
            checks.append(
                CheckResult(
                    name=f"index:{wanted.name}", ok=False,
                    detail=f"missing: {wanted.table} ({wanted.ddl_columns()}){state}", critical=False,
                )
            )
            missing.append(wanted)
    return checks, missing


def unused_indexes(indexes: list[IndexInfo]) -> list[IndexInfo]:
    """§4.4: no scan, no tuple read or fetched since the statistics were reset; never an
    index that backs a primary key or unique constraint, never an invalid one (reported apart)."""
    return [
        i for i in indexes
        if i.valid and not i.unique and not i.backs_constraint and i.scans == 0 and i.tuples_read == 0 and i.tuples_fetched == 0
    ]


def quoted_name(qualified: str) -> str:
    """``schema.name`` as SQL an operator can paste: each part quoted where PostgreSQL
    needs it (mixed case, a space, a reserved word), by SQLAlchemy's quoting rules."""
    from sqlalchemy.dialects import postgresql

    quote = postgresql.dialect().identifier_preparer.quote
    schema, _, name = qualified.partition(".")
    return f"{quote(schema)}.{quote(name)}"


def invalid_index_checks(indexes: list[IndexInfo]) -> list[CheckResult]:
    bad = [i for i in indexes if not i.valid]
    if not bad:
        return [CheckResult(name="invalid-indexes", ok=True, detail="none", critical=False)]
    return [
        CheckResult(
            name=f"invalid-index:{i.name}", ok=False, critical=False,
            detail=f"left by a failed concurrent build ({human_bytes(i.size_bytes)}, still maintained on every write): "
            f"DROP INDEX CONCURRENTLY {quoted_name(i.name)}; then build it again",
        )
        for i in bad
    ]


def size_check(size_bytes: int) -> CheckResult:
    ok = size_bytes <= SIZE_THRESHOLD_BYTES
    detail = f"{human_bytes(size_bytes)} of the {human_bytes(SIZE_THRESHOLD_BYTES)} threshold (§7.2)"
    return CheckResult(name="database-size", ok=ok, detail=detail if ok else f"{detail}: scale the database", critical=False)


def dead_tuple_checks(tables: dict[str, tuple[int, int]], ratio: float = 0.2, minimum: int = 1000) -> list[CheckResult]:
    """Tables whose dead tuples exceed ``ratio`` of their rows (and ``minimum``)."""
    heavy = {t: (live, dead) for t, (live, dead) in tables.items() if dead >= minimum and dead > ratio * max(1, live + dead)}
    if not heavy:
        return [CheckResult(name="dead-tuples", ok=True, detail=f"no table over {ratio:.0%} dead", critical=False)]
    return [
        CheckResult(name=f"dead-tuples:{t}", ok=False, critical=False, detail=f"{dead:,} dead of {live + dead:,} ({dead / (live + dead):.0%}): VACUUM it")
        for t, (live, dead) in sorted(heavy.items())
    ]
