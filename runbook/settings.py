"""One typed settings tree, read from ``RUNBOOK_*`` environment variables and an
optional TOML file (``RUNBOOK_CONFIG``). Built once at a flow's start and passed down.

Deployed runs take the same values from the worker's environment (a work pool's
``env`` job variables, which may reference Prefect Variables), and the database DSN
may come from a Prefect Secret block named by ``RUNBOOK_DATABASE_URL_SECRET_BLOCK``
so that it is never stored in a deployment.
"""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from runbook.alerting.config import AlertSettings
from runbook.calendar import PeriodPlan
from runbook.cleanup import DEFAULT_POLICIES, Policy
from runbook.deploy import DEFAULT_ENDPOINTS, Endpoint
from runbook.errors import ConfigError
from runbook.security.detectors import DEFAULT_DETECTORS, DEFAULT_SPIKES, Detector, SpikeDetector
from runbook.security.sources import DEFAULT_SOURCES, SourceMapping

ENV_PREFIX = "RUNBOOK_"


class RetentionSettings(BaseModel):
    """Grandfather-father-son retention of backups: how many of each period to keep."""

    hourly: int = Field(24, ge=0, description="Newest backup of each of the last N hours.")
    daily: int = Field(7, ge=0, description="Newest backup of each of the last N days.")
    weekly: int = Field(4, ge=0, description="Newest backup of each of the last N ISO weeks.")
    monthly: int = Field(12, ge=0, description="Newest backup of each of the last N months.")


class SizeWatchSettings(BaseModel):
    """Flags a backup whose size departs from the median of the previous ones (§6.2)."""

    smaller_pct: float = Field(20.0, gt=0, lt=100, description="Flag a backup this much % smaller than the median.")
    larger_pct: float = Field(50.0, gt=0, description="Flag a backup this much % larger than the median.")
    window: int = Field(7, ge=1, description="How many previous DONE backups form the median.")


class BackupSettings(BaseModel):
    """How backups are made."""

    zstd_level: int = Field(3, ge=1, le=19, description="zstd compression level of the dump stream.")
    zstd_threads: int = Field(2, ge=0, le=64, description="zstd worker threads (0: compress in the calling thread).")
    part_size_mb: int = Field(16, ge=5, le=512, description="S3 multipart part size in MiB (S3 needs >= 5).")
    lock_wait_timeout_seconds: int = Field(
        300,
        ge=1,
        le=3600,
        description="How long pg_dump (and the row counts) wait for a table lock held by another session "
        "(pg_dump --lock-wait-timeout) before the backup fails naming the lock.",
    )
    timeout_seconds: int = Field(
        3000,
        ge=1,
        le=24 * 3600,
        description="The whole backup (dump, counts, upload, retries) must end within this, or pg_dump is "
        "stopped and the backup marked FAILED. Keep it below the schedule's interval (hourly: 3600 s), "
        "so that a stuck backup never holds the deployment's only slot when the next run is due.",
    )
    fingerprint: bool = Field(False, description="Also compute per-table content fingerprints for deep verification.")
    restore_jobs: int = Field(2, ge=1, le=64, description="Parallel jobs of pg_restore.")


class VerifySettings(BaseModel):
    """How backups are verified."""

    future_time_columns: list[str] = Field(
        default_factory=lambda: ["expires_at"],
        description="Time columns that may legitimately lie after the snapshot (left out of freshness).",
    )
    size_watch: SizeWatchSettings = Field(default_factory=SizeWatchSettings)
    thorough: bool = Field(
        False,
        description="Scan primary and foreign keys with Great Expectations even where a valid restored "
        "constraint already proves them (always done by deep verification).",
    )
    work_dir: Path | None = Field(
        None, description="Where a fetched dump is unpacked for pg_restore (needs room for it). Unset: the system temp folder."
    )
    integrity_timeout_seconds: int = Field(
        3 * 3600,
        ge=1,
        le=48 * 3600,
        description="How long the integrity checks of a restored database may take in all; then they are stopped "
        "and the verification fails (each query also stops at RUNBOOK_STATEMENT_TIMEOUT).",
    )


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_names_field(what: str) -> Any:
    """The ``env`` list of a command: the names it gets from the worker's environment."""
    return Field(
        default_factory=list,
        description=f"Environment variables {what} gets from the worker, besides PATH, HOME and LANG "
        "(it never inherits the rest: the DSN, tokens, cloud keys). Their values are masked in its output.",
    )


def check_env_names(names: list[str]) -> list[str]:
    for name in names:
        if not ENV_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not an environment variable name")
    return names


class HookStep(BaseModel):
    """One configured step of a recovery: a command (an argv list, run without a shell)
    or an HTTP call. Commands get PATH, HOME, LANG, the names listed in ``env``,
    RUNBOOK_DR_MODE, RUNBOOK_RESTORED_DATABASE and RUNBOOK_RESTORED_DATABASE_URL (a
    postgresql:// URL) in their environment, nothing else."""

    name: str = Field(min_length=1, description="What the step does, as the report shows it.")
    command: list[str] | None = Field(None, description="argv of a command, e.g. [\"kubectl\", \"scale\", ...].")
    url: str | None = Field(None, description="An http(s) URL to call instead of a command.")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="Request headers (values are secrets).")
    timeout_seconds: int = Field(300, ge=1, le=6 * 3600)
    env: list[str] = env_names_field("the command")

    _env = field_validator("env")(check_env_names)

    @model_validator(mode="after")
    def _one_kind(self) -> "HookStep":
        if bool(self.command) == bool(self.url):
            raise ValueError(f"step {self.name!r} needs exactly one of command (an argv list) or url")
        if self.url is not None and self.env:
            raise ValueError(f"step {self.name!r}: env is for commands, an HTTP step has headers")
        if self.url is not None:
            check_http_url(self.url)
        return self


class SmokeRead(BaseModel):
    """One of the platform's key reads, run on a restored database in §6.4 step 5 ("test
    every function"), timed, and compared with the previous drill by its name."""

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=60,
        description="Lowercase letters, digits and dashes; the check is smoke:<name>, its latency is compared by name.",
    )
    sql: str = Field(min_length=1, description="One read-only query (it runs in a READ ONLY transaction).")
    must_return_rows: bool = Field(True, description="An empty answer fails the check (otherwise only an error does).")

    @field_validator("sql")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a smoke read needs its SQL")
        return value


