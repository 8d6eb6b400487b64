"""Commands on this machine (argv lists, never a shell): run with a timeout and a
minimal environment, output captured with secrets masked, the result returned as data.

A command never inherits the worker's environment, which holds the DSN, the platform
token and cloud credentials: it gets PATH, HOME and LANG, the names its step lists in
its own ``env`` (taken from the worker's environment), and the values the caller
passes (a recovery's ``RUNBOOK_RESTORED_*``)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from runbook.masking import mask
from runbook.settings import RunbookSettings

OUTPUT_LIMIT = 20_000  # characters of output kept (the end of it)
BASE_ENV = ("PATH", "HOME", "LANG")  # what any program needs to start and find its tools
CLOUD_SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
__all__ = ["BASE_ENV", "CommandResult", "child_env", "known_secrets", "mask", "run_command"]


@dataclass(frozen=True)
class CommandResult:
    command: str  # the program's name only: arguments may hold secrets
    exit_code: int | None  # None: not found, or stopped at the timeout
    seconds: float
    output: str  # stdout and stderr, the last OUTPUT_LIMIT characters, secrets masked
    problem: str | None = None  # "not found", "stopped after N s"
    stdout: str | None = None  # with keep_stdout: all of stdout alone (masked), for output that is data (JSON)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def summary(self) -> str:
        if self.problem:
            return self.problem
        last = self.output.strip().splitlines()[-1] if self.output.strip() else "no output"
        return f"exit {self.exit_code} in {self.seconds:.1f} s" + ("" if self.ok else f" ({last[:200]})")


def known_secrets(settings: RunbookSettings) -> list[str]:
    """The secret values this worker holds (the DSNs, the platform token, the alert
    channels' credentials, block-ip's Cloudflare token, the secrets of §0 and cloud keys found in its environment), to mask in a command's output even
    though the command is not given them: it may read them from elsewhere."""
    channels = settings.alerts.channels
    held = (settings.database_url, settings.recovery_database_url, settings.scratch_database_url, settings.platform_token,
            settings.alerts.state_database_url, channels.slack.webhook_url, channels.slack.bot_token, channels.email.password,
            channels.twilio.auth_token, channels.statuspage.api_key,
            settings.security.block.cloudflare.api_token)
    values = [s.get_secret_value() for s in held if s]
    values += [os.environ[name] for name in (*settings.predeploy.secrets, *CLOUD_SECRETS) if os.environ.get(name)]
    return values


def child_env(names: Iterable[str] = (), values: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a command: PATH, HOME, LANG and ``names`` as the worker has
    them (a name the worker lacks is left out), then ``values``."""
    env = {name: os.environ[name] for name in (*BASE_ENV, *names) if name in os.environ}
    return {**env, **(values or {})}


def run_command(
    argv: list[str],
    *,
    timeout_s: float,
    env_names: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    secrets: Iterable[str] = (),
    keep_stdout: bool = False,
) -> CommandResult:
    """Run ``argv`` in the environment of :func:`child_env`, never raising for its
    failure. Its output is masked of ``secrets`` and of the values passed to it by name
    (the operator lists there what the command needs: tokens, mostly). ``keep_stdout``:
    the result also holds all of stdout apart from stderr, for a command whose output
    is data (a scanner's JSON report), which a warning on stderr or the cut of
    ``output`` would corrupt."""
    started = time.perf_counter()
    name = Path(argv[0]).name
    names = list(env_names)
    environment = child_env(names, env)
    hidden = [*secrets, *(environment[n] for n in names if n in environment and n not in BASE_ENV)]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout_s, env=environment, cwd=cwd, check=False)
    except FileNotFoundError:
        return CommandResult(name, None, time.perf_counter() - started, "", f"command {argv[0]!r} not found")
    except subprocess.TimeoutExpired as err:
        output = ((err.stdout or b"") + (err.stderr or b"")).decode(errors="replace")
        return CommandResult(
            name, None, time.perf_counter() - started, mask(output, hidden)[-OUTPUT_LIMIT:], f"still running after {timeout_s:g} s, stopped"
        )
    output = (done.stdout + done.stderr).decode(errors="replace")
    stdout = mask(done.stdout.decode(errors="replace"), hidden) if keep_stdout else None
    return CommandResult(name, done.returncode, time.perf_counter() - started, mask(output, hidden)[-OUTPUT_LIMIT:], stdout=stdout)
