"""``export-security-logs`` (§5.4, §5.1), the pure part: the time range, where an export
goes in the store, and its manifest.

An export is one gzip'd JSON-lines object per source under
``<instance>/<prefix>/<since>_<until>_<run>/`` and a ``manifest.json`` listing each
object's sha256, byte size and row count, the range, who asked and why. Rows are those
with ``since <= time < until`` on the source's own time column.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from runbook.errors import ConfigError

STAMP = "%Y%m%dT%H%M%SZ"
MANIFEST = "manifest.json"


def check_range(since: datetime, until: datetime, now: datetime, max_days: float) -> None:
    """Refuse (ConfigError: exit 2) an empty or reversed range, a range longer than
    RUNBOOK_SECURITY__LOG_EXPORT__MAX_RANGE_DAYS, or a time in the future."""
    if since.tzinfo is None or until.tzinfo is None:
        raise ConfigError("since/until: times need an offset (the CLI reads one without it in RUNBOOK_TIMEZONE)")
    if until <= since:
        raise ConfigError(f"until: {until.isoformat()} is not after since {since.isoformat()}")
    for name, moment in (("since", since), ("until", until)):
        if moment > now:
            raise ConfigError(f"{name}: {moment.isoformat()} is in the future (now {now.isoformat(timespec='seconds')}):"
                              " logs not yet written cannot be exported")
    if until - since > timedelta(days=max_days):
        raise ConfigError(f"the range {since.isoformat()} .. {until.isoformat()} is longer than"
                          f" RUNBOOK_SECURITY__LOG_EXPORT__MAX_RANGE_DAYS ({max_days:g} days): export it in parts")


def range_target(since: datetime, until: datetime) -> str:
    """The preview's target (and the approval phrase's): 20261128T000000Z..20261129T000000Z."""
    return f"{since.astimezone(timezone.utc):{STAMP}}..{until.astimezone(timezone.utc):{STAMP}}"


def export_prefix(instance: str, prefix: str, since: datetime, until: datetime, run: str) -> str:
    """The export's folder in the store, ending with /."""
    return (f"{instance}/{prefix}/{since.astimezone(timezone.utc):{STAMP}}_{until.astimezone(timezone.utc):{STAMP}}"
            f"_{run}/")


def object_key(folder: str, source: str) -> str:
    return f"{folder}{source}.jsonl.gz"


def manifest(*, folder: str, store: str, since: datetime, until: datetime, by: str, reason: str, run_id: str | None,
             files: list[dict[str, Any]], created_at: datetime) -> dict[str, Any]:
    """What the export holds and why; each file with its sha256, byte size and row count."""
    return {
        "kind": "security-log-export", "folder": folder, "store": store,
        "since": since.astimezone(timezone.utc).isoformat(), "until": until.astimezone(timezone.utc).isoformat(),
        "by": by, "reason": reason, "run_id": run_id, "created_at": created_at.astimezone(timezone.utc).isoformat(),
        "files": files, "rows": sum(f["rows"] for f in files),
    }
