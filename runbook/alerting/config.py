"""Settings of the channels (§2.2-§2.3, §9 contacts): where each one sends, and the
credentials it needs. Credentials come from the environment (``RUNBOOK_ALERTS__...``)
or from a Prefect Secret block named by the matching ``..._SECRET_BLOCK`` setting,
read when a run starts; never from a flow parameter. Empty counts as unset.

A channel is *configured* when it has what it needs to send (credentials and at
least one recipient); the routing and the escalation chain may only name configured
channels, so that no page goes nowhere.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

from runbook.alerting.escalation import DEFAULT_CHAIN, Chain, Level
from runbook.alerting.rules import DEFAULT_RULES, Rule, load_rules
from runbook.errors import ConfigError

SLACK_API_URL = "https://slack.com/api/"
TWILIO_API_URL = "https://api.twilio.com"
STATUSPAGE_API_URL = "https://api.statuspage.io"


def _blank_to_none(value: SecretStr | str | None) -> SecretStr | str | None:
    if value is None:
        return None
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    return value if text.strip() else None


def _http_url(value: str) -> str:
    from runbook.settings import check_http_url

    return check_http_url(value)


class SlackSettings(BaseModel):
    """Slack (§2.3): an incoming webhook, or a bot token for chat.postMessage."""

    webhook_url: SecretStr | None = Field(None, description="Incoming-webhook URL (a secret: it is the credential).")
    webhook_url_secret_block: str | None = Field(None, description="Prefect Secret block holding the webhook URL.")
    bot_token: SecretStr | None = Field(None, description="Bot token (xoxb-...) for chat.postMessage.")
    bot_token_secret_block: str | None = Field(None, description="Prefect Secret block holding the bot token.")
    channel: str = Field("#alerts-production", description="Channel chat.postMessage posts to (§9).")
    api_url: str = Field(SLACK_API_URL, description="Base URL of Slack's Web API (a stand-in in tests).")
    timeout_seconds: float = Field(10, gt=0, le=120)
    max_retry_after_seconds: float = Field(
        20, ge=0, le=300, description="Wait at most this long for a 429 Retry-After within a run; longer: retried on a later run."
    )

    _blank = field_validator("webhook_url", "bot_token", "webhook_url_secret_block", "bot_token_secret_block", mode="before")(
        _blank_to_none
    )
    _url = field_validator("api_url")(lambda cls, v: _http_url(v) + "/")


class EmailSettings(BaseModel):
    """E-mail over SMTP (prefect-email's EmailServerCredentials)."""

    smtp_host: str | None = Field(None, description="SMTP server host.")
    smtp_port: int | None = Field(None, ge=1, le=65535, description="SMTP port (default by smtp_type: 465 SSL, 587 STARTTLS, 25 INSECURE).")
    smtp_type: Literal["SSL", "STARTTLS", "INSECURE"] = Field("STARTTLS", description="How to talk to the server.")
    username: str | None = Field(None, description="SMTP user (none: no login).")
    password: SecretStr | None = Field(None, description="SMTP password.")
    password_secret_block: str | None = Field(None, description="Prefect Secret block holding the SMTP password.")
    sender: str | None = Field(None, description="From address, e.g. runbook@example.com.")
    to: list[str] = Field(default_factory=list, description="The ops e-mail (§9): default recipients of alerts.")
    timeout_seconds: float = Field(15, gt=0, le=120)

    _blank = field_validator("smtp_host", "username", "password", "password_secret_block", "sender", mode="before")(_blank_to_none)


class TwilioSettings(BaseModel):
    """SMS and phone calls through a Twilio-compatible API (Messages, Calls)."""

    api_url: str = Field(TWILIO_API_URL, description="Base URL of the Twilio-compatible API.")
    account_sid: str | None = Field(None, description="Account SID (the basic-auth user).")
    auth_token: SecretStr | None = Field(None, description="Auth token (the basic-auth password).")
    auth_token_secret_block: str | None = Field(None, description="Prefect Secret block holding the auth token.")
    from_number: str | None = Field(None, description="The number messages and calls come from (E.164, +8190...).")
    sms_to: list[str] = Field(default_factory=list, description="Default SMS recipients (the on-call phone, §9).")
    phone_to: list[str] = Field(default_factory=list, description="Default numbers called (the on-call phone, §9).")
    timeout_seconds: float = Field(10, gt=0, le=120)

    _blank = field_validator("account_sid", "auth_token", "auth_token_secret_block", "from_number", mode="before")(_blank_to_none)
    _url = field_validator("api_url")(lambda cls, v: _http_url(v))


class StatuspageSettings(BaseModel):
    """The status page (§9): an Atlassian Statuspage-compatible API."""

    api_url: str = Field(STATUSPAGE_API_URL, description="Base URL of the Statuspage-compatible API.")
    page_id: str | None = Field(None, description="The page whose incidents runbook opens.")
    api_key: SecretStr | None = Field(None, description="API key (sent as 'Authorization: OAuth <key>').")
    api_key_secret_block: str | None = Field(None, description="Prefect Secret block holding the API key.")
    component_ids: list[str] = Field(default_factory=list, description="Components an incident marks as affected.")
    timeout_seconds: float = Field(10, gt=0, le=120)

    _blank = field_validator("page_id", "api_key", "api_key_secret_block", mode="before")(_blank_to_none)
    _url = field_validator("api_url")(lambda cls, v: _http_url(v))


class ChannelSettings(BaseModel):
    """Every channel runbook can notify on."""

    slack: SlackSettings = Field(default_factory=SlackSettings)
    email: EmailSettings = Field(default_factory=EmailSettings)
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    statuspage: StatuspageSettings = Field(default_factory=StatuspageSettings)


class Credentials(BaseModel):
    """The secrets of the channels, resolved once at a run's start (environment first,
    then the named Secret block). Never logged, never put in a result."""

    slack_webhook_url: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    smtp_password: SecretStr | None = None
    twilio_auth_token: SecretStr | None = None
    statuspage_api_key: SecretStr | None = None

    def values(self) -> list[str]:
        """Every secret value, for masking."""
        return [s.get_secret_value() for s in self.__dict__.values() if isinstance(s, SecretStr)]


def _from_block(block: str | None, setting: str) -> SecretStr | None:
    if not block:
        return None
    from tasks.secrets import secret_block_value

    return SecretStr(secret_block_value(block, setting))


def resolve_credentials(channels: ChannelSettings) -> Credentials:
    """Read each channel's secret from the environment, else from its Secret block.
    A named block that is missing or empty is a ConfigError naming the setting."""
    p = "RUNBOOK_ALERTS__CHANNELS__"
    s, e, t, sp = channels.slack, channels.email, channels.twilio, channels.statuspage
    return Credentials(
        slack_webhook_url=s.webhook_url or _from_block(s.webhook_url_secret_block, p + "SLACK__WEBHOOK_URL_SECRET_BLOCK"),
        slack_bot_token=s.bot_token or _from_block(s.bot_token_secret_block, p + "SLACK__BOT_TOKEN_SECRET_BLOCK"),
        smtp_password=e.password or _from_block(e.password_secret_block, p + "EMAIL__PASSWORD_SECRET_BLOCK"),
        twilio_auth_token=t.auth_token or _from_block(t.auth_token_secret_block, p + "TWILIO__AUTH_TOKEN_SECRET_BLOCK"),
        statuspage_api_key=sp.api_key or _from_block(sp.api_key_secret_block, p + "STATUSPAGE__API_KEY_SECRET_BLOCK"),
    )


def configured_channels(channels: ChannelSettings, credentials: Credentials) -> dict[str, str]:
    """Each channel that can send, with its default recipient(s) as one line; a channel
    missing something is absent (``missing_parts`` says what)."""
    return {name: target for name, target in _targets(channels, credentials).items() if not missing_parts(name, channels, credentials)}


def _targets(channels: ChannelSettings, credentials: Credentials) -> dict[str, str]:
    slack = "incoming webhook" if credentials.slack_webhook_url else channels.slack.channel
    return {
        "slack": slack,
        "email": ", ".join(channels.email.to),
        "sms": ", ".join(channels.twilio.sms_to),
        "phone": ", ".join(channels.twilio.phone_to),
        "statuspage": f"page {channels.statuspage.page_id}",
    }


def missing_parts(channel: str, channels: ChannelSettings, credentials: Credentials, recipient: str | None = None) -> list[str]:
    """The settings ``channel`` lacks before it can send (empty: configured). With a
    ``recipient`` (an escalation contact's own address or number), the channel's
    default recipients are not needed."""
    p = "RUNBOOK_ALERTS__CHANNELS__"
    missing: list[str] = []
    if channel == "slack":
        if not (credentials.slack_webhook_url or credentials.slack_bot_token):
            missing.append(p + "SLACK__WEBHOOK_URL or " + p + "SLACK__BOT_TOKEN")
    elif channel == "email":
        e = channels.email
        if not e.smtp_host:
            missing.append(p + "EMAIL__SMTP_HOST")
        if not e.sender:
            missing.append(p + "EMAIL__SENDER")
        if not e.to and not recipient:
            missing.append(p + "EMAIL__TO")
        if e.username and not credentials.smtp_password:
            missing.append(p + "EMAIL__PASSWORD")
    elif channel in ("sms", "phone"):
        t = channels.twilio
        if not t.account_sid:
            missing.append(p + "TWILIO__ACCOUNT_SID")
        if not credentials.twilio_auth_token:
            missing.append(p + "TWILIO__AUTH_TOKEN")
        if not t.from_number:
            missing.append(p + "TWILIO__FROM_NUMBER")
        if not (t.sms_to if channel == "sms" else t.phone_to) and not recipient:
            missing.append(p + ("TWILIO__SMS_TO" if channel == "sms" else "TWILIO__PHONE_TO"))
    elif channel == "statuspage":
        sp = channels.statuspage
        if not sp.page_id:
            missing.append(p + "STATUSPAGE__PAGE_ID")
        if not credentials.statuspage_api_key:
            missing.append(p + "STATUSPAGE__API_KEY")
    else:
        missing.append(f"(unknown channel {channel!r})")
    return missing


class EscalationSettings(BaseModel):
    """The §9 chain and acknowledgements."""

    levels: list[Level] = Field(default_factory=lambda: [lv.model_copy() for lv in DEFAULT_CHAIN],
                                  description="The chain: JSON list of {level, name, after_minutes, contacts: [{channel, to}]}.")
    ack_minutes: float = Field(30, gt=0, le=24 * 60, description="An acknowledgement holds the pages this long while the alert fires.")

    @field_validator("levels")
    @classmethod
    def _chain(cls, value: list[Level]) -> list[Level]:
        Chain(levels=value)
        return value


class AlertSettings(BaseModel):
    """Monitoring, alert rules, notifications and escalation (§2, §7.1-§7.2, §9)."""

    state_database_url: SecretStr | None = Field(
        None, description="Where the alert state lives (postgresql:// DSN, a secret). Unset: the platform's database. "
        "A separate database keeps database-down pages in a ledger while the platform's is down.")
    state_schema: str = Field("runbook_alerting", description="runbook's own schema in the state database.")
    rules: list[Rule] = Field(default_factory=lambda: list(DEFAULT_RULES), description="The rules (JSON list); see README.")
    repeat_interval_minutes: float = Field(240, gt=0, le=7 * 24 * 60, description="A firing alert notifies again this often.")
    flap_changes: int = Field(4, ge=2, le=100, description="More firing<->resolved changes than this within the window: flapping.")
    flap_window_minutes: float = Field(30, gt=0, le=24 * 60, description="The flapping window; stable again after a quiet window.")
    evaluation_interval_seconds: int = Field(60, ge=10, le=3600, description="How often monitor runs (its schedule).")
    max_attempts: int = Field(12, ge=1, le=1000, description="Deliveries of one notification tried at most this often, then dead.")
    lease_seconds: int = Field(300, ge=30, le=3600, description="A delivery claimed by a run that died is tried again after this.")
    state_retries: int = Field(2, ge=0, le=5, description="Retries of a state-database step that failed transiently, within one run.")
    state_retry_delay_seconds: float = Field(5, ge=0, le=60, description="Wait before such a retry.")
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    channels: ChannelSettings = Field(default_factory=ChannelSettings)

    _blank = field_validator("state_database_url", mode="before")(_blank_to_none)

    @field_validator("state_database_url")
    @classmethod
    def _dsn(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from runbook.settings import check_dsn

            check_dsn(value.get_secret_value())
        return value

    @field_validator("state_schema")
    @classmethod
    def _schema(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
            raise ValueError(f"{value!r}: use lowercase letters, digits and underscores")
        return value

    @field_validator("rules")
    @classmethod
    def _rules(cls, value: list[Rule]) -> list[Rule]:
        try:
            return load_rules(value)
        except ConfigError as err:
            raise ValueError(str(err).removeprefix("RUNBOOK_ALERTS__RULES: ")) from None

