"""``runbook demo``: the README's first command. On the embedded sandbox, the main
procedures end to end as real flow runs, recorded on the local Prefect server:

backup, backup-verify, dr-drill, data-cleanup (dry run), deploy-verify against the
stand-in API, the daily checklist, a capacity review, and a monitor evaluation whose
alert reaches a local Slack stand-in; then one screen of summary with the achieved RTO
and RPO.

What the demo sets up lives in this process only: the stand-in API (sandbox/api.py)
and Slack (sandbox/standins.py) on 127.0.0.1, a dashboard token and a webhook secret
made up for them (never printed), and a daily plan without the items that would call
the internet (the dependency audit asks PyPI's advisory service, the external-API check
the price and AI services). The local server is started with its scheduler off (the
sandbox is not the platform: scheduled runs would have no platform to work on); the
deployments and their schedules are all there to browse. ``--keep-server`` leaves it up.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runbook.errors import ConfigError

# The daily items the sandbox can run without the internet (runbook.calendar.DEFAULT_DAILY
# otherwise): the health check of the stand-in API and the database, not of the third parties.
LEFT_OUT = {"security-scan": "asks PyPI's advisory service", "external API limits": "calls the price and AI services"}
ERROR_REQUESTS = 20  # requests the stand-in answers 500 while the monitor watches
EVALUATION_INTERVAL_S, EVALUATION_GAP_S = 10, 6.0


@dataclass
class Step:
    name: str
    ok: bool
    line: str
    result: Any


def sandbox_daily_plan() -> str:
    """DEFAULT_DAILY without the internet: JSON for RUNBOOK_CALENDAR__DAILY."""
    from runbook.calendar import DEFAULT_DAILY

    plan = DEFAULT_DAILY.model_copy(deep=True)
    plan.items = [i for i in plan.items if i.name not in LEFT_OUT]
    for item in plan.items:
        if item.procedure == "diagnose":
            item.parameters = {"component": "api"}
    plan.checklist = [e for e in plan.checklist if e.text not in LEFT_OUT]
    return plan.model_dump_json()


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment inside the block, the old ones after."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def start_server(settings: Any, note: Callable[[str], None]) -> tuple[str | None, Any]:
    """The local Prefect server for the demo's runs: the one already running, or a new one
    with its scheduler off. Returns (API URL, the server when the demo started it). An
    explicit PREFECT_API_URL wins: the runs go there and no server is started."""
    from runbook.server import LocalServer

    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"], None
    server = replace(LocalServer.from_settings(settings), scheduler=False)
    running = server.running_api_url()
    if running:
        os.environ["PREFECT_API_URL"] = running
        return running, None
    note(f"starting the local Prefect server on {server.host}:{server.port} (prefect deploy --all; about a minute) ...")
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    return server.api_url, server


def run_demo(as_json: bool, keep_server: bool, run: Callable[[str, list[str]], tuple[bool, Any]],
             configure: Callable[[], None]) -> int:
    """The demo; ``run(procedure, argv)`` runs one procedure as the CLI would."""
    from runbook.settings import load_settings
    from sandbox.platform import Sandbox

    def note(text: str) -> None:
        if not as_json:
            print(text, file=sys.stderr, flush=True)

    settings = load_settings()
    box = Sandbox(settings.home)
    if box.describe() is None:
        counts = box.seed(1)
        note(f"sandbox seeded under {Path(settings.home).resolve()}: {counts}")
    dsn = box.up()
    api_url, started = start_server(settings, note)
    configure()  # Prefect is imported from here on: after PREFECT_API_URL is known
    try:
        steps = _steps(dsn, run, note)
    finally:
        kept = started is not None and keep_server
        if started is not None and not keep_server:
            started.stop()
    ok = all(s.ok for s in steps)
    if as_json:
        sys.stdout.write(json.dumps({
            "ok": ok, "prefect_api_url": api_url, "server_kept": kept,
            "steps": [{"name": s.name, "ok": s.ok, "summary": s.line, "result": s.result} for s in steps],
        }, default=_jsonable) + "\n")
    else:
        print(summary(steps, api_url, started is not None, kept))
    return 0 if ok else 1


def _jsonable(value: Any) -> Any:
    return str(value) if not isinstance(value, BaseException) else f"{type(value).__name__}: {value}"


def _steps(dsn: str, run: Callable[[str, list[str]], tuple[bool, Any]], note: Callable[[str], None]) -> list[Step]:
    from sandbox.api import VERSION, Faults, serve
    from sandbox.standins import SlackStandIn

    token, webhook_secret = secrets.token_urlsafe(24), f"whsec_{secrets.token_hex(16)}"
    api = serve(dsn, dashboard_token=token, webhook_secret=webhook_secret)
    slack = SlackStandIn()
    from runbook.logconfig import hide

    hide(token, webhook_secret, slack.webhook_url, slack.token)  # masked in every record, whatever logs them
    env = {
        "RUNBOOK_PLATFORM_URL": api.url,
        "RUNBOOK_PLATFORM_TOKEN": token,
        "STRIPE_WEBHOOK_SECRET": webhook_secret,
        **slack.settings_env(),
        # the §9 chain on the one channel the demo has
        "RUNBOOK_ALERTS__ESCALATION__LEVELS": json.dumps(
            [{"level": 1, "name": "automatic alert handling (demo: Slack stand-in)", "after_minutes": 0,
              "contacts": [{"channel": "slack"}]}]),
        "RUNBOOK_CALENDAR__DAILY": sandbox_daily_plan(),
        # the monitor skips an evaluation within half its interval of the previous one: the
        # demo's two evaluations are EVALUATION_GAP_S apart, not a minute
        "RUNBOOK_ALERTS__EVALUATION_INTERVAL_SECONDS": str(EVALUATION_INTERVAL_S),
    }
    steps: list[Step] = []

    def step(name: str, argv: list[str], line: Callable[[Any], str] | None = None) -> Any:
        note(f"[{len(steps) + 1}] {name} {' '.join(argv)}".rstrip())
        completed, result = run(name, argv)
        if isinstance(result, ConfigError):
            raise result  # bad configuration: exit 2
        text = line(result) if (line and completed and isinstance(result, dict)) else _message(result)
        steps.append(Step(name, completed, text, result))
        return result if completed else None

    try:
        with environment(env):
            backup = step("backup", ["--fingerprint"], lambda r: f"{r['backup_id']}: {r.get('message') or 'done'}")
            backup_id = backup["backup_id"] if backup else None
            at = ["--backup-id", backup_id] if backup_id else []
            step("backup-verify", [*at, "--deep"])
            step("dr-drill", at)
            step("data-cleanup", [])  # the dry run is the default
            step("deploy-verify", ["--expected-version", VERSION])
            step("daily-maintenance", [], _period_line)
            step("capacity-review", [])
            steps.append(_monitor_step(api, slack, run, note, len(steps) + 1, Faults))
    finally:
        api.stop()
        slack.stop()
    return steps


def _monitor_step(api: Any, slack: Any, run: Callable[[str, list[str]], tuple[bool, Any]],
                  note: Callable[[str], None], number: int, faults: Any) -> Step:
    """The platform's prices endpoint fails; the monitor sees the error rate twice (the
    rule's ``for``) and the alert goes to Slack."""
    import httpx

    note(f"[{number}] monitor: the stand-in's /api/market/prices answers 500; {ERROR_REQUESTS} requests; two evaluations {EVALUATION_GAP_S:.0f} s apart")
    with httpx.Client(base_url=api.url, timeout=10) as client:
        client.put("/__faults", json=faults(error_paths=["/api/market/prices"]).model_dump()).raise_for_status()
        for _ in range(ERROR_REQUESTS):
            client.get("/api/market/prices")
        results = []
        try:
            for _ in range(2):
                if results:
                    time.sleep(EVALUATION_GAP_S)
                results.append(run("monitor", []))
        finally:
            client.put("/__faults", json=faults().model_dump())
    completed, result = results[-1]
    alerts = [m for m in slack.accepted if "high-error-rate" in json.dumps(m)]
    ok = completed and bool(alerts) and all(done for done, _ in results)
    if ok:
        line = f"high-error-rate fired; {len(alerts)} message(s) delivered to the Slack stand-in"
    elif not alerts:
        line = f"no high-error-rate message reached the Slack stand-in ({_message(result)})"
    else:
        line = _message(result)
    return Step("monitor", ok, line, {"evaluations": [r for _, r in results], "slack": slack.accepted})


