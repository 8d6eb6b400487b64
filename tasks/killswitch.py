"""The platform's kill switch (§5.4 disable all APIs): the configured disable and enable
calls (a command, or an HTTP call such as a Cloudflare Worker route or a KV flag PUT),
the check that reads its state back, and runbook's record of what it disabled.

    RunbookError
    ├── ConfigError       a header's secret is missing (nothing was called)
    ├── TransientError    connection refused, timeout, 429, 5xx: the HTTP call is retried
    └── SwitchFailed      the call was refused (4xx) or the command failed: not retried,
                          and nothing is recorded as done

A command is never retried (only the operator knows whether running it twice is safe);
an HTTP call is retried on transient errors only, which suits a switch that sets a
state (a PUT of a flag). Secret header values are read at run time, masked in every
log record from then on, and never put in a result, an error or an artifact.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from psycopg import sql
from psycopg.rows import dict_row

from runbook.errors import ConfigError, RunbookError, TransientError
from runbook.logconfig import hide
from runbook.masking import mask
from runbook.retry import RETRIES, backoff, retry_transient
from runbook.settings import HeaderValue, KillSwitchCall, KillSwitchCheck
from tasks.secrets import secret_block_value, secret_value
from tasks.secstate import SecurityState, q
from tasks.shell import run_command

DDL = """
CREATE TABLE IF NOT EXISTS {s}.kill_switch (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    disabled_at  timestamptz NOT NULL,
    disabled_by  text NOT NULL,
    reason       text NOT NULL,
    run_id       text,
    state_before text NOT NULL,
    enabled_at   timestamptz,
    enabled_by   text
);
"""
PREFIX = "RUNBOOK_SECURITY__KILL_SWITCH__"
OUTPUT_TAIL = 500


class SwitchFailed(RunbookError):
    """The kill switch's call was refused or its command failed: nothing is claimed as done."""


def feature() -> tuple[str, str]:
    return ("kill_switch", DDL)


def resolve_headers(headers: dict[str, HeaderValue], setting: str) -> tuple[dict[str, str], list[str]]:
    """The headers' values (secrets read now from the environment or a Secret block) and
    the secret values among them; a missing secret is a ConfigError naming the setting."""
    values: dict[str, str] = {}
    hidden: list[str] = []
    for name, header in headers.items():
        if header.value is not None:
            values[name] = header.value
            continue
        if header.env is not None:
            secret = secret_value(header.env, "environment")
            if secret is None:
                raise ConfigError(f"{setting}: header {name!r} takes its value from the environment variable {header.env}, which is not set")
        else:
            assert header.secret_block is not None
            secret = secret_block_value(header.secret_block, setting)
        hide(secret)
        hidden.append(secret)
        values[name] = header.prefix + secret
    return values, hidden


def shown_url(url: str) -> str:
    """The URL as previews and logs show it: no user, password, query or fragment (where tokens hide)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def describe_call(call: KillSwitchCall) -> str:
    if call.command:
        return f"run the command {call.command[0]!r}" + (f" (with {', '.join(call.env)} from the worker)" if call.env else "")
    names = ", ".join(call.headers)
    return f"{call.method} {shown_url(call.url or '')}" + (f" (headers: {names})" if names else "") + (
        " with a JSON body" if call.body is not None else "")


def call_switch(call: KillSwitchCall, headers: dict[str, str], secrets: list[str], setting: str) -> str:
    """Make one configured call; a one-line summary, or SwitchFailed / TransientError
    (with every secret masked)."""
    if call.command:
        result = run_command(call.command, timeout_s=call.timeout_seconds, env_names=call.env, secrets=secrets)
        if not result.ok:
            tail = result.output.strip()[-OUTPUT_TAIL:]
            raise SwitchFailed(f"{setting}: {result.command} failed: {result.problem or result.summary()}"
                               + (f": {tail}" if tail else "") + "; the switch may not have changed")
        return f"{result.command}: {result.summary()}"
    assert call.url is not None
    where = f"{call.method} {shown_url(call.url)}"
    try:
        response = httpx.request(call.method, call.url, headers=headers, json=call.body, timeout=call.timeout_seconds)
    except httpx.HTTPError as err:
        raise TransientError(f"{setting}: {where} failed: {type(err).__name__} {mask(str(err), secrets)}".strip()) from None
    if response.status_code == 429 or response.status_code >= 500:
        raise TransientError(f"{setting}: {where} answered {response.status_code}")
    if not response.is_success:
        body = mask(response.text[:200].strip(), secrets)
        raise SwitchFailed(f"{setting}: {where} answered {response.status_code} {body}".strip() + ": the switch was not changed")
    return f"{where}: HTTP {response.status_code}"


def _field(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


_MISSING = object()


def read_switch(check: KillSwitchCheck, headers: dict[str, str], secrets: list[str]) -> str:
    """"disabled", "enabled", or "unknown (...)": the check's GET judged by its status or
    its JSON field. Transport errors, 429 and 5xx that mean neither state are transient."""
    where = f"GET {shown_url(check.url)}"
    try:
        response = httpx.get(check.url, headers=headers, timeout=check.timeout_seconds)
    except httpx.HTTPError as err:
        raise TransientError(f"{PREFIX}CHECK: {where} failed: {type(err).__name__} {mask(str(err), secrets)}".strip()) from None
    status = response.status_code
    if check.field is None and status in (check.disabled_status, check.enabled_status):
        return "disabled" if status == check.disabled_status else "enabled"
    if status == 429 or status >= 500:
        raise TransientError(f"{PREFIX}CHECK: {where} answered {status}")
    if check.field is None:
        return f"unknown (HTTP {status})"
    try:
        value = _field(response.json(), check.field)
    except ValueError:
        return f"unknown (HTTP {status}, not JSON)"
    if value == check.disabled_value:
        return "disabled"
    if value == check.enabled_value:
        return "enabled"
    return f"unknown ({check.field} is {'absent' if value is _MISSING else repr(value)[:40]})"


# --------------------------------------------------------------------------- runbook's record


def open_disable(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any] | None:
    """The newest disable runbook made that no api-enable ended, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {} WHERE enabled_at IS NULL ORDER BY id DESC LIMIT 1").format(q(schema, "kill_switch")))
        return cur.fetchone()


