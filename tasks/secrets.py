"""Where the platform's secrets live: Prefect Secret blocks or the environment. Only
names and places ever leave this module, never a value."""

from __future__ import annotations

import os
import re

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from runbook.logconfig import hide
from runbook.retry import RETRIES, backoff, retry_transient


def block_name(secret: str) -> str:
    """The Prefect Secret block that holds ``secret``: STRIPE_SECRET_KEY -> stripe-secret-key."""
    return re.sub(r"[^a-z0-9-]+", "-", secret.lower()).strip("-")


def locate_secrets(names: list[str], source: str) -> dict[str, str | None]:
    """For each name: where it was found ("Prefect Secret block 'x'", "environment"), or None."""
    found: dict[str, str | None] = {}
    for name in names:
        place = None
        if source in ("prefect", "both") and secret_value(name, "prefect"):
            place = f"Prefect Secret block {block_name(name)!r}"
        elif source in ("environment", "both") and secret_value(name, "environment"):
            place = "environment"
        found[name] = place
    return found


@task(name="locate-secrets", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def locate_secrets_task(names: list[str], source: str) -> dict[str, str | None]:
    """Check that each secret exists (names only: values are never read out)."""
    found = locate_secrets(names, source)
    missing = [n for n, place in found.items() if place is None]
    get_run_logger().info("%d of %d secrets found%s", len(names) - len(missing), len(names), f"; missing: {', '.join(missing)}" if missing else "")
    return found


def secret_value(name: str, source: str) -> str | None:
    """The value of one secret, for a request header: a Prefect Secret block first
    (``source`` prefect or both), then the environment. Never log what this returns."""
    if source in ("prefect", "both"):
        from prefect.blocks.system import Secret

        try:
            value = Secret.load(block_name(name)).get()
        except ValueError:
            value = None
        if value is not None and str(value).strip():
            hide(str(value))
            return str(value)
    if source in ("environment", "both"):
        value = os.environ.get(name, "").strip()
        if value:
            hide(value)
            return value
    return None


def secret_block_value(block: str, setting: str, *, empty_hint: str = "") -> str:
    """The value of the Prefect Secret block ``block`` named by ``setting``; a missing or
    empty block is a ConfigError naming the setting. The value is masked in every log
    record from then on (the settings did not hold it)."""
    from prefect.blocks.system import Secret

    from runbook.errors import ConfigError

    try:
        value = Secret.load(block).get()
    except ValueError:
        raise ConfigError(f"{setting}: no Secret block named {block!r}") from None
    if value is None or not str(value).strip():
        raise ConfigError(f"{setting}: the Secret block {block!r} is empty{empty_hint}")
    hide(str(value))
    return str(value)
