"""log-report on a real PostgreSQL: the seeded platform, the "variants" database and a
log table shaped unlike both, through real flow runs and the CLI."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from prefect import get_client
from prefect.artifacts import Artifact
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.log_report import LogReportParameters, log_report
from runbook.procedures import PROCEDURES
from runbook.reports import artifact_key
from tests.conftest import ANCHOR, Platform, runbook_here

DAY = 86400
LEVELS = ["INFO", "INFO", "INFO", "WARN", "ERROR"]
MESSAGES = ["request served", "cache miss", "price refresh", "login", "payment webhook"]
ACTIONS = ["view", "alert.create", "alert.resolve", "login", "checkout"]


def percentile_cont(values: list[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def seeded_window(hours: int = 24) -> list[dict[str, Any]]:
    """The rows sandbox/seed.sql (scale 1) puts in [ANCHOR - hours, ANCHOR), from its formulas."""
    rows = []
    for i in range(1, 100_001):
        offset = (i * 1553) % (180 * DAY)
        if 0 < offset <= hours * 3600:
            rows.append({
                "at": ANCHOR - timedelta(seconds=offset), "level": LEVELS[i % 5], "action": ACTIONS[i % 5],
                "message": f"{MESSAGES[(i // 5) % 5]} #<n>", "response_time": (i * 37) % 6000,
            })
    return rows


def _run(**kwargs: Any) -> tuple[Any, dict[str, Any]]:
    state = log_report(LogReportParameters(**kwargs), return_state=True)
    return state, state.result(raise_on_failure=False)


def test_the_seeded_platform_day_by_level_error_group_and_percentile(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = seeded_window()
    errors = [r for r in expected if r["level"] == "ERROR"]
    assert len(expected) > 400 and errors  # the oracle sees a real day of logs

    done = runbook_here("--json", "log-report", "--hours", "24", "--end", ANCHOR.isoformat(), env={}, monkeypatch=monkeypatch)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["table"] == "public.system_logs" and report["rows"] == len(expected)
    assert report["levels"] == {level: sum(r["level"] == level for r in expected) for level in ("INFO", "WARN", "ERROR")}
    assert report["errors"] == len(errors) and report["error_pct"] == round(100 * len(errors) / len(expected), 2)

    groups = {(g["action"], g["message"]): g for g in report["error_groups"]}
    assert report["group_count"] == len(groups) == 5  # every error is a checkout, of five messages
    for (action, message), group in groups.items():
        members = [r for r in errors if (r["action"], r["message"]) == (action, message)]
        assert group["rows"] == len(members)
        assert datetime.fromisoformat(group["first_seen"]) == min(r["at"] for r in members)
        assert datetime.fromisoformat(group["last_seen"]) == max(r["at"] for r in members)
    assert [t["rows"] for t in report["top_errors"]] == sorted((g["rows"] for g in groups.values()), reverse=True)
    assert report["top_errors"][0]["actions"] == 1

    times = report["response_time"]
    values = [float(r["response_time"]) for r in expected]
    assert times["rows"] == len(values) and times["without"] == 0 and times["not_numbers"] == 0
    for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)):
        assert times[name] == pytest.approx(percentile_cont(values, fraction))
    assert times["max"] == max(values)

    checks = {c["name"]: c for c in report["checks"]}
    assert report["outcome"] == "passed-with-warnings"  # 20 % errors and a p95 near 5.7 s: warnings, not a failure
    assert not checks["logs:error-rate"]["ok"] and not checks["logs:error-rate"]["critical"]
    assert not checks["logs:response-time"]["ok"] and "warning from 3000 ms" in checks["logs:response-time"]["detail"]

    printed = PROCEDURES["log-report"].show(report)
    assert "checkout" in printed and "payment webhook #<n>" in printed and "p95" in printed
    markdown = Artifact.get(artifact_key("log-report", platform.database))
    assert markdown is not None and "request served #<n>" in markdown.data and "`request served #123`" in markdown.data
    table = Artifact.get(artifact_key("log-report-errors", platform.database))
    assert table is not None and "payment webhook #<n>" in json.dumps(table.data)


def _task_runs(state: Any) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))


def test_rows_without_a_numeric_response_time_are_left_out_and_ids_group_together(platform: Platform) -> None:
    at = ANCHOR + timedelta(days=3)  # after every seeded row: this window holds only these
    rows = [
        ("INFO", "served", {"action": "view", "response_time": 100}),
        ("INFO", "served", {"action": "view", "response_time": 200}),
        ("INFO", "served", {"action": "view", "response_time": "250"}),  # a number in a string still counts
        ("INFO", "served", {"action": "view", "response_time": 300.5}),
        ("INFO", "served", {"action": "view", "response_time": 400}),
        ("INFO", "no timing", {"action": "view"}),
        ("WARN", "no timing", {"action": "view", "response_time": None}),
        ("error", "user 550e8400-e29b-41d4-a716-446655440000 payment 12 failed", {"action": "checkout", "response_time": "n/a"}),
        ("ERROR", "user 6ba7b810-9dad-11d1-80b4-00c04fd430c8 payment 9913 failed", {"action": "checkout"}),
        ("Error ", "user 6ba7b811-9dad-11d1-80b4-00c04fd430c8 payment 7 failed", {"action": "refund"}),
    ]
    with platform.connect() as conn:
        for n, (level, message, context) in enumerate(rows):
            conn.execute(
                "INSERT INTO system_logs (level, message, context, created_at) VALUES (%s, %s, %s, %s)",
                (level, message, json.dumps(context), at + timedelta(minutes=n)),
            )
    state, report = _run(end=at + timedelta(hours=1), hours=2)
    assert state.is_completed(), state.message
    times = report["response_time"]
    assert (times["rows"], times["without"], times["not_numbers"]) == (5, 4, 1)
    assert times["p50"] == 250 and times["max"] == 400 and times["p90"] == pytest.approx(360.2)
    assert report["errors"] == 3  # levels compare case-insensitively, trimmed
    groups = {(g["action"], g["message"]): g["rows"] for g in report["error_groups"]}
    assert groups == {("checkout", "user <uuid> payment <n> failed"): 2, ("refund", "user <uuid> payment <n> failed"): 1}
    assert report["top_errors"] == [
        {**report["top_errors"][0], "message": "user <uuid> payment <n> failed", "rows": 3, "actions": 2, "pct_of_errors": 100.0}
    ]
    markdown = Artifact.get(artifact_key("log-report", platform.database))
    assert markdown is not None and "4 rows without one and 1 whose value is not a number are left out" in markdown.data


def test_an_unknown_column_exits_2_naming_the_setting_before_any_log_row_is_read(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_LOGS__LEVEL", "severity")
    monkeypatch.setenv("RUNBOOK_LOGS__ACTION", "message.action")  # a path into a text column
    state, _ = _run(end=ANCHOR)
    assert state.is_failed()
    assert "RUNBOOK_LOGS__LEVEL: public.system_logs has no column 'severity'" in state.message
    assert "RUNBOOK_LOGS__ACTION: public.system_logs.message is text, not json or jsonb" in state.message
    assert [t.name.rsplit("-", 1)[0] for t in _task_runs(state)] == ["read-log-columns"]  # the catalog only

    done = runbook_here("log-report", env={"RUNBOOK_LOGS__TABLE": "public.system_log"}, monkeypatch=monkeypatch)
    assert done.returncode == 2 and "RUNBOOK_LOGS__TABLE: no table or view public.system_log" in done.stderr


def test_the_statement_timeout_bounds_the_report_and_is_not_retried(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    with platform.connect() as conn:  # a log view that takes longer than the timeout
        conn.execute("CREATE VIEW slow_logs AS SELECT * FROM system_logs WHERE (SELECT true FROM pg_sleep(30))")
    monkeypatch.setenv("RUNBOOK_LOGS__TABLE", "public.slow_logs")
    monkeypatch.setenv("RUNBOOK_STATEMENT_TIMEOUT", "1")
    state, _ = _run(end=ANCHOR)
    assert state.is_failed() and "stopped at RUNBOOK_STATEMENT_TIMEOUT (1 s)" in state.message
    summarise = [t for t in _task_runs(state) if t.name.startswith("summarise-logs")]
    assert len(summarise) == 1 and summarise[0].run_count == 1


def variants_window(hours: int = 24) -> list[tuple[str, datetime]]:
    """The (level, time) rows sandbox/variants.sql puts in [ANCHOR - hours, ANCHOR)."""
    out = []
    for i in range(1, 2001):
        offset = (i * 15551) % (180 * DAY)
        if 0 < offset <= hours * 3600:
            out.append((["INFO", "WARN", "ERROR"][i % 3], ANCHOR - timedelta(seconds=offset)))
    return out


def test_variants_logs_without_context_need_action_and_response_time_set_to_none(variants: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    refused = runbook_here("log-report", "--end", ANCHOR.isoformat(), env={}, monkeypatch=monkeypatch)
    assert refused.returncode == 2
    assert "RUNBOOK_LOGS__ACTION: public.system_logs has no column 'context'" in refused.stderr
    assert "RUNBOOK_LOGS__RESPONSE_TIME" in refused.stderr and "or none" in refused.stderr

    monkeypatch.setenv("RUNBOOK_LOGS__ACTION", "none")
    monkeypatch.setenv("RUNBOOK_LOGS__RESPONSE_TIME", "NONE")
    expected = variants_window(48)
    errors = [at for level, at in expected if level == "ERROR"]
    state, report = _run(end=ANCHOR, hours=48)
    assert state.is_completed(), state.message
    assert report["rows"] == len(expected) > 0 and report["errors"] == len(errors) > 0
    assert report["fields"]["action"] is None and report["response_time"] is None
    assert report["error_groups"] == [{
        "action": "-", "message": "event #<n>", "rows": len(errors),
        "first_seen": report["error_groups"][0]["first_seen"], "last_seen": report["error_groups"][0]["last_seen"],
    }]
    assert datetime.fromisoformat(report["error_groups"][0]["first_seen"]) == min(errors)
    assert "logs:response-time" not in {c["name"] for c in report["checks"]}
    assert "response time: not recorded" in PROCEDURES["log-report"].show(report)


def test_a_log_table_of_another_shape_quoted_names_plain_columns_and_a_json_level(variants: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    with variants.connect() as conn:
        conn.execute(
            'CREATE TABLE app."Event Log" ("createdAt" timestamptz NOT NULL, meta json, "the message" text,'
            ' "user action" varchar(40), "took ms" integer)'
        )
        conn.execute(
            """INSERT INTO app."Event Log" VALUES
               (%(at)s, '{"sev%%": "fatal"}', 'job 17 crashed', 'batch', 900),
               (%(at)s, '{"sev%%": "error"}', 'job 18 crashed', 'batch', NULL),
               (%(at)s, '{"sev%%": "info"}', 'job 19 done', 'batch', 100),
               (%(at)s, '{}', 'no level', NULL, 50)""",
            {"at": ANCHOR - timedelta(hours=1)},
        )
    for name, value in {
        "TABLE": "app.Event Log", "TIME_COLUMN": "createdAt", "LEVEL": "meta.sev%", "MESSAGE": "the message",
        "ACTION": "user action", "RESPONSE_TIME": "took ms", "ERROR_LEVELS": '["error", "Fatal"]',
    }.items():
        monkeypatch.setenv(f"RUNBOOK_LOGS__{name}", value)
    state, report = _run(end=ANCHOR)
    assert state.is_completed(), state.message
    assert report["table"] == "app.Event Log" and report["levels"] == {"(none)": 1, "error": 1, "fatal": 1, "info": 1}
    assert report["errors"] == 2 and report["error_groups"][0]["action"] == "batch"
    assert report["error_groups"][0]["message"] == "job <n> crashed" and report["error_groups"][0]["rows"] == 2
    times = report["response_time"]
    assert (times["rows"], times["without"], times["p50"], times["max"]) == (3, 1, 100, 900)
