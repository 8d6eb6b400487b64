"""Cloudflare IP Access Rules (block-ip, §5.4), through the ``cloudflare`` SDK.

    cloudflare SDK error               runbook error
    APIConnectionError / Timeout   ->  TransientError (retried by the tasks)
    APIStatusError 429, 5xx        ->  TransientError (retried by the tasks)
    APIStatusError other 4xx       ->  CloudflareRefused (final: a bad token, a missing
                                       permission, a rule Cloudflare does not accept)

The SDK's own retries are off (``max_retries=0``): it would sleep between them, and
only the tasks decide what is worth a retry. Messages name the request (method, path
with the zone or account) and Cloudflare's error, never the token; the token is masked
in every log record once it is read (runbook.logconfig).

Every call is idempotent: ``ensure_rule`` lists first and adopts a block rule that
already exists for the address (one made by hand, or by a run whose answer was lost),
and ``delete_rule`` counts a rule already gone as deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from runbook.errors import ConfigError, RunbookError, TransientError
from runbook.masking import mask
from runbook.retry import RETRIES, backoff, retry_transient
from runbook.settings import CloudflareBlockSettings

SETTING = "RUNBOOK_SECURITY__BLOCK__CLOUDFLARE__"


class CloudflareRefused(RunbookError):
    """Cloudflare answered a 4xx other than 429: retrying cannot help."""


@dataclass(frozen=True)
class CloudflareScope:
    """Where block rules go (a zone or an account), and how to reach the API."""

    base_url: str
    kind: str  # "zone" or "account"
    id: str
    token: SecretStr
    notes_prefix: str = "runbook block-ip"
    timeout_s: float = 30

    @property
    def label(self) -> str:
        return f"{self.kind} {self.id}"

    def where(self) -> dict[str, str]:
        """The SDK's ``zone_id=`` or ``account_id=``."""
        return {f"{self.kind}_id": self.id}

    def client(self) -> Any:
        from cloudflare import Cloudflare

        client = Cloudflare(api_token=self.token.get_secret_value(), base_url=self.base_url, max_retries=0,
                            timeout=httpx.Timeout(self.timeout_s))
        # the SDK reads these from CLOUDFLARE_* variables and prefers them to the token:
        # runbook authenticates with its own token only
        client.api_key = client.api_email = client.user_service_key = None
        return client


def resolve_cloudflare(cf: CloudflareBlockSettings) -> CloudflareScope | None:
    """The configured Cloudflare scope, or None when Cloudflare is not configured. Once
    any of its settings is set, the token (or its Secret block) and exactly one of zone
    and account are required: a ConfigError names the one that is wrong."""
    if not cf.configured:
        return None
    if cf.zone_id and cf.account_id:
        raise ConfigError(f"{SETTING}ZONE_ID and {SETTING}ACCOUNT_ID are both set: rules go to one zone or one account, set only one")
    if not (cf.zone_id or cf.account_id):
        raise ConfigError(f"{SETTING}ZONE_ID (or {SETTING}ACCOUNT_ID): Cloudflare is configured but names no zone or account")
    token = cf.api_token
    if token is None and cf.api_token_secret_block:
        from tasks.secrets import secret_block_value

        token = SecretStr(secret_block_value(cf.api_token_secret_block, f"{SETTING}API_TOKEN_SECRET_BLOCK", empty_hint=": save the API token in it"))
    if token is None:
        raise ConfigError(f"{SETTING}API_TOKEN (or {SETTING}API_TOKEN_SECRET_BLOCK): Cloudflare is configured but has no API token, or an empty one")
    from runbook.logconfig import hide

    hide(token.get_secret_value())
    kind, ident = ("zone", cf.zone_id) if cf.zone_id else ("account", cf.account_id)
    assert ident is not None
    return CloudflareScope(base_url=cf.base_url, kind=kind, id=ident, token=token, notes_prefix=cf.notes_prefix,
                           timeout_s=cf.timeout_seconds)


def _fail(scope: CloudflareScope, what: str, err: Exception) -> RunbookError:
    """The runbook error for an SDK error: transient or final, with Cloudflare's own words."""
    import cloudflare

    secrets = [scope.token.get_secret_value()]
    if isinstance(err, cloudflare.APIStatusError):
        words = "; ".join(f"{e.code}: {e.message}" for e in err.errors if e.message) or str(err.body)[:300]
        text = mask(f"Cloudflare {what} ({scope.label}): HTTP {err.status_code}: {words}", secrets)
        if err.status_code == 429 or err.status_code >= 500:
            return TransientError(text)
        hint = " (check the token's Firewall Services permission on the " + scope.kind + ")" if err.status_code in (401, 403) else ""
        return CloudflareRefused(text + hint)
    if isinstance(err, cloudflare.APIConnectionError):
        return TransientError(mask(f"Cloudflare {what} ({scope.label}): {err.message} ({scope.base_url})", secrets))
    return CloudflareRefused(mask(f"Cloudflare {what} ({scope.label}): {type(err).__name__}: {err}", secrets))


