"""emergency-api-disable / api-enable against a local kill switch (tests/standins.py
KillSwitchStandIn: a KV flag behind a token, and a health route that answers 503 while
disabled), and the command variant; the token never shows anywhere."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prefect import get_client

import tasks.killswitch
from flows.api_enable import ApiEnableParameters, api_enable
from flows.emergency_api_disable import ApiDisableParameters, emergency_api_disable
from tasks import secstate
from tests.conftest import Platform, runbook_here
from tests.standins import KILL_SWITCH, KillSwitchStandIn


@pytest.fixture
def switch(monkeypatch: pytest.MonkeyPatch) -> Iterator[KillSwitchStandIn]:
    standin = KillSwitchStandIn()
    monkeypatch.setenv("KS_API_TOKEN", standin.token)
    # no real waits: the retries of a transient answer come at once
    monkeypatch.setattr(tasks.killswitch, "call_switch_task", tasks.killswitch.call_switch_task.with_options(retry_delay_seconds=0))
    monkeypatch.setattr(tasks.killswitch, "read_switch_task", tasks.killswitch.read_switch_task.with_options(retry_delay_seconds=0))
    yield standin
    standin.stop()


def configure(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def disable(**kw: Any) -> Any:
    return emergency_api_disable(ApiDisableParameters(by="ana", reason="credential stuffing", **kw), return_state=True)


def enable(**kw: Any) -> Any:
    return api_enable(ApiEnableParameters(by="ben", reason="attack over", **kw), return_state=True)


def audit(platform: Platform, action: str) -> list[dict[str, Any]]:
    with platform.connect() as conn:
        return list(reversed(secstate.audit_rows(conn, "runbook_security", action=action)))


def assert_never_shown(secret: str, *texts: Any) -> None:
    for text in texts:
        assert secret not in json.dumps(text, default=str)
    with get_client(sync_client=True) as client:
        logs = client.read_logs()
        assert logs and not [log.message for log in logs if secret in log.message]
        assert not [a.key for a in client.read_artifacts() if secret in json.dumps(a.data, default=str)]
        assert not [r.name for r in client.read_flow_runs() if secret in json.dumps(r.parameters, default=str)]


@pytest.mark.parametrize("check", ["status", "field"])
def test_disable_then_enable_round_trip_read_back_by_the_check(
    platform: Platform, switch: KillSwitchStandIn, monkeypatch: pytest.MonkeyPatch, check: str
) -> None:
    configure(monkeypatch, switch.settings_env(check=check))
    done = disable(confirm=True)
    assert done.is_completed(), done.message
    result = done.result()
    assert switch.disabled and [c.body for c in switch.calls()] == [{"disabled": True}]
    preview = result["preview"]
    assert preview["before"]["state"] == "enabled" and f"PUT {switch.url}/flag" in preview["changes"][0]
    assert "the check reads now: enabled" in preview["changes"] and "until runbook api-enable" in preview["warnings"][0]
    assert result["after"]["state"] == "disabled" and [c["ok"] for c in result["checks"]] == [True]

    again = disable(confirm=True)  # off already: a no-op, not a second call
    assert again.is_completed() and again.result()["outcome"] == "noop" and len(switch.calls()) == 1

    back = enable(confirm=True)
    assert back.is_completed(), back.message
    assert not switch.disabled and [c.body for c in switch.calls()] == [{"disabled": True}, {"disabled": False}]
    assert back.result()["after"]["state"] == "enabled" and back.result()["after"]["closed"] == [result["after"]["record"]]

    rows = audit(platform, "emergency-api-disable")
    assert [(r["phase"], r["actor"]) for r in rows] == [("preview", "ana"), ("applied", "ana"), ("preview", "ana"), ("noop", "ana"),
                                                         ("undone", "ben")]
    assert rows[1]["before"]["state"] == "enabled" and rows[4]["after"]["state"] == "enabled"
    assert [r["phase"] for r in audit(platform, "api-enable")] == ["preview", "applied"]
    assert_never_shown(switch.token, result, back.result(), rows)


def test_a_5xx_is_retried_and_a_403_fails_the_run_with_nothing_claimed(
    platform: Platform, switch: KillSwitchStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, switch.settings_env(check=None))
    switch.fail_next(1, 500)
    done = disable(confirm=True)
    assert done.is_completed(), done.message
    assert [c.status for c in switch.calls()] == [500, 200] and switch.disabled
    assert [c["critical"] for c in done.result()["checks"]] == [False]  # no check: said so, not claimed as read back
    assert enable(confirm=True).is_completed() and not switch.disabled

    switch.reset()
    switch.fail_next(1, 403)
    refused = disable(confirm=True)
    assert refused.is_failed() and "answered 403" in refused.message and "not changed" in refused.message
    assert [c.status for c in switch.calls()] == [403] and not switch.disabled  # not retried
    phases = [r["phase"] for r in audit(platform, "emergency-api-disable")]
    assert phases[-2:] == ["preview", "failed"]
    with platform.connect() as conn:  # nothing recorded as disabled
        assert conn.execute("SELECT count(*) FROM runbook_security.kill_switch WHERE enabled_at IS NULL").fetchone() == (0,)
    nothing = runbook_here("api-enable", "--by", "ben", "--reason", "x", "--confirm", env={}, monkeypatch=monkeypatch)
    assert nothing.returncode == 2 and "recorded no emergency-api-disable" in nothing.stderr and "--force" in nothing.stderr
    forced = runbook_here("api-enable", "--by", "ben", "--reason", "the 403 left it unsure", "--confirm", "--force",
                          env={}, monkeypatch=monkeypatch)
    assert forced.returncode == 0, forced.stderr
    assert "Forced" in forced.stdout and switch.calls()[-1].body == {"disabled": False}
    assert_never_shown(switch.token, refused.message, forced.stdout, forced.stderr, nothing.stderr)


def test_the_command_variant_with_its_token_masked(platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flag, token = tmp_path / "flag", "cmd-T0ken-5ecret"
    script = "import os, pathlib; print('token', os.environ['KS_TOKEN']); pathlib.Path(os.environ['KS_FLAG']).write_text({!r})"
    monkeypatch.setenv("KS_FLAG", str(flag))
    monkeypatch.setenv("KS_TOKEN", token)
    for side, value in (("DISABLE", "off"), ("ENABLE", "on")):
        monkeypatch.setenv(f"{KILL_SWITCH}{side}", json.dumps(
            {"command": [sys.executable, "-c", script.format(value)], "env": ["KS_FLAG", "KS_TOKEN"]}))
    shown = runbook_here("emergency-api-disable", "--by", "ana", "--reason", "drill", env={}, monkeypatch=monkeypatch)
    assert shown.returncode == 0 and "nothing was changed; add --confirm to apply" in shown.stdout and not flag.exists()
    assert f"run the command {sys.executable!r}" in shown.stdout
    done = disable(confirm=True)
    assert done.is_completed(), done.message
    assert flag.read_text() == "off" and done.result()["after"]["called"].startswith("python")
    assert enable(confirm=True).is_completed() and flag.read_text() == "on"

    monkeypatch.setenv(f"{KILL_SWITCH}DISABLE", json.dumps(
        {"command": [sys.executable, "-c", "import os, sys; print('token', os.environ['KS_TOKEN']); sys.exit(3)"], "env": ["KS_TOKEN"]}))
    failed = disable(confirm=True)
    assert failed.is_failed() and "exit 3" in failed.message and "token ***" in failed.message and flag.read_text() == "on"
    assert_never_shown(token, done.result(), failed.message)


@pytest.mark.parametrize("setting, value, named", [
    ("DISABLE", None, "RUNBOOK_SECURITY__KILL_SWITCH__DISABLE"),
    ("DISABLE", json.dumps({"url": "htp:/nowhere", "method": "PUT"}), "RUNBOOK_SECURITY__KILL_SWITCH__DISABLE"),
    ("ENABLE", None, "RUNBOOK_SECURITY__KILL_SWITCH__ENABLE"),
    ("TOKEN", None, "RUNBOOK_SECURITY__KILL_SWITCH__DISABLE__HEADERS"),
])
def test_bad_settings_exit_2_before_anything_is_called(
    platform: Platform, switch: KillSwitchStandIn, monkeypatch: pytest.MonkeyPatch, setting: str, value: str | None, named: str
) -> None:
    configure(monkeypatch, switch.settings_env())
    if setting == "TOKEN":
        monkeypatch.delenv("KS_API_TOKEN")
    elif value is None:
        monkeypatch.delenv(f"{KILL_SWITCH}{setting}")
    else:
        monkeypatch.setenv(f"{KILL_SWITCH}{setting}", value)
    done = runbook_here("emergency-api-disable", "--by", "ana", "--reason", "x", "--confirm", env={}, monkeypatch=monkeypatch)
    assert done.returncode == 2, done.stdout + done.stderr
    assert named in done.stderr
    assert switch.calls() == [] and not switch.disabled
    with psycopg.connect(platform.dsn) as conn:
        assert not conn.execute("SELECT to_regclass('runbook_security.audit')").fetchone()[0] or \
            audit(platform, "emergency-api-disable") == []
