"""Stand-ins for the notification channels: small real servers on 127.0.0.1 that
answer the way Slack, an SMTP server, Twilio and Atlassian Statuspage do, record what
they receive (parsed: JSON, form fields, e-mail messages), and fail on demand:

- ``fail_next(n, status=500, retry_after=None)``: the next ``n`` requests get that
  answer (429 with a ``Retry-After`` header when given); the SMTP stand-in answers
  DATA with that SMTP code instead (451 transient, 554 permanent...);
- ``down()``: the listener is closed, so connecting is refused, until ``up()``
  starts it again on the same port (``with standin.down(): ...`` does both).

Each one checks credentials as the real service does and builds the settings that
point runbook at it (``settings()`` for tests that build ``ChannelSettings``,
``settings_env()`` for tests that go through the environment). Nothing here sleeps
or waits beyond a server's own start.
"""

from __future__ import annotations

import base64
import email
import email.policy
import itertools
import json
import logging
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Any

from runbook.alerting.config import ChannelSettings, EmailSettings, StatuspageSettings, TwilioSettings
from runbook.alerting.model import Message, Severity
from tests.servers import free_port

from sandbox.standins import PREFIX, Answer, HttpStandIn, Received, SlackStandIn  # noqa: F401 - re-exported for the tests

# aiosmtpd logs each SMTP command (and a deprecation of its own) to "mail.log"
logging.getLogger("mail.log").setLevel(logging.ERROR)


def _basic_auth(headers: dict[str, str]) -> tuple[str, str] | None:
    value = headers.get("authorization", "")
    if not value.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(value[6:]).decode().partition(":")
    except ValueError:
        return None
    return user, password


# --- Twilio ------------------------------------------------------------------------------

_TWILIO_PATH = re.compile(r"^/2010-04-01/Accounts/([^/]+)/(Messages|Calls)\.json$")


class TwilioStandIn(HttpStandIn):
    """Twilio's Messages and Calls: basic auth (account SID, auth token), form fields,
    201 with a ``sid``; its error bodies (``code``, ``message``) as Twilio sends them.
    ``messages`` and ``calls`` hold the accepted forms."""

    def __init__(self) -> None:
        self.account_sid = "AC" + secrets.token_hex(16)
        self.auth_token = secrets.token_hex(16)
        self.from_number = "+815000000000"
        self.messages: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        super().__init__()

    def settings(self, **changes: Any) -> TwilioSettings:
        base = {
            "api_url": self.url,
            "account_sid": self.account_sid,
            "auth_token": self.auth_token,
            "from_number": self.from_number,
            "sms_to": ["+819011112222"],
            "phone_to": ["+819033334444"],
        }
        return TwilioSettings(**(base | changes))

    def settings_env(self) -> dict[str, str]:
        s = self.settings()
        return {
            PREFIX + "TWILIO__API_URL": s.api_url,
            PREFIX + "TWILIO__ACCOUNT_SID": self.account_sid,
            PREFIX + "TWILIO__AUTH_TOKEN": self.auth_token,
            PREFIX + "TWILIO__FROM_NUMBER": self.from_number,
            PREFIX + "TWILIO__SMS_TO": json.dumps(s.sms_to),
            PREFIX + "TWILIO__PHONE_TO": json.dumps(s.phone_to),
        }

    def reset(self) -> None:
        super().reset()
        self.messages.clear()
        self.calls.clear()

    @staticmethod
    def _error(status: int, code: int, message: str) -> Answer:
        return status, {}, {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}

    def answer(self, request: Received) -> Answer:
        match = _TWILIO_PATH.match(request.path)
        if not match or request.method != "POST":
            return self._error(404, 20404, "The requested resource was not found")
        if _basic_auth(request.headers) != (self.account_sid, self.auth_token) or match.group(1) != self.account_sid:
            return self._error(401, 20003, "Authenticate")
        form = request.body if isinstance(request.body, dict) else {}
        to = form.get("To", "")
        if not to:
            return self._error(400, 21604, "A 'To' phone number is required.")
        if not re.fullmatch(r"\+[1-9]\d{6,14}", to):
            return self._error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if form.get("From") != self.from_number:
            return self._error(400, 21606, "The 'From' phone number provided is not a valid message-capable Twilio phone number.")
        if match.group(2) == "Messages":
            if not form.get("Body"):
                return self._error(400, 21602, "Message body is required.")
            self.messages.append(form)
            sid = "SM" + secrets.token_hex(16)
        else:
            if not (form.get("Twiml") or form.get("Url")):
                return self._error(400, 21205, "Url parameter is required.")
            self.calls.append(form)
            sid = "CA" + secrets.token_hex(16)
        return 201, {}, {"sid": sid, "account_sid": self.account_sid, "to": to, "from": form["From"], "status": "queued"}

    def fault_body(self, request: Received, status: int) -> Any:
        code = 20429 if status == 429 else 20500
        return {"code": code, "message": "Too Many Requests" if status == 429 else "Internal Server Error", "status": status}


