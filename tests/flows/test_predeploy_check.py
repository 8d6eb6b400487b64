"""predeploy-check: secrets by name (environment and Prefect Secret blocks), gate
commands with timeouts and captured output, then staging before production."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from prefect.blocks.system import Secret

from flows.predeploy_check import PredeployParameters, predeploy_check
from runbook.settings import SECRETS_OF_0
from sandbox.api import RunningApi, serve
from tests.conftest import Platform, runbook_here
from tests.servers import free_port

VALUES = {name: f"value-of-{name.lower()}-xyz" for name in SECRETS_OF_0}
TOKEN = "predeploy-token-42"


@pytest.fixture
def secrets_set(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Seven secrets in the environment, STRIPE_WEBHOOK_SECRET in a Prefect Secret block."""
    for name, value in VALUES.items():
        if name == "STRIPE_WEBHOOK_SECRET":
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    Secret(value=VALUES["STRIPE_WEBHOOK_SECRET"]).save("stripe-webhook-secret", overwrite=True)
    monkeypatch.setenv("RUNBOOK_PREDEPLOY__GATES", json.dumps([gate("production-check", "print('ready')")]))
    yield
    Secret(value="").save("stripe-webhook-secret", overwrite=True)


def gate(name: str, code: str, timeout: int = 60) -> dict[str, Any]:
    return {"name": name, "command": [sys.executable, "-c", code], "timeout_seconds": timeout}


def _run(**kwargs: Any) -> tuple[Any, dict[str, Any]]:
    state = predeploy_check(PredeployParameters(**kwargs), return_state=True)
    return state, state.result(raise_on_failure=False)


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_every_secret_is_found_by_name_in_the_environment_or_a_secret_block(secrets_set: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_PREDEPLOY__GATES", json.dumps([gate("production-check", "print('ready')")]))
    state, report = _run()
    assert state.is_completed(), state.message
    checks = _checks(report)
    assert checks["secret:STRIPE_WEBHOOK_SECRET"]["detail"] == "present (Prefect Secret block 'stripe-webhook-secret')"
    assert checks["secret:OPENAI_API_KEY"]["detail"] == "present (environment)"
    assert checks["gate:production-check"]["ok"]

    monkeypatch.setenv("RUNBOOK_PREDEPLOY__SECRET_SOURCE", "environment")
    monkeypatch.delenv("SENTRY_DSN")
    state, report = _run()
    assert state.is_failed()
    assert set(report["failed"]) == {"secret:STRIPE_WEBHOOK_SECRET", "secret:SENTRY_DSN"}
    assert "the environment variable SENTRY_DSN" in _checks(report)["secret:SENTRY_DSN"]["detail"]
    with get_client(sync_client=True) as client:
        shown = json.dumps([a.data for a in client.read_artifacts()], default=str) + json.dumps([log.message for log in client.read_logs()])
    assert not [value for value in VALUES.values() if value in shown]


ENV_DUMP = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w')); print(sorted(os.environ))"


def test_a_gate_gets_only_path_home_lang_and_its_own_env_names(secrets_set: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RUNBOOK_DATABASE_URL", "postgresql://app:db-pass-123@db.internal/platform")
    monkeypatch.setenv("RUNBOOK_PLATFORM_TOKEN", "platform-token-456")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-789")
    monkeypatch.setenv("CI", "yes-ci")
    seen_file = tmp_path / "env.json"
    monkeypatch.setenv("RUNBOOK_PREDEPLOY__GATES", json.dumps([
        {**gate("e2e-test", ENV_DUMP), "command": [sys.executable, "-c", ENV_DUMP, str(seen_file)], "env": ["CI", "OPENAI_API_KEY"]},
    ]))
    state, report = _run()
    assert state.is_completed(), state.message
    seen = json.loads(seen_file.read_text())
    assert seen["CI"] == "yes-ci" and seen["OPENAI_API_KEY"] == VALUES["OPENAI_API_KEY"]  # listed: passed
    assert not {"RUNBOOK_DATABASE_URL", "RUNBOOK_PLATFORM_TOKEN", "AWS_SECRET_ACCESS_KEY", "STRIPE_SECRET_KEY"} & set(seen)


def test_gates_must_all_pass_their_output_is_kept_with_secrets_masked(secrets_set: None, monkeypatch: pytest.MonkeyPatch) -> None:
    leaky = "import os, sys; print('audit: 2 high vulnerabilities, key', os.environ['OPENAI_API_KEY']); sys.exit(3)"
    monkeypatch.setenv("RUNBOOK_PREDEPLOY__GATES", json.dumps([
        gate("production-check", "print('ready')"),
        {**gate("security-scan", leaky), "env": ["OPENAI_API_KEY"]},
        gate("e2e-test", "import time; time.sleep(30)", timeout=1),
    ]))
    state, report = _run(deploy=True)
    assert state.is_failed() and "nothing was deployed" in state.message
    checks = _checks(report)
    assert checks["gate:production-check"]["ok"]
    assert not checks["gate:security-scan"]["ok"] and "exit 3" in checks["gate:security-scan"]["detail"]
    assert checks["gate:e2e-test"]["detail"] == "still running after 1 s, stopped"
    assert report["deployed"] == []
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["predeploy-gate-security-scan"])))
    assert artifacts and "2 high vulnerabilities, key ***" in artifacts[0].data
    assert VALUES["OPENAI_API_KEY"] not in artifacts[0].data


