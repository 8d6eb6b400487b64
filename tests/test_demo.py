"""The README's first command the way a newcomer runs it (issue 13 §6, §7): ``runbook
demo --keep-server`` in a fresh RUNBOOK_HOME, no PREFECT_API_URL and no RUNBOOK_* of
the tests' own: it seeds the embedded sandbox, starts the local Prefect server (prefect
deploy --all, a worker), runs the main procedures as flow runs there, and leaves the
server up. Then the server is read through its API, and headless Chromium (Debian's
package, driven by Playwright) opens the Prefect UI and finds the deployments with
their schedules, the DR drill's report, the capacity chart and the checklist, saving
screenshots under the test's output folder (``RUNBOOK_TEST_SCREENSHOTS`` to choose it).

The browser test is marked ``browser`` and skipped when no Chromium is installed
(``sudo apt-get install -y chromium``; or ``RUNBOOK_TEST_CHROMIUM`` naming one).
Everything is stopped in teardown.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import free_port

pytestmark = [pytest.mark.deployed, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("backup", "backup-verify", "dr-drill", "data-cleanup", "deploy-verify", "daily-maintenance", "capacity-review", "monitor")
CHROMIUM_ARGS = [  # this machine's network is closed: no background connections (../shared/PREFECT-NOTES.md)
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


def chromium() -> str | None:
    named = os.environ.get("RUNBOOK_TEST_CHROMIUM")
    return named or shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Demo:
    proc: subprocess.CompletedProcess[str]
    ui: str
    home: Path

    @property
    def api(self) -> str:
        return self.ui + "/api"

    def artifact(self, key: str) -> dict[str, Any]:
        found = httpx.post(f"{self.api}/artifacts/latest/filter", json={"artifacts": {"key": {"any_": [key]}}}, timeout=30).json()
        assert found, f"no artifact {key} on the server"
        return found[0]


def cli(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runbook.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    home = tmp_path_factory.mktemp("demo") / "rb"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNBOOK_", "PREFECT_"))}
    env |= {"RUNBOOK_HOME": str(home), "RUNBOOK_SERVER__PORT": str(port), "PYTHONPATH": str(ROOT)}
    try:
        proc = cli("demo", "--keep-server", env=env)
        yield Demo(proc, f"http://127.0.0.1:{port}", home)
    finally:
        cli("server", "stop", env=env, timeout=120)
        cli("sandbox", "down", env=env, timeout=120)


def test_the_demo_runs_every_main_procedure_and_sums_up_on_one_screen(demo: Demo) -> None:
    assert demo.proc.returncode == 0, demo.proc.stdout + demo.proc.stderr[-3000:]
    out = demo.proc.stdout
    assert len(out.splitlines()) <= 24, out  # one screen
    for step in STEPS:
        assert any(line.split()[:2] == ["ok", step] for line in out.splitlines()), f"{step} not ok:\n{out}"
    assert "high-error-rate fired" in out and "delivered to the Slack stand-in" in out
    assert "dry run:" in out  # data-cleanup touched nothing
    rto = next(line for line in out.splitlines() if "achieved RTO" in line)
    rpo = next(line for line in out.splitlines() if "achieved RPO" in line)
    assert "within the 4h00m00s target" in rto and "within the 1h00m00s target" in rpo
    assert f"{demo.ui} (scheduler off" in out
    assert "production" not in out  # the sandbox's one server is named as such, never as production
    assert "Traceback" not in demo.proc.stderr
    # the stand-ins' made-up secrets are never shown: the webhook secret, Slack's webhook path
    printed = demo.proc.stdout + demo.proc.stderr
    assert not re.search(r"whsec_[0-9a-f]{32}", printed) and not re.search(r"B0STANDIN/[0-9a-f]{24}", printed)


def test_the_kept_server_serves_the_deployments_and_the_demos_runs(demo: Demo) -> None:
    assert demo.proc.returncode == 0
    deployments = httpx.post(f"{demo.api}/deployments/filter", json={}, timeout=30).json()
    by_name = {d["name"]: d for d in deployments}
    assert {"backup", "dr-drill", "daily-maintenance", "monitor"} <= set(by_name)
    assert [s["schedule"]["cron"] for s in by_name["backup"]["schedules"]] == ["0 * * * *"]
    runs = httpx.post(f"{demo.api}/flow_runs/filter", json={}, timeout=30).json()
    names = {httpx.get(f"{demo.api}/flows/{r['flow_id']}", timeout=30).json()["name"]: r["state_type"] for r in runs}
    for flow in ("backup", "backup-verify", "disaster-recovery", "data-cleanup", "deploy-verify", "daily-maintenance", "monitor"):
        assert names.get(flow) == "COMPLETED", (flow, names)
    # the scheduler is off: no run was created from a schedule
    assert not [r for r in runs if r.get("auto_scheduled")]
    assert "data:image/png;base64," in str(demo.artifact("capacity-review-local-5432-platform")["data"])
    checklist = str(demo.artifact("daily-checklist-local-5432-platform")["data"])
    assert "backup ran" in checklist and "not confirmed" in checklist


@pytest.mark.browser
def test_the_prefect_ui_shows_schedules_the_drill_report_the_capacity_chart_and_the_checklist(
    demo: Demo, tmp_path_factory: pytest.TempPathFactory
) -> None:
    browser_path = chromium()
    if browser_path is None:
        pytest.skip("no Chromium: sudo apt-get install -y chromium (or RUNBOOK_TEST_CHROMIUM=/path/to/chrome)")
    from playwright.sync_api import expect, sync_playwright

    assert demo.proc.returncode == 0
    shots = Path(os.environ.get("RUNBOOK_TEST_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)

            page.goto(f"{demo.ui}/deployments")
            page.get_by_placeholder("Search deployments").fill("backup")
            expect(page.get_by_text("Every hour every day")).to_be_visible()
            page.screenshot(path=shots / "deployments-backup.png", full_page=True)
            page.get_by_placeholder("Search deployments").fill("daily-maintenance")
            expect(page.get_by_text("At 03:20 AM every day")).to_be_visible()
            page.screenshot(path=shots / "deployments-daily.png", full_page=True)

            drill = demo.artifact("dr-report-local-5432-platform")
            page.goto(f"{demo.ui}/artifacts/artifact/{drill['latest_id']}")
            expect(page.get_by_text("Disaster-recovery drill of platform: passed")).to_be_visible()
            expect(page.get_by_text("within the 4h00m00s target").first).to_be_visible()
            page.screenshot(path=shots / "dr-drill-report.png", full_page=True)

            capacity = demo.artifact("capacity-review-local-5432-platform")
            page.goto(f"{demo.ui}/artifacts/artifact/{capacity['latest_id']}")
            chart = page.locator("img[src^='data:image/png']").first
            expect(chart).to_be_visible()
            assert chart.evaluate("img => img.complete && img.naturalWidth > 300")  # decoded, not a broken image
            page.screenshot(path=shots / "capacity-chart.png", full_page=True)

            checklist = demo.artifact("daily-checklist-local-5432-platform")
            page.goto(f"{demo.ui}/artifacts/artifact/{checklist['latest_id']}")
            expect(page.get_by_text("backup ran").first).to_be_visible()
            expect(page.get_by_text("user-support inquiries").first).to_be_visible()
            page.screenshot(path=shots / "daily-checklist.png", full_page=True)
        finally:
            browser.close()
    assert sorted(p.name for p in shots.glob("*.png")) == sorted(
        ["capacity-chart.png", "daily-checklist.png", "deployments-backup.png", "deployments-daily.png", "dr-drill-report.png"]
    )
