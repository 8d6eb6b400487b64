"""Sending one notification on one channel (§2.2-§2.3, §9 contacts): Slack, e-mail,
SMS, a phone call, the status page.

Each channel is a plain function ``(settings section, credentials, recipient,
message) -> Delivery``, and ``send`` picks one by name. A failure to deliver is a
``Delivery(ok=False)``, never an exception: the delivery ledger records it, retries a
transient one on a later run and falls back to the next channel
(runbook/alerting/outcome.py says which failures are transient). Only a missing
setting raises ``ConfigError`` (nothing was sent).

Secrets (the webhook URL, tokens, the SMTP password, the API key) go into requests
only. Every detail is masked with runbook.masking against all of the credentials,
and slack_sdk's own logger, which writes request URLs, is silenced.
"""

from __future__ import annotations

import functools
import http.client
import logging
import smtplib
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any
from urllib.error import URLError
from urllib.parse import quote

import httpx
from prefect import get_run_logger
from prefect.exceptions import MissingContextError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError, SlackRequestError
from slack_sdk.webhook import WebhookClient

from runbook.alerting.config import (
    ChannelSettings,
    Credentials,
    EmailSettings,
    SlackSettings,
    StatuspageSettings,
    TwilioSettings,
    configured_channels,
    missing_parts,
)
from runbook.alerting.model import CHANNELS, Delivery, Message
from runbook.alerting.outcome import (
    SLACK_TRANSIENT_ERRORS,
    combine,
    first_line,
    http_failure,
    is_permanent_smtp,
    retry_after_seconds,
)
from runbook.alerting.render import (
    email_body,
    email_subject,
    phone_twiml,
    slack_blocks,
    slack_text,
    sms_text,
    statuspage_incident,
)
from runbook.errors import ConfigError, RunbookError
from runbook.masking import mask

Sleep = Callable[[float], None]

# slack_sdk logs the request URL (for a webhook, the secret itself) at DEBUG, at INFO
# when it retries and at ERROR on a connection error: its clients get this mute logger.
_SLACK_SDK_LOG = logging.getLogger("runbook.notify.slack_sdk")
_SLACK_SDK_LOG.setLevel(logging.CRITICAL + 1)
_SLACK_SDK_LOG.propagate = False


def _log() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run's logger inside a flow or task run, else this module's."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("runbook.notify")


def _require(channel: str, channels: ChannelSettings, credentials: Credentials, recipient: str | None) -> None:
    missing = missing_parts(channel, channels, credentials, recipient)
    if missing:
        raise ConfigError(f"{' and '.join(missing)}: not set, so the {channel} channel cannot send")


def _masked(delivery: Delivery, credentials: Credentials) -> Delivery:
    return delivery.model_copy(update={"detail": mask(delivery.detail, credentials.values())})


def _header(headers: Any, name: str) -> str | None:
    """A header from a dict of str or of lists (slack_sdk has both), any case."""
    for key, value in dict(headers or {}).items():
        if key.lower() == name:
            return value[0] if isinstance(value, list) else str(value)
    return None


def _error_text(err: BaseException) -> str:
    cause = err.reason if isinstance(err, URLError) else err  # urllib wraps the socket's error
    if isinstance(cause, str):
        return cause
    return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__


def _transport_failure(what: str, err: BaseException) -> Delivery:
    """Could not talk to the channel at all: transient (refused, timeout, reset, DNS),
    unless the URL is unusable or the TLS certificate is wrong (a setting to fix)."""
    cause = err.reason if isinstance(err, URLError) else err
    permanent = isinstance(cause, (ssl.SSLCertVerificationError, ValueError))  # also urllib's "unknown url type"
    permanent = permanent or isinstance(err, (SlackRequestError, httpx.UnsupportedProtocol, httpx.InvalidURL))
    return Delivery(ok=False, detail=f"{what}: {first_line(_error_text(err))}", permanent=permanent)


# --- Slack -------------------------------------------------------------------------------


