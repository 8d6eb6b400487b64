"""The channels' credentials: the environment or a Prefect Secret block, never empty."""

from __future__ import annotations

import secrets

import pytest

from runbook.alerting.config import ChannelSettings, configured_channels, missing_parts, resolve_credentials
from runbook.errors import ConfigError


def test_a_secret_block_holds_the_webhook_and_an_empty_value_is_no_value() -> None:
    from prefect.blocks.system import Secret

    name = f"slack-hook-{secrets.token_hex(3)}"
    Secret(value="https://hooks.example.test/services/T/B/block-secret").save(name)
    channels = ChannelSettings.model_validate({"slack": {"webhook_url": "  ", "webhook_url_secret_block": name},
                                               "twilio": {"auth_token": ""}})
    credentials = resolve_credentials(channels)
    assert credentials.slack_webhook_url.get_secret_value().endswith("block-secret")
    assert credentials.twilio_auth_token is None
    assert set(configured_channels(channels, credentials)) == {"slack"}
    assert "RUNBOOK_ALERTS__CHANNELS__TWILIO__AUTH_TOKEN" in missing_parts("sms", channels, credentials)


def test_a_missing_or_empty_block_names_the_setting() -> None:
    from prefect.blocks.system import Secret

    with pytest.raises(ConfigError, match="RUNBOOK_ALERTS__CHANNELS__STATUSPAGE__API_KEY_SECRET_BLOCK: no Secret block"):
        resolve_credentials(ChannelSettings.model_validate({"statuspage": {"api_key_secret_block": f"absent-{secrets.token_hex(3)}"}}))
    name = f"empty-{secrets.token_hex(3)}"
    Secret(value=" ").save(name)
    with pytest.raises(ConfigError, match="EMAIL__PASSWORD_SECRET_BLOCK: the Secret block .* is empty"):
        resolve_credentials(ChannelSettings.model_validate({"email": {"password_secret_block": name}}))