# The defaults read only what §0 names: market_data (symbol, "timestamp"), user_alerts
# (user_id, created_at) and user_sessions (expires_at); the rest of a row is read as *.
DEFAULT_SMOKE_READS = [
    SmokeRead(
        name="latest-price-per-symbol",
        # the latest row per symbol, one index probe per symbol on (symbol, timestamp DESC)
        # of §7.4, as the prices endpoint should read it (a DISTINCT ON over the whole
        # table takes 250x longer)
        sql="""
        WITH RECURSIVE symbols(symbol) AS (
            (SELECT symbol FROM market_data ORDER BY symbol LIMIT 1)
            UNION ALL
            SELECT (SELECT m.symbol FROM market_data m WHERE m.symbol > s.symbol ORDER BY m.symbol LIMIT 1)
            FROM symbols s WHERE s.symbol IS NOT NULL
        )
        SELECT p.* FROM symbols s
        CROSS JOIN LATERAL (
            SELECT m.* FROM market_data m WHERE m.symbol = s.symbol ORDER BY m."timestamp" DESC LIMIT 1
        ) p
        """,
    ),
    SmokeRead(
        name="user-alerts",
        # the dashboard: one user's alerts, newest first, on (user_id, created_at DESC) of §7.4
        sql="""
        SELECT a.* FROM user_alerts a
        WHERE a.user_id = (SELECT user_id FROM user_alerts ORDER BY created_at DESC LIMIT 1)
        ORDER BY a.created_at DESC LIMIT 50
        """,
    ),
    SmokeRead(
        name="session-lookup",
        # every authenticated request looks up a live session
        sql="SELECT s.* FROM user_sessions s WHERE s.expires_at > now() ORDER BY s.expires_at DESC LIMIT 50",
    ),
]


class DisasterRecoverySettings(BaseModel):
    """Disaster recovery (§6.4): the hooks that touch the platform, and the checks."""

    shutdown: HookStep | None = Field(
        None, description="Emergency shutdown / maintenance mode (§6.4 step 1); recoveries only, never drills."
    )
    restore_services: list[HookStep] = Field(
        default_factory=list, description="§6.4 step 4, in order: point the app at the restored database, warm caches..."
    )
    platform_url: str | None = Field(
        None,
        description="Base URL of the platform running on the restored database, for the HTTP checks of step 5. "
        "Unset: a recovery uses RUNBOOK_PLATFORM_URL, a drill runs no HTTP check.",
    )
    http_checks: list[str] = Field(default_factory=lambda: ["/api/health"], description="Paths that must answer 2xx.")
    smoke_reads: list[SmokeRead] = Field(
        default_factory=lambda: [r.model_copy() for r in DEFAULT_SMOKE_READS],
        min_length=1,
        description="The platform's key reads of step 5, JSON list of {name, sql, must_return_rows}: latest "
        "market_data per symbol, a user's user_alerts, live user_sessions by default (§0's columns only).",
    )
    confirm_timeout_seconds: int = Field(3600, ge=10, description="How long a recovery waits for its typed confirmation.")
    acceptance_timeout_seconds: int = Field(
        8 * 3600, ge=1, le=7 * 86_400,
        description="How long a recovery waits at its end for the user acceptance test (who accepted, what they tried); "
        "then it is recorded as not accepted.",
    )
    latency_regression_pct: float = Field(100.0, gt=0, description="Smoke-query slowdown vs the previous drill that is flagged.")
    latency_floor_ms: float = Field(50.0, ge=0, description="Smoke queries faster than this are never flagged (noise).")
    history: int = Field(6, ge=1, le=50, description="Drills shown side by side in the report.")

    @field_validator("platform_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return check_http_url(value) if value else None

    @field_validator("smoke_reads")
    @classmethod
    def _unique_reads(cls, value: list[SmokeRead]) -> list[SmokeRead]:
        names = [r.name for r in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"smoke read names must be unique (latencies are compared by name): {', '.join(twice)}")
        return value


SECRETS_OF_0 = [
    "NEXT_PUBLIC_SUPABASE_URL",
    "SUPABASE_SERVICE_KEY",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "COINMARKETCAP_API_KEY",
    "SENTRY_DSN",
]


class GateCommand(BaseModel):
    """One check that must pass before a production deploy (§1.1)."""

    name: str = Field(min_length=1, description="e.g. security-scan")
    command: list[str] = Field(min_length=1, description='argv, e.g. ["npm", "audit", "--audit-level", "high"]')
    timeout_seconds: int = Field(1800, ge=1, le=6 * 3600)
    env: list[str] = env_names_field("the gate")

    _env = field_validator("env")(check_env_names)


class PredeploySettings(BaseModel):
    """The gate before a deploy (§1.1–1.3)."""

    secrets: list[str] = Field(default_factory=lambda: list(SECRETS_OF_0), description="Secrets that must exist (§0); names only.")
    secret_source: Literal["prefect", "environment", "both"] = Field(
        "both",
        description="Where secrets live: Prefect Secret blocks (NAME as lowercase-with-dashes), the environment, or either.",
    )
    gates: list[GateCommand] = Field(
        default_factory=list, description="Production check, security scan, performance test, e2e test (§1.1): all must pass."
    )
    project_dir: Path | None = Field(None, description="Where gate and deploy commands run (the platform's checkout).")
    deploy_commands: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "staging": ["wrangler", "deploy", "--env", "staging"],
            "production": ["wrangler", "deploy", "--env", "production"],
        },
        description="§1.3: the deploy command of each environment, run staging first.",
    )
    deploy_env: list[str] = env_names_field("each deploy command")
    deploy_timeout_seconds: int = Field(1800, ge=1, le=6 * 3600)

    _env = field_validator("deploy_env")(check_env_names)


Severity = Literal["info", "low", "moderate", "high", "critical"]


class ScannerCommand(BaseModel):
    """One vulnerability scanner of §5.2 / §3.5: a command whose JSON output is parsed."""

    name: str = Field(min_length=1, description="e.g. pip-audit")
    kind: Literal["pip-audit", "npm-audit"] = Field(description="How its JSON output is read.")
    command: list[str] = Field(min_length=1, description='argv, e.g. ["npm", "audit", "--json"]')
    cwd: Path | None = Field(None, description="Where it runs (the checkout it audits); unset: the worker's folder.")
    timeout_seconds: int = Field(600, ge=1, le=6 * 3600, description="Stopped after this, and the scan is an error.")
    env: list[str] = env_names_field("the scanner")
    severity: Severity = Field(
        "high", description="Severity of a finding whose output names none (pip-audit reports none)."
    )
    exit_codes: list[int] = Field(
        default_factory=lambda: [0, 1],
        description="Exit codes of a completed scan (both scanners exit 1 when they find something); any other is an error. "
        "The outcome is always read from the output, never from the exit code alone.",
    )

    _env = field_validator("env")(check_env_names)