def _honour_retry_after(attempt: Callable[[], Delivery], limit: float, sleep: Sleep) -> Delivery:
    """One more attempt after a 429 whose Retry-After is within ``limit`` seconds;
    a longer wait is left to a later run (the delivery says how long)."""
    delivery = attempt()
    wait = delivery.retry_after_seconds
    if delivery.ok or wait is None or wait > limit:
        return delivery
    sleep(wait)
    again = attempt()
    if again.ok:
        return again.model_copy(update={"detail": f"{again.detail} (after waiting {wait:g} s as Slack asked)"})
    return again


def _slack_webhook_post(client: Any, text: str, blocks: list[dict[str, Any]]) -> Delivery:
    what = "Slack incoming webhook"
    try:
        response = client.send(text=text, blocks=blocks)
    except (URLError, OSError, http.client.HTTPException, SlackClientError, ValueError) as err:
        return _transport_failure(what, err)
    # the webhook answers 200 "ok"; anything else is its refusal (slack_sdk does not raise)
    if response.status_code == 200:
        return Delivery(ok=True, detail="sent through the incoming webhook")
    wait = retry_after_seconds(_header(response.headers, "retry-after"))
    return http_failure(what, response.status_code, response.body or "", wait)


def _slack_chat_post(client: Any, channel: str, text: str, blocks: list[dict[str, Any]]) -> Delivery:
    what = f"Slack chat.postMessage to {channel}"
    try:
        response = client.chat_postMessage(channel=channel, text=text, blocks=blocks)
    except SlackApiError as err:
        answer = err.response
        error = answer.data.get("error") if isinstance(answer.data, dict) else None
        status = answer.status_code
        if status == 429 or error in ("ratelimited", "rate_limited"):
            return http_failure(what, 429, error or "", retry_after_seconds(_header(answer.headers, "retry-after")))
        if status != 200:
            return http_failure(what, status, error or "")
        return Delivery(ok=False, detail=f"{what}: {first_line(error or 'not ok')}", permanent=error not in SLACK_TRANSIENT_ERRORS)
    except (URLError, OSError, http.client.HTTPException, SlackClientError, ValueError) as err:
        return _transport_failure(what, err)
    ts = response.get("ts")
    return Delivery(ok=True, detail=f"sent to {channel}", external_id=str(ts) if ts else None)


def send_slack(
    settings: SlackSettings, credentials: Credentials, recipient: str | None, message: Message, *, sleep: Sleep = time.sleep
) -> Delivery:
    """Post ``message`` as Block Kit: through the incoming webhook, or with the bot
    token to ``recipient`` (default: the configured channel). The bot token is used
    when there is no webhook, or when a recipient is named and a token exists (a
    webhook posts only to its own channel). A 429 is waited out once when its
    Retry-After is within ``max_retry_after_seconds`` (through ``sleep``)."""
    _require("slack", ChannelSettings(slack=settings), credentials, recipient)

    text, blocks = slack_text(message), slack_blocks(message)
    token, webhook = credentials.slack_bot_token, credentials.slack_webhook_url
    # no retry handlers: slack_sdk's sleep for real, without limit, and log the URL
    if webhook is not None and not (recipient and token is not None):
        hook = WebhookClient(webhook.get_secret_value(), timeout=settings.timeout_seconds, logger=_SLACK_SDK_LOG, retry_handlers=[])  # type: ignore[arg-type]

        def attempt() -> Delivery:
            return _slack_webhook_post(hook, text, blocks)

    else:
        assert token is not None  # _require: a webhook or a token
        client = WebClient(
            token=token.get_secret_value(),
            base_url=settings.api_url,
            timeout=settings.timeout_seconds,  # type: ignore[arg-type]
            logger=_SLACK_SDK_LOG,
            retry_handlers=[],
        )
        channel = recipient or settings.channel

        def attempt() -> Delivery:
            return _slack_chat_post(client, channel, text, blocks)

    return _masked(_honour_retry_after(attempt, settings.max_retry_after_seconds, sleep), credentials)


# --- e-mail --------------------------------------------------------------------------------