def _period_line(result: dict[str, Any]) -> str:
    """A period's message, and the items that did not complete, by name."""
    missed = [f"{i['name']} {i['status']}" for i in result.get("items", []) if i.get("status") not in ("completed", "not configured")]
    return str(result.get("message", "")) + (f" ({', '.join(missed)})" if missed else "")


def _message(result: Any) -> str:
    if isinstance(result, BaseException):
        text = str(result).strip()
        return text.splitlines()[0] if text else type(result).__name__
    if isinstance(result, dict) and result.get("message"):
        return str(result["message"])
    return "done" if result is not None else "no result"


def summary(steps: list[Step], api_url: str | None, started: bool, kept: bool) -> str:
    """One screen: each step's outcome, the drill's RTO and RPO, where to look."""
    width = max(len(s.name) for s in steps)
    lines = ["runbook demo on the embedded sandbox", ""]
    for s in steps:
        text = s.line if len(s.line) <= 160 else s.line[:157] + "..."
        lines.append(f"  {'ok  ' if s.ok else 'FAIL'} {s.name:<{width}}  {text}")
    drill = next((s for s in steps if s.name == "dr-drill"), None)
    if drill and isinstance(drill.result, dict):
        rto, rpo = drill.result.get("rto") or {}, drill.result.get("rpo") or {}
        lines += ["", f"  achieved RTO: {_judged(rto)}", f"  achieved RPO: {_judged(rpo)}"]
    lines.append("")
    lines.append(f"  left out of the daily run on the sandbox: {'; '.join(f'{k} ({v})' for k, v in LEFT_OUT.items())}")
    ui = (api_url or "").removesuffix("/api")
    if not started:
        lines.append(f"  the runs and their reports (artifacts) are on the Prefect server at {ui}")
    elif kept:
        lines.append(f"  the runs, deployments and reports: {ui} (scheduler off; `runbook server stop` ends it)")
    else:
        lines.append("  the local Prefect server was stopped; `runbook demo --keep-server` leaves it up to browse the runs")
    return "\n".join(lines)


def _judged(value: Any) -> str:
    if isinstance(value, dict) and value.get("message"):
        return str(value["message"])
    return str(value) if value else "not measured"
