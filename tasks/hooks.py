"""The operator's own steps that a recovery runs against the platform (maintenance
mode, pointing the app at the restored database, warming caches) and the platform's
HTTP checks. A step is a command (argv, no shell) or an HTTP call; neither is retried,
since only the operator knows whether running it twice is safe."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from runbook.checks import CheckResult
from runbook.errors import RunbookError
from runbook.settings import HookStep
from tasks.shell import mask, run_command

OUTPUT_TAIL = 2000


class HookFailed(RunbookError):
    """A configured step ran and did not succeed."""


@task(name="run-hook-step", cache_policy=NO_CACHE)
def run_hook_step(step: HookStep, env: Mapping[str, str | SecretStr], secrets: Iterable[str] = ()) -> str:
    """Run one configured step; returns a one-line summary, raises HookFailed. A
    command's environment is PATH, HOME, LANG, the names the step lists and ``env``;
    the ``SecretStr`` values of ``env``, the headers and ``secrets`` are masked, in
    every form, wherever the step's output or error goes."""
    logger = get_run_logger()
    values = {name: value.get_secret_value() if isinstance(value, SecretStr) else value for name, value in env.items()}
    secrets = [
        *secrets,
        *(value.get_secret_value() for value in env.values() if isinstance(value, SecretStr)),
        *(h.get_secret_value() for h in step.headers.values()),
    ]
    started = time.perf_counter()
    if step.command:
        logger.info("Step %r: running %s", step.name, step.command[0])
        result = run_command(step.command, timeout_s=step.timeout_seconds, env_names=step.env, env=values, secrets=secrets)
        output = result.output.strip()[-OUTPUT_TAIL:]
        if output:
            logger.info("Step %r output:\n%s", step.name, output)
        if not result.ok:
            raise HookFailed(f"step {step.name!r}: {result.problem or result.summary()}")
        return result.summary()
    assert step.url is not None
    logger.info("Step %r: %s %s", step.name, step.method, step.url)
    headers = {name: value.get_secret_value() for name, value in step.headers.items()}
    try:
        response = httpx.request(step.method, step.url, headers=headers, timeout=step.timeout_seconds)
    except httpx.HTTPError as err:
        raise HookFailed(f"step {step.name!r}: {step.method} {step.url} failed: {type(err).__name__} {mask(str(err), secrets)}") from None
    if not response.is_success:
        body = mask(response.text[:200].strip(), secrets)
        raise HookFailed(f"step {step.name!r}: {step.method} {step.url} answered {response.status_code} {body}")
    return f"HTTP {response.status_code} in {time.perf_counter() - started:.1f} s"


@task(name="check-platform-http", cache_policy=NO_CACHE)
def check_platform_http(base_url: str, paths: list[str], timeout_s: float = 10.0) -> list[CheckResult]:
    """GET each path of the platform; 2xx passes. Latency in the detail."""
    checks = []
    with httpx.Client(base_url=base_url, timeout=timeout_s) as client:
        for path in paths:
            started = time.perf_counter()
            try:
                response = client.get(path)
            except httpx.HTTPError as err:
                checks.append(CheckResult(name=f"http:{path}", ok=False, detail=f"{type(err).__name__}: {err}"))
                continue
            elapsed = (time.perf_counter() - started) * 1000
            checks.append(
                CheckResult(name=f"http:{path}", ok=response.is_success, detail=f"HTTP {response.status_code} in {elapsed:.0f} ms")
            )
    return checks
