"""Commands get a minimal environment (PATH, HOME, LANG, the names their step lists and
the values given), never the worker's secrets; their output is masked in every form."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from runbook.settings import HookStep, load_settings
from tasks.hooks import run_hook_step
from tasks.shell import known_secrets, run_command

# prints its environment, and keeps an unmasked copy for the test to read
PRINT_ENV = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w')); print(sorted(os.environ.items()))"
WORKER_SECRETS = {
    "RUNBOOK_DATABASE_URL": "postgresql://app:db-pass-123@db.internal/platform",
    "RUNBOOK_PLATFORM_TOKEN": "platform-token-456",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-789",
    "STRIPE_SECRET_KEY": "sk_live_000111",
}


@pytest.fixture
def worker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in WORKER_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DEPLOY_TOOL_TOKEN", "tool-token-abc")
    monkeypatch.setenv("LANG", "C.UTF-8")


def test_a_command_sees_only_path_home_lang_its_listed_names_and_given_values(worker_env: None, tmp_path: Path) -> None:
    seen_file = tmp_path / "env.json"
    result = run_command(
        [sys.executable, "-c", PRINT_ENV, str(seen_file)], timeout_s=60,
        env_names=["DEPLOY_TOOL_TOKEN", "NOT_SET_ON_THIS_WORKER"], env={"RUNBOOK_DR_MODE": "drill"},
    )
    assert result.ok, result.output
    seen = json.loads(seen_file.read_text())
    assert not set(WORKER_SECRETS) & set(seen)
    assert seen["DEPLOY_TOOL_TOKEN"] == "tool-token-abc" and seen["RUNBOOK_DR_MODE"] == "drill"
    assert seen["LANG"] == "C.UTF-8" and "PATH" in seen
    assert set(seen) - {"PATH", "HOME", "LANG", "DEPLOY_TOOL_TOKEN", "RUNBOOK_DR_MODE"} <= {"LC_CTYPE", "PWD"}  # set by the OS itself
    assert "tool-token-abc" not in result.output and "drill" in result.output  # a value passed by name is masked


def test_output_is_masked_of_the_workers_secrets_even_when_the_command_finds_them_elsewhere(worker_env: None, tmp_path: Path) -> None:
    leak = tmp_path / "leak.txt"
    leak.write_text(" ".join(WORKER_SECRETS.values()) + " pass=db-pass-123 url=postgresql://app:db-pass-123@db.internal/platform")
    result = run_command(["cat", str(leak)], timeout_s=60, secrets=known_secrets(load_settings()))
    assert result.ok
    assert not [value for value in WORKER_SECRETS.values() if value in result.output]
    assert "db-pass-123" not in result.output


def test_a_hook_step_gets_its_env_names_and_its_secret_values_masked(worker_env: None, tmp_path: Path) -> None:
    seen_file = tmp_path / "env.json"
    step = HookStep(name="print env", command=[sys.executable, "-c", PRINT_ENV, str(seen_file)], env=["DEPLOY_TOOL_TOKEN"])
    url = "postgresql://rb:s3cr%40t%2Fpw@/restored?host=/run/pg"
    summary = run_hook_step(step, {"RUNBOOK_RESTORED_DATABASE": "restored", "RUNBOOK_RESTORED_DATABASE_URL": SecretStr(url)})
    seen = json.loads(seen_file.read_text())
    assert seen["RUNBOOK_RESTORED_DATABASE_URL"] == url and seen["DEPLOY_TOOL_TOKEN"] == "tool-token-abc"
    assert not set(WORKER_SECRETS) & set(seen)
    assert summary.startswith("exit 0")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RUNBOOK_DEPLOY__ROLLBACK_ENV", '["CLOUDFLARE_API_TOKEN"]'),
        ("RUNBOOK_CERTS__RENEW_ENV", '["CF_DNS_TOKEN"]'),
        ("RUNBOOK_PREDEPLOY__DEPLOY_ENV", '["CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID"]'),
        ("RUNBOOK_PREDEPLOY__GATES", '[{"name": "e2e", "command": ["npm", "test"], "env": ["CI"]}]'),
        ("RUNBOOK_DR__RESTORE_SERVICES", '[{"name": "point the app", "command": ["kubectl"], "env": ["KUBECONFIG"]}]'),
    ],
)
def test_each_commands_env_names_are_configurable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    settings = load_settings()
    listed = {
        "RUNBOOK_DEPLOY__ROLLBACK_ENV": lambda: settings.deploy.rollback_env,
        "RUNBOOK_CERTS__RENEW_ENV": lambda: settings.certs.renew_env,
        "RUNBOOK_PREDEPLOY__DEPLOY_ENV": lambda: settings.predeploy.deploy_env,
        "RUNBOOK_PREDEPLOY__GATES": lambda: settings.predeploy.gates[0].env,
        "RUNBOOK_DR__RESTORE_SERVICES": lambda: settings.dr.restore_services[0].env,
    }[variable]()
    assert listed and all(name in value for name in listed)
    monkeypatch.setenv(variable, value.replace(f'"{listed[0]}"', f'"{listed[0]}-X"'))  # not a variable name
    with pytest.raises(Exception, match=variable.split("__")[0]):
        load_settings()


def test_env_names_are_for_commands_an_http_step_is_refused_with_them() -> None:
    with pytest.raises(ValueError, match="env is for commands"):
        HookStep(name="maintenance on", url="https://example.com/maintenance", env=["CLOUDFLARE_API_TOKEN"])


def test_the_scratch_and_recovery_dsns_are_known_secrets_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_SCRATCH_DATABASE_URL", "postgresql://scratch:scratch-pw-1@scratch.internal/postgres")
    monkeypatch.setenv("RUNBOOK_RECOVERY_DATABASE_URL", "postgresql://rec:recovery-pw-2@rec.internal/platform")
    held = known_secrets(load_settings())
    assert any("scratch-pw-1" in value for value in held) and any("recovery-pw-2" in value for value in held)


def test_known_secrets_hold_the_alert_channels_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_ALERTS__CHANNELS__SLACK__WEBHOOK_URL", "https://hooks.example.test/T0/B0/hook-secret")
    monkeypatch.setenv("RUNBOOK_ALERTS__CHANNELS__TWILIO__AUTH_TOKEN", "twilio-token-secret")
    monkeypatch.setenv("RUNBOOK_ALERTS__STATE_DATABASE_URL", "postgresql://u:state-pw@db.example.test/alerts")
    held = known_secrets(load_settings())
    assert {"https://hooks.example.test/T0/B0/hook-secret", "twilio-token-secret", "postgresql://u:state-pw@db.example.test/alerts"} <= set(held)
