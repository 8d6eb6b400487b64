"""Clean-up policies (§4.5) as data: what is valid, what the catalog refuses."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from runbook.cleanup import DEFAULT_POLICIES, Action, Condition, Policy, TableInfo, check_policies, validate_policies
from runbook.errors import ConfigError

NOW = datetime(2026, 11, 29, 3, 0, tzinfo=timezone.utc)
CATALOG = {
    "public.system_logs": TableInfo(columns={"id": "bigint", "created_at": "timestamp with time zone", "level": "text"}, primary_key=["id"]),
    "public.user_alerts": TableInfo(
        columns={"id": "bigint", "resolved": "boolean", "resolved_at": "timestamp with time zone", "archived": "boolean"},
        primary_key=["id"],
    ),
    "public.user_sessions": TableInfo(columns={"id": "bigint", "expires_at": "timestamp with time zone"}, primary_key=["id"]),
    "public.pairs": TableInfo(columns={"a": "int", "b": "int", "at": "date"}, primary_key=["a", "b"]),
}


def test_the_defaults_are_the_three_rules_of_4_5_and_are_valid() -> None:
    logs, alerts, sessions = DEFAULT_POLICIES
    assert (logs.table, logs.time_column, logs.older_than_days, logs.action) == ("public.system_logs", "created_at", 90, Action.DELETE)
    assert (alerts.table, alerts.older_than_days, alerts.action) == ("public.user_alerts", 30, Action.SET_ARCHIVED)
    assert alerts.conditions == [Condition(column="resolved", equals=True)]
    assert sessions.expired and sessions.cutoff(NOW) == NOW
    assert logs.cutoff(NOW) == datetime(2026, 8, 31, 3, 0, tzinfo=timezone.utc)
    assert validate_policies(DEFAULT_POLICIES, CATALOG) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"older_than_days": 0}, "must be > 0"),
        ({"older_than_days": -5}, "must be > 0"),
        ({}, "exactly one of older_than_days or expired"),
        ({"older_than_days": 3, "expired": True}, "exactly one of older_than_days or expired"),
        ({"older_than_days": 3, "name": "Bad Name"}, "should match pattern"),
        ({"older_than_days": 3, "conditions": [{"column": "x"}]}, "exactly one of equals or is_null"),
    ],
)
def test_a_malformed_policy_is_refused_naming_the_problem(fields: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"name": "p", "table": "system_logs", "time_column": "created_at"}
    with pytest.raises(ValidationError, match=message):
        Policy(**(base | fields))


def test_the_catalog_refuses_unknown_names_wrong_types_and_tables_it_cannot_batch() -> None:
    policies = [
        Policy(name="a", table="no_such_table", time_column="created_at", older_than_days=1),
        Policy(name="b", table="system_logs", time_column="nope", older_than_days=1),
        Policy(name="c", table="system_logs", time_column="level", older_than_days=1),
        Policy(name="d", table="system_logs", time_column="created_at", older_than_days=1, conditions=[Condition(column="ghost", equals=1)]),
        Policy(name="e", table="pairs", time_column="at", older_than_days=1),
        Policy(name="f", table="user_sessions", time_column="expires_at", expired=True, action=Action.SET_ARCHIVED),
        Policy(name="f", table='users; DROP TABLE users; --', time_column="x", older_than_days=1),
    ]
    problems = "\n".join(validate_policies(policies, CATALOG))
    assert "policy 'a': no table public.no_such_table" in problems
    assert "policy 'b': public.system_logs has no column 'nope'" in problems
    assert "public.system_logs.level is text, not a timestamp or date" in problems
    assert "has no column 'ghost'" in problems
    assert "policy 'e': public.pairs needs a single-column primary key" in problems
    assert "policy 'f': set-archived needs a boolean column 'archived'" in problems
    assert "two policies are named 'f'" in problems
    assert "no table public.users; DROP TABLE users; --" in problems
    with pytest.raises(ConfigError, match="^invalid clean-up policy: "):
        check_policies(policies, CATALOG)