# --- Statuspage --------------------------------------------------------------------------

_INCIDENTS = re.compile(r"^/v1/pages/([^/]+)/incidents(?:/([^/]+))?$")
_PAGE = re.compile(r"^/v1/pages/([^/]+)$")


@dataclass
class Incident:
    id: str
    name: str
    status: str
    impact: str
    history: list[str] = field(default_factory=list)  # every status it was given, in order
    bodies: list[str] = field(default_factory=list)
    components: dict[str, str] = field(default_factory=dict)


class StatuspageStandIn(HttpStandIn):
    """Atlassian Statuspage's incidents: ``Authorization: OAuth <key>``, create
    (POST, 201 with an ``id``), update (PATCH; an unknown id is 404), and the page
    itself (GET). ``incidents`` keeps each one's status history."""

    def __init__(self) -> None:
        self.page_id = "standin" + secrets.token_hex(4)
        self.api_key = secrets.token_hex(16)
        self.incidents: dict[str, Incident] = {}
        self._ids = itertools.count(1)
        super().__init__()

    def settings(self, **changes: Any) -> StatuspageSettings:
        return StatuspageSettings(**({"api_url": self.url, "page_id": self.page_id, "api_key": self.api_key} | changes))

    def settings_env(self) -> dict[str, str]:
        return {
            PREFIX + "STATUSPAGE__API_URL": self.url,
            PREFIX + "STATUSPAGE__PAGE_ID": self.page_id,
            PREFIX + "STATUSPAGE__API_KEY": self.api_key,
        }

    def reset(self) -> None:
        super().reset()
        self.incidents.clear()

    def answer(self, request: Received) -> Answer:
        if request.headers.get("authorization") != f"OAuth {self.api_key}":
            return 401, {}, {"error": "Could not authenticate"}
        page = _PAGE.match(request.path)
        if page and request.method == "GET":
            if page.group(1) != self.page_id:
                return 404, {}, {"error": "The page could not be found"}
            return 200, {}, {"id": self.page_id, "name": "Stand-in status page"}
        match = _INCIDENTS.match(request.path)
        if not match:
            return 404, {}, {"error": "Not found"}
        if match.group(1) != self.page_id:
            return 404, {}, {"error": "The page could not be found"}
        body = request.body.get("incident") if isinstance(request.body, dict) else None
        if not isinstance(body, dict):
            return 400, {}, {"error": "incident is missing"}
        if match.group(2) is None and request.method == "POST":
            if not body.get("name"):
                return 422, {}, {"error": "Name can't be blank"}
            incident = Incident(id=f"inc{next(self._ids):04d}", name=body["name"], status=body.get("status", "investigating"),
                                impact=body.get("impact_override", "none"))
            self.incidents[incident.id] = incident
        elif match.group(2) is not None and request.method == "PATCH":
            incident = self.incidents.get(match.group(2))
            if incident is None:
                return 404, {}, {"error": "Record not found"}
            incident.name = body.get("name", incident.name)
            incident.status = body.get("status", incident.status)
            incident.impact = body.get("impact_override", incident.impact)
        else:
            return 405, {}, {"error": "Method not allowed"}
        incident.history.append(incident.status)
        if body.get("body"):
            incident.bodies.append(body["body"])
        incident.components.update(body.get("components") or {})
        status = 201 if request.method == "POST" else 200
        return status, {}, {"id": incident.id, "name": incident.name, "status": incident.status, "impact": incident.impact,
                            "page_id": self.page_id}