def _smtp_connect(settings: EmailSettings, credentials: Credentials) -> smtplib.SMTP:
    """An SMTP session, logged in when a username is set: the same as prefect-email's
    ``EmailServerCredentials.get_server()`` (SSL, STARTTLS or INSECURE; the port by
    type: 465, 587, 25), which cannot take a timeout, and a mail server that accepts
    the connection and never answers would hold the monitor run for ever."""
    from prefect_email.credentials import SMTPType

    kind = SMTPType[settings.smtp_type]
    host, port, timeout = settings.smtp_host or "", settings.smtp_port or kind.value, settings.timeout_seconds
    context = ssl.create_default_context()
    server = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context) if kind == SMTPType.SSL else smtplib.SMTP(host, port, timeout=timeout)
    try:
        if kind == SMTPType.STARTTLS:
            server.starttls(context=context)
        if settings.username:
            if kind == SMTPType.INSECURE:
                _log().warning("E-mail: logging in to %s:%d without TLS (smtp_type INSECURE): the password crosses the network in clear", host, port)
            password = credentials.smtp_password.get_secret_value() if credentials.smtp_password else ""
            server.login(settings.username, password)
    except BaseException:
        server.close()
        raise
    return server


def _quit(server: smtplib.SMTP) -> None:
    # the message was taken (or not) before QUIT: its answer changes nothing
    try:
        server.quit()
    except (smtplib.SMTPException, OSError):
        server.close()


