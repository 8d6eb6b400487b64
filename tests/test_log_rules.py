"""The pure side of log-report (runbook/logs.py): where each field lives, the checks,
the masking of the platform's own messages and the report's markdown. No I/O."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from runbook.errors import ConfigError
from runbook.logs import LogSummary, ResponseTimes, TopError, ErrorGroup, log_checks, masked, report_dict, report_markdown, resolve_shape
from runbook.settings import LogsSettings, load_settings

SANDBOX = {"id": "bigint", "level": "text", "message": "text", "context": "jsonb", "created_at": "timestamp with time zone"}
AT = datetime(2026, 11, 29, 0, 0, tzinfo=timezone.utc)


def shape(columns: dict[str, str] | None = SANDBOX, **settings: object):  # type: ignore[no-untyped-def]
    return resolve_shape(LogsSettings(**settings), columns)


def test_the_defaults_fit_the_sandbox_with_json_paths_into_context() -> None:
    found = shape()
    assert found.display == "public.system_logs"
    assert found.fields() == {
        "time": "created_at", "level": "level", "message": "message", "action": "context.action", "response_time": "context.response_time",
    }
    assert found.action is not None and found.action.path == ("action",) and found.action.is_json


@pytest.mark.parametrize(
    ("settings", "columns", "problem"),
    [
        ({"level": "severity"}, SANDBOX, "RUNBOOK_LOGS__LEVEL: public.system_logs has no column 'severity'"),
        ({"message": "level.text"}, SANDBOX, "RUNBOOK_LOGS__MESSAGE: public.system_logs.level is text, not json or jsonb"),
        ({"level": "none"}, SANDBOX, "RUNBOOK_LOGS__LEVEL: a log row needs its level"),
        ({"action": "context..x"}, SANDBOX, "RUNBOOK_LOGS__ACTION: 'context..x' has an empty key"),
        ({"time_column": "message"}, SANDBOX, "RUNBOOK_LOGS__TIME_COLUMN: public.system_logs.message is text, not a timestamp"),
        ({"time_column": "context.at"}, SANDBOX, "RUNBOOK_LOGS__TIME_COLUMN: public.system_logs.context.at is a json path, not a timestamp"),
        ({"response_time": "created_at"}, SANDBOX, "RUNBOOK_LOGS__RESPONSE_TIME: public.system_logs.created_at is timestamp with time zone, not a number"),
        ({"table": "app.logs"}, None, "RUNBOOK_LOGS__TABLE: no table or view app.logs visible"),
        ({}, {"created_at": "timestamp with time zone", "level": "text", "message": "text"}, "RUNBOOK_LOGS__ACTION: public.system_logs has no column 'context'"),
    ],
)
def test_a_setting_that_names_nothing_is_refused_naming_it(settings: dict[str, str], columns: dict[str, str] | None, problem: str) -> None:
    with pytest.raises(ConfigError, match="^log-report: |^RUNBOOK_LOGS__TABLE") as refused:
        shape(columns, **settings)
    assert problem in str(refused.value)


def test_every_problem_is_named_at_once_and_none_is_only_for_the_optional_fields() -> None:
    plain = {"created_at": "timestamp with time zone", "level": "text", "message": "text"}
    with pytest.raises(ConfigError) as refused:
        shape(plain)
    assert "RUNBOOK_LOGS__ACTION" in str(refused.value) and "RUNBOOK_LOGS__RESPONSE_TIME" in str(refused.value)
    found = shape(plain, action="none", response_time="None")
    assert found.action is None and found.response_time is None


def test_a_column_whose_name_has_a_dot_wins_over_a_path() -> None:
    found = shape({**SANDBOX, "context.action": "text"})
    assert found.action is not None and found.action.column == "context.action" and found.action.path == ()


@pytest.mark.parametrize("name", ["RUNBOOK_LOGS__ACTION", "RUNBOOK_LOGS__TABLE", "RUNBOOK_LOGS__LEVEL"])
def test_an_empty_setting_is_an_error_naming_it(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, " ")
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_error_levels_are_compared_in_upper_case() -> None:
    assert LogsSettings(error_levels=["error", " Fatal "]).error_levels == ["ERROR", "FATAL"]


def summary(rows: int = 1000, errors: int = 5, p95: float | None = 1200.0, with_times: int = 900) -> LogSummary:
    return LogSummary(
        start=AT, end=AT, rows=rows, levels={"INFO": rows - errors, "ERROR": errors} if rows else {}, errors=errors,
        groups=[ErrorGroup(action="checkout", message="card | declined\nretry `now`", rows=errors, first_seen=AT, last_seen=AT)] if errors else [],
        group_count=1 if errors else 0,
        top_errors=[TopError(message="card | declined\nretry `now`", rows=errors, actions=1, first_seen=AT, last_seen=AT)] if errors else [],
        message_count=1 if errors else 0,
        response_time=ResponseTimes(rows=with_times, without=rows - with_times, not_numbers=0, p50=300, p90=900, p95=p95, p99=2000, max=9000),
    )


@pytest.mark.parametrize(
    ("made", "failed"),
    [
        (summary(), set()),
        (summary(errors=10), {"logs:error-rate"}),  # 1 % is §7.1's warning
        (summary(p95=3000.0), {"logs:response-time"}),
        (summary(rows=0, errors=0, with_times=0, p95=None), {"logs:rows"}),
        (summary(with_times=0, p95=None), {"logs:response-time"}),  # rows, but none carries a time
    ],
)
def test_many_errors_a_slow_p95_or_no_rows_are_warnings_never_failures(made: LogSummary, failed: set[str]) -> None:
    checks = log_checks(made, shape(), LogsSettings())
    assert {c.name for c in checks if not c.ok} == failed
    assert not [c for c in checks if c.critical]


def test_known_secrets_in_the_platforms_messages_are_masked_before_the_report() -> None:
    leaked = summary().model_copy(update={
        "groups": [ErrorGroup(action="t0ps3cret-token", message="auth with t0ps3cret-token failed", rows=1, first_seen=AT, last_seen=AT)],
        "top_errors": [TopError(message="auth with t0ps3cret-token failed", rows=1, actions=1, first_seen=AT, last_seen=AT)],
    })
    clean = masked(leaked, ["t0ps3cret-token"])
    assert "t0ps3cret" not in clean.model_dump_json()
    assert clean.groups[0].message == "auth with *** failed" and clean.groups[0].action == "***"


def test_the_markdown_keeps_platform_text_inside_its_cells() -> None:
    report = report_dict(summary(), shape(), "Asia/Tokyo")
    text = report_markdown(report, "| check |", "Log report")
    row = next(line for line in text.splitlines() if "declined" in line and "checkout" in line)
    assert "card \\| declined retry 'now'" in row and row.count(" | ") == 4  # five cells: no column added by the message
    assert report["start"] == "2026-11-29T09:00:00+09:00"  # the team's timezone
    assert "p95" in text and "100 rows without one" in text
