"""Stand-ins the sandbox serves on 127.0.0.1 beside the platform's API: a recording
HTTP server that fails on demand, and Slack (an incoming webhook and the Web API's
``chat.postMessage``), so that ``runbook demo`` delivers a real alert over HTTP without
leaving the machine. The tests' other channels (tests/standins.py) build on the same
server.
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from runbook.alerting.config import SlackSettings

Answer = tuple[int, dict[str, str], Any]  # status, headers, body (dict/list: JSON, str: text)

PREFIX = "RUNBOOK_ALERTS__CHANNELS__"


@dataclass
class Received:
    """One request as the stand-in saw it, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any  # parsed JSON, a form as {name: value} (a list when repeated), or text
    status: int = 0


@dataclass
class _Fault:
    status: int
    retry_after: str | None


class HttpStandIn:
    """A threaded HTTP server on 127.0.0.1 that records requests and answers through
    ``answer``, or with a queued fault."""

    def __init__(self) -> None:
        self.port = 0
        self.received: list[Received] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.up()

    # --- life -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        """Listen (again, on the same port after ``down``)."""
        if self._server is not None:
            return
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                standin._serve(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        # a short poll interval: down() returns in milliseconds
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the listener: connecting to the port is refused from now on."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    @contextmanager
    def down(self) -> Iterator[None]:
        """Refuse connections inside the block, listen again after it."""
        self.stop()
        try:
            yield
        finally:
            self.up()

    def fail_next(self, n: int = 1, status: int = 500, *, retry_after: float | str | None = None) -> None:
        """The next ``n`` requests get ``status`` (and ``Retry-After`` when given)."""
        with self._lock:
            self._faults += [_Fault(status, None if retry_after is None else str(retry_after)) for _ in range(n)]

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self.received.clear()

    # --- serving --------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        request = Received(handler.command, urlsplit(handler.path).path, headers, _parse(raw, headers.get("content-type", "")))
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
            self.received.append(request)
        if fault is not None:
            status, extra, body = fault.status, {}, self.fault_body(request, fault.status)
            if fault.retry_after is not None:
                extra["Retry-After"] = fault.retry_after
        else:
            with self._lock:  # answers change the stand-in's state: one at a time
                status, extra, body = self.answer(request)
        request.status = status
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else str(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json" if isinstance(body, (dict, list)) else "text/plain; charset=utf-8")
        for name, value in extra.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def answer(self, request: Received) -> Answer:
        return 404, {}, {"error": "not found"}

    def fault_body(self, request: Received, status: int) -> Any:
        return {"error": f"stand-in fault {status}"}


def _parse(raw: bytes, content_type: str) -> Any:
    text = raw.decode("utf-8", "replace")
    if content_type.startswith("application/json"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    if content_type.startswith("application/x-www-form-urlencoded"):
        return {k: v[0] if len(v) == 1 else v for k, v in parse_qs(text, keep_blank_values=True).items()}
    return text



# --- Slack -----------------------------------------------------------------------------


class SlackStandIn(HttpStandIn):
    """Slack: an incoming webhook (its secret path answers "ok") and the Web API's
    ``chat.postMessage`` (a bot token; a wrong one is ``invalid_auth``, answered with
    HTTP 200 as Slack does). ``accepted`` holds the JSON bodies Slack took."""

    def __init__(self) -> None:
        self.webhook_path = f"/services/T0STANDIN/B0STANDIN/{secrets.token_hex(12)}"
        self.token = f"xoxb-standin-{secrets.token_hex(8)}"
        self.accepted: list[dict[str, Any]] = []
        self._ts = itertools.count(1)
        super().__init__()

    @property
    def webhook_url(self) -> str:
        return self.url + self.webhook_path

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    def settings(self, *, via: str = "webhook", **changes: Any) -> SlackSettings:
        """Settings for the webhook (``via="webhook"``) or the bot token (``"bot"``)."""
        secret = {"webhook_url": self.webhook_url} if via == "webhook" else {"bot_token": self.token}
        return SlackSettings(**({"api_url": self.api_url} | secret | changes))

    def settings_env(self, *, via: str = "webhook") -> dict[str, str]:
        env = {PREFIX + "SLACK__API_URL": self.api_url}
        if via == "webhook":
            env[PREFIX + "SLACK__WEBHOOK_URL"] = self.webhook_url
        else:
            env[PREFIX + "SLACK__BOT_TOKEN"] = self.token
        return env

    def reset(self) -> None:
        super().reset()
        self.accepted.clear()

    def answer(self, request: Received) -> Answer:
        if request.method != "POST":
            return 405, {}, "method_not_allowed"
        if request.path == self.webhook_path:
            if not isinstance(request.body, dict) or not (request.body.get("text") or request.body.get("blocks")):
                return 400, {}, "invalid_payload"
            self.accepted.append(request.body)
            return 200, {}, "ok"
        if request.path.startswith("/services/"):
            return 404, {}, "no_service"
        if request.path == "/api/chat.postMessage":
            auth = request.headers.get("authorization", "")
            if not auth:
                return 200, {}, {"ok": False, "error": "not_authed"}
            if auth != f"Bearer {self.token}":
                return 200, {}, {"ok": False, "error": "invalid_auth"}
            body = request.body if isinstance(request.body, dict) else {}
            if not body.get("channel"):
                return 200, {}, {"ok": False, "error": "channel_not_found"}
            if not (body.get("text") or body.get("blocks")):
                return 200, {}, {"ok": False, "error": "no_text"}
            self.accepted.append(body)
            ts = f"1700000000.{next(self._ts):06d}"
            return 200, {}, {"ok": True, "channel": "C0STANDIN", "ts": ts, "message": {"text": body.get("text"), "ts": ts}}
        return 404, {}, {"ok": False, "error": "unknown_method"}

    def fault_body(self, request: Received, status: int) -> Any:
        if request.path.startswith("/services/"):
            return "rate_limited" if status == 429 else "internal_error"
        return {"ok": False, "error": "ratelimited" if status == 429 else "internal_error"}