def _rule(item: Any) -> dict[str, Any]:
    config = item.configuration
    return {"id": item.id, "mode": item.mode, "target": getattr(config, "target", None), "value": getattr(config, "value", None),
            "notes": item.notes or ""}


def find_rules(client: Any, scope: CloudflareScope, configuration: dict[str, str]) -> list[dict[str, Any]]:
    """The rules of the scope for exactly this target and value (any mode)."""
    import cloudflare

    try:
        page = client.firewall.access_rules.list(configuration=configuration, match="all", per_page=100, **scope.where())
        rules = [_rule(item) for item in page.result]
    except cloudflare.CloudflareError as err:
        raise _fail(scope, f"list the rules of {configuration['value']}", err) from None
    return [r for r in rules if r["target"] == configuration["target"] and r["value"] == configuration["value"]]


def get_rule(client: Any, scope: CloudflareScope, rule_id: str) -> dict[str, Any] | None:
    """The rule with this id, or None when it does not exist."""
    import cloudflare

    try:
        return _rule(client.firewall.access_rules.get(rule_id, **scope.where()))
    except cloudflare.NotFoundError:
        return None
    except cloudflare.CloudflareError as err:
        raise _fail(scope, f"read the rule {rule_id}", err) from None


def ensure_rule(client: Any, scope: CloudflareScope, configuration: dict[str, str], notes: str) -> dict[str, Any]:
    """The block rule of this address: the existing one (adopted) or a new one.
    ``created`` says which. An existing rule of another mode (whitelist, challenge) is
    not changed: that is someone's decision, refused here for a person to resolve."""
    import cloudflare

    existing = find_rules(client, scope, configuration)
    blocking = [r for r in existing if r["mode"] == "block"]
    if blocking:
        return {**blocking[0], "created": False}
    if existing:
        other = existing[0]
        raise CloudflareRefused(f"Cloudflare already has a {other['mode']} rule {other['id']} for {configuration['value']} "
                                f"({scope.label}): not changed; remove or change it by hand first")
    try:
        made = client.firewall.access_rules.create(configuration=configuration, mode="block", notes=notes, **scope.where())
    except cloudflare.CloudflareError as err:
        raise _fail(scope, f"create a block rule for {configuration['value']}", err) from None
    return {"id": made.id, "mode": made.mode, "target": configuration["target"], "value": configuration["value"], "notes": notes,
            "created": True}


def delete_rule(client: Any, scope: CloudflareScope, rule_id: str) -> bool:
    """Delete the rule; True if it was deleted now, False if it was already gone."""
    import cloudflare

    try:
        client.firewall.access_rules.delete(rule_id, **scope.where())
    except cloudflare.NotFoundError:
        return False
    except cloudflare.CloudflareError as err:
        raise _fail(scope, f"delete the rule {rule_id}", err) from None
    return True


_RETRY: dict[str, Any] = dict(retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)


@task(name="find-cloudflare-rules", **_RETRY)
def find_rules_task(scope: CloudflareScope, configuration: dict[str, str]) -> list[dict[str, Any]]:
    """Read the scope's IP Access Rules for this address (reads only)."""
    return find_rules(scope.client(), scope, configuration)


@task(name="read-cloudflare-rule", **_RETRY)
def get_rule_task(scope: CloudflareScope, rule_id: str) -> dict[str, Any] | None:
    """Read back one IP Access Rule by its id (None: it does not exist)."""
    return get_rule(scope.client(), scope, rule_id)


@task(name="ensure-cloudflare-rule", **_RETRY)
def ensure_rule_task(scope: CloudflareScope, configuration: dict[str, str], notes: str) -> dict[str, Any]:
    """Create the block rule of this address, or adopt the one that exists (never a second)."""
    rule = ensure_rule(scope.client(), scope, configuration, notes)
    get_run_logger().info("Cloudflare %s: %s block rule %s for %s", scope.label, "created" if rule["created"] else "adopted the existing",
                          rule["id"], configuration["value"])
    return rule


@task(name="delete-cloudflare-rule", **_RETRY)
def delete_rule_task(scope: CloudflareScope, rule_id: str) -> bool:
    """Delete one IP Access Rule by its id (already gone counts as done)."""
    deleted = delete_rule(scope.client(), scope, rule_id)
    get_run_logger().info("Cloudflare %s: rule %s %s", scope.label, rule_id, "deleted" if deleted else "was already gone")
    return deleted
