"""Small real servers on 127.0.0.1 for the tests: moto's S3, an HTTP proxy that
injects S3 faults, and a TCP forwarder to PostgreSQL's Unix socket that can be
started late (connection refused until then). Every loop here is bounded."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto(port: int) -> tuple[Any, str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server, endpoint
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("moto did not start")


_S3_503 = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class FaultyS3Proxy:
    """Forwards S3 requests to ``upstream``; the first ``failures`` requests for
    which ``matches(method, path)`` holds get a 503 SlowDown instead. ``delay`` seconds
    are added to every matching request (to keep a dump running while a test acts)."""

    def __init__(
        self,
        upstream: str,
        *,
        failures: int = 0,
        matches: Callable[[str, str], bool] = lambda method, path: True,
        delay: float = 0.0,
    ) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.failures = failures
        self.matches = matches
        self.delay = delay
        self.seen: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                matched = proxy.matches(self.command, self.path)
                with proxy._lock:
                    fail = matched and proxy.failures > 0
                    if fail:
                        proxy.failures -= 1
                if matched and proxy.delay:
                    time.sleep(proxy.delay)
                if fail:
                    proxy.seen.append((self.command, self.path, 503))
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_S3_503)))
                    self.end_headers()
                    self.wfile.write(_S3_503)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                proxy.seen.append((self.command, self.path, answer.status))
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyS3Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


class LateTcpForwarder:
    """Listens on 127.0.0.1:``port`` only after ``delay`` seconds (connections are
    refused before), then forwards each connection to a Unix socket."""

    def __init__(self, port: int, unix_socket: str, delay: float) -> None:
        self.port = port
        self.unix_socket = unix_socket
        self.delay = delay
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> LateTcpForwarder:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        if self._stop.wait(self.delay):
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        listener.settimeout(0.2)
        with listener:
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(self.unix_socket)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ThirdParties:
    """CoinMarketCap, CoinGecko, OpenAI and Anthropic as one small server on 127.0.0.1
    that checks keys the way each does and records every request it receives."""

    def __init__(self, keys: dict[str, str], credits_used: int = 1200, credit_limit: int = 10000) -> None:
        self.keys = keys
        self.credits_used, self.credit_limit = credits_used, credit_limit
        self.requests: list[dict[str, Any]] = []
        parent = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                parent.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
                status, body = parent.answer(self.path, self.headers)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, path: str, headers: Any) -> tuple[int, dict[str, Any]]:
        if path == "/cmc/v1/account":
            if headers.get("X-CMC_PRO_API_KEY") != self.keys["COINMARKETCAP_API_KEY"]:
                return 401, {"status": {"error_message": "API key invalid"}}
            return 200, {"data": {"plan": {"credit_limit_monthly": self.credit_limit},
                                  "usage": {"current_month": {"credits_used": self.credits_used}}}}
        if path == "/gecko/api/v3/ping":
            return 200, {"gecko_says": "(V3) To the Moon!"}
        if path == "/openai/v1/models":
            if headers.get("Authorization") != f"Bearer {self.keys['OPENAI_API_KEY']}":
                return 401, {"error": {"message": "Incorrect API key provided"}}
            return 200, {"object": "list", "data": [{"id": "gpt-4o"}, {"id": "gpt-4o-mini"}]}
        if path == "/anthropic/v1/models":
            if headers.get("x-api-key") != self.keys["ANTHROPIC_API_KEY"] or not headers.get("anthropic-version"):
                return 401, {"type": "error", "error": {"type": "authentication_error"}}
            return 200, {"data": [{"id": "claude-sonnet-4"}], "has_more": False}
        return 404, {"error": "not found"}

    def settings_env(self) -> dict[str, str]:
        return {
            "RUNBOOK_DIAGNOSE__COINMARKETCAP_URL": f"{self.url}/cmc",
            "RUNBOOK_DIAGNOSE__COINGECKO_URL": f"{self.url}/gecko/api/v3",
            "RUNBOOK_DIAGNOSE__OPENAI_URL": f"{self.url}/openai/v1",
            "RUNBOOK_DIAGNOSE__ANTHROPIC_URL": f"{self.url}/anthropic/v1",
        }

    def stop(self) -> None:
        self.server.shutdown()