class SecurityIgnore(BaseModel):
    """An accepted advisory: never without a reason and an end."""

    id: str = Field(min_length=1, description="Advisory id or alias (GHSA-..., PYSEC-..., CVE-..., an npm advisory number).")
    reason: str = Field(description="Why it is accepted (required).")
    expires: date = Field(description="YYYY-MM-DD, the last day it is ignored; from the next day it counts again (required).")

    @model_validator(mode="before")
    @classmethod
    def _complete(cls, value: Any) -> Any:
        # named here, so the error names RUNBOOK_SECURITY__IGNORES and the advisory, not a nested field
        if isinstance(value, dict):
            absent = [key for key in ("id", "reason", "expires") if not str(value.get(key) or "").strip()]
            if absent:
                raise ValueError(f"the ignore of {value.get('id') or '?'!r} has no {' and no '.join(absent)}: "
                                 "each ignore needs an id, a reason and an expiry (YYYY-MM-DD)")
        return value

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("an ignore needs a reason")
        return value.strip()


class WatchSettings(BaseModel):
    """security-watch (§5.1): how far it reads, and the repeat-offender arithmetic."""

    lookback_minutes: int = Field(60, ge=1, le=7 * 24 * 60, description="The first run reads this far back.")
    max_catchup_hours: float = Field(
        24, gt=0, le=24 * 28, description="A run reads at most this much backlog (a watch that was down); the rest is reported as skipped.",
    )
    offence_quiet_hours: float = Field(24, gt=0, description="One offence of an address is forgiven per quiet period this long.")
    block_base_minutes: int = Field(15, ge=1, description="The block suggested for a first offence; it doubles with each offence.")
    block_cap_minutes: int = Field(7 * 24 * 60, ge=1, description="The longest block suggested.")
    samples: int = Field(5, ge=0, le=100, description="Sample events kept as each finding's evidence.")


class DbAccessSettings(BaseModel):
    """restrict-db-access (§5.4): which application roles lose access, and how."""

    roles: list[str] = Field(
        default_factory=list,
        description="The application roles restrict-db-access restricts (JSON list of role names, as in pg_roles). "
        "Required by it; never runbook's own role, a role it is a member of, the database's owner or a superuser.",
    )
    mode: Literal["revoke-connect", "nologin", "both"] = Field(
        "both",
        description="revoke-connect: the roles lose CONNECT on the platform's database (PUBLIC's CONNECT is made explicit "
        "for every other role that had it); nologin: ALTER ROLE ... NOLOGIN (cluster-wide); both.",
    )
    terminate: bool = Field(True, description="Also terminate the roles' open connections to the platform's database.")

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: list[str]) -> list[str]:
        for role in value:
            if not role.strip() or len(role) > 63:
                raise ValueError(f"{role!r} is not a role name (1-63 characters)")
        return list(dict.fromkeys(value))


class HeaderValue(BaseModel):
    """One request header of the kill switch: a plain value, or a secret read at run time
    from an environment variable or a Prefect Secret block (never stored in the settings)."""

    value: str | None = Field(None, description="A value that is no secret (e.g. application/json).")
    env: str | None = Field(None, description="Name of the worker's environment variable holding the secret value.")
    secret_block: str | None = Field(None, description="Name of a Prefect Secret block holding the secret value.")
    prefix: str = Field("", description='Put before the secret, e.g. "Bearer ".')

    @model_validator(mode="after")
    def _one_source(self) -> "HeaderValue":
        if sum(x is not None for x in (self.value, self.env, self.secret_block)) != 1:
            raise ValueError("a header needs exactly one of value, env (a variable name) or secret_block")
        if self.env is not None:
            check_env_names([self.env])
        return self


class KillSwitchCall(BaseModel):
    """One side of the kill switch: a command (argv, no shell) or an HTTP call."""

    command: list[str] | None = Field(None, description='argv of a command, e.g. ["wrangler", "kv", "key", "put", ...].')
    env: list[str] = env_names_field("the command")
    url: str | None = Field(None, description="An http(s) URL to call instead (a Worker route, a KV flag...).")
    method: Literal["POST", "PUT", "PATCH", "DELETE", "GET"] = "PUT"
    headers: dict[str, HeaderValue] = Field(
        default_factory=dict, description='Request headers: {"Authorization": {"env": "CF_API_TOKEN", "prefix": "Bearer "}}.'
    )
    body: Any = Field(None, description="A JSON body to send (no secrets: it is shown in the preview).")
    timeout_seconds: int = Field(30, ge=1, le=3600, description="Per attempt (command or request).")

    _env = field_validator("env")(check_env_names)

    @model_validator(mode="after")
    def _one_kind(self) -> "KillSwitchCall":
        if bool(self.command) == bool(self.url):
            raise ValueError("needs exactly one of command (an argv list) or url")
        if self.url is not None:
            if self.env:
                raise ValueError("env is for commands; an HTTP call takes its secrets in headers")
            self.url = check_http_url(self.url)
        elif self.headers or self.body is not None:
            raise ValueError("headers and body are for an HTTP call, not a command")
        return self


class KillSwitchCheck(BaseModel):
    """How the kill switch's state is read back: a GET, judged by its status or by a JSON field."""

    url: str = Field(description="The http(s) URL to GET (an API route, or the KV flag itself).")
    headers: dict[str, HeaderValue] = Field(default_factory=dict, description="As the calls' headers.")
    disabled_status: int = Field(503, ge=100, le=599, description="The status that means disabled (when no field is set).")
    enabled_status: int = Field(200, ge=100, le=599, description="The status that means enabled (when no field is set).")
    field: str | None = Field(None, description='A dotted path into the JSON answer (e.g. "result.disabled"); set: judged by its value.')
    disabled_value: Any = Field(True, description="The field's value when disabled.")
    enabled_value: Any = Field(False, description="The field's value when enabled.")
    timeout_seconds: int = Field(10, ge=1, le=300)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value)


class KillSwitchSettings(BaseModel):
    """emergency-api-disable / api-enable (§5.4): the platform's kill switch."""

    disable: KillSwitchCall | None = Field(None, description="What disables every API. Required by both actions.")
    enable: KillSwitchCall | None = Field(None, description="What enables them again. Required by both actions.")
    check: KillSwitchCheck | None = Field(None, description="How the state is read back; unset: the call's success is the only proof.")


