"""The edge tasks of §4 and §6.1 that happen outside runbook: log rotation, clearing the
KV ``CACHE``, exporting the Workers configuration. Each is a configured command (argv,
no shell, the environment of tasks/shell.py) or an HTTP call (headers whose secrets are
read at run time, as the kill switch's).

    RunbookError
    ├── ConfigError     a header's secret is missing (nothing was called)
    └── EdgeFailed      the command failed or the call was refused: not retried
                        (only the operator knows whether running it twice is safe)

The Workers configuration export is what the command prints on stdout or the HTTP
answer's body; it is stored beside the backups (``<instance>/<prefix>/workers_<time>.json``)
with a ``.sha256`` beside it, then read back and checked against that sha256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from runbook.errors import RunbookError, VerificationFailed
from runbook.masking import mask
from runbook.settings import EdgeCall
from tasks.killswitch import resolve_headers, shown_url
from tasks.shell import run_command
from tasks.store import BackupStore

OUTPUT_TAIL = 500


class EdgeFailed(RunbookError):
    """An edge task's command failed or its HTTP call was refused."""


@dataclass(frozen=True)
class EdgeResult:
    summary: str  # one line: what ran and how it ended
    output: bytes  # stdout of a command, or the body of an HTTP answer


def call_edge(call: EdgeCall, setting: str, secrets: list[str]) -> EdgeResult:
    """Run one configured call; its summary and output, or EdgeFailed (secrets masked)."""
    headers, hidden = resolve_headers(call.headers, setting)
    secrets = [*secrets, *hidden]
    if call.command:
        result = run_command(call.command, timeout_s=call.timeout_seconds, env_names=call.env, secrets=secrets, keep_stdout=True)
        if not result.ok:
            tail = result.output.strip()[-OUTPUT_TAIL:]
            raise EdgeFailed(f"{setting}: {result.command} failed: {result.problem or result.summary()}" + (f": {tail}" if tail else ""))
        return EdgeResult(f"{result.command}: {result.summary()}", (result.stdout or "").encode())
    assert call.url is not None
    where = f"{call.method} {shown_url(call.url)}"
    try:
        response = httpx.request(call.method, call.url, headers=headers, json=call.body, timeout=call.timeout_seconds)
    except httpx.HTTPError as err:
        raise EdgeFailed(f"{setting}: {where} failed: {type(err).__name__} {mask(str(err), secrets)}".strip()) from None
    if not response.is_success:
        raise EdgeFailed(f"{setting}: {where} answered {response.status_code} {mask(response.text[:200].strip(), secrets)}".strip())
    return EdgeResult(f"{where}: HTTP {response.status_code}", response.content)


@task(name="run-edge-task", cache_policy=NO_CACHE)
def run_edge_task(name: str, call: EdgeCall, setting: str, secrets: list[str]) -> EdgeResult:
    """Run one edge task (log rotation, cache clean-up, the Workers export) once."""
    get_run_logger().info("Edge task %s: %s", name, call.command[0] if call.command else f"{call.method} {shown_url(call.url or '')}")
    return call_edge(call, setting, secrets)


def export_key(instance: str, prefix: str, at: datetime) -> str:
    return f"{instance}/{prefix}/workers_{at.astimezone(timezone.utc):%Y%m%d_%H%M%S}.json"


def store_export(store: BackupStore, key: str, data: bytes) -> dict[str, Any]:
    """Write the export and its sha256 beside it, read the export back and check it."""
    if not data.strip():
        raise EdgeFailed("the Workers configuration export printed nothing: nothing stored")
    digest = hashlib.sha256(data).hexdigest()
    store.put_bytes(key, data)
    store.put_bytes(f"{key}.sha256", f"{digest}  {key.rsplit('/', 1)[-1]}\n".encode())
    back = hashlib.sha256(store.get_bytes(key)).hexdigest()
    if back != digest:
        raise VerificationFailed(f"{key}: read back with sha256 {back}, written with {digest}")
    return {"key": key, "bytes": len(data), "sha256": digest, "read_back": "ok"}


@task(name="store-workers-export", cache_policy=NO_CACHE)
def store_export_task(store: BackupStore, key: str, data: bytes) -> dict[str, Any]:
    """Keep the Workers configuration beside the backups with its sha256, read back and checked."""
    get_run_logger().info("Storing the Workers configuration (%d bytes) as %s in %s", len(data), key, store.url)
    return store_export(store, key, data)
