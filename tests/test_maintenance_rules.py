"""Pure judgements of db-maintenance: the SQL it advises names indexes as PostgreSQL needs."""

from __future__ import annotations

import pytest

from runbook.maintenance import IndexInfo, invalid_index_checks, quoted_name


@pytest.mark.parametrize(
    ("name", "sql"),
    [
        ("public.idx_user_alerts_user_created", "public.idx_user_alerts_user_created"),
        ("app.User idx", 'app."User idx"'),
        ("app.order", 'app."order"'),
        ('My Schema.we"ird', '"My Schema"."we""ird"'),
    ],
)
def test_advised_sql_quotes_names_where_postgresql_needs_it(name: str, sql: str) -> None:
    assert quoted_name(name) == sql


def test_an_invalid_index_is_advised_to_be_dropped_by_its_quoted_name() -> None:
    index = IndexInfo(
        name="app.Orders by user", table="app.order", columns=['"user"'], valid=False, unique=False,
        backs_constraint=False, scans=0, tuples_read=0, tuples_fetched=0, size_bytes=8192, definition="",
    )
    (check,) = invalid_index_checks([index])
    assert not check.ok and 'DROP INDEX CONCURRENTLY app."Orders by user";' in check.detail