def _blank(value: Any) -> Any:
    """An empty string (or SecretStr) is unset: refused where the value is needed."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    return None if isinstance(text, str) and not text.strip() else value


class CloudflareBlockSettings(BaseModel):
    """block-ip's Cloudflare IP Access Rules (§5.4). Configured as soon as any of the zone, the account,
    the token or its Secret block is set; then the token and exactly one of zone/account are required."""

    base_url: str = Field("https://api.cloudflare.com/client/v4", description="Cloudflare's API base URL.")
    zone_id: str | None = Field(None, description="The zone whose IP Access Rules block (one of zone_id / account_id).")
    account_id: str | None = Field(None, description="The account whose IP Access Rules block (one of zone_id / account_id).")
    api_token: SecretStr | None = Field(None, description="API token with Firewall Services edit on the zone or account.")
    api_token_secret_block: str | None = Field(None, description="Prefect Secret block holding the API token (deployed runs).")
    notes_prefix: str = Field("runbook block-ip", max_length=200, description="Start of each rule's notes (who, why and the run follow).")
    timeout_seconds: float = Field(30, gt=0, le=300, description="Timeout of each Cloudflare API request.")

    _blank = field_validator("zone_id", "account_id", "api_token", "api_token_secret_block", mode="before")(_blank)
    _url = field_validator("base_url")(lambda cls, v: check_http_url(v))

    @property
    def configured(self) -> bool:
        return any((self.zone_id, self.account_id, self.api_token, self.api_token_secret_block))


class BlockSettings(BaseModel):
    """block-ip / unblock-ip (§5.4): what may never be blocked, where blocks are kept, how long they last."""

    allow_list: list[str] = Field(
        default_factory=list, description="Networks never blocked without --force and a reason (the team's offices, VPN, monitors), CIDRs.",
    )
    operator_ip: str | None = Field(None, description="The operator's own address, never blocked without --force (the flow's operator_ip wins).")
    table_schema: str | None = Field(
        None, min_length=1, max_length=63, description="Schema of the blocklist table; unset: RUNBOOK_SECURITY__STATE_SCHEMA.",
    )
    table: str = Field("ip_blocklist", min_length=1, max_length=50, description="The blocklist table the platform reads (created if missing).")
    default_minutes: int = Field(240, ge=1, description="How long a block lasts without --minutes (then it lifts itself).")
    max_minutes: int = Field(43_200, ge=1, description="The longest --minutes accepted (30 days); longer needs --permanent.")
    cloudflare: CloudflareBlockSettings = Field(default_factory=CloudflareBlockSettings)

    _blank = field_validator("operator_ip", "table_schema", mode="before")(_blank)

    @field_validator("allow_list")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        checked = []
        for entry in value:
            try:
                checked.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
        return checked

    @field_validator("operator_ip")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        import ipaddress

        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None

    @model_validator(mode="after")
    def _cap(self) -> "BlockSettings":
        if self.default_minutes > self.max_minutes:
            raise ValueError(f"default_minutes {self.default_minutes} is above max_minutes {self.max_minutes}")
        return self
def _qualified_table(value: str | None) -> str | None:
    """schema.table (public. when no schema is named); blank is unset."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    return value if "." in value else f"public.{value}"


def _blank_is_unset(value: str | None) -> str | None:
    return value.strip() if value and value.strip() else None


class SessionSettings(BaseModel):
    """``invalidate-sessions`` (§5.4): where the platform keeps its sessions. §0 names only
    ``user_sessions (expires_at)``; the user and IP columns, and how an admin's session is
    recognised, are the platform's own and unset until configured."""

    table: str = Field("public.user_sessions", description="schema.table of the sessions (names are quoted).")
    expiry_column: str = Field("expires_at", min_length=1, description="When a session ends; invalidating sets it to the action's time.")
    user_column: str | None = Field(
        None, description="The sessions' user column; needed to invalidate by user, count users and recognise admins.",
    )
    ip_column: str | None = Field(None, description="The sessions' client address column (inet, cidr or text); needed by IP.")
    created_column: str | None = Field(
        None, description="When a session began (e.g. created_at): with it, the read-back tells logins after the action "
        "apart (a warning: block the address first) from sessions the action missed.",
    )
    admin_user_ids: list[str] = Field(
        default_factory=list, description="Users whose sessions are admin sessions (compared as text with the user column).",
    )
    admin_table: str | None = Field(
        None, description="schema.table of users where an admin is marked (e.g. public.users); with ADMIN_COLUMN.",
    )
    admin_key_column: str = Field("id", min_length=1, description="ADMIN_TABLE's column the sessions' user column refers to.")
    admin_column: str | None = Field(None, description="ADMIN_TABLE's column that marks an admin (e.g. role).")
    admin_values: list[str] = Field(
        default_factory=lambda: ["admin"], description="ADMIN_COLUMN's values (as text) that mark an admin.",
    )
    batch_rows: int = Field(5000, ge=1, le=100_000, description="Sessions invalidated per batch (each its own transaction).")
    samples: int = Field(5, ge=0, le=50, description="Sample sessions shown in the preview (configured columns only).")

    _tables = field_validator("table", "admin_table")(_qualified_table)
    _columns = field_validator("user_column", "ip_column", "admin_column")(_blank_is_unset)


def _default_export_sources() -> dict[str, SourceMapping]:
    from runbook.security.sources import DEFAULT_SOURCES

    return {
        "auth_events": DEFAULT_SOURCES["auth"],
        "api_requests": DEFAULT_SOURCES["api"],
        "security_events": DEFAULT_SOURCES["security"],
        # §0 names only created_at: the whole row is exported (no mapped fields)
        "system_logs": SourceMapping(table="public.system_logs", time_column="created_at", fields={}),
    }


class LogExportSettings(BaseModel):
    """``export-security-logs`` (§5.4, §5.1): which logs are exported to the backup store."""

    sources: dict[str, SourceMapping] = Field(
        default_factory=_default_export_sources,
        description="name -> {table, time_column, fields}; an empty ``fields`` exports every column of the row.",
    )
    max_range_days: float = Field(31.0, gt=0, le=3660, description="The longest range one export may cover.")
    fetch_rows: int = Field(5000, ge=1, le=100_000, description="Rows fetched at a time from the server-side cursor.")
    prefix: str = Field("security-exports", min_length=1, description="Folder of the exports under the instance's in the store.")

    @field_validator("sources")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("no source to export: name at least one, or unset it for the defaults")
        bad = [name for name in value if not re.fullmatch(r"[A-Za-z0-9_-]+", name)]
        if bad:
            raise ValueError(f"source names become file names: {', '.join(map(repr, bad))} may hold only letters, digits, _ and -")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", value.strip("/")):
            raise ValueError(f"{value!r}: letters, digits, _ and - in /-separated folders")
        return value.strip("/")