# --- SMTP ----------------------------------------------------------------------------------


class SmtpStandIn:
    """An SMTP server (aiosmtpd) on 127.0.0.1. With ``username`` it offers AUTH over
    plain text (a test server) and refuses mail before a login; ``messages`` holds
    what it accepted, parsed, and ``envelopes`` the (sender, recipients) of each."""

    def __init__(self, username: str | None = None, password: str | None = None) -> None:
        self.username, self.password = username, password
        self.port = free_port()
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.logins: list[tuple[str, bool]] = []
        self._faults: list[int] = []
        self._refused: dict[str, int] = {}
        self._controller: Any = None
        self.up()

    def settings(self, **changes: Any) -> EmailSettings:
        base: dict[str, Any] = {
            "smtp_host": "127.0.0.1",
            "smtp_port": self.port,
            "smtp_type": "INSECURE",
            "sender": "runbook@example.com",
            "to": ["ops@example.com"],
            "timeout_seconds": 5,
        }
        if self.username:
            base |= {"username": self.username, "password": self.password}
        return EmailSettings(**(base | changes))

    def settings_env(self) -> dict[str, str]:
        env = {
            PREFIX + "EMAIL__SMTP_HOST": "127.0.0.1",
            PREFIX + "EMAIL__SMTP_PORT": str(self.port),
            PREFIX + "EMAIL__SMTP_TYPE": "INSECURE",
            PREFIX + "EMAIL__SENDER": "runbook@example.com",
            PREFIX + "EMAIL__TO": json.dumps(["ops@example.com"]),
        }
        if self.username:
            env |= {PREFIX + "EMAIL__USERNAME": self.username, PREFIX + "EMAIL__PASSWORD": self.password or ""}
        return env

    def up(self) -> None:
        from aiosmtpd.controller import Controller

        if self._controller is not None:
            return
        self._controller = Controller(
            _SmtpHandler(self),
            hostname="127.0.0.1",
            port=self.port,
            server_hostname="smtp.standin.test",  # not the machine's FQDN: no DNS look-up
            authenticator=self._authenticate,
            auth_require_tls=False,
            ready_timeout=10,
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @contextmanager
    def down(self) -> Iterator[None]:
        self.stop()
        try:
            yield
        finally:
            self.up()

    def fail_next(self, n: int = 1, status: int = 451) -> None:
        """The next ``n`` messages are answered ``status`` at DATA (4xx: try later, 5xx: refused)."""
        self._faults += [status] * n

    def refuse_recipient(self, address: str, status: int = 550) -> None:
        self._refused[address.lower()] = status

    def reset(self) -> None:
        self.messages.clear()
        self.envelopes.clear()
        self.logins.clear()
        self._faults.clear()
        self._refused.clear()

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult

        login = auth_data.login.decode()
        ok = self.username is not None and login == self.username and auth_data.password.decode() == self.password
        self.logins.append((login, ok))
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535 itself


class _SmtpHandler:
    def __init__(self, standin: SmtpStandIn) -> None:
        self.standin = standin

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:  # noqa: N802
        if self.standin.username and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:  # noqa: N802
        refused = self.standin._refused.get(address.lower())
        if refused:
            return f"{refused} 5.1.1 <{address}>: recipient refused"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.standin._faults:
            status = self.standin._faults.pop(0)
            return f"{status} {'4.3.0 try again later' if status < 500 else '5.7.1 message refused'}"
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        self.standin.messages.append(message)  # type: ignore[arg-type]
        self.standin.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK: queued"


# --- all of them -----------------------------------------------------------------------------


class KillSwitchStandIn(HttpStandIn):
    """The platform's kill switch as a KV flag behind a token (as a Cloudflare KV
    value or a Worker route would be): ``PUT /flag`` with ``{"disabled": bool}`` sets it,
    ``GET /flag`` answers ``{"result": {"disabled": bool}}``, and ``GET /api/health``
    answers 503 while disabled, 200 otherwise. A wrong or missing token is 403."""

    def __init__(self) -> None:
        self.token = f"ks-{secrets.token_hex(12)}"
        self.disabled = False
        super().__init__()

    def _authorized(self, request: Received) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.token}"

    def answer(self, request: Received) -> Answer:
        if request.path == "/api/health" and request.method == "GET":
            return (503, {}, {"error": "disabled"}) if self.disabled else (200, {}, {"status": "ok"})
        if request.path != "/flag":
            return 404, {}, {"error": "not found"}
        if not self._authorized(request):
            return 403, {}, {"success": False, "errors": [{"code": 10000, "message": "Authentication error"}]}
        if request.method == "PUT":
            if not isinstance(request.body, dict) or not isinstance(request.body.get("disabled"), bool):
                return 400, {}, {"success": False, "errors": [{"message": "body needs disabled: true|false"}]}
            self.disabled = request.body["disabled"]
            return 200, {}, {"success": True}
        if request.method == "GET":
            return 200, {}, {"success": True, "result": {"disabled": self.disabled}}
        return 405, {}, {"error": "method not allowed"}

    def calls(self, method: str = "PUT") -> list[Received]:
        return [r for r in self.received if r.method == method and r.path == "/flag"]

    def settings_env(self, *, token_env: str = "KS_API_TOKEN", check: str | None = "status") -> dict[str, str]:
        """The disable and enable calls (PUT /flag, the token from ``token_env``) and the
        check: ``status`` (GET /api/health), ``field`` (GET /flag's result.disabled) or None."""
        header = {"Authorization": {"env": token_env, "prefix": "Bearer "}}
        env = {
            f"{KILL_SWITCH}DISABLE": json.dumps({"url": f"{self.url}/flag", "method": "PUT", "headers": header, "body": {"disabled": True}}),
            f"{KILL_SWITCH}ENABLE": json.dumps({"url": f"{self.url}/flag", "method": "PUT", "headers": header, "body": {"disabled": False}}),
        }
        if check == "status":
            env[f"{KILL_SWITCH}CHECK"] = json.dumps({"url": f"{self.url}/api/health"})
        elif check == "field":
            env[f"{KILL_SWITCH}CHECK"] = json.dumps({"url": f"{self.url}/flag", "headers": header, "field": "result.disabled"})
        return env


