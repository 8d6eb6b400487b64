"""monitor, alert-test, ack and silence as real flow runs (and through the CLI), against
a real PostgreSQL for the state and the channels' stand-ins on 127.0.0.1, on an
injected clock."""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import runbook_here
from tests.servers import free_port
from tests.standins import StandIns

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)
MIN = timedelta(minutes=1)


@pytest.fixture
def state_url(pg_admin_dsn: str, empty_database: str) -> str:
    """The alert state's own database, apart from the platform's (which the tests take down)."""
    from tests.conftest import _dsn_url

    return _dsn_url(pg_admin_dsn, empty_database)


@pytest.fixture
def alerting_env(tmp_path: Path, standins: StandIns, state_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Every channel on its stand-in, the state in its own database, only the database
    source collected; the platform's database is unreachable (a closed port)."""
    env = {
        **standins.settings_env(),
        "RUNBOOK_ALERTS__STATE_DATABASE_URL": state_url,
        "RUNBOOK_MONITOR__SOURCES": '["database"]',
        "RUNBOOK_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/platform",
        "RUNBOOK_INSTANCE": "db-1",
        "RUNBOOK_HOME": str(tmp_path / "home"),
        "RUNBOOK_MONITOR__RETRIES": "0",  # no real waits: the database is down on purpose
        "RUNBOOK_ALERTS__STATE_RETRIES": "0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def at(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    import flows.monitor

    monkeypatch.setattr(flows.monitor, "utcnow", lambda: moment)


def run_monitor() -> tuple[bool, dict]:
    from flows.monitor import monitor

    state = monitor(return_state=True)
    return state.is_completed(), state.result(raise_on_failure=False)


def ledger(state_url: str) -> list[tuple]:
    with psycopg.connect(state_url) as conn:
        return conn.execute("SELECT channel, kind, status, attempts, last_error FROM runbook_alerting.outbox ORDER BY id").fetchall()


def test_database_down_pages_every_channel_and_escalates(alerting_env: dict[str, str], standins: StandIns,
                                                         monkeypatch: pytest.MonkeyPatch, state_url: str) -> None:
    at(monkeypatch, T0)
    completed, result = run_monitor()
    assert completed, result
    assert [a["rule"] for a in result["firing"]] == ["database-down"] and result["opened"] == [1]
    assert [p["level"] for p in result["pages"]] == [1]
    # the firing alert on its four channels (§2.2), level 1 on Slack and the status page (§9)
    texts = [json.dumps(body) for body in standins.slack.accepted]
    assert len(texts) == 2 and all("database-down" in t for t in texts)
    assert any("CRITICAL" in t for t in texts) and any("incident #1" in t for t in texts)
    assert {r.path.rsplit("/", 1)[-1] for r in standins.twilio.received} == {"Messages.json", "Calls.json"}
    assert len(standins.smtp.messages) == 1 and "database-down" in standins.smtp.messages[0]["Subject"]
    assert [i.status for i in standins.statuspage.incidents.values()] == ["investigating"]
    assert {status for _, _, status, _, _ in ledger(state_url)} == {"sent"}

    # a minute later: nothing new; at 15 minutes: level 2 (phone and SMS)
    for minute in (1, 15):
        at(monkeypatch, T0 + minute * MIN)
        completed, result = run_monitor()
        assert completed, result
    assert [p["level"] for p in result["pages"]] == [2]
    assert len(standins.slack.accepted) == 2


def test_slack_down_email_and_sms_still_deliver_and_the_run_says_so(alerting_env: dict[str, str], standins: StandIns,
                                                                     monkeypatch: pytest.MonkeyPatch, state_url: str) -> None:
    at(monkeypatch, T0)
    with standins.slack.down():
        completed, result = run_monitor()
    assert not completed
    assert "slack" in result["message"] and "database-down" in result["message"]
    assert standins.smtp.messages and standins.twilio.received  # the others were not held by Slack
    rows = ledger(state_url)
    slack = [r for r in rows if r[0] == "slack"]
    assert slack and all(r[2] == "failed" and r[3] == 1 and r[4] for r in slack)
    assert all(r[2] == "sent" for r in rows if r[0] != "slack")
    # Slack is back: the next run after the retry delay delivers what the ledger kept
    at(monkeypatch, T0 + 2 * MIN)
    completed, result = run_monitor()
    assert completed, result
    assert len(standins.slack.accepted) == 2
    assert all(r[2] == "sent" for r in ledger(state_url))


def test_a_chain_that_pages_nobody_exits_2(alerting_env: dict[str, str], standins: StandIns, monkeypatch: pytest.MonkeyPatch) -> None:
    # only Slack: level 2 (phone, SMS) could reach nobody
    for name in list(alerting_env):
        if name.startswith("RUNBOOK_ALERTS__CHANNELS__") and "SLACK" not in name:
            monkeypatch.delenv(name)
    result = runbook_here("monitor", env={}, monkeypatch=monkeypatch)
    assert result.returncode == 2, result
    assert "RUNBOOK_ALERTS__ESCALATION" in result.stderr and "level 2" in result.stderr
    assert standins.slack.accepted == []


def test_ack_stops_the_next_level_and_silence_holds(alerting_env: dict[str, str], standins: StandIns,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    at(monkeypatch, T0)
    run_monitor()
    acked = runbook_here("--json", "ack", "1", "--by", "aiko", "--note", "failing over", env={}, monkeypatch=monkeypatch)
    assert acked.returncode == 0, acked.stderr
    assert json.loads(acked.stdout)["acknowledged"] is True
    calls = len(standins.twilio.received)
    at(monkeypatch, T0 + 16 * MIN)
    completed, result = run_monitor()
    assert completed and result["pages"] == [] and len(standins.twilio.received) == calls

    listed = runbook_here("--json", "silence", "add", "--rule", "*", "--author", "aiko", "--reason", "x", "--for", "1h",
                          env={}, monkeypatch=monkeypatch)
    assert listed.returncode == 2 and "rule or a resource" in listed.stderr
    too_long = runbook_here("silence", "add", "--rule", "database-down", "--author", "aiko", "--reason", "x", "--for", "8d",
                            env={}, monkeypatch=monkeypatch)
    assert too_long.returncode == 2 and "7 days" in too_long.stderr


def test_silence_list_answers_without_a_flow_run(alerting_env: dict[str, str], standins: StandIns, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    def silence_runs() -> int:
        with get_client(sync_client=True) as client:
            return len(client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["silence"]))))

    added = runbook_here("--json", "silence", "add", "--rule", "database-down", "--author", "aiko", "--reason", "drill", "--for", "2h",
                         env={}, monkeypatch=monkeypatch)
    assert added.returncode == 0, added.stderr
    runs = silence_runs()  # adding changes state: a flow run
    listed = runbook_here("--json", "silence", "list", env={}, monkeypatch=monkeypatch)
    assert listed.returncode == 0, listed.stderr
    assert [(s["author"], s["reason"]) for s in json.loads(listed.stdout)["silences"]] == [("aiko", "drill")]
    assert silence_runs() == runs  # listing made none


def test_alert_test_reports_each_channel(alerting_env: dict[str, str], standins: StandIns, monkeypatch: pytest.MonkeyPatch) -> None:
    with standins.twilio.down():
        result = runbook_here("--json", "alert-test", env={}, monkeypatch=monkeypatch)
    assert result.returncode == 1
    outcome = {c["name"]: c["ok"] for c in json.loads(result.stdout)["checks"]}
    assert outcome == {"channel:slack": True, "channel:email": True, "channel:sms": False, "channel:phone": False}
    assert "Production Alert Test" in json.dumps(standins.slack.accepted[0])
    assert standins.statuspage.incidents == {}  # never a public test incident unless asked


def test_an_unreachable_state_database_pages_directly_once(alerting_env: dict[str, str], standins: StandIns,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_ALERTS__STATE_DATABASE_URL", f"postgresql://nobody@127.0.0.1:{free_port()}/alerts")
    monkeypatch.setenv("RUNBOOK_ALERTS__STATE_SCHEMA", f"s_{secrets.token_hex(3)}")  # its own emergency Variable
    at(monkeypatch, T0)
    completed, result = run_monitor()
    assert not completed
    assert len(standins.slack.accepted) == 1 and "alert state unreachable" in json.dumps(standins.slack.accepted[0])
    at(monkeypatch, T0 + 5 * MIN)
    completed, _ = run_monitor()
    assert not completed and len(standins.slack.accepted) == 1  # held until the repeat interval


def test_bad_rules_exit_2_before_anything_runs(alerting_env: dict[str, str], standins: StandIns, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_ALERTS__RULES", json.dumps([{"name": "x", "metric": "error_rate_pct", "comparison": ">=",
                                                              "threshold": 1, "severity": "warning", "channels": ["pager"]}]))
    result = runbook_here("monitor", env={}, monkeypatch=monkeypatch)
    assert result.returncode == 2 and "RUNBOOK_ALERTS__RULES" in result.stderr and "unknown channel 'pager'" in result.stderr
    assert standins.slack.accepted == []