class SecuritySettings(BaseModel):
    """Security operations (§5): the vulnerability scan (§5.2, §3.5), the watch and the incident actions."""

    scanners: list[ScannerCommand] | None = Field(
        None,
        description="The scanners to run. Unset: pip-audit (JSON) and, when RUNBOOK_PREDEPLOY__PROJECT_DIR is set, "
        "npm audit --json there. An empty list is refused.",
    )
    ignores: list[SecurityIgnore] = Field(
        default_factory=list, description='Accepted advisories: [{"id", "reason", "expires": "YYYY-MM-DD"}].'
    )
    fail_at: Severity = Field("high", description="A finding not ignored at this severity or above fails the run (§3.5: high).")
    sources: dict[str, SourceMapping] = Field(
        default_factory=lambda: {k: v.model_copy() for k, v in DEFAULT_SOURCES.items()},
        description="Where security events live, by source (auth, api, security): a table with a column mapping, or a "
        "JSON-lines file. Built in: the sandbox's tables; Supabase's auth.audit_log_entries is runbook.security.sources.SUPABASE_AUTH.",
    )
    detectors: list[Detector] = Field(
        default_factory=lambda: [d.model_copy() for d in DEFAULT_DETECTORS],
        description="Windowed detectors: source, where, group_by, window_minutes, threshold, distinct, ratio, severity.",
    )
    spikes: list[SpikeDetector] = Field(
        default_factory=lambda: [d.model_copy() for d in DEFAULT_SPIKES],
        description="Spike detectors: a window against the same window of the previous days.",
    )
    watch: WatchSettings = Field(default_factory=WatchSettings)
    state_schema: str = Field(
        "runbook_security", min_length=1, max_length=63,
        description="Schema in the platform's database for the actions' audit, the blocklist and the watch's state.",
    )
    approval_timeout_seconds: int = Field(
        1800, ge=10, le=86_400, description="How long an incident action waits for its typed approval; then nothing runs.",
    )
    incident_wait_seconds: int = Field(
        4 * 3600, ge=10, le=7 * 86_400,
        description="How long security-incident waits at each of its pauses (assess, contain, investigate, learn).",
    )
    db_access: DbAccessSettings = Field(default_factory=DbAccessSettings)
    kill_switch: KillSwitchSettings = Field(default_factory=KillSwitchSettings)
    block: BlockSettings = Field(default_factory=BlockSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    log_export: LogExportSettings = Field(default_factory=LogExportSettings)


class DeploySettings(BaseModel):
    """Deploy verification (§1.4–1.5): what to check, how hard, and how to roll back."""

    endpoints: list[Endpoint] = Field(
        default_factory=lambda: [e.model_copy() for e in DEFAULT_ENDPOINTS],
        description="Endpoints checked after a deploy: path, auth, status, JSON keys, cache TTL (§0, §7.3).",
    )
    samples: int = Field(5, ge=1, le=500, description="Requests per endpoint; latency is judged on their p95.")
    concurrency: int = Field(10, ge=1, le=100, description="Requests in flight at once.")
    timeout_seconds: float = Field(10.0, gt=0, le=120, description="Per request.")
    warning_ms: float = Field(3000.0, gt=0, description="§7.1 response time warning (p95).")
    critical_ms: float = Field(5000.0, gt=0, description="§7.1 response time critical (p95).")
    rollback_command: list[str] = Field(
        default_factory=lambda: ["wrangler", "rollback"],
        description="Run on a critical failure in production (§1.5); an empty list means alert only.",
    )
    rollback_wait_seconds: float = Field(30.0, ge=0, le=3600, description="Wait after the rollback before verifying again.")
    rollback_timeout_seconds: int = Field(600, ge=1, description="How long the rollback command may run.")
    rollback_env: list[str] = env_names_field("the rollback command")
    ca_bundle: Path | None = Field(None, description="CA bundle for the platform's TLS (a private CA); unset: the system's.")
    urls: dict[str, str] = Field(
        default_factory=dict, description="Base URL per environment ({\"staging\": ...}); unset: RUNBOOK_PLATFORM_URL."
    )

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, value: dict[str, str]) -> dict[str, str]:
        return {env: check_http_url(url) for env, url in value.items()}

    _env = field_validator("rollback_env")(check_env_names)


class DiagnoseSettings(BaseModel):
    """Troubleshooting (§3): where the third parties are, and the thresholds."""

    coinmarketcap_url: str = Field("https://pro-api.coinmarketcap.com", description="CoinMarketCap API base URL.")
    coingecko_url: str = Field("https://api.coingecko.com/api/v3", description="CoinGecko API base URL.")
    openai_url: str = Field("https://api.openai.com/v1", description="OpenAI API base URL.")
    anthropic_url: str = Field("https://api.anthropic.com/v1", description="Anthropic API base URL.")
    timeout_seconds: float = Field(10.0, gt=0, le=120, description="Per request to a third party.")
    usage_warning_pct: float = Field(80.0, gt=0, le=100, description="Warn when a plan's usage reaches this %.")
    api_samples: int = Field(3, ge=1, le=100, description="Requests per endpoint for the api timing breakdown.")
    rls_tables: list[str] = Field(
        default_factory=lambda: ["public.users", "public.user_alerts", "public.user_sessions"],
        description="Tables where row-level security must be on (schema.table).",
    )
    long_query_seconds: float = Field(60.0, gt=0, description="Queries running longer than this are reported.")
    connections_warning_pct: float = Field(80.0, gt=0, le=100, description="Warn when connections in use reach this % of max_connections.")

    @field_validator("coinmarketcap_url", "coingecko_url", "openai_url", "anthropic_url")
    @classmethod
    def _urls(cls, value: str) -> str:
        return check_http_url(value)


class CertSettings(BaseModel):
    """Certificate renewal (§4.3)."""

    hosts: list[str] = Field(default_factory=list, description='Hosts to check, "host" or "host:port" (443).')
    warning_days: int = Field(30, ge=1, description="Warn below this many days to expiry.")
    critical_days: int = Field(7, ge=0, description="Critical below this many days.")
    ca_bundle: Path | None = Field(None, description="CA bundle to verify the chain with; unset: the system's.")
    renew_command: list[str] = Field(
        default_factory=list, description="Run when a certificate is below warning_days, then check again; empty: report only."
    )
    renew_timeout_seconds: int = Field(600, ge=1)
    renew_env: list[str] = env_names_field("the renewal command")
    timeout_seconds: float = Field(10.0, gt=0, le=120)

    _env = field_validator("renew_env")(check_env_names)


