"""block-ip / unblock-ip (§5.4) on the real platform database and a recording Cloudflare
stand-in: block then unblock (the POST and the DELETE of the same rule id), a second
block is a no-op, an expired block lifts itself, refusals touch nothing, a 403 leaves
nothing half-applied, and the token never shows."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from prefect.client.orchestration import get_client
from psycopg import sql
from psycopg.rows import dict_row

import flows.block_ip
import flows.unblock_ip
from flows.block_ip import BlockParameters, block_ip
from flows.unblock_ip import UnblockParameters, unblock_ip
from runbook.settings import load_settings
from tasks import secstate
from tasks.blocklist import lift_expired_blocks
from tasks.cloudflare import delete_rule_task, ensure_rule_task
from tasks.secstate import security_state
from tests.cloudflare_standin import CloudflareStandIn
from tests.conftest import runbook_here

IP = "93.184.216.34"
NET = f"{IP}/32"
T0 = datetime(2030, 5, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def cloudflare(monkeypatch: pytest.MonkeyPatch) -> Iterator[CloudflareStandIn]:
    standin = CloudflareStandIn()
    for name, value in standin.settings_env().items():
        monkeypatch.setenv(name, value)
    yield standin
    standin.stop()


@pytest.fixture(autouse=True)
def _clock_and_fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flows.block_ip, "utcnow", lambda: T0)
    monkeypatch.setattr(flows.unblock_ip, "utcnow", lambda: T0 + timedelta(minutes=1))
    # retries without the backoff's real waits
    monkeypatch.setattr(flows.block_ip, "ensure_rule_task", ensure_rule_task.with_options(retry_delay_seconds=0))
    monkeypatch.setattr(flows.unblock_ip, "delete_rule_task", delete_rule_task.with_options(retry_delay_seconds=0))


def _block(**changes: Any) -> Any:
    values = {"ip": IP, "by": "ana", "reason": "brute force on /login", "confirm": True} | changes
    return block_ip(BlockParameters(**values), return_state=True)


def _unblock(**changes: Any) -> Any:
    values = {"ip": IP, "by": "ben", "reason": "false positive", "confirm": True} | changes
    return unblock_ip(UnblockParameters(**values), return_state=True)


def _rows(dsn: str, schema: str = "runbook_security", table: str = "ip_blocklist") -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn, conn.cursor(row_factory=dict_row) as cur:
        exists = conn.execute("SELECT to_regclass(%s)", (sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table)).as_string(conn),)).fetchone()
        if exists is None or exists[0] is None:
            return []
        cur.execute(sql.SQL("SELECT * FROM {}.{} ORDER BY id").format(sql.Identifier(schema), sql.Identifier(table)))
        return list(cur.fetchall())


def _phases(dsn: str, action: str | None = None) -> list[tuple[str, str, str]]:
    with psycopg.connect(dsn) as conn:
        exists = conn.execute("SELECT to_regclass('runbook_security.audit')").fetchone()
        if exists is None or exists[0] is None:
            return []
        return [(r["action"], r["phase"], r["actor"]) for r in reversed(secstate.audit_rows(conn, "runbook_security", action=action))]


def _assert_token_hidden(token: str, *texts: str) -> None:
    for text in texts:
        assert token not in text
    with get_client(sync_client=True) as client:
        assert not [a.key for a in client.read_artifacts() if token in json.dumps(a.data, default=str)]
        assert not [log.message for log in client.read_logs() if token in log.message]


def test_block_then_unblock_posts_then_deletes_the_same_rule(platform: Any, cloudflare: CloudflareStandIn,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    state = _block()
    assert state.is_completed(), state.message
    blocked = state.result()
    assert blocked["outcome"] == "applied" and blocked["verification"] == []
    [post] = cloudflare.calls("POST")
    assert post.body["configuration"] == {"target": "ip", "value": IP} and post.body["mode"] == "block"
    assert "brute force on /login" in post.body["notes"] and "ana" in post.body["notes"]
    [rule_id] = list(cloudflare.rules)
    [row] = _rows(platform.dsn)
    assert (str(row["network"]), row["cloudflare_rule_id"], row["created_by"], row["lifted_at"]) == (NET, rule_id, "ana", None)
    assert row["expires_at"] == T0 + timedelta(minutes=240) and row["run_id"] == str(state.state_details.flow_run_id)
    assert blocked["preview"]["undo"] == f"runbook unblock-ip {NET} --by <you> --reason <why>"
    assert any("create a Cloudflare IP Access Rule" in c for c in blocked["preview"]["changes"])

    state = _unblock()
    assert state.is_completed(), state.message
    unblocked = state.result()
    assert unblocked["verification"] == [] and unblocked["after"]["cloudflare_rule_deleted"] is True
    [delete] = cloudflare.calls("DELETE")
    assert delete.path.endswith(f"/rules/{rule_id}")
    assert [c.method for c in cloudflare.calls() if c.method != "GET"] == ["POST", "DELETE"]
    assert cloudflare.rules == {}
    [row] = _rows(platform.dsn)
    assert (row["lifted_by"], row["lift_reason"], row["lifted_at"]) == ("ben", "false positive", T0 + timedelta(minutes=1))
    assert _phases(platform.dsn) == [("block-ip", "preview", "ana"), ("block-ip", "applied", "ana"),
                                     ("unblock-ip", "preview", "ben"), ("unblock-ip", "undone", "ben")]
    with psycopg.connect(platform.dsn) as conn:
        undone = secstate.audit_rows(conn, "runbook_security", action="unblock-ip")[0]
    assert undone["before"]["active_block"]["cloudflare_rule_id"] == rule_id and undone["after"]["lifted_block"]["lift_reason"] == "false positive"

    # a lifted block stays lifted: the expiry lift and a second unblock change nothing
    settings = load_settings()
    lifted = lift_expired_blocks(security_state(settings, platform.dsn), settings, T0 + timedelta(days=30))
    assert lifted["due"] == 0 and _rows(platform.dsn)[0]["lift_reason"] == "false positive"
    again = _unblock()
    assert again.is_failed() and f"{NET} has no active block" in again.message
    assert len(cloudflare.calls("POST")) == 1 and cloudflare.rules == {}
    _assert_token_hidden(cloudflare.token, json.dumps(blocked, default=str), json.dumps(unblocked, default=str),
                         "\n".join(r.getMessage() for r in caplog.records))


def test_blocking_twice_is_one_rule_and_one_row(platform: Any, cloudflare: CloudflareStandIn) -> None:
    assert _block().is_completed()
    state = _block(by="carl", reason="again")
    assert state.is_completed(), state.message
    result = state.result()
    assert result["outcome"] == "noop" and result["verification"] == [] and result["preview"]["noop"]
    assert len(cloudflare.calls("POST")) == 1 and len(cloudflare.rules) == 1 and len(_rows(platform.dsn)) == 1
    assert [p for _, p, _ in _phases(platform.dsn)] == ["preview", "applied", "preview", "noop"]


def test_a_rule_made_by_hand_is_adopted_not_duplicated(platform: Any, cloudflare: CloudflareStandIn) -> None:
    by_hand = cloudflare.add_rule("ip", IP)
    state = _block()
    assert state.is_completed(), state.message
    assert any(f"adopt the existing Cloudflare block rule {by_hand}" in c for c in state.result()["preview"]["changes"])
    assert cloudflare.calls("POST") == [] and list(cloudflare.rules) == [by_hand]
    assert _rows(platform.dsn)[0]["cloudflare_rule_id"] == by_hand
    assert _unblock().is_completed() and cloudflare.rules == {}


def test_an_allow_rule_for_the_address_is_refused_not_changed(platform: Any, cloudflare: CloudflareStandIn) -> None:
    allowed = cloudflare.add_rule("ip", IP, mode="whitelist")
    state = _block()
    assert state.is_failed() and f"whitelist rule {allowed}" in state.message
    assert isinstance(state.result(raise_on_failure=False), Exception)
    assert cloudflare.calls("POST") == [] and _rows(platform.dsn) == []


def test_an_expired_block_lifts_itself_on_the_injected_clock(platform: Any, cloudflare: CloudflareStandIn) -> None:
    assert _block(minutes=5).is_completed()
    [rule_id] = list(cloudflare.rules)
    settings = load_settings()
    state = security_state(settings, platform.dsn)
    early = lift_expired_blocks(state, settings, T0 + timedelta(minutes=4))
    assert early == {"due": 0, "lifted": [], "failed": []} and cloudflare.calls("DELETE") == []
    done = lift_expired_blocks(state, settings, T0 + timedelta(minutes=6))
    assert done["due"] == 1 and done["failed"] == [] and done["lifted"][0]["lift_reason"] == "expired"
    [delete] = cloudflare.calls("DELETE")
    assert delete.path.endswith(f"/rules/{rule_id}") and cloudflare.rules == {}
    [row] = _rows(platform.dsn)
    assert (row["lift_reason"], row["lifted_by"], row["lifted_at"]) == ("expired", "runbook (expiry)", T0 + timedelta(minutes=6))
    assert [p for _, p, _ in _phases(platform.dsn, "block-ip")] == ["preview", "applied", "expired"]
    # idempotent: nothing more to lift, nothing deleted twice
    assert lift_expired_blocks(state, settings, T0 + timedelta(minutes=7))["due"] == 0
    assert len(cloudflare.calls("DELETE")) == 1


def test_an_expired_block_not_lifted_yet_is_replaced_by_a_new_block(platform: Any, cloudflare: CloudflareStandIn,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert _block(minutes=5).is_completed()
    monkeypatch.setattr(flows.block_ip, "utcnow", lambda: T0 + timedelta(minutes=10))
    state = _block(permanent=True, reason="came back")
    assert state.is_completed(), state.message
    old, new = _rows(platform.dsn)
    assert old["lift_reason"] == "expired" and new["lifted_at"] is None and new["expires_at"] is None
    assert len(cloudflare.rules) == 1 and new["cloudflare_rule_id"] in cloudflare.rules
    assert any("permanent" in w for w in state.result()["preview"]["warnings"])


def test_a_403_is_not_retried_and_leaves_nothing_applied(platform: Any, cloudflare: CloudflareStandIn) -> None:
    cloudflare.fail_next_of("POST", 403)
    state = _block()
    assert state.is_failed()
    assert "HTTP 403" in state.message and "permission" in state.message and cloudflare.token not in state.message
    assert len(cloudflare.calls("POST")) == 1  # not retried
    assert _rows(platform.dsn) == [] and cloudflare.rules == {}
    assert [p for _, p, _ in _phases(platform.dsn)] == ["preview", "failed"]
    _assert_token_hidden(cloudflare.token, str(state.result(raise_on_failure=False)))


def test_a_500_and_a_429_are_retried_and_make_one_rule(platform: Any, cloudflare: CloudflareStandIn) -> None:
    cloudflare.fail_next_of("POST", 500)
    cloudflare.fail_next_of("POST", 429)
    state = _block()
    assert state.is_completed(), state.message
    assert [c.status for c in cloudflare.calls("POST")] == [500, 429, 200]
    assert len(cloudflare.rules) == 1 and _rows(platform.dsn)[0]["cloudflare_rule_id"] in cloudflare.rules


def test_ranges_cloudflare_cannot_hold_are_refused_before_anything(platform: Any, cloudflare: CloudflareStandIn) -> None:
    state = _block(ip="93.184.208.0/20")
    assert state.is_failed() and "/16, /24" in state.message
    assert cloudflare.calls() == [] and _rows(platform.dsn) == []
    state = _block(ip="93.184.216.0/24")
    assert state.is_completed(), state.message
    assert cloudflare.calls("POST")[0].body["configuration"] == {"target": "ip_range", "value": "93.184.216.0/24"}


def test_without_cloudflare_only_the_table_holds_the_block(platform: Any) -> None:
    state = _block(ip="1.2.3.4")
    assert state.is_completed(), state.message
    assert any("no Cloudflare rule" in c for c in state.result()["preview"]["changes"])
    [row] = _rows(platform.dsn)
    assert str(row["network"]) == "1.2.3.4/32" and row["cloudflare_rule_id"] is None
    assert _unblock(ip="1.2.3.4").is_completed() and _rows(platform.dsn)[0]["lifted_at"] is not None


def test_the_allow_list_and_the_operator_are_refused_unless_forced(platform: Any, cloudflare: CloudflareStandIn,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_SECURITY__BLOCK__ALLOW_LIST", '["93.184.216.0/24"]')
    state = _block()
    assert state.is_failed() and "allow-list entry 93.184.216.0/24" in state.message
    monkeypatch.delenv("RUNBOOK_SECURITY__BLOCK__ALLOW_LIST")
    monkeypatch.setenv("RUNBOOK_SECURITY__BLOCK__OPERATOR_IP", "1.2.3.4")
    state = _block(ip="1.2.3.0/24")
    assert state.is_failed() and "operator's own address 1.2.3.4" in state.message
    state = _block(ip=IP, operator_ip=IP)  # the parameter wins over the setting
    assert state.is_failed() and f"operator's own address {IP}" in state.message
    assert cloudflare.calls() == [] and _rows(platform.dsn) == [] and _phases(platform.dsn) == []
    state = _block(ip=IP, operator_ip=IP, force=True, reason="the operator's laptop is compromised")
    assert state.is_completed(), state.message
    assert any("--force overrides" in w and "operator" in w for w in state.result()["preview"]["warnings"])


def test_unblock_of_an_address_not_blocked_names_it_and_what_is_blocked_nearby(platform: Any) -> None:
    assert _block(ip="93.184.216.34").is_completed()
    state = _unblock(ip="93.184.216.35")
    assert state.is_failed() and "93.184.216.35/32 has no active block" in state.message
    assert "blocked nearby: 93.184.216.34/32" in state.message
    assert [p for a, p, _ in _phases(platform.dsn) if a == "unblock-ip"] == []


def test_the_cli_previews_without_confirm_and_refuses_bad_input_with_exit_2(platform: Any, cloudflare: CloudflareStandIn,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    env: dict[str, str] = {}
    for bad, why in [("999.1.1.1", "not an IP address"), ("10.0.0.0/8", "private range"), ("127.0.0.1", "loopback"),
                     ("93.184.216.1/8", "host bits")]:
        proc = runbook_here("block-ip", bad, "--by", "ana", "--reason", "x", "--confirm", env=env, monkeypatch=monkeypatch)
        assert proc.returncode == 2 and why in proc.stderr, (bad, proc.stderr)
    proc = runbook_here("block-ip", "10.1.2.3", "--by", "ana", "--force", "--confirm", env=env, monkeypatch=monkeypatch)
    assert proc.returncode == 2 and "--reason" in proc.stderr  # --force without a reason
    proc = runbook_here("block-ip", IP, "--by", "ana", "--reason", "x", "--minutes", "5", "--permanent", env=env, monkeypatch=monkeypatch)
    assert proc.returncode == 2
    assert cloudflare.calls() == [] and _rows(platform.dsn) == []

    proc = runbook_here("block-ip", IP, "--by", "ana", "--reason", "scan", "--minutes", "30", env=env, monkeypatch=monkeypatch)
    assert proc.returncode == 0, proc.stderr
    assert "nothing was changed; add --confirm to apply" in proc.stdout and f"unblock-ip {NET}" in proc.stdout
    assert cloudflare.calls("POST") == [] and _rows(platform.dsn) == []
    proc = runbook_here("--json", "block-ip", IP, "--by", "ana", "--reason", "scan", "--minutes", "30", "--confirm", env=env,
                        monkeypatch=monkeypatch)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outcome"] == "applied" and len(cloudflare.calls("POST")) == 1
    proc = runbook_here("unblock-ip", "93.184.216.99", "--by", "ben", "--reason", "x", "--confirm", env=env, monkeypatch=monkeypatch)
    assert proc.returncode == 2 and "has no active block" in proc.stderr and NET in proc.stderr
    proc = runbook_here("unblock-ip", IP, "--by", "ben", "--reason", "done", "--confirm", env=env, monkeypatch=monkeypatch)
    assert proc.returncode == 0, proc.stderr
    assert cloudflare.rules == {} and cloudflare.token not in proc.stdout + proc.stderr


def test_a_blocklist_table_whose_names_need_quoting(variants: Any, cloudflare: CloudflareStandIn,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_SECURITY__BLOCK__TABLE_SCHEMA", "Sec Ops")
    monkeypatch.setenv("RUNBOOK_SECURITY__BLOCK__TABLE", 'IP "Blocks"')
    assert _block().is_completed()
    assert _block().result()["outcome"] == "noop"
    [row] = _rows(variants.dsn, "Sec Ops", 'IP "Blocks"')
    assert row["cloudflare_rule_id"] in cloudflare.rules
    assert _unblock().is_completed()
    assert _rows(variants.dsn, "Sec Ops", 'IP "Blocks"')[0]["lift_reason"] == "false positive"


def test_a_rule_that_does_not_read_back_fails_the_run_naming_cloudflare(platform: Any, cloudflare: CloudflareStandIn,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cloudflare.forget_created = True
    state = _block()
    assert state.is_failed() and "read back does not match" in state.message
    assert "cloudflare (zone " in state.message and "does not exist" in state.message
    proc = runbook_here("block-ip", "93.184.216.0/24", "--by", "ana", "--reason", "x", "--confirm", env={}, monkeypatch=monkeypatch)
    assert proc.returncode == 1 and "READ BACK: cloudflare" in proc.stdout
