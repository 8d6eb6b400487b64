"""daily/weekly/monthly-maintenance as real flow runs on the seeded platform, with a
configured list of cheap items (the heavy procedures have their own tests): subflows,
edge commands, a procedure this version lacks, a failing critical item, the checklist
artifact and its history, and the typed input for the items only a person answers."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from prefect.artifacts import Artifact
from prefect.flow_runs import resume_flow_run

from flows.checklist import latest
from flows.daily_maintenance import daily_maintenance
from flows.periods import PeriodParameters
from runbook.reports import artifact_key
from tests.conftest import Platform, runbook_here
from tests.paused import wait_paused
from tests.standins import Answer, HttpStandIn, Received

CHEAP_DAILY = {
    "items": [
        {"name": "certificates", "procedure": "cert-check", "parameters": {"hosts": ["127.0.0.1:9"], "renew": False}},
        {"name": "error-log-review", "procedure": "log-report", "parameters": {"hours": 24}, "critical": False},
        {"name": "performance-report", "procedure": "no-such-procedure-yet", "critical": False},
        {"name": "log-rotation", "edge": "log-rotation", "critical": False},
        {"name": "cache-cleanup", "edge": "cache-clear", "critical": False},
        {"name": "workers-export", "edge": "workers-export"},
    ],
    "checklist": [
        {"text": "system up", "item": "certificates"},
        {"text": "error-log review", "item": "error-log-review"},
        {"text": "performance figures", "item": "performance-report"},
        {"text": "user-support inquiries"},
        {"text": "cost review"},
    ],
}
WORKERS = {"name": "platform-api", "routes": ["api.example.com/*"], "kv_namespaces": [{"binding": "CACHE"}]}


@pytest.fixture
def cheap_daily(platform: Platform, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    rotated = tmp_path / "rotated"
    monkeypatch.setenv("RUNBOOK_CALENDAR__DAILY", json.dumps(CHEAP_DAILY))
    monkeypatch.setenv("RUNBOOK_CALENDAR__EDGE__LOG_ROTATION", json.dumps(
        {"command": [sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write('rotated')", str(rotated)]}))
    monkeypatch.setenv("RUNBOOK_CALENDAR__EDGE__WORKERS_EXPORT", json.dumps(
        {"command": [sys.executable, "-c", f"print({json.dumps(json.dumps(WORKERS))})"]}))
    return rotated


def _run(**kwargs: Any) -> tuple[Any, dict[str, Any]]:
    state = daily_maintenance(PeriodParameters(**kwargs), return_state=True)
    return state, state.result(raise_on_failure=False)


def test_every_item_runs_a_failing_critical_one_fails_the_run_and_the_checklist_says_why(
    cheap_daily: Path, platform: Platform
) -> None:
    state, report = _run(answers={"cost review": "done"}, answered_by="ana", ask_people=False)
    items = {i["name"]: i for i in report["items"]}
    # the first item failed; every other still ran, each from its own final state
    assert state.is_failed() and state.message.startswith("daily maintenance failed: certificates (")
    assert items["certificates"]["status"] == "failed" and items["certificates"]["flow_run_id"]
    assert items["error-log-review"]["status"] == "completed" and "log report of" in items["error-log-review"]["message"]
    assert items["performance-report"]["status"] == "not available"
    assert "no such procedure 'no-such-procedure-yet'" in items["performance-report"]["message"]
    assert items["cache-cleanup"] == {**items["cache-cleanup"], "status": "not configured"}
    assert "RUNBOOK_CALENDAR__EDGE__CACHE_CLEAR" in items["cache-cleanup"]["message"]
    assert cheap_daily.read_text() == "rotated" and items["log-rotation"]["status"] == "completed"

    # the Workers configuration beside the backups, with its sha256
    export = items["workers-export"]
    assert export["status"] == "completed", export
    keys = sorted(p.relative_to(platform.store_url).as_posix() for p in Path(platform.store_url).rglob("workers_*"))
    assert len(keys) == 2 and keys[0].startswith(f"{platform.database}/edge-config/workers_")
    data = (Path(platform.store_url) / keys[0]).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert json.loads(data) == WORKERS and digest in export["message"]
    assert (Path(platform.store_url) / keys[1]).read_text().split()[0] == digest

    lines = {line["text"]: line for line in report["checklist"]}
    assert lines["system up"]["tick"] == "not done" and "certificates failed" in lines["system up"]["reason"]
    assert lines["error-log review"]["tick"] == "done"
    assert lines["performance figures"]["tick"] == "not done" and "not available" in lines["performance figures"]["reason"]
    assert lines["cost review"]["tick"] == "done" and lines["cost review"]["by"] == "ana"
    assert lines["user-support inquiries"] == {**lines["user-support inquiries"], "tick": "not confirmed",
                                               "reason": "not confirmed (asked only in the UI)", "by": None}

    markdown = Artifact.get(artifact_key("daily-checklist", platform.database)).data  # type: ignore[union-attr]
    assert "[?] **user-support inquiries**: not confirmed" in markdown and "[x] **error-log review**: done" in markdown
    # the history, read without a flow run
    shown = latest("daily")
    assert shown["id"] == report["checklist_id"] and shown["outcome"] == "failed" and shown["checklist"] == report["checklist"]


def test_the_cli_records_unanswered_items_as_not_confirmed_and_shows_the_latest_checklist(
    cheap_daily: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = runbook_here("--json", "daily-maintenance", "--answer", "cost review=not applicable", "--by", "ken", env={}, monkeypatch=monkeypatch)
    assert done.returncode == 1, done.stderr  # the critical certificates item failed
    result = json.loads(done.stdout)
    assert {line["text"]: line["tick"] for line in result["checklist"]}["cost review"] == "not applicable"
    shown = runbook_here("checklist", "--period", "daily", env={}, monkeypatch=monkeypatch)
    assert shown.returncode == 0, shown.stderr
    assert "[?] user-support inquiries: not confirmed: not confirmed (asked only in the UI)" in shown.stdout
    assert "[-] cost review: not applicable (ken)" in shown.stdout
    refused = runbook_here("checklist", "--period", "weekly", env={}, monkeypatch=monkeypatch)
    assert refused.returncode == 2 and "no weekly checklist yet" in refused.stderr
    bad = runbook_here("daily-maintenance", "--answer", "coffee=done", "--by", "ken", env={}, monkeypatch=monkeypatch)
    assert bad.returncode == 2 and "not a checklist item a person answers" in bad.stderr




class EdgeApi(HttpStandIn):
    """Cloudflare's API as the edge tasks call it: the Workers settings, a KV purge."""

    def answer(self, request: Received) -> Answer:
        if request.headers.get("authorization") != "Bearer cf-edge-token-77":
            return 403, {}, {"success": False, "errors": [{"message": "bad token"}]}
        if request.method == "GET" and request.path.endswith("/workers/scripts/platform-api/settings"):
            return 200, {}, {"result": WORKERS}
        if request.method == "POST" and request.path.endswith("/storage/kv/namespaces/cache-ns/bulk/delete"):
            return 200, {}, {"success": True}
        return 404, {}, {"error": "not found"}