def test_no_backup_for_75_minutes_pages_backup_stale(alerting_env: dict[str, str], standins: StandIns, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """What the proactive automation starts: the store holds no DONE backup, so
    backup-stale (critical) fires at once and notifies."""
    from flows.notify_failure import FailureParameters, notify_failure

    monkeypatch.setenv("RUNBOOK_BACKUP_STORE", str(tmp_path / "empty-store"))
    state = notify_failure(FailureParameters(signal="backup-missing"), return_state=True)
    assert state.is_completed(), state.message
    told = [json.dumps(body) for body in standins.slack.accepted]
    assert any("backup-stale" in t and "CRITICAL" in t for t in told), told
    assert standins.twilio.received  # critical: SMS too


def test_the_monitor_records_every_tables_size_once_a_day_while_the_database_is_up(
    alerting_env: dict[str, str], standins: StandIns, variants: Any, state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So that the capacity review (§7) finds the tables' growth between its monthly runs;
    on the variants schema: quoted names in another schema, a partitioned table."""
    monkeypatch.setenv("RUNBOOK_DATABASE_URL", variants.dsn)
    monkeypatch.setenv("RUNBOOK_INSTANCE", "db-1")  # as alerting_env has it (the variants fixture set its own)

    def readings() -> dict[datetime, set[str]]:
        with psycopg.connect(state_url) as conn:
            rows = conn.execute("SELECT at, table_schema || '.' || table_name FROM runbook_alerting.table_size_history"
                                " WHERE instance = 'db-1'").fetchall()
        found: dict[datetime, set[str]] = {}
        for when, name in rows:
            found.setdefault(when, set()).add(name)
        return found

    at(monkeypatch, T0)
    completed, report = run_monitor()
    assert completed, report
    assert report["table_sizes"].startswith("recorded the sizes of ")
    (tables,) = readings().values()
    assert {"app.User", "app.audit log", "public.market_data"} <= tables
    assert not {"public.market_data_before", "public.market_data_recent"} & tables  # a partitioned table counts once, whole

    at(monkeypatch, T0 + 5 * MIN)
    completed, report = run_monitor()
    assert completed and report["table_sizes"].startswith("not due") and len(readings()) == 1
    at(monkeypatch, T0 + timedelta(hours=24, minutes=1))
    completed, report = run_monitor()
    assert completed and report["table_sizes"].startswith("recorded") and len(readings()) == 2

    # the database down: nothing tried, the alerts go on
    monkeypatch.setenv("RUNBOOK_DATABASE_URL", f"postgresql://nobody@127.0.0.1:{free_port()}/platform")
    at(monkeypatch, T0 + timedelta(hours=49))
    _, report = run_monitor()
    assert "did not find the database up" in report["table_sizes"] and len(readings()) == 2
    monkeypatch.setenv("RUNBOOK_CAPACITY__TABLE_SIZES_EVERY_HOURS", "0")
    _, report = run_monitor()
    assert report["table_sizes"].startswith("off")