def _email(settings: EmailSettings, to: list[str], message: Message) -> EmailMessage:
    mail = EmailMessage()
    sender = settings.sender or ""
    mail["Subject"] = email_subject(message)
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["Date"] = format_datetime(message.at)
    # a domain of our own: make_msgid would otherwise look up this host's FQDN
    mail["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "runbook")
    mail.set_content(email_body(message))
    return mail


def send_email(settings: EmailSettings, credentials: Credentials, recipient: str | None, message: Message) -> Delivery:
    """Send ``message`` as a plain-text e-mail to ``recipient`` (default: the ops
    addresses, in one message). A login refused or an SMTP 5xx is final; a 4xx, a
    refused connection, a timeout or a dropped session is transient."""
    _require("email", ChannelSettings(email=settings), credentials, recipient)
    to = [recipient] if recipient else list(settings.to)
    what = f"e-mail to {', '.join(to)}"
    try:
        mail = _email(settings, to, message)
        server = _smtp_connect(settings, credentials)
        try:
            refused = server.send_message(mail, from_addr=settings.sender, to_addrs=to)
        finally:
            _quit(server)
    except smtplib.SMTPAuthenticationError as err:
        delivery = Delivery(ok=False, detail=f"{what}: login refused ({err.smtp_code} {_smtp_text(err.smtp_error)})", permanent=True)
    except smtplib.SMTPRecipientsRefused as err:
        codes = [code for code, _ in err.recipients.values()]
        refusals = ", ".join(f"{address} ({code} {_smtp_text(text)})" for address, (code, text) in err.recipients.items())
        delivery = Delivery(ok=False, detail=f"{what}: every recipient refused: {refusals}", permanent=all(map(is_permanent_smtp, codes)))
    except smtplib.SMTPResponseException as err:
        delivery = Delivery(ok=False, detail=f"{what}: {err.smtp_code} {_smtp_text(err.smtp_error)}", permanent=is_permanent_smtp(err.smtp_code))
    except smtplib.SMTPNotSupportedError as err:
        delivery = Delivery(ok=False, detail=f"{what}: {first_line(str(err))} (check smtp_type)", permanent=True)
    except ValueError as err:  # an address or header the e-mail library refuses
        delivery = Delivery(ok=False, detail=f"{what}: {first_line(str(err))}", permanent=True)
    except (smtplib.SMTPException, OSError) as err:
        delivery = _transport_failure(what, err)
    else:
        if refused:
            # the others got it: a page is not lost, and resending would repeat it to them
            rejected = ", ".join(f"{address} ({code} {_smtp_text(text)})" for address, (code, text) in refused.items())
            delivery = Delivery(ok=True, detail=f"sent to {', '.join(a for a in to if a not in refused)}; refused: {rejected}")
        else:
            delivery = Delivery(ok=True, detail=f"sent to {', '.join(to)}")
    return _masked(delivery, credentials)


def _smtp_text(text: bytes | str) -> str:
    return first_line(text.decode("utf-8", "replace") if isinstance(text, bytes) else text, 200)


# --- SMS and phone (Twilio) ------------------------------------------------------------


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's own TLS settings (certifi), made once: each new context reads the CA
    bundle again (a tenth of a second per request)."""
    return httpx.create_ssl_context()


def _twilio_post(settings: TwilioSettings, credentials: Credentials, resource: str, form: dict[str, str], what: str) -> Delivery:
    sid = settings.account_sid or ""
    token = credentials.twilio_auth_token.get_secret_value() if credentials.twilio_auth_token else ""
    url = f"{settings.api_url}/2010-04-01/Accounts/{quote(sid, safe='')}/{resource}"
    try:
        response = httpx.post(url, data=form, auth=(sid, token), timeout=settings.timeout_seconds, verify=_tls())
    except (httpx.HTTPError, httpx.InvalidURL) as err:
        return _transport_failure(what, err)
    body = _json(response)
    if response.status_code in (200, 201):
        created = str(body.get("sid") or "") or None
        return Delivery(ok=True, detail=f"{what}: {body.get('status') or 'accepted'}" + (f" as {created}" if created else ""), external_id=created)
    reason = f"{body.get('message', '')}" + (f" (Twilio error {body['code']})" if body.get("code") else "")
    return http_failure(what, response.status_code, reason or response.text, retry_after_seconds(response.headers.get("retry-after")))


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _twilio_each(settings: TwilioSettings, credentials: Credentials, numbers: list[str], resource: str, field: str, body: str,
                 what: str) -> Delivery:
    """One Twilio request per number; delivered when every one took it."""
    deliveries = [
        _twilio_post(settings, credentials, resource, {"To": n, "From": settings.from_number or "", field: body}, f"{what} {n}")
        for n in numbers
    ]
    return _masked(combine(deliveries), credentials)


def send_sms(settings: TwilioSettings, credentials: Credentials, recipient: str | None, message: Message) -> Delivery:
    """Text ``message`` (at most 320 characters) to ``recipient`` (default: every SMS
    number, one request each; delivered when every one took it)."""
    _require("sms", ChannelSettings(twilio=settings), credentials, recipient)
    numbers = [recipient] if recipient else list(settings.sms_to)
    return _twilio_each(settings, credentials, numbers, "Messages.json", "Body", sms_text(message), "SMS to")


def call_phone(settings: TwilioSettings, credentials: Credentials, recipient: str | None, message: Message) -> Delivery:
    """Call ``recipient`` (default: every phone number) and speak ``message`` (TwiML)."""
    _require("phone", ChannelSettings(twilio=settings), credentials, recipient)
    numbers = [recipient] if recipient else list(settings.phone_to)
    return _twilio_each(settings, credentials, numbers, "Calls.json", "Twiml", phone_twiml(message), "call to")


# --- status page ------------------------------------------------------------------------

INCIDENT_KINDS = ("incident-open", "incident-update", "incident-resolved")


def send_statuspage(
    settings: StatuspageSettings,
    credentials: Credentials,
    recipient: str | None,
    message: Message,
    *,
    external_id: str | None = None,
) -> Delivery:
    """Open (``incident-open``: the delivery's external_id is the incident's id),
    update or resolve (``incident-update``/``-resolved``, on ``external_id``) an
    incident of the status page. A ``test`` message opens nothing on a public page:
    it reads the page, which proves the key and the page id. ``recipient`` is not
    used (the page is the recipient)."""
    _require("statuspage", ChannelSettings(statuspage=settings), credentials, recipient)
    key = credentials.statuspage_api_key.get_secret_value() if credentials.statuspage_api_key else ""
    page = f"{settings.api_url}/v1/pages/{quote(settings.page_id or '', safe='')}"
    headers = {"Authorization": f"OAuth {key}", "Accept": "application/json"}
    if message.kind == "test":
        delivery = _statuspage_request("GET", page, headers, None, f"status page {settings.page_id}", settings.timeout_seconds)
        if delivery.ok:
            delivery = delivery.model_copy(update={"detail": f"status page {settings.page_id} readable with the API key (a test opens no incident)", "external_id": None})
        return _masked(delivery, credentials)
    if message.kind not in INCIDENT_KINDS:
        detail = f"status page: takes {', '.join(INCIDENT_KINDS)} or test messages, not {message.kind!r}"
        return Delivery(ok=False, detail=detail, permanent=True)
    incident = {"incident": statuspage_incident(message, component_ids=settings.component_ids)}
    if message.kind == "incident-open":
        delivery = _statuspage_request("POST", f"{page}/incidents", headers, incident, "status page: open incident", settings.timeout_seconds)
    elif not external_id:
        delivery = Delivery(ok=False, detail=f"status page: {message.kind} needs the id of the incident it opened (none given)", permanent=True)
    else:
        url = f"{page}/incidents/{quote(external_id, safe='')}"
        delivery = _statuspage_request("PATCH", url, headers, incident, f"status page: incident {external_id}", settings.timeout_seconds)
    return _masked(delivery, credentials)


def _statuspage_request(method: str, url: str, headers: dict[str, str], body: dict[str, Any] | None, what: str, timeout: float) -> Delivery:
    try:
        response = httpx.request(method, url, headers=headers, json=body, timeout=timeout, verify=_tls())
    except (httpx.HTTPError, httpx.InvalidURL) as err:
        return _transport_failure(what, err)
    data = _json(response)
    if response.is_success:
        found = str(data.get("id") or "") or None
        status = data.get("status")
        return Delivery(ok=True, detail=f"{what}: {status or 'done'}" + (f" ({found})" if found and found not in what else ""), external_id=found)
    reason = str(data.get("error") or data.get("message") or response.text)
    return http_failure(what, response.status_code, reason, retry_after_seconds(response.headers.get("retry-after")))


# --- any channel ----------------------------------------------------------------------------


def _target(channel: str, recipient: str | None, channels: ChannelSettings, credentials: Credentials) -> str:
    """Who a send goes to, for the log line (never a secret)."""
    if channel == "slack":
        uses_webhook = credentials.slack_webhook_url is not None and not (recipient and credentials.slack_bot_token is not None)
        return "incoming webhook" if uses_webhook else recipient or channels.slack.channel
    return recipient or configured_channels(channels, credentials).get(channel, "")


def send(
    channel: str,
    recipient: str | None,
    message: Message,
    channels: ChannelSettings,
    credentials: Credentials,
    *,
    external_id: str | None = None,
    sleep: Sleep = time.sleep,
) -> Delivery:
    """Send ``message`` on ``channel`` ("slack", "email", "sms", "phone" or
    "statuspage") to ``recipient`` (None: the channel's default recipients); one log
    line says where it went and how it went. ``external_id`` is the status-page
    incident an update or resolve is about. Raises ConfigError (naming the settings)
    when the channel lacks a setting; any failure to deliver is in the Delivery."""
    if channel not in CHANNELS:
        raise ConfigError(f"unknown channel {channel!r}: one of {', '.join(CHANNELS)}")
    _require(channel, channels, credentials, recipient)
    target = _target(channel, recipient, channels, credentials)
    try:
        if channel == "slack":
            delivery = send_slack(channels.slack, credentials, recipient, message, sleep=sleep)
        elif channel == "email":
            delivery = send_email(channels.email, credentials, recipient, message)
        elif channel == "sms":
            delivery = send_sms(channels.twilio, credentials, recipient, message)
        elif channel == "phone":
            delivery = call_phone(channels.twilio, credentials, recipient, message)
        else:
            delivery = send_statuspage(channels.statuspage, credentials, recipient, message, external_id=external_id)
    except RunbookError:
        raise
    except Exception as err:  # noqa: BLE001 - a library's surprise is this channel's failure, not the other channels'
        delivery = Delivery(ok=False, detail=mask(f"{channel}: unexpected {type(err).__name__}: {first_line(str(err))}", credentials.values()))
    if delivery.ok:
        _log().info("Notified %s %s (%s): %s", channel, target, message.kind, delivery.detail)
    else:
        kind = "permanent" if delivery.permanent else "transient"
        _log().warning("Could not notify %s %s (%s), %s failure: %s", channel, target, message.kind, kind, delivery.detail)
    return delivery