def test_the_edge_tasks_over_http_in_a_real_run_store_the_export_and_never_show_the_token(
    cheap_daily: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    edge = EdgeApi()
    try:
        token = {"Authorization": {"env": "CF_EDGE_TOKEN", "prefix": "Bearer "}}
        monkeypatch.setenv("CF_EDGE_TOKEN", "cf-edge-token-77")
        monkeypatch.setenv("RUNBOOK_CALENDAR__EDGE__WORKERS_EXPORT", json.dumps(
            {"url": f"{edge.url}/client/v4/accounts/a1/workers/scripts/platform-api/settings", "method": "GET", "headers": token}))
        monkeypatch.setenv("RUNBOOK_CALENDAR__EDGE__CACHE_CLEAR", json.dumps(
            {"url": f"{edge.url}/client/v4/accounts/a1/storage/kv/namespaces/cache-ns/bulk/delete", "headers": token, "body": ["prices:*"]}))
        state, report = _run(answers={"cost review": "done"}, answered_by="ana", ask_people=False)
        items = {i["name"]: i for i in report["items"]}
        assert items["cache-cleanup"]["status"] == "completed", items["cache-cleanup"]
        assert items["workers-export"]["status"] == "completed", items["workers-export"]
        seen = sorted((r.method, r.path, r.body, r.headers["authorization"]) for r in edge.received)
        assert seen == [
            ("GET", "/client/v4/accounts/a1/workers/scripts/platform-api/settings", "", "Bearer cf-edge-token-77"),
            ("POST", "/client/v4/accounts/a1/storage/kv/namespaces/cache-ns/bulk/delete", ["prices:*"], "Bearer cf-edge-token-77"),
        ]
        (export,) = (p for p in Path(platform.store_url).rglob("workers_*.json"))
        assert json.loads(export.read_bytes()) == {"result": WORKERS}
        assert hashlib.sha256(export.read_bytes()).hexdigest() in items["workers-export"]["message"]
        markdown = Artifact.get(artifact_key("daily-checklist", platform.database)).data  # type: ignore[union-attr]
        assert "cf-edge-token-77" not in json.dumps(report) and "cf-edge-token-77" not in str(markdown)

        # a refused call (a revoked token): that item fails with the answer, the others still run
        monkeypatch.setenv("CF_EDGE_TOKEN", "revoked")
        edge.reset()
        state, report = _run(answers={"cost review": "done"}, answered_by="ana", ask_people=False)
        items = {i["name"]: i for i in report["items"]}
        assert items["cache-cleanup"]["status"] == "failed" and "answered 403" in items["cache-cleanup"]["message"]
        assert items["workers-export"]["status"] == "failed" and "answered 403" in items["workers-export"]["message"]
        assert items["log-rotation"]["status"] == "completed" and items["error-log-review"]["status"] == "completed"
        assert len(list(Path(platform.store_url).rglob("workers_*.json"))) == 1  # nothing stored from a refused export
        assert state.is_failed() and "workers-export" in state.message  # the export is critical; the cache clean-up is not
    finally:
        edge.stop()


def test_the_items_only_a_person_answers_are_asked_in_the_ui(cheap_daily: Path, platform: Platform) -> None:
    outcome: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: outcome.update(zip(("state", "report"), _run())))
    worker.start()
    run_id = wait_paused("the checklist", timeout=120)
    resume_flow_run(run_id, run_input={"answered_by": "mio", "user_support_inquiries": "done", "notes": "3 tickets closed"})
    worker.join(timeout=120)
    lines = {line["text"]: line for line in outcome["report"]["checklist"]}
    assert lines["user-support inquiries"] == {**lines["user-support inquiries"], "tick": "done", "by": "mio", "reason": "3 tickets closed"}
    # left empty in the form: not confirmed, never done
    assert lines["cost review"]["tick"] == "not confirmed" and lines["cost review"]["reason"] == "not confirmed (left unanswered)"
    assert latest("daily")["answered_by"] == "mio"


def test_no_answer_in_time_is_not_confirmed_and_the_run_goes_on(
    cheap_daily: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNBOOK_CALENDAR__PEOPLE_TIMEOUT_SECONDS", "1")
    state, report = _run(answers={"cost review": "done"}, answered_by="ana")
    lines = {line["text"]: line for line in report["checklist"]}
    assert lines["user-support inquiries"]["tick"] == "not confirmed"
    assert lines["user-support inquiries"]["reason"] == "not confirmed (no answer within 1 s)"
    assert lines["cost review"]["tick"] == "done"
    # the run ends on its items (the certificates failed), not on the unanswered question
    assert state.is_failed() and "certificates" in state.message and "never resumed" not in state.message