class CleanupSettings(BaseModel):
    """Data retention (§4.5): the policies, and how gently they are applied."""

    policies: list[Policy] = Field(
        default_factory=lambda: [p.model_copy() for p in DEFAULT_POLICIES],
        description="JSON list of policies: name, table, time_column, older_than_days or expired, conditions, action.",
    )
    batch_size: int = Field(
        50_000, ge=1, le=1_000_000,
        description="Keys per batch (one short transaction each: about 50 ms for 50,000 log rows, see bench/README.md).",
    )
    lock_timeout_ms: int = Field(2000, ge=1, description="A batch waits at most this long for a row lock, then retries later.")
    statement_timeout_ms: int = Field(30_000, ge=1, description="A batch's statement timeout.")
    max_lock_waits: int = Field(0, ge=0, description="Back off while more sessions than this wait on locks.")
    long_transaction_seconds: float = Field(60.0, gt=0, description="Back off while another transaction is older than this.")
    vacuum: bool = Field(True, description="VACUUM ANALYZE the touched tables afterwards.")


class MaintenanceSettings(BaseModel):
    """Database maintenance (§4.4)."""

    tables: list[str] = Field(
        default_factory=lambda: ["public.users", "public.user_alerts", "public.market_data"],
        description="The large tables VACUUM ANALYZE'd (schema.table).",
    )


class HeavyJobsSettings(BaseModel):
    """The heavy jobs on one database (backup, db-maintenance, data-cleanup, dr-drill,
    disaster-recovery) take its one slot, the global concurrency limit runbook-db-<instance>."""

    wait_seconds: float = Field(
        900.0, ge=1,
        description="How long a heavy job waits for its database's slot while another heavy job holds it; "
        "then it fails naming the holder.",
    )


class ServerSettings(BaseModel):
    """``runbook server``: the local Prefect server under RUNBOOK_HOME that the CLI shares."""

    host: str = Field("127.0.0.1", description="Address the local Prefect server listens on (API and UI).")
    port: int = Field(4200, ge=1, le=65535, description="Port of the local Prefect server (API and UI).")
    workers: int = Field(1, ge=1, le=16, description="Process workers runbook server starts on prefect.yaml's work pool.")
    startup_timeout_seconds: float = Field(180.0, gt=0, description="How long runbook server start waits for the server to answer.")
    scheduler: bool = Field(
        True, description="Run prefect.yaml's schedules (false: the deployments show their schedules, but only runs started by hand happen)."
    )

class EdgeCall(KillSwitchCall):
    """An edge task outside runbook (§4): a command (argv, no shell) or an HTTP call."""

    method: Literal["POST", "PUT", "PATCH", "DELETE", "GET"] = "POST"
    timeout_seconds: int = Field(300, ge=1, le=6 * 3600, description="Per attempt (command or request).")


class EdgeSettings(BaseModel):
    """The edge tasks of §4 and §6.1 that happen outside runbook; unset: the item is "not configured"."""

    log_rotation: EdgeCall | None = Field(None, description="Rotates the platform's logs (§4.1), e.g. a logrotate command.")
    cache_clear: EdgeCall | None = Field(
        None, description="Clears the KV CACHE namespace (§4.1 cache cleanup), e.g. a wrangler command or a Cloudflare API call.",
    )
    workers_export: EdgeCall | None = Field(
        None,
        description="Prints (stdout) or answers (HTTP body) the Workers configuration (§6.1); stored beside the backups "
        "with its sha256, read back and checked.",
    )
    export_prefix: str = Field("edge-config", description="Folder of the Workers configuration exports under the instance's in the store.")

    @field_validator("export_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", value.strip("/")) or value.strip("/").startswith("backup_"):
            raise ValueError(f"{value!r}: one folder name of letters, digits, _ and - (not backup_...)")
        return value.strip("/")


def _plan(period: str) -> Any:
    from runbook.calendar import DEFAULT_PLANS

    return Field(
        default_factory=lambda: DEFAULT_PLANS[period].model_copy(deep=True),
        description=f"What {period}-maintenance runs (items: name, procedure or edge, parameters, critical) and its §8 "
        "checklist (text, item or none for a person, judge, argument), as JSON.",
    )


class CalendarSettings(BaseModel):
    """The operations calendar (§4.1-§4.3, §8): what each period runs and checks, the edge tasks, the checklists' history."""

    daily: PeriodPlan = _plan("daily")
    weekly: PeriodPlan = _plan("weekly")
    monthly: PeriodPlan = _plan("monthly")
    edge: EdgeSettings = Field(default_factory=EdgeSettings)
    people_timeout_seconds: int = Field(
        8 * 3600, ge=1, le=7 * 86_400,
        description="How long a period's run waits in the Prefect UI for the checklist items only a person can answer; "
        "then they are recorded as not confirmed.",
    )
    state_schema: str = Field(
        "runbook_ops", min_length=1, max_length=63, description="Schema of runbook's own in the platform's database for the checklists' history.",
    )

    def plan(self, period: str) -> PeriodPlan:
        return getattr(self, period)


SignalSource = Literal["metrics", "health", "database", "backups", "prefect"]
SIGNAL_SOURCES: tuple[str, ...] = ("metrics", "health", "database", "backups", "prefect")
# Where each platform metric is in the answer of /api/monitoring/metrics (the stand-in's
# names; the real platform's may differ, hence configuration). A dotted path reads a
# nested object ("latency.p95"); an empty string turns the metric off.
PLATFORM_METRIC_FIELDS: dict[str, str] = {
    "error_rate_pct": "error_rate_pct",
    "response_time_p95_ms": "p95_ms",
    "response_time_p50_ms": "p50_ms",
    "throughput_rps": "requests_per_second",
    "cpu_pct": "cpu_pct",
    "memory_pct": "memory_pct",
    "disk_pct": "disk_pct",
}