def test_no_gate_configured_is_not_ready_and_deploy_refuses_before_anything_runs(
    secrets_set: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """§1.1 requires four checks to pass: an empty gate list is a failed check, never a pass."""
    monkeypatch.setenv("RUNBOOK_PREDEPLOY__GATES", "[]")
    state, report = _run()
    assert state.is_failed() and "gates" in report["failed"]
    assert "RUNBOOK_PREDEPLOY__GATES" in state.message and not report["gate_passed"]

    log = tmp_path / "deploys.log"
    monkeypatch.setenv("RUNBOOK_PREDEPLOY__DEPLOY_COMMANDS", _deploy_commands(log))
    proc = runbook_here("predeploy-check", "--deploy", env={}, monkeypatch=monkeypatch)
    assert proc.returncode == 2, proc.stderr
    assert "RUNBOOK_PREDEPLOY__GATES" in proc.stderr and "nothing was deployed" in proc.stderr
    assert not log.exists()


@pytest.fixture
def platforms(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningApi]:
    running = serve(platform.dsn, dashboard_token=TOKEN)
    monkeypatch.setenv("RUNBOOK_PLATFORM_TOKEN", TOKEN)
    monkeypatch.setenv("RUNBOOK_DEPLOY__SAMPLES", "2")
    monkeypatch.setenv("RUNBOOK_DEPLOY__ROLLBACK_COMMAND", "[]")
    yield running
    running.stop()


def _deploy_commands(log: Path) -> str:
    # each deploy logs its environment's names: only PATH, HOME, LANG and RUNBOOK_PREDEPLOY__DEPLOY_ENV's
    code = "import os, sys; open(sys.argv[1], 'a').write(sys.argv[2] + ' ' + ','.join(sorted(os.environ)) + '\\n')"
    return json.dumps({env: [sys.executable, "-c", code, str(log), env] for env in ("staging", "production")})


def test_a_passing_gate_deploys_staging_verifies_then_production(
    secrets_set: None, platforms: RunningApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = tmp_path / "deploys.log"
    monkeypatch.setenv("RUNBOOK_PREDEPLOY__DEPLOY_COMMANDS", _deploy_commands(log))
    monkeypatch.setenv("RUNBOOK_DEPLOY__URLS", json.dumps({"staging": platforms.url, "production": platforms.url}))
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "cf-token-123")
    monkeypatch.setenv("RUNBOOK_PREDEPLOY__DEPLOY_ENV", '["CLOUDFLARE_API_TOKEN"]')
    state, report = _run(deploy=True)
    assert state.is_completed(), state.message
    deploys = [line.split(" ") for line in log.read_text().splitlines()]
    assert [d[0] for d in deploys] == ["staging", "production"]
    for _, names in deploys:  # not the DSN, nor the platform token, nor the §0 secrets
        assert set(names.split(",")) - {"LC_CTYPE", "PWD"} <= {"PATH", "HOME", "LANG", "CLOUDFLARE_API_TOKEN"}
        assert "CLOUDFLARE_API_TOKEN" in names
    assert [(d["environment"], d["verified"]) for d in report["deployed"]] == [("staging", True), ("production", True)]


def test_a_staging_deploy_that_fails_verification_stops_before_production(
    secrets_set: None, platforms: RunningApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = tmp_path / "deploys.log"
    monkeypatch.setenv("RUNBOOK_PREDEPLOY__DEPLOY_COMMANDS", _deploy_commands(log))
    dead = f"http://127.0.0.1:{free_port()}"  # staging does not answer
    monkeypatch.setenv("RUNBOOK_DEPLOY__URLS", json.dumps({"staging": dead, "production": platforms.url}))
    state, report = _run(deploy=True)
    assert state.is_failed() and "deploy-verify:staging" in state.message
    assert [line.split(" ")[0] for line in log.read_text().splitlines()] == ["staging"]
    assert [d["environment"] for d in report["deployed"]] == ["staging"]