KILL_SWITCH = "RUNBOOK_SECURITY__KILL_SWITCH__"


@dataclass
class StandIns:
    """Every channel's stand-in at once, for tests of routing and fallback."""

    slack: SlackStandIn
    smtp: SmtpStandIn
    twilio: TwilioStandIn
    statuspage: StatuspageStandIn

    def channel_settings(self, *, slack_via: str = "webhook") -> ChannelSettings:
        return ChannelSettings(
            slack=self.slack.settings(via=slack_via),
            email=self.smtp.settings(),
            twilio=self.twilio.settings(),
            statuspage=self.statuspage.settings(),
        )

    def settings_env(self, *, slack_via: str = "webhook") -> dict[str, str]:
        return (
            self.slack.settings_env(via=slack_via) | self.smtp.settings_env() | self.twilio.settings_env() | self.statuspage.settings_env()
        )

    def stop(self) -> None:
        for standin in (self.slack, self.smtp, self.twilio, self.statuspage):
            standin.stop()


LINK = "http://127.0.0.1:4200/runs/flow-run/0b5e"
AT = datetime(2026, 12, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=9)))


def alert_message(**changes: Any) -> Message:
    """A critical high-error-rate firing, as the engine would word it; ``changes`` override fields."""
    fields: dict[str, Any] = dict(
        kind="firing",
        title="CRITICAL high-error-rate firing: api error rate 7.2 % >= 5 %",
        severity=Severity.critical,
        rule="high-error-rate",
        resource="api",
        value=7.2,
        threshold=5.0,
        comparison=">=",
        unit="%",
        summary="Error rate above 5 % for 3 evaluations.",
        link=LINK,
        at=AT,
    )
    return Message(**(fields | changes))
