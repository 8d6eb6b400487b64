"""Clean-up policies (§4.5) as data: what is valid, what the catalog refuses."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from runbook.cleanup import (
    DEFAULT_POLICIES, Action, BatchKey, Condition, Policy, TableInfo, Unfinished, check_policies, definition, fingerprint, review_unfinished,
    validate_policies,
)
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
    "public.keyless": TableInfo(columns={"at": "date", "what": "text"}, primary_key=[]),
    "public.recent": TableInfo(columns={"at": "date"}, primary_key=[], kind="VIEW"),
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


def test_the_catalog_refuses_unknown_names_wrong_types_and_views() -> None:
    policies = [
        Policy(name="a", table="no_such_table", time_column="created_at", older_than_days=1),
        Policy(name="b", table="system_logs", time_column="nope", older_than_days=1),
        Policy(name="c", table="system_logs", time_column="level", older_than_days=1),
        Policy(name="d", table="system_logs", time_column="created_at", older_than_days=1, conditions=[Condition(column="ghost", equals=1)]),
        Policy(name="e", table="pairs", time_column="at", older_than_days=1),  # a composite key: fine
        Policy(name="g", table="keyless", time_column="at", older_than_days=1),  # valid: it cannot run, but that is not bad input
        Policy(name="h", table="recent", time_column="at", older_than_days=1),
        Policy(name="f", table="user_sessions", time_column="expires_at", expired=True, action=Action.SET_ARCHIVED),
        Policy(name="f", table='users; DROP TABLE users; --', time_column="x", older_than_days=1),
    ]
    problems = "\n".join(validate_policies(policies, CATALOG))
    assert "policy 'a': no table public.no_such_table" in problems
    assert "policy 'b': public.system_logs has no column 'nope'" in problems
    assert "public.system_logs.level is text, not a timestamp or date" in problems
    assert "has no column 'ghost'" in problems
    assert "policy 'e'" not in problems and "policy 'g'" not in problems
    assert "policy 'h': public.recent is a view, not a table" in problems
    assert "policy 'f': set-archived needs a boolean column 'archived'" in problems
    assert "two policies are named 'f'" in problems
    assert "no table public.users; DROP TABLE users; --" in problems
    with pytest.raises(ConfigError, match="^invalid clean-up policy: "):
        check_policies(policies, CATALOG)


def test_a_table_without_a_primary_key_cannot_be_batched_and_says_why() -> None:
    from runbook.cleanup import batching_problem

    policy = Policy(name="g", table="keyless", time_column="at", older_than_days=1)
    problem = batching_problem(policy, CATALOG["public.keyless"]) or ""
    assert problem.startswith("public.keyless has no primary key: ") and "batches" in problem and "by hand" in problem
    assert batching_problem(policy, CATALOG["public.pairs"]) is None


@pytest.mark.parametrize(
    ("key", "values", "text"),
    [
        (BatchKey(columns=["id"], types=["bigint"]), [42], "42"),
        (BatchKey(columns=["id"], types=["uuid"]), ["8d777f38-5d0b-4f8c-9d5f-6c1b0e1f2a3b"], "8d777f38-5d0b-4f8c-9d5f-6c1b0e1f2a3b"),
        (BatchKey(columns=["symbol", "timestamp"], types=["text", "timestamp with time zone"]),
         ["SYM1", "2026-11-20 00:00:00+00"], '["SYM1", "2026-11-20 00:00:00+00"]'),
        (BatchKey(columns=["user", "select"], types=["text", "integer"]), ["c,\"x\"", "7"], '["c,\\"x\\"", "7"]'),
    ],
)
def test_a_key_is_kept_as_text_and_read_back_exactly(key: BatchKey, values: list[object], text: str) -> None:
    assert key.encode(values) == text
    assert key.decode(text) == values
    assert key.decode(None) is None


def test_journal_rows_from_before_composite_keys_read_as_single_keys() -> None:
    assert BatchKey(columns=["id"], types=["bigint"]).decode("1000") == [1000]
    assert BatchKey(columns=["id"], types=["text"]).decode('["not", "json"]') == ['["not", "json"]']  # a single key is never parsed
    with pytest.raises(ValueError, match="is not a key of"):
        BatchKey(columns=["a", "b"], types=["text", "text"]).decode('["only one"]')


def test_a_composite_key_compares_as_a_row_with_every_name_quoted() -> None:
    import psycopg.sql

    key = BatchKey(columns=["user", "select"], types=["text", "integer"])
    assert key.compare(">", "after").as_string(None) == '("user", "select") > (%(after_0)s, %(after_1)s)'
    assert key.names("DESC").as_string(None) == '"user" DESC, "select" DESC'
    assert BatchKey(columns=["id"], types=["uuid"]).compare("<=", "last").as_string(None) == '"id" <= %(last_0)s'
    with pytest.raises(ValueError):
        key.compare("; DROP", "x")
    assert isinstance(key.texts(), psycopg.sql.Composed)


def _unfinished(policy: Policy, key: BatchKey, **changes: object) -> Unfinished:
    spec = definition(policy, key)
    fields: dict[str, object] = {
        "run_id": "cleanup_1", "policy": policy.name, "table": policy.table, "action": policy.action.value, "cutoff": NOW,
        "last_key": "17", "rows_done": 1200, "batches": 3, "started_at": NOW, "updated_at": NOW,
        "fingerprint": fingerprint(spec), "definition": spec,
    }
    return Unfinished(**(fields | changes))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"older_than_days": 60}, "older_than_days"),
        ({"time_column": "level"}, "time_column"),
        ({"conditions": [Condition(column="level", equals="DEBUG")]}, "conditions"),
        ({"action": Action.SET_ARCHIVED}, "action"),
        ({"table": "public.user_sessions"}, "table"),
    ],
)
def test_an_unfinished_run_resumes_only_the_unchanged_policy(change: dict[str, object], named: str) -> None:
    from runbook.cleanup import resume_problem

    policy = DEFAULT_POLICIES[0]
    key = BatchKey(columns=["id"], types=["bigint"])
    entry = _unfinished(policy, key)
    assert resume_problem(policy, key, entry) is None
    assert review_unfinished([(policy, key)], {policy.name: entry}, abandon=False)[0]["verdict"] == "resume"
    changed = policy.model_copy(update=change)
    problem = resume_problem(changed, key, entry) or ""
    assert named in problem[problem.index("the policy changed since ("):] and "cleanup_1" in problem and "1,200 rows deleted in 3 batches, last key 17" in problem
    assert "--abandon-unfinished" in problem
    with pytest.raises(ConfigError, match="--abandon-unfinished"):
        review_unfinished([(changed, key)], {policy.name: entry}, abandon=False)
    abandoned = review_unfinished([(changed, key)], {policy.name: entry}, abandon=True)
    assert abandoned[0]["verdict"] == "abandon" and abandoned[0]["changed"] and abandoned[0]["rows_done"] == 1200


def test_an_unfinished_run_without_a_fingerprint_is_not_guessed_to_be_unchanged() -> None:
    from runbook.cleanup import resume_problem

    policy = DEFAULT_POLICIES[0]
    key = BatchKey(columns=["id"], types=["bigint"])
    problem = resume_problem(policy, key, _unfinished(policy, key, fingerprint=None, definition=None)) or ""
    assert "cannot tell whether the policy changed" in problem and "--abandon-unfinished" in problem
    other_key = BatchKey(columns=["id", "at"], types=["bigint", "date"])
    assert "(key)" in (resume_problem(policy, other_key, _unfinished(policy, key)) or "")
