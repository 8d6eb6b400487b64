"""Each channel delivers to its stand-in (tests/standins.py) and reports a failure as
the ledger needs it: transient (500, 429, refused connection, SMTP 4xx) or permanent
(bad credentials, other 4xx, SMTP 5xx), a 429's wait honoured or handed back, and
never a secret in a delivery's detail or a log line."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from runbook.alerting.config import ChannelSettings, Credentials, resolve_credentials
from runbook.alerting.model import Delivery, Message
from runbook.errors import ConfigError
from tasks import notify
from tests.standins import LINK, SlackStandIn, SmtpStandIn, StandIns, StatuspageStandIn, TwilioStandIn, alert_message

JST = timezone(timedelta(hours=9))


def alert(**changes: Any) -> Message:
    return alert_message(**changes)


class Sleeps:
    """The injected sleep: records, never waits."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def creds(channels: ChannelSettings) -> Credentials:
    return resolve_credentials(channels)  # no Secret block named: the settings' own values


def assert_no_secret(delivery: Delivery, caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in secrets:
        assert secret not in delivery.detail
        assert secret not in logged


# --- Slack -------------------------------------------------------------------------------------


def slack_send(standin: SlackStandIn, via: str, sleep: Sleeps | None = None, recipient: str | None = None, **changes: Any) -> Delivery:
    channels = ChannelSettings(slack=standin.settings(via=via, **changes))
    return notify.send("slack", recipient, alert(), channels, creds(channels), sleep=sleep or Sleeps())


def test_slack_webhook_posts_block_kit_with_severity_value_and_link(slack_standin: SlackStandIn, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # slack_sdk writes the URL at DEBUG unless silenced
    delivery = slack_send(slack_standin, "webhook")
    assert delivery.ok and delivery.detail == "sent through the incoming webhook"
    (body,) = slack_standin.accepted
    header, _, facts, actions, _ = body["blocks"]
    assert header["text"]["text"] == "CRITICAL firing: high-error-rate (api)"
    assert {"type": "mrkdwn", "text": "*Value*\nvalue 7.2 % against threshold &gt;= 5 %"} in facts["fields"]
    assert actions["elements"][0]["url"] == LINK
    assert "value 7.2 % against threshold >= 5 %" in body["text"]
    assert [r.getMessage() for r in caplog.records if r.name == "runbook.notify"] == [
        "Notified slack incoming webhook (firing): sent through the incoming webhook"
    ]
    assert_no_secret(delivery, caplog, slack_standin.webhook_path)


def test_slack_bot_posts_to_the_channel_or_the_recipient(slack_standin: SlackStandIn, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    first = slack_send(slack_standin, "bot")
    second = slack_send(slack_standin, "bot", recipient="@oncall")
    assert first.ok and first.detail == "sent to #alerts-production" and first.external_id == "1700000000.000001"
    assert second.ok and second.detail == "sent to @oncall"
    assert [b["channel"] for b in slack_standin.accepted] == ["#alerts-production", "@oncall"]
    assert slack_standin.accepted[0]["blocks"][0]["text"]["text"].startswith("CRITICAL")
    assert_no_secret(first, caplog, slack_standin.token)


def test_a_named_recipient_goes_through_the_bot_even_with_a_webhook(slack_standin: SlackStandIn) -> None:
    channels = ChannelSettings(slack=slack_standin.settings(via="webhook", bot_token=slack_standin.token))
    delivery = notify.send("slack", "#team-lead", alert(), channels, creds(channels), sleep=Sleeps())
    assert delivery.ok and slack_standin.accepted[0]["channel"] == "#team-lead"
    assert [r.path for r in slack_standin.received] == ["/api/chat.postMessage"]


def test_slack_wrong_token_is_permanent(slack_standin: SlackStandIn, caplog: pytest.LogCaptureFixture) -> None:
    delivery = slack_send(slack_standin, "bot", bot_token="xoxb-wrong-token")
    assert not delivery.ok and delivery.permanent and "invalid_auth" in delivery.detail
    assert slack_standin.accepted == []
    assert_no_secret(delivery, caplog, "xoxb-wrong-token")


def test_slack_wrong_webhook_is_permanent_and_its_url_never_shows(slack_standin: SlackStandIn, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = slack_standin.url + "/services/T0STANDIN/B0STANDIN/not-the-secret-0123"
    delivery = slack_send(slack_standin, "webhook", webhook_url=wrong)
    assert not delivery.ok and delivery.permanent
    assert delivery.detail == "Slack incoming webhook: HTTP 404 no_service"
    assert_no_secret(delivery, caplog, "not-the-secret-0123")


def test_an_error_quoting_the_webhook_url_is_masked(slack_standin: SlackStandIn, caplog: pytest.LogCaptureFixture) -> None:
    # slack_sdk refuses a non-http URL with an error that quotes it whole
    secret_url = "ftp://hooks.example/services/T1/B1/s3cr3t-webhook-path"
    delivery = slack_send(slack_standin, "webhook", webhook_url=secret_url)
    assert not delivery.ok and delivery.permanent and "Invalid URL" in delivery.detail
    assert_no_secret(delivery, caplog, "s3cr3t-webhook-path")


@pytest.mark.parametrize("via", ["webhook", "bot"])
def test_slack_500_is_transient(slack_standin: SlackStandIn, via: str) -> None:
    slack_standin.fail_next(1, 500)
    delivery = slack_send(slack_standin, via)
    assert not delivery.ok and not delivery.permanent and "HTTP 500" in delivery.detail
    assert delivery.retry_after_seconds is None


@pytest.mark.parametrize("via", ["webhook", "bot"])
def test_slack_429_within_the_limit_is_waited_out(slack_standin: SlackStandIn, via: str) -> None:
    slack_standin.fail_next(1, 429, retry_after=3)
    sleeps = Sleeps()
    delivery = slack_send(slack_standin, via, sleeps)
    assert delivery.ok and "after waiting 3 s" in delivery.detail
    assert sleeps.calls == [3.0]
    assert [r.status for r in slack_standin.received] == [429, 200]
    assert len(slack_standin.accepted) == 1


@pytest.mark.parametrize("via", ["webhook", "bot"])
def test_slack_429_beyond_the_limit_is_left_to_a_later_run(slack_standin: SlackStandIn, via: str) -> None:
    slack_standin.fail_next(1, 429, retry_after=120)
    sleeps = Sleeps()
    delivery = slack_send(slack_standin, via, sleeps, max_retry_after_seconds=20)
    assert not delivery.ok and not delivery.permanent
    assert delivery.retry_after_seconds == 120 and "rate limited" in delivery.detail
    assert sleeps.calls == [] and len(slack_standin.received) == 1


def test_slack_429_twice_gives_up_after_one_wait(slack_standin: SlackStandIn) -> None:
    slack_standin.fail_next(2, 429, retry_after=1)
    sleeps = Sleeps()
    delivery = slack_send(slack_standin, "webhook", sleeps)
    assert not delivery.ok and delivery.retry_after_seconds == 1
    assert sleeps.calls == [1.0] and len(slack_standin.received) == 2


@pytest.mark.parametrize("via", ["webhook", "bot"])
def test_slack_down_is_transient(slack_standin: SlackStandIn, via: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with slack_standin.down():
        delivery = slack_send(slack_standin, via)
    assert not delivery.ok and not delivery.permanent and "Connection refused" in delivery.detail
    assert_no_secret(delivery, caplog, slack_standin.webhook_path, slack_standin.token)
    assert slack_send(slack_standin, via).ok  # up again on the same port


# --- e-mail ------------------------------------------------------------------------------------


def email_send(standin: SmtpStandIn, recipient: str | None = None, message: Message | None = None, **changes: Any) -> Delivery:
    channels = ChannelSettings(email=standin.settings(**changes))
    return notify.send("email", recipient, message or alert(), channels, creds(channels))


def test_email_goes_to_the_ops_addresses_or_the_recipient(smtp_standin: SmtpStandIn) -> None:
    first = email_send(smtp_standin, to=["ops@example.com", "oncall@example.com"])
    second = email_send(smtp_standin, "lead@example.com")
    assert first.ok and first.detail == "sent to ops@example.com, oncall@example.com"
    assert second.ok
    assert smtp_standin.envelopes == [
        ("runbook@example.com", ["ops@example.com", "oncall@example.com"]),
        ("runbook@example.com", ["lead@example.com"]),
    ]
    mail = smtp_standin.messages[0]
    assert mail["Subject"] == "[runbook] CRITICAL firing: high-error-rate (api)"
    assert mail["From"] == "runbook@example.com" and mail["To"] == "ops@example.com, oncall@example.com"
    body = mail.get_content()
    assert "Value:    value 7.2 % against threshold >= 5 %" in body
    assert f"Link:     {LINK}" in body and "2026-12-02T03:04:05+09:00" in body


def test_email_test_message_is_production_alert_test(smtp_standin: SmtpStandIn) -> None:
    message = Message(kind="test", title="Production Alert Test", at=datetime(2026, 12, 2, tzinfo=JST))
    assert email_send(smtp_standin, message=message).ok
    assert smtp_standin.messages[0]["Subject"] == "[runbook] Production Alert Test"


def test_email_login(caplog: pytest.LogCaptureFixture) -> None:
    standin = SmtpStandIn(username="runbook", password="smtp-pass-9f3e")
    try:
        assert email_send(standin).ok
        wrong = email_send(standin, password="wrong-pass-77aa")
        assert not wrong.ok and wrong.permanent and "login refused (535" in wrong.detail
        # smtplib tries each mechanism the server offers (PLAIN, then LOGIN) before giving up
        assert standin.logins[0] == ("runbook", True) and {ok for _, ok in standin.logins[1:]} == {False}
        assert_no_secret(wrong, caplog, "smtp-pass-9f3e", "wrong-pass-77aa")
        missing = email_send(standin, username=None, password=None)  # the server wants a login
        assert not missing.ok and missing.permanent and "530" in missing.detail
    finally:
        standin.stop()
    assert len(standin.messages) == 1


@pytest.mark.parametrize(("code", "permanent"), [(451, False), (554, True)])
def test_email_refused_by_code(smtp_standin: SmtpStandIn, code: int, permanent: bool) -> None:
    smtp_standin.fail_next(1, code)
    delivery = email_send(smtp_standin)
    assert not delivery.ok and delivery.permanent is permanent and str(code) in delivery.detail
    assert email_send(smtp_standin).ok


def test_email_down_is_transient(smtp_standin: SmtpStandIn) -> None:
    with smtp_standin.down():
        delivery = email_send(smtp_standin)
    assert not delivery.ok and not delivery.permanent and "Connection refused" in delivery.detail
    assert email_send(smtp_standin).ok


def test_email_recipients_refused(smtp_standin: SmtpStandIn) -> None:
    smtp_standin.refuse_recipient("gone@example.com")
    alone = email_send(smtp_standin, "gone@example.com")
    assert not alone.ok and alone.permanent and "gone@example.com (550" in alone.detail
    some = email_send(smtp_standin, to=["ops@example.com", "gone@example.com"])
    assert some.ok and some.detail.startswith("sent to ops@example.com; refused: gone@example.com (550")
    assert smtp_standin.envelopes == [("runbook@example.com", ["ops@example.com"])]


# --- SMS and phone ---------------------------------------------------------------------------


def twilio_send(standin: TwilioStandIn, channel: str = "sms", recipient: str | None = None, **changes: Any) -> Delivery:
    channels = ChannelSettings(twilio=standin.settings(**changes))
    return notify.send(channel, recipient, alert(), channels, creds(channels))


def test_sms_to_the_on_call_number(twilio_standin: TwilioStandIn, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    delivery = twilio_send(twilio_standin)
    assert delivery.ok and delivery.external_id and delivery.external_id.startswith("SM")
    (form,) = twilio_standin.messages
    assert form["To"] == "+819011112222" and form["From"] == twilio_standin.from_number
    assert len(form["Body"]) <= 320 and "value 7.2 % against threshold >= 5 %" in form["Body"]
    assert any("Notified sms +819011112222" in r.getMessage() for r in caplog.records)
    assert_no_secret(delivery, caplog, twilio_standin.auth_token)


def test_phone_call_speaks_the_alert(twilio_standin: TwilioStandIn) -> None:
    delivery = twilio_send(twilio_standin, "phone", "+819055556666")
    assert delivery.ok and delivery.external_id and delivery.external_id.startswith("CA")
    (form,) = twilio_standin.calls
    assert form["To"] == "+819055556666"
    say = ET.fromstring(form["Twiml"]).find("Say")
    assert say is not None and "7.2 percent" in (say.text or "")


def test_twilio_wrong_token_is_permanent(twilio_standin: TwilioStandIn, caplog: pytest.LogCaptureFixture) -> None:
    delivery = twilio_send(twilio_standin, auth_token="0123456789abcdef-wrong")
    assert not delivery.ok and delivery.permanent
    assert delivery.detail == "SMS to +819011112222: HTTP 401 Authenticate (Twilio error 20003)"
    assert_no_secret(delivery, caplog, "0123456789abcdef-wrong")


def test_twilio_bad_number_is_permanent(twilio_standin: TwilioStandIn) -> None:
    delivery = twilio_send(twilio_standin, "sms", "090-1111-2222")
    assert not delivery.ok and delivery.permanent and "21211" in delivery.detail


@pytest.mark.parametrize("channel", ["sms", "phone"])
def test_twilio_500_and_429_are_transient(twilio_standin: TwilioStandIn, channel: str) -> None:
    twilio_standin.fail_next(1, 500)
    failed = twilio_send(twilio_standin, channel)
    assert not failed.ok and not failed.permanent and failed.retry_after_seconds is None
    twilio_standin.fail_next(1, 429, retry_after=30)
    throttled = twilio_send(twilio_standin, channel)
    assert not throttled.ok and not throttled.permanent and throttled.retry_after_seconds == 30
    assert twilio_send(twilio_standin, channel).ok


def test_twilio_down_is_transient(twilio_standin: TwilioStandIn) -> None:
    with twilio_standin.down():
        delivery = twilio_send(twilio_standin, "phone")
    assert not delivery.ok and not delivery.permanent and "ConnectError" in delivery.detail


def test_sms_to_several_numbers_is_delivered_only_when_each_is(twilio_standin: TwilioStandIn) -> None:
    both = twilio_send(twilio_standin, sms_to=["+819011112222", "+819077778888"])
    assert both.ok and len(both.external_id.split(",")) == 2  # type: ignore[union-attr]
    one_bad = twilio_send(twilio_standin, sms_to=["+819011112222", "bad"])
    assert not one_bad.ok and one_bad.permanent and "SMS to +819011112222: queued" in one_bad.detail
    assert [m["To"] for m in twilio_standin.messages] == ["+819011112222", "+819077778888", "+819011112222"]


# --- status page ---------------------------------------------------------------------------


def page_send(standin: StatuspageStandIn, kind: str, external_id: str | None = None, **changes: Any) -> Delivery:
    channels = ChannelSettings(statuspage=standin.settings(**changes))
    return notify.send("statuspage", None, alert(kind=kind), channels, creds(channels), external_id=external_id)


def test_statuspage_incident_opened_updated_resolved(statuspage_standin: StatuspageStandIn, caplog: pytest.LogCaptureFixture) -> None:
    opened = page_send(statuspage_standin, "incident-open", component_ids=["api-cmp"])
    assert opened.ok and opened.external_id
    assert page_send(statuspage_standin, "incident-update", opened.external_id).ok
    resolved = page_send(statuspage_standin, "incident-resolved", opened.external_id, component_ids=["api-cmp"])
    assert resolved.ok and resolved.external_id == opened.external_id
    incident = statuspage_standin.incidents[opened.external_id]
    assert incident.history == ["investigating", "identified", "resolved"]
    assert incident.impact == "critical" and incident.name.startswith("CRITICAL high-error-rate firing")
    assert incident.components == {"api-cmp": "operational"}
    assert [r.method for r in statuspage_standin.received] == ["POST", "PATCH", "PATCH"]
    assert_no_secret(opened, caplog, statuspage_standin.api_key)


def test_statuspage_update_without_incident_id_is_refused_unsent(statuspage_standin: StatuspageStandIn) -> None:
    delivery = page_send(statuspage_standin, "incident-resolved")
    assert not delivery.ok and delivery.permanent and "needs the id of the incident" in delivery.detail
    assert statuspage_standin.received == []


def test_statuspage_unknown_incident_and_wrong_key_are_permanent(statuspage_standin: StatuspageStandIn, caplog: pytest.LogCaptureFixture) -> None:
    unknown = page_send(statuspage_standin, "incident-update", "inc9999")
    assert not unknown.ok and unknown.permanent and "HTTP 404 Record not found" in unknown.detail
    wrong = page_send(statuspage_standin, "incident-open", api_key="wrong-key-5e5e5e")
    assert not wrong.ok and wrong.permanent and "HTTP 401" in wrong.detail
    assert_no_secret(wrong, caplog, "wrong-key-5e5e5e")


def test_statuspage_test_message_opens_nothing(statuspage_standin: StatuspageStandIn) -> None:
    delivery = page_send(statuspage_standin, "test")
    assert delivery.ok and "a test opens no incident" in delivery.detail
    assert statuspage_standin.incidents == {} and [r.method for r in statuspage_standin.received] == ["GET"]


def test_statuspage_takes_only_incident_messages(statuspage_standin: StatuspageStandIn) -> None:
    delivery = page_send(statuspage_standin, "firing")
    assert not delivery.ok and delivery.permanent and "not 'firing'" in delivery.detail


@pytest.mark.parametrize("status", [500, 420, 429])
def test_statuspage_5xx_and_throttling_are_transient(statuspage_standin: StatuspageStandIn, status: int) -> None:
    statuspage_standin.fail_next(1, status, retry_after=5)
    delivery = page_send(statuspage_standin, "incident-open")
    assert not delivery.ok and not delivery.permanent
    assert delivery.retry_after_seconds == (None if status == 500 else 5)


def test_statuspage_down_is_transient(statuspage_standin: StatuspageStandIn) -> None:
    with statuspage_standin.down():
        delivery = page_send(statuspage_standin, "incident-open")
    assert not delivery.ok and not delivery.permanent


# --- any channel ---------------------------------------------------------------------------


def test_every_channel_through_send_one_log_line_each_and_no_secret(standins: StandIns, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    channels = standins.channel_settings()
    credentials = creds(channels)
    test = Message(kind="test", title="Production Alert Test", at=datetime(2026, 12, 2, tzinfo=JST))
    results = {name: notify.send(name, None, test, channels, credentials, sleep=Sleeps()) for name in ("slack", "email", "sms", "phone", "statuspage")}
    assert {name: d.ok for name, d in results.items()} == dict.fromkeys(results, True)
    lines = [r.getMessage() for r in caplog.records if r.name == "runbook.notify"]
    assert [line.split(" (")[0] for line in lines] == [
        "Notified slack incoming webhook",
        "Notified email ops@example.com",
        "Notified sms +819011112222",
        "Notified phone +819033334444",
        f"Notified statuspage page {standins.statuspage.page_id}",
    ]
    assert standins.slack.accepted[0]["blocks"][0]["text"]["text"] == "Production Alert Test"
    for delivery in results.values():
        assert_no_secret(delivery, caplog, *credentials.values(), standins.slack.webhook_path)


def test_slack_down_does_not_stop_email_and_sms(standins: StandIns) -> None:
    channels = standins.channel_settings()
    credentials = creds(channels)
    with standins.slack.down():
        results = {name: notify.send(name, None, alert(), channels, credentials, sleep=Sleeps()) for name in ("slack", "email", "sms")}
    assert {name: d.ok for name, d in results.items()} == {"slack": False, "email": True, "sms": True}
    assert not results["slack"].permanent


def test_a_missing_setting_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="EMAIL__SMTP_HOST and RUNBOOK_ALERTS__CHANNELS__EMAIL__SENDER and RUNBOOK_ALERTS__CHANNELS__EMAIL__TO: not set"):
        notify.send("email", None, alert(), ChannelSettings(), Credentials())
    with pytest.raises(ConfigError, match="SLACK__WEBHOOK_URL or RUNBOOK_ALERTS__CHANNELS__SLACK__BOT_TOKEN"):
        notify.send_slack(ChannelSettings().slack, Credentials(), None, alert())
    with pytest.raises(ConfigError, match="unknown channel 'pager'"):
        notify.send("pager", None, alert(), ChannelSettings(), Credentials())


def test_an_unexpected_error_is_a_failed_delivery_not_an_exception(
    slack_standin: SlackStandIn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = slack_standin.webhook_url

    def broken(*args: Any, **kwargs: Any) -> Delivery:
        raise RuntimeError(f"boom while posting to {secret}")

    monkeypatch.setattr(notify, "send_slack", broken)
    delivery = slack_send(slack_standin, "webhook")
    assert not delivery.ok and delivery.detail == "slack: unexpected RuntimeError: boom while posting to ***"
    assert_no_secret(delivery, caplog, slack_standin.webhook_path)
