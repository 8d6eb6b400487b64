"""What a channel's answer means for the delivery ledger: delivered, worth a retry on
a later run (connection refused, timeout, 5xx, throttling, SMTP 4xx), or final (bad
credentials, other 4xx, SMTP 5xx), and how long a 429 asked us to wait. Pure.

    Delivery(ok=True)                     the channel took the message
    Delivery(ok=False, permanent=False)   transient: the ledger retries it later
        retry_after_seconds set           the channel said when (429 Retry-After)
    Delivery(ok=False, permanent=True)    a retry cannot help: fix the setting
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from runbook.alerting.model import Delivery

# 408 request timeout, 420 (Statuspage's "enhance your calm"), 425 too early, 429 too
# many requests: the same request may succeed later; every other 4xx will not.
TRANSIENT_4XX = frozenset({408, 420, 425, 429})
THROTTLED = frozenset({420, 429})
DETAIL_MAX = 300

# Slack Web API errors (HTTP 200, "ok": false) that are about Slack, not our request.
SLACK_TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header in seconds: a number of seconds or an HTTP date (from
    ``now``); None when absent or unreadable. Never negative."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    try:
        then = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    return max((then - (now or datetime.now(timezone.utc))).total_seconds(), 0.0)


def is_permanent_status(status: int) -> bool:
    """An HTTP status a retry cannot change: 4xx other than TRANSIENT_4XX (and any
    other non-5xx failure, such as a 3xx to somewhere we do not follow)."""
    return status < 500 and status not in TRANSIENT_4XX


def is_permanent_smtp(code: int) -> bool:
    """SMTP's own rule: 5yz is a permanent negative reply, 4yz a transient one."""
    return 500 <= code < 600


def first_line(text: str, limit: int = DETAIL_MAX) -> str:
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def http_failure(what: str, status: int, reason: str = "", retry_after: float | None = None) -> Delivery:
    """A refused HTTP request: 5xx and throttling are transient, other 4xx permanent."""
    why = first_line(reason)
    detail = f"{what}: HTTP {status}" + (f" {why}" if why else "")
    if status in THROTTLED:
        wait = f"; asked to wait {retry_after:g} s" if retry_after is not None else ""
        return Delivery(ok=False, detail=f"{detail} (rate limited{wait})", retry_after_seconds=retry_after)
    return Delivery(ok=False, detail=detail, permanent=is_permanent_status(status))


def combine(deliveries: list[Delivery]) -> Delivery:
    """One outcome for a message sent to several recipients: delivered only when every
    one took it; permanent only when every failure is; the longest wait asked."""
    if len(deliveries) == 1:
        return deliveries[0]
    failed = [d for d in deliveries if not d.ok]
    waits = [d.retry_after_seconds for d in failed if d.retry_after_seconds is not None]
    ids = [d.external_id for d in deliveries if d.ok and d.external_id]
    return Delivery(
        ok=not failed,
        detail="; ".join(d.detail for d in deliveries),
        permanent=bool(failed) and all(d.permanent for d in failed),
        retry_after_seconds=max(waits) if waits else None,
        external_id=",".join(ids) or None,
    )
