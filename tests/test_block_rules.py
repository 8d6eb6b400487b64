"""block-ip's decisions without I/O: what Cloudflare can hold, how long a block lasts,
what the read back must find, and how the Cloudflare settings are resolved."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone

import pytest

from runbook.errors import ConfigError
from runbook.security.blocking import cloudflare_configuration, enforcement_problems, expiry, is_enforced
from runbook.settings import CloudflareBlockSettings, load_settings
from tasks.cloudflare import resolve_cloudflare
from tasks.shell import known_secrets

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("text, configuration", [
    ("93.184.216.34/32", {"target": "ip", "value": "93.184.216.34"}),
    ("93.184.216.0/24", {"target": "ip_range", "value": "93.184.216.0/24"}),
    ("93.184.0.0/16", {"target": "ip_range", "value": "93.184.0.0/16"}),
    ("2606:2800:220:1:248:1893:25c8:1946/128", {"target": "ip6", "value": "2606:2800:220:1:248:1893:25c8:1946"}),
    ("2606:2800:220:1::/64", {"target": "ip_range", "value": "2606:2800:220:1::/64"}),
    ("2606:2800::/32", {"target": "ip_range", "value": "2606:2800::/32"}),
])
def test_what_cloudflare_holds(text: str, configuration: dict[str, str]) -> None:
    assert cloudflare_configuration(ipaddress.ip_network(text)) == configuration


@pytest.mark.parametrize("text", ["93.184.208.0/20", "93.184.216.32/28", "2606:2800:200::/40", "2606:2800:220:1::/96"])
def test_ranges_cloudflare_does_not_take_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="Cloudflare IP Access Rules hold"):
        cloudflare_configuration(ipaddress.ip_network(text))


def test_expiry_default_cap_and_permanent() -> None:
    limits = dict(default_minutes=240, max_minutes=1440)
    assert expiry(NOW, minutes=None, permanent=False, **limits) == NOW + timedelta(minutes=240)
    assert expiry(NOW, minutes=30, permanent=False, **limits) == NOW + timedelta(minutes=30)
    assert expiry(NOW, minutes=None, permanent=True, **limits) is None
    with pytest.raises(ConfigError, match="MAX_MINUTES"):
        expiry(NOW, minutes=1441, permanent=False, **limits)
    with pytest.raises(ConfigError, match="not both"):
        expiry(NOW, minutes=5, permanent=True, **limits)


def test_an_expired_row_is_not_enforced_and_a_lifted_one_never() -> None:
    row = {"lifted_at": None, "expires_at": NOW + timedelta(minutes=1)}
    assert is_enforced(row, NOW) and not is_enforced(row, NOW + timedelta(minutes=1))
    assert is_enforced({"lifted_at": None, "expires_at": None}, NOW + timedelta(days=9999))
    assert not is_enforced({"lifted_at": NOW, "expires_at": None}, NOW)


def test_each_enforcement_point_that_does_not_hold_is_named() -> None:
    net = ipaddress.ip_network("93.184.216.34/32")
    active = {"lifted_at": None, "cloudflare_rule_id": "r1"}
    rule = {"id": "r1", "mode": "block", "value": "93.184.216.34"}
    common = dict(network=net, cloudflare="zone z", table="s.t")
    assert enforcement_problems(row=active, want_active=True, rule_id="r1", rule=rule, **common) == []
    assert enforcement_problems(row=None, want_active=True, rule_id="r1", rule=None, **common) == [
        "s.t: no active row for 93.184.216.34/32", "cloudflare (zone z): the rule r1 does not exist"]
    assert enforcement_problems(row=active, want_active=True, rule_id="r1", rule={**rule, "mode": "challenge"}, **common) == [
        "cloudflare (zone z): the rule r1 is challenge 93.184.216.34, not block 93.184.216.34"]
    lifted = {**active, "lifted_at": NOW}
    assert enforcement_problems(row=lifted, want_active=False, rule_id="r1", rule=None, **common) == []
    assert enforcement_problems(row=active, want_active=False, rule_id="r1", rule=rule, **common) == [
        "s.t: the block of 93.184.216.34/32 is still active", "cloudflare (zone z): the rule r1 still exists"]


def test_cloudflare_is_off_until_configured_then_complete_or_refused() -> None:
    assert resolve_cloudflare(CloudflareBlockSettings()) is None
    with pytest.raises(ConfigError, match="RUNBOOK_SECURITY__BLOCK__CLOUDFLARE__API_TOKEN"):
        resolve_cloudflare(CloudflareBlockSettings(zone_id="z", api_token="   "))
    with pytest.raises(ConfigError, match="ZONE_ID .*ACCOUNT_ID"):
        resolve_cloudflare(CloudflareBlockSettings(api_token="t0ken"))
    with pytest.raises(ConfigError, match="both set"):
        resolve_cloudflare(CloudflareBlockSettings(zone_id="z", account_id="a", api_token="t0ken"))
    with pytest.raises(ConfigError, match="API_TOKEN_SECRET_BLOCK: no Secret block named 'no-such-block'"):
        resolve_cloudflare(CloudflareBlockSettings(account_id="a", api_token_secret_block="no-such-block"))
    scope = resolve_cloudflare(CloudflareBlockSettings(account_id="a", api_token="t0ken"))
    assert scope is not None and scope.where() == {"account_id": "a"} and scope.label == "account a"
    assert "t0ken" not in repr(scope)


def test_the_token_from_a_secret_block_is_used_and_masked() -> None:
    from prefect.blocks.system import Secret

    from runbook.logconfig import masked

    token = "cf-block-token-" + "x" * 20
    Secret(value=token).save("runbook-test-cloudflare-token", overwrite=True)
    scope = resolve_cloudflare(CloudflareBlockSettings(zone_id="z", api_token_secret_block="runbook-test-cloudflare-token"))
    assert scope is not None and scope.token.get_secret_value() == token
    assert token not in masked(f"Authorization: Bearer {token}")


def test_the_token_is_a_known_secret_and_bad_settings_name_themselves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_SECURITY__BLOCK__CLOUDFLARE__API_TOKEN", "s3cret-cf-token")
    assert "s3cret-cf-token" in known_secrets(load_settings())
    monkeypatch.setenv("RUNBOOK_SECURITY__BLOCK__ALLOW_LIST", '["office"]')
    with pytest.raises(ConfigError, match="RUNBOOK_SECURITY__BLOCK__ALLOW_LIST.*'office' is not an IP"):
        load_settings()
    monkeypatch.delenv("RUNBOOK_SECURITY__BLOCK__ALLOW_LIST")
    monkeypatch.setenv("RUNBOOK_SECURITY__BLOCK__DEFAULT_MINUTES", "50000")
    with pytest.raises(ConfigError, match="above max_minutes"):
        load_settings()
