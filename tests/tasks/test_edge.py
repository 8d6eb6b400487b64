"""Edge tasks (tasks/edge.py) against a real HTTP server on 127.0.0.1 and a local store:
the secret header read at run time and never shown, refusals named, the Workers
configuration stored with its sha256 and checked on read back."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from runbook.settings import EdgeCall
from tasks.edge import EdgeFailed, call_edge, export_key, store_export
from tasks.store import LocalStore

CONFIG = {"result": {"script": "platform-api", "bindings": [{"type": "kv_namespace", "name": "CACHE"}]}}


class Workers(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, str]] = []

    def do_GET(self) -> None:
        Workers.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        ok = self.headers.get("Authorization") == "Bearer cf-token-42"
        body = json.dumps(CONFIG if ok else {"errors": ["bad token cf-token-42?"]}).encode()
        self.send_response(200 if ok else 403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def workers_api() -> Iterator[str]:
    Workers.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Workers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _call(url: str) -> EdgeCall:
    return EdgeCall(url=f"{url}/accounts/a1/workers/scripts/platform-api/settings", method="GET",
                    headers={"Authorization": {"env": "CF_API_TOKEN", "prefix": "Bearer "}})


def test_the_workers_export_over_http_is_stored_with_its_sha256(workers_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime, timezone

    monkeypatch.setenv("CF_API_TOKEN", "cf-token-42")
    done = call_edge(_call(workers_api), "RUNBOOK_CALENDAR__EDGE__WORKERS_EXPORT", [])
    assert done.summary.endswith("/accounts/a1/workers/scripts/platform-api/settings: HTTP 200") and "cf-token-42" not in done.summary
    assert Workers.seen == [("GET", "/accounts/a1/workers/scripts/platform-api/settings", "Bearer cf-token-42")]
    store = LocalStore(tmp_path)
    key = export_key("inst", "edge-config", datetime(2027, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert key == "inst/edge-config/workers_20270102_030405.json"
    stored = store_export(store, key, done.output)
    assert json.loads(store.get_bytes(key)) == CONFIG
    assert stored["sha256"] == hashlib.sha256(store.get_bytes(key)).hexdigest() and stored["read_back"] == "ok"
    assert store.get_bytes(f"{key}.sha256").decode() == f"{stored['sha256']}  workers_20270102_030405.json\n"


def test_a_refused_call_an_empty_export_and_a_missing_secret_are_named(
    workers_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runbook.errors import ConfigError

    monkeypatch.delenv("CF_API_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="CF_API_TOKEN, which is not set"):
        call_edge(_call(workers_api), "RUNBOOK_CALENDAR__EDGE__WORKERS_EXPORT", [])
    assert Workers.seen == []  # nothing called without its secret
    monkeypatch.setenv("CF_API_TOKEN", "wrong")
    with pytest.raises(EdgeFailed, match="answered 403") as refused:
        call_edge(_call(workers_api), "RUNBOOK_CALENDAR__EDGE__WORKERS_EXPORT", ["cf-token-42"])
    assert "cf-token-42" not in str(refused.value)  # the answer's echo of a secret is masked
    with pytest.raises(EdgeFailed, match="printed nothing"):
        store_export(LocalStore(tmp_path), "inst/edge-config/workers_x.json", b"  \n")
    assert not list(tmp_path.rglob("workers_*"))
    with pytest.raises(EdgeFailed, match="false failed: exit 1"):
        call_edge(EdgeCall(command=["false"]), "RUNBOOK_CALENDAR__EDGE__LOG_ROTATION", [])