class MonitorSettings(BaseModel):
    """What the monitor reads each minute (§2.1, §6.3, §7.1-§7.2), how long it waits for
    each source, and where each metric is in the platform's answer."""

    sources: list[SignalSource] = Field(
        default_factory=lambda: list(SIGNAL_SOURCES),
        description="Sources collected: metrics, health, database, backups, prefect. A source left out is reported as skipped.",
    )
    metrics_path: str = Field("/api/monitoring/metrics", description="The platform's metrics endpoint (§2.1).")
    health_path: str = Field("/api/health", description="The platform's health endpoint (§1.4).")
    metric_fields: dict[str, str] = Field(
        default_factory=lambda: dict(PLATFORM_METRIC_FIELDS),
        description="JSON field of each platform metric in the metrics answer, merged over the defaults; "
        "a dotted path reads a nested object, an empty string turns the metric off.",
    )
    http_timeout_seconds: float = Field(5.0, gt=0, le=60, description="Per request to the platform (connect, read).")
    database_timeout_seconds: int = Field(5, ge=1, le=60, description="Connect and statement timeout of the database check.")
    store_timeout_seconds: int = Field(10, ge=1, le=120, description="Connect and read timeout of the backup store (S3).")
    prefect_timeout_seconds: float = Field(10.0, gt=0, le=120, description="Per request to the Prefect API.")
    deployment_tag: str = Field("runbook", min_length=1, description="Scheduled deployments with this tag are watched.")
    retries: int = Field(1, ge=0, le=3, description="Retries of a source that failed transiently, within one run.")
    retry_delay_seconds: float = Field(1.0, ge=0, le=30, description="Wait before such a retry.")
    history_interval_minutes: int = Field(
        15, ge=1, le=24 * 60, description="The metric history (performance and capacity reviews) keeps one sample per metric this often.",
    )
    history_days: int = Field(400, ge=1, le=3650, description="How long the metric history is kept.")

    @field_validator("metrics_path", "health_path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/") or "://" in value:
            raise ValueError(f"{value!r} is not a path on the platform such as /api/health")
        return value

    @field_validator("metric_fields", mode="before")
    @classmethod
    def _merge_fields(cls, value: Any) -> Any:
        # an operator changes one field (RUNBOOK_MONITOR__METRIC_FIELDS__CPU_PCT=cpu) without restating the rest
        return {**PLATFORM_METRIC_FIELDS, **value} if isinstance(value, dict) else value

    @field_validator("metric_fields")
    @classmethod
    def _check_fields(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(PLATFORM_METRIC_FIELDS))
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}: expected some of {', '.join(PLATFORM_METRIC_FIELDS)}")
        return {metric: field.strip() for metric, field in value.items()}


class LogsSettings(BaseModel):
    """The platform's logs (§2.4-§2.5, §8's daily error-log review): where each field of a
    log row lives. §0 names only ``system_logs.created_at``; the defaults fit the sandbox
    (``level`` and ``message`` columns, the rest in a ``context`` jsonb). A field is a
    column name, or ``column.key[.key...]``: a path into a json or jsonb column."""

    table: str = Field("public.system_logs", description="The log table (or view), schema.table, split on the first dot.")
    time_column: str = Field("created_at", description="The row's time (§0: system_logs.created_at), a timestamp column.")
    level: str = Field("level", description="The level: a column or a json path (e.g. context.level).")
    message: str = Field("message", description="The message: a column or a json path.")
    action: str = Field(
        "context.action", description="The action (§2.4): a column, a json path, or none when the rows carry none."
    )
    response_time: str = Field(
        "context.response_time",
        description="The response time (§2.5), a number: a column, a json path, or none when the rows carry none.",
    )
    error_levels: list[str] = Field(
        default_factory=lambda: ["ERROR"], min_length=1, description="Levels counted as errors (§2.5), compared case-insensitively."
    )
    error_pct_warning: float = Field(
        1.0, gt=0, le=100, description="Warn when errors are at least this % of the window's rows (§7.1's error-rate warning)."
    )
    p95_warning_ms: float = Field(3000.0, gt=0, description="Warn when the p95 response time reaches this (§7.1's warning).")
    top: int = Field(10, ge=1, le=1000, description="Error groups and top errors shown.")

    @field_validator("table", "time_column", "level", "message", "action", "response_time")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty: name a column or a json path (column.key)")
        return value.strip()

    @field_validator("error_levels")
    @classmethod
    def _levels(cls, value: list[str]) -> list[str]:
        if any(not level.strip() for level in value):
            raise ValueError("a level is empty")
        return [level.strip().upper() for level in value]


class PerformanceSettings(BaseModel):
    """The performance report (§4.1-§4.2, §7.1): the monitor's history of the platform's
    metrics and, per endpoint where the log rows carry one, response-time percentiles
    from the log table of RUNBOOK_LOGS__* (its response_time field)."""

    endpoint: str = Field(
        "none", description="The endpoint (path) of a log row: a column or a json path (context.path); none: no per-endpoint breakdown.",
    )
    top_endpoints: int = Field(20, ge=1, le=500, description="Endpoints shown, the busiest first.")
    min_samples: int = Field(
        4, ge=1, description="Fewer monitor samples than this in a period: insufficient data (4 = one hour at 15 minutes).",
    )
    min_rows: int = Field(20, ge=1, description="Fewer log rows with a response time than this in a period (or endpoint): insufficient data.")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty: name a column, a json path (column.key), or none")
        return value.strip()


class CapacitySettings(BaseModel):
    """The capacity review (§7): how much history a trend needs before it is believed."""

    history_days: int = Field(90, ge=1, le=3650, description="Days of metric history the trends are fitted on.")
    min_points: int = Field(10, ge=2, description="Fewer points than this: insufficient data.")
    min_days: float = Field(7.0, gt=0, description="Points spread over fewer days than this: insufficient data.")
    min_r2: float = Field(0.5, ge=0, le=1, description="A fit with r² below this predicts nothing: insufficient data.")
    flat_tolerance_pct: float = Field(
        1.0, ge=0, le=100, description="Every value within this % of the mean: flat, not growing.",
    )
    recent_hours: float = Field(
        24.0, gt=0, description="The current value is the mean of this many last hours of samples (one sample spikes).",
    )
    horizon_days: int = Field(365, ge=1, le=3650, description="How far ahead sizes and durations are projected (the chart's end).")
    table_history_days: int = Field(400, ge=1, le=3650, description="How long the recorded table sizes are kept.")
    table_sizes_every_hours: float = Field(
        24.0, ge=0, le=24 * 31,
        description="The monitor records every table's size when the last reading is older than this, so the tables' "
        "growth builds up between the monthly reviews (0: only capacity-review records them).",
    )
    top_tables: int = Field(20, ge=1, le=500, description="Tables shown, the largest first.")


