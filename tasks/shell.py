"""Commands on this machine (argv lists, never a shell): run with a timeout, output
captured with secrets masked, the result returned as data."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

OUTPUT_LIMIT = 20_000  # characters of output kept (the end of it)


@dataclass(frozen=True)
class CommandResult:
    command: str  # the program's name only: arguments may hold secrets
    exit_code: int | None  # None: not found, or stopped at the timeout
    seconds: float
    output: str  # stdout and stderr, the last OUTPUT_LIMIT characters, secrets masked
    problem: str | None = None  # "not found", "stopped after N s"

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def summary(self) -> str:
        if self.problem:
            return self.problem
        last = self.output.strip().splitlines()[-1] if self.output.strip() else "no output"
        return f"exit {self.exit_code} in {self.seconds:.1f} s" + ("" if self.ok else f" ({last[:200]})")


def mask(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def run_command(
    argv: list[str],
    *,
    timeout_s: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    secrets: list[str] | None = None,
) -> CommandResult:
    """Run ``argv`` (environment: ours plus ``env``), never raising for its failure."""
    started = time.perf_counter()
    name = Path(argv[0]).name
    try:
        done = subprocess.run(
            argv, capture_output=True, timeout=timeout_s, env={**os.environ, **(env or {})}, cwd=cwd, check=False
        )
    except FileNotFoundError:
        return CommandResult(name, None, time.perf_counter() - started, "", f"command {argv[0]!r} not found")
    except subprocess.TimeoutExpired as err:
        output = ((err.stdout or b"") + (err.stderr or b"")).decode(errors="replace")
        return CommandResult(
            name, None, time.perf_counter() - started, mask(output[-OUTPUT_LIMIT:], secrets or []), f"still running after {timeout_s:g} s, stopped"
        )
    output = (done.stdout + done.stderr).decode(errors="replace")
    return CommandResult(name, done.returncode, time.perf_counter() - started, mask(output[-OUTPUT_LIMIT:], secrets or []))
