"""Pure decisions about backups: names, manifests, which backup to take, what
retention keeps, whether a size looks wrong. Plain data in, plain data out; no I/O."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from enum import Enum
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from runbook.checks import CheckResult
from runbook.errors import ConfigError
from runbook.schema import SecurityPosture
from runbook.settings import RetentionSettings, SizeWatchSettings

ID_FORMAT = "backup_%Y%m%d_%H%M%S"
DUMP_SUFFIX = ".dump.zst"
MANIFEST_SUFFIX = ".manifest.json"
VERIFICATION_SUFFIX = ".verification.json"
DUMP_FORMAT = "pg_dump custom (-Fc -Z0), zstd stream"


class BackupStatus(str, Enum):
    STARTED = "STARTED"
    DONE = "DONE"
    FAILED = "FAILED"


class Verification(BaseModel):
    """The outcome of the last verification, stored beside the manifest."""

    backup_id: str
    verified_at: datetime
    outcome: str
    deep: bool = False
    failed_checks: list[str] = Field(default_factory=list)
    flow_run_id: str | None = None


class ServerIdentity(BaseModel):
    """Which server a backup was taken from (never a user name or a password)."""

    system_identifier: str | None = Field(None, description="pg_control_system(): unique to the cluster; None if not readable.")
    host: str = Field("", description="The DSN's host (a socket folder for a local server).")
    port: int | None = None
    database: str = ""
    server_version: str = ""


class Manifest(BaseModel):
    """Everything known about one backup. Written STARTED, then DONE (last) or FAILED."""

    id: str
    status: BackupStatus
    database: str
    instance: str = Field("", description="The store folder of this platform (RUNBOOK_INSTANCE); empty in older manifests.")
    server: ServerIdentity | None = None
    server_version: str = ""
    pg_dump_version: str = ""  # the pg_dump that made it; a pg_restore of this major or newer reads it
    pg_dump_build: str = ""  # ``pg_dump --version`` as printed, e.g. "pg_dump (PostgreSQL) 16.4 (Debian 16.4-1)"
    format: str = DUMP_FORMAT
    compression: str = ""
    started_at: datetime
    finished_at: datetime | None = None
    snapshot_at: datetime | None = None
    size_bytes: int | None = None
    raw_bytes: int | None = None
    sha256: str | None = None
    tables: dict[str, int] = Field(default_factory=dict)
    fingerprints: dict[str, str] | None = None
    security: SecurityPosture | None = None
    error: str | None = None
    flow_run_id: str | None = None

    @property
    def prefix(self) -> str:
        """The store folder of this backup: its instance (older manifests: the database name)."""
        return self.instance or self.database

    @property
    def dump_key(self) -> str:
        return dump_key(self.prefix, self.id)


def backup_id_for(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(ID_FORMAT)


def time_of(backup_id: str) -> datetime:
    try:
        return datetime.strptime(backup_id, ID_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        raise ConfigError(f"{backup_id!r} is not a backup id such as backup_20261129_073000") from None


def next_free_id(moment: datetime, taken: Iterable[str]) -> str:
    """The id for ``moment``, moved on by a second while it is taken."""
    used = set(taken)
    candidate = moment.astimezone(timezone.utc).replace(microsecond=0)
    while backup_id_for(candidate) in used:
        candidate += timedelta(seconds=1)
    return backup_id_for(candidate)


def dump_key(instance: str, backup_id: str) -> str:
    return f"{instance}/{backup_id}{DUMP_SUFFIX}"


def manifest_key(instance: str, backup_id: str) -> str:
    return f"{instance}/{backup_id}{MANIFEST_SUFFIX}"


def verification_key(instance: str, backup_id: str) -> str:
    return f"{instance}/{backup_id}{VERIFICATION_SUFFIX}"


def ids_in(keys: Iterable[str]) -> list[str]:
    """Backup ids that have a manifest among ``keys``, oldest first."""
    found = set()
    for key in keys:
        name = key.rsplit("/", 1)[-1]
        if name.endswith(MANIFEST_SUFFIX):
            found.add(name[: -len(MANIFEST_SUFFIX)])
    return sorted(found)


def orphaned_keys(keys: Iterable[str]) -> list[str]:
    """Objects of a backup that has no manifest: left by a prune interrupted after it
    removed the manifest (a backup writes its manifest before its dump, so no running
    backup has a dump without one)."""
    keys = list(keys)
    with_manifest = set(ids_in(keys))
    orphans = []
    for key in keys:
        backup_id = key.rsplit("/", 1)[-1].split(".", 1)[0]
        if backup_id.startswith("backup_") and backup_id not in with_manifest:
            orphans.append(key)
    return sorted(orphans)


def select_backup(
    manifests: list[Manifest], *, backup_id: str | None = None, at_or_before: datetime | None = None
) -> Manifest:
    """The backup to verify or restore: a given id, the latest DONE at or before a
    time, or the latest DONE. Only DONE backups are ever chosen."""
    if backup_id:
        for manifest in manifests:
            if manifest.id == backup_id:
                if manifest.status is not BackupStatus.DONE:
                    raise ConfigError(f"{backup_id} is {manifest.status.value}, not DONE: it cannot be used")
                return manifest
        raise ConfigError(f"no backup {backup_id}: run backup-list to see the available ids")
    done = [m for m in manifests if m.status is BackupStatus.DONE]
    if at_or_before is not None:
        done = [m for m in done if (m.snapshot_at or m.started_at) <= at_or_before]
    if not done:
        when = f" at or before {at_or_before.isoformat()}" if at_or_before else ""
        raise ConfigError(f"no DONE backup{when}: run the backup procedure first")
    return max(done, key=lambda m: m.snapshot_at or m.started_at)


class RetentionDecision(BaseModel):
    backup_id: str
    keep: bool
    reasons: list[str] = Field(default_factory=list)


def _period_keys(moment: datetime, zone: ZoneInfo) -> dict[str, str]:
    local = moment.astimezone(zone)
    year, week, _ = local.isocalendar()
    return {
        "hourly": local.strftime("%Y-%m-%d %H"),
        "daily": local.strftime("%Y-%m-%d"),
        "weekly": f"{year}-W{week:02d}",
        "monthly": local.strftime("%Y-%m"),
    }


def plan_retention(
    manifests: list[Manifest],
    verifications: dict[str, Verification],
    policy: RetentionSettings,
    *,
    timezone_name: str = "UTC",
    failed_grace: timedelta = timedelta(days=7),
    now: datetime | None = None,
) -> list[RetentionDecision]:
    """Grandfather-father-son: keep the newest DONE backup of each of the last N
    hours, days, ISO weeks and months that have a backup (periods in the team's
    timezone). Always keep the newest DONE and the newest verified backup, and every
    backup still STARTED. FAILED backups go once older than ``failed_grace``."""
    if min(policy.hourly, policy.daily, policy.weekly, policy.monthly) < 0:
        raise ConfigError("retention counts must be >= 0")
    zone = ZoneInfo(timezone_name)
    now = now or datetime.now(timezone.utc)
    reasons: dict[str, list[str]] = {m.id: [] for m in manifests}
    done = sorted((m for m in manifests if m.status is BackupStatus.DONE), key=lambda m: m.id, reverse=True)

    for period, count in (
        ("hourly", policy.hourly),
        ("daily", policy.daily),
        ("weekly", policy.weekly),
        ("monthly", policy.monthly),
    ):
        seen: list[str] = []
        for manifest in done:  # newest first: the first of each period is its newest
            key = _period_keys(time_of(manifest.id), zone)[period]
            if key in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(key)
            reasons[manifest.id].append(f"{period} {key}")

    if done:
        reasons[done[0].id].append("newest DONE backup")
    verified = [m for m in done if (v := verifications.get(m.id)) is not None and v.outcome != "failed"]
    if verified:
        reasons[verified[0].id].append("newest verified backup")
    for manifest in manifests:
        if manifest.status is BackupStatus.STARTED:
            reasons[manifest.id].append("still STARTED (may be running)")
        elif manifest.status is BackupStatus.FAILED and now - time_of(manifest.id) < failed_grace:
            reasons[manifest.id].append(f"FAILED less than {failed_grace.days} days ago (kept for diagnosis)")

    return [
        RetentionDecision(backup_id=m.id, keep=bool(reasons[m.id]), reasons=reasons[m.id])
        for m in sorted(manifests, key=lambda m: m.id)
    ]


def size_watch(size: int, previous_sizes: list[int], policy: SizeWatchSettings) -> CheckResult:
    """Flag a backup much smaller or larger than the median of the previous ones."""
    window = previous_sizes[-policy.window :]
    if not window:
        return CheckResult(name="size-watch", ok=True, detail="no previous backup to compare with", critical=False)
    median = statistics.median(window)
    change = (size - median) / median * 100 if median else 0.0
    detail = f"{size:,} bytes vs median {median:,.0f} of the previous {len(window)} ({change:+.1f} %)"
    if change < -policy.smaller_pct:
        return CheckResult(name="size-watch", ok=False, detail=f"{detail}: more than {policy.smaller_pct:g} % smaller", critical=False)
    if change > policy.larger_pct:
        return CheckResult(name="size-watch", ok=False, detail=f"{detail}: more than {policy.larger_pct:g} % larger", critical=False)
    return CheckResult(name="size-watch", ok=True, detail=detail, critical=False)


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def human_age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600:02d}h"