class RunbookSettings(BaseSettings):
    """Every setting of runbook. Environment variables carry the ``RUNBOOK_`` prefix;
    nested sections use ``__`` (``RUNBOOK_RETENTION__HOURLY=48``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    database_url: SecretStr | None = Field(
        None,
        description="The platform's PostgreSQL, a postgresql:// DSN. Required (or a Secret block) unless the sandbox is asked for.",
    )
    sandbox: bool = Field(
        False,
        description="Work on the embedded sandbox instead of the platform (what runbook --sandbox and runbook demo set). "
        "Never a fallback: without it an unset DSN or store is an error.",
    )
    instance: str | None = Field(
        None,
        description="Name of this platform's folder in the backup store (backups, drills, archives), a safe path segment. "
        "Unset: host-port-database from the DSN, e.g. db.example.com-5432-postgres.",
    )
    recovery_database_url: SecretStr | None = Field(
        None,
        description="Where a recovery restores to (postgresql:// DSN of the recovery target); drills create "
        "their scratch database on this server too unless RUNBOOK_SCRATCH_DATABASE_URL is set. Unset: recoveries refuse.",
    )
    scratch_database_url: SecretStr | None = Field(
        None,
        description="Where scratch restores go (backup-verify, drills): a postgresql:// DSN of a database on that "
        "server, used to create and drop them. Unset: the recovery server, else the platform's own server.",
    )
    platform_url: str | None = Field(None, description="Base URL of the platform's API (http(s)://host[:port]).")
    platform_token: SecretStr | None = Field(None, description="Bearer token for the platform's authenticated endpoints (/api/dashboard).")
    database_url_secret_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding the DSN (deployed runs)."
    )
    backup_store: str | None = Field(
        None,
        description="Where backups live: a local folder, file:///path, or s3://bucket/prefix. Required by the "
        "procedures that use the store (or RUNBOOK_BACKUP_STORE_VARIABLE).",
    )
    backup_store_variable: str | None = Field(
        None,
        description="Name of a Prefect Variable holding the backup store, read when each run starts (deployed runs: "
        "changing the Variable needs no redeploy). RUNBOOK_BACKUP_STORE wins when both are set.",
    )
    s3_endpoint_url: str | None = Field(None, description="Endpoint of an S3-compatible store (http(s)://host:port).")
    pg_bin_dir: Path | None = Field(None, description="Folder holding pg_dump and pg_restore.")
    home: Path = Field(Path(".runbook"), description="Folder of the sandbox and local state.")
    timezone: str = Field("Asia/Tokyo", description="The operating team's timezone (schedules, reports).")
    connect_timeout: int = Field(10, ge=1, le=300, description="PostgreSQL connect timeout, seconds.")
    statement_timeout: int = Field(600, ge=1, description="PostgreSQL statement timeout for checks, seconds.")
    log_format: Literal["text", "json"] = Field(
        "text", description="runbook's own log records on the console: Prefect's text lines, or one JSON object per line."
    )
    backup: BackupSettings = Field(default_factory=BackupSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    dr: DisasterRecoverySettings = Field(default_factory=DisasterRecoverySettings)
    deploy: DeploySettings = Field(default_factory=DeploySettings)
    predeploy: PredeploySettings = Field(default_factory=PredeploySettings)
    diagnose: DiagnoseSettings = Field(default_factory=DiagnoseSettings)
    certs: CertSettings = Field(default_factory=CertSettings)
    cleanup: CleanupSettings = Field(default_factory=CleanupSettings)
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    heavy_jobs: HeavyJobsSettings = Field(default_factory=HeavyJobsSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    logs: LogsSettings = Field(default_factory=LogsSettings)
    performance: PerformanceSettings = Field(default_factory=PerformanceSettings)
    capacity: CapacitySettings = Field(default_factory=CapacitySettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    calendar: CalendarSettings = Field(default_factory=CalendarSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(f"{ENV_PREFIX}CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @field_validator("database_url", "recovery_database_url", "scratch_database_url")
    @classmethod
    def _check_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        check_dsn(value.get_secret_value())
        return value

    @field_validator("platform_token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        # an empty token is no token: refused where one is needed, never sent as "Bearer "
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("instance")
    @classmethod
    def _check_instance(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return check_instance(value)

    @field_validator("backup_store")
    @classmethod
    def _check_store(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return check_backup_store(value)

    @field_validator("platform_url")
    @classmethod
    def _check_platform_url(cls, value: str | None) -> str | None:
        return check_http_url(value) if value else None

    @field_validator("s3_endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http(s)://host[:port] URL")
        try:
            parts.port
        except ValueError as err:
            raise ValueError(f"bad port: {err}") from None
        return value

    @field_validator("pg_bin_dir")
    @classmethod
    def _check_bin_dir(cls, value: Path | None) -> Path | None:
        if value is None or str(value) == "":
            return None
        for tool in ("pg_dump", "pg_restore"):
            if not os.access(value / tool, os.X_OK):
                raise ValueError(f"{value} holds no executable {tool}: point it at a PostgreSQL bin folder")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA timezone such as Asia/Tokyo or UTC") from None
        return value


def check_backup_store(value: str) -> str:
    """Raise ValueError unless ``value`` is a folder, file:///path or s3://bucket/prefix."""
    scheme = urlsplit(value).scheme
    if scheme == "s3":
        parts = urlsplit(value)
        if not parts.netloc:
            raise ValueError("s3:// needs a bucket: s3://bucket/prefix")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", parts.netloc):
            raise ValueError(f"{parts.netloc!r} is not a valid S3 bucket name")
    elif scheme == "file":
        parts = urlsplit(value)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError("file:// needs an absolute path: file:///srv/backups")
    elif scheme and len(scheme) > 1:
        raise ValueError(f"scheme {scheme!r} is not supported: use a folder, file:///path or s3://bucket/prefix")
    return value


INSTANCE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_instance(value: str) -> str:
    """Raise ValueError unless ``value`` is a safe path segment for the store."""
    if not INSTANCE_PATTERN.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a safe instance name: 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s)://host[:port] URL")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"{value!r} has a port that is not a number") from None
    return value.rstrip("/")


def check_dsn(dsn: str) -> None:
    """Raise ValueError unless ``dsn`` is a postgresql:// URL with a database name."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("expected a postgresql://user:password@host:port/database DSN")
    try:
        parts.port
    except ValueError:
        raise ValueError("the DSN's port is not a number") from None
    if not parts.path.strip("/"):
        raise ValueError("the DSN names no database: postgresql://user:password@host:port/database")


def redact_dsn(dsn: str) -> str:
    """The DSN (URL or key=value form) with its password replaced, safe to print and log."""
    text = re.sub(r"(password\s*=\s*)('[^']*'|[^&\s]*)", r"\1***", dsn)
    parts = urlsplit(text)
    if parts.scheme and parts.password is not None:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    return text


def _field_env_name(loc: tuple[Any, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc if not isinstance(part, int))


def load_settings(**overrides: Any) -> RunbookSettings:
    """Build the settings, turning a validation error into one ConfigError that names
    the setting and what would be valid (and never echoes a secret's value). The
    process's log records mask the secrets they hold from then on (runbook.logconfig)."""
    try:
        settings = RunbookSettings(**overrides)
    except ValidationError as err:
        lines = []
        for problem in err.errors():
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{_field_env_name(problem['loc'])}: {message}")
        raise ConfigError("invalid setting: " + "; ".join(lines)) from None
    from runbook.logconfig import apply

    apply(settings)  # every run builds its settings first: from here its log records hide its secrets
    return settings