def record_disable(conn: psycopg.Connection[Any], schema: str, *, by: str, reason: str, run_id: str | None, state_before: str) -> int:
    row = conn.execute(sql.SQL("INSERT INTO {} (disabled_at, disabled_by, reason, run_id, state_before) VALUES (%s, %s, %s, %s, %s)"
                               " RETURNING id").format(q(schema, "kill_switch")),
                       (datetime.now(timezone.utc), by, reason, run_id, state_before)).fetchone()
    assert row is not None
    return int(row[0])


def record_enable(conn: psycopg.Connection[Any], schema: str, *, by: str) -> list[int]:
    """Close every open disable (an enable ends them all); their ids."""
    rows = conn.execute(sql.SQL("UPDATE {} SET enabled_at = %s, enabled_by = %s WHERE enabled_at IS NULL RETURNING id").format(
        q(schema, "kill_switch")), (datetime.now(timezone.utc), by)).fetchall()
    return sorted(int(r[0]) for r in rows)


# --------------------------------------------------------------------------- tasks


@task(name="call-kill-switch", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def call_switch_task(call: KillSwitchCall, headers: dict[str, str], secrets: list[str], setting: str) -> str:
    """Make the kill switch's disable or enable call (an HTTP call is retried on transient
    errors only; a command never)."""
    logger = get_run_logger()
    logger.info("Kill switch %s: %s", setting.removeprefix(PREFIX).lower(), describe_call(call))
    summary = call_switch(call, headers, secrets, setting)
    logger.info("Kill switch: %s", summary)
    return summary


@task(name="read-kill-switch", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def read_switch_task(check: KillSwitchCheck, headers: dict[str, str], secrets: list[str]) -> str:
    """Read the kill switch's state through the configured check (reads only)."""
    found = read_switch(check, headers, secrets)
    get_run_logger().info("Kill switch check GET %s: %s", shown_url(check.url), found)
    return found


@task(name="read-kill-switch-record", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient,
      cache_policy=NO_CACHE)
def open_disable_task(state: SecurityState) -> dict[str, Any] | None:
    """runbook's open disable, if any (reads only)."""
    with state.connect(feature()) as conn:
        return open_disable(conn, state.schema)


@task(name="record-kill-switch", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient,
      cache_policy=NO_CACHE)
def record_switch_task(state: SecurityState, disabled: bool, *, by: str, reason: str = "", run_id: str | None = None,
                       state_before: str = "") -> dict[str, Any]:
    """Record runbook's disable, or close its open disables after an enable."""
    with state.connect(feature()) as conn:
        if disabled:
            return {"record": record_disable(conn, state.schema, by=by, reason=reason, run_id=run_id, state_before=state_before)}
        return {"closed": record_enable(conn, state.schema, by=by)}


# --------------------------------------------------------------------------- the configuration


class Switch:
    """One side of the kill switch ready to call, with its check (headers resolved)."""

    def __init__(self, side: str, call: KillSwitchCall, check: KillSwitchCheck | None) -> None:
        self.side = side
        self.setting = f"{PREFIX}{side.upper()}"
        self.call = call
        self.headers, self.secrets = resolve_headers(call.headers, f"{self.setting}__HEADERS")
        self.check = check
        self.check_headers: dict[str, str] = {}
        if check is not None:
            self.check_headers, hidden = resolve_headers(check.headers, f"{PREFIX}CHECK__HEADERS")
            self.secrets += hidden

    def read(self) -> str | None:
        """The state the check reads, or None without a check."""
        return read_switch_task(self.check, self.check_headers, self.secrets) if self.check is not None else None

    def flip(self) -> str:
        return call_switch_task(self.call, self.headers, self.secrets, self.setting)


def load_switch(settings: Any, side: str) -> Switch:
    """The ``disable`` or ``enable`` side of RUNBOOK_SECURITY__KILL_SWITCH, secrets read;
    ConfigError naming the setting when it (or, to disable, the way back) is unset."""
    switch = settings.security.kill_switch
    call = switch.disable if side == "disable" else switch.enable
    if call is None:
        raise ConfigError(f"{PREFIX}{side.upper()}: no kill switch configured: set a command "
                          '({"command": [argv], "env": [names]}) or an HTTP call ({"method", "url", "headers", "body"})')
    if side == "disable" and switch.enable is None:
        raise ConfigError(f"{PREFIX}ENABLE: no way back is configured; runbook does not disable the APIs without one")
    return Switch(side, call, switch.check)
