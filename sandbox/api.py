"""A stand-in of the platform's API (§0), served on 127.0.0.1 over the sandbox
database, so that deploy-verify, diagnose and the drills have a real HTTP target.

Endpoints: ``GET /api/health`` (checks its database), ``GET /api/dashboard`` (Bearer
token), ``GET /api/monitoring/metrics``, ``GET /api/market/prices`` and
``GET /api/learning/lessons`` (Cache-Control max-age of §7.3), ``POST
/api/stripe/webhooks`` (Stripe-Signature checked with the webhook secret; each event
id handled once).

Fault switches, for tests and drills, at start (``Faults``) or at run time through
``PUT /__faults`` (a JSON body of the same fields; this path exists only on the
stand-in): slow responses, 5xx answers, the database unreachable, wrong cache
headers; ``serve(tls_days=...)`` serves HTTPS with a self-signed certificate that
expires in that many days. Pointing runbook at the real platform needs no code
change: only ``RUNBOOK_PLATFORM_URL``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
from fastapi import FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from runbook.stripe import check_stripe_signature, sign_stripe_payload  # noqa: F401 - sign_: for tests and callers

VERSION = "sandbox-1.0.0"
CACHE_TTLS = {"/api/market/prices": 60, "/api/dashboard": 300, "/api/learning/lessons": 3600}  # §7.3

LESSONS = [
    {"id": 1, "title": "Reading a candlestick chart", "minutes": 8},
    {"id": 2, "title": "What moves a market: supply, demand, news", "minutes": 12},
    {"id": 3, "title": "Setting price alerts that matter", "minutes": 6},
    {"id": 4, "title": "Risk: position size and stop losses", "minutes": 10},
]


class Faults(BaseModel):
    """What the stand-in should get wrong. All off by default."""

    delay_ms: int = Field(0, ge=0, le=60_000, description="Added to every /api response.")
    error_paths: list[str] = Field(default_factory=list, description="Paths answered 500 ('*' for all of /api).")
    database_down: bool = Field(False, description="Behave as if the database were unreachable.")
    wrong_cache: bool = Field(False, description="Send Cache-Control: no-store instead of the §7.3 TTLs.")
    version: str | None = Field(None, description="Report this version instead of the real one (a bad deploy).")


RATE_WINDOW_S = 60.0  # requests_per_second is measured over the last minute


@dataclass
class Stats:
    """Request count, errors and latencies of the last requests, for the metrics endpoint."""

    requests: int = 0
    errors: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    arrivals: deque[float] = field(default_factory=deque)  # monotonic times of the last RATE_WINDOW_S of requests
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, status: int, ms: float) -> None:
        with self.lock:
            self.requests += 1
            self.errors += status >= 500
            self.latencies_ms.append(ms)
            now = time.monotonic()
            self.arrivals.append(now)
            while self.arrivals and self.arrivals[0] < now - RATE_WINDOW_S:
                self.arrivals.popleft()

    def summary(self) -> dict[str, float]:
        now = time.monotonic()
        with self.lock:
            values = sorted(self.latencies_ms)
            count, errors = self.requests, self.errors
            recent = sum(1 for at in self.arrivals if at >= now - RATE_WINDOW_S)
        # requests per second over the last minute (or since the start, when younger: at least 1 s)
        rate = round(recent / max(1.0, min(RATE_WINDOW_S, now - self.started)), 3)
        if not values:
            return {"request_count": count, "requests_per_second": rate, "error_rate_pct": 0.0, "p50_ms": 0.0, "p95_ms": 0.0}
        p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
        return {
            "request_count": count,
            "requests_per_second": rate,
            "error_rate_pct": round(100.0 * errors / count, 2) if count else 0.0,
            "p50_ms": round(statistics.median(values), 2),
            "p95_ms": round(p95, 2),
        }


def create_app(dsn: str, *, dashboard_token: str, webhook_secret: str, faults: Faults | None = None) -> FastAPI:
    """The stand-in API over the database at ``dsn``."""
    app = FastAPI(title="platform stand-in", version=VERSION, docs_url=None, redoc_url=None)
    app.state.faults = faults or Faults()
    stats = Stats()
    seen_events: set[str] = set()
    seen_lock = threading.Lock()

    def query(statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if app.state.faults.database_down:
            raise psycopg.OperationalError("connection refused (fault switch: database_down)")
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            return conn.execute(statement, params).fetchall()

    @app.middleware("http")
    async def faults_and_stats(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        faults: Faults = app.state.faults
        path = request.url.path
        if path.startswith("/api/"):
            if faults.delay_ms:
                await asyncio.sleep(faults.delay_ms / 1000)
            if "*" in faults.error_paths or path in faults.error_paths:
                response: Response = JSONResponse({"error": "internal error (fault switch)"}, status_code=500)
            else:
                response = await call_next(request)
            if path in CACHE_TTLS and response.status_code == 200:
                visibility = "private" if path == "/api/dashboard" else "public"
                response.headers["Cache-Control"] = (
                    "no-store" if faults.wrong_cache else f"{visibility}, max-age={CACHE_TTLS[path]}"
                )
            response.headers["X-Platform-Version"] = faults.version or VERSION
            stats.record(response.status_code, (time.perf_counter() - started) * 1000)
            return response
        return await call_next(request)

    def unavailable(err: Exception) -> JSONResponse:
        return JSONResponse({"status": "error", "database": "unreachable", "error": str(err).splitlines()[0]}, status_code=503)

    @app.get("/api/health")
    def health() -> Any:
        try:
            query("SELECT 1")
        except psycopg.Error as err:
            return unavailable(err)
        return {"status": "ok", "database": "ok", "version": app.state.faults.version or VERSION}

    @app.get("/api/dashboard")
    def dashboard(authorization: str | None = Header(None)) -> Any:
        if authorization != f"Bearer {dashboard_token}":
            return JSONResponse({"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        try:
            rows = query(
                "SELECT count(*), count(*) FILTER (WHERE NOT resolved), max(created_at) FROM user_alerts"
            )
        except psycopg.Error as err:
            return unavailable(err)
        total, open_, newest = rows[0]
        return {"alerts": total, "open_alerts": open_, "newest_alert": newest.isoformat() if newest else None}

    @app.get("/api/monitoring/metrics")
    def metrics() -> Any:
        try:
            active, size = query(
                "SELECT (SELECT count(DISTINCT user_id) FROM user_sessions WHERE expires_at > now()),"
                " pg_database_size(current_database())"
            )[0]
        except psycopg.Error as err:
            return unavailable(err)
        disk = shutil.disk_usage(Path.cwd())
        return {
            **stats.summary(),
            "cpu_pct": psutil.cpu_percent(interval=None),
            "memory_pct": psutil.virtual_memory().percent,
            "disk_pct": round(100.0 * disk.used / disk.total, 1),
            "active_users": active,
            "database_bytes": size,
        }

    @app.get("/api/market/prices")
    def prices() -> Any:
        try:
            rows = query(
                """
                WITH RECURSIVE symbols(symbol) AS (
                    (SELECT symbol FROM market_data ORDER BY symbol LIMIT 1)
                    UNION ALL
                    SELECT (SELECT m.symbol FROM market_data m WHERE m.symbol > s.symbol ORDER BY m.symbol LIMIT 1)
                    FROM symbols s WHERE s.symbol IS NOT NULL
                )
                SELECT p.symbol, p."timestamp", p.price FROM symbols s
                CROSS JOIN LATERAL (SELECT m.symbol, m."timestamp", m.price FROM market_data m
                                    WHERE m.symbol = s.symbol ORDER BY m."timestamp" DESC LIMIT 1) p
                """
            )
        except psycopg.Error as err:
            return unavailable(err)
        return {"prices": [{"symbol": s, "timestamp": t.isoformat(), "price": float(p)} for s, t, p in rows]}

    @app.get("/api/learning/lessons")
    def lessons() -> Any:
        return {"lessons": LESSONS}

    @app.post("/api/stripe/webhooks")
    async def stripe_webhook(request: Request) -> Any:
        payload = await request.body()
        problem = check_stripe_signature(payload, request.headers.get("stripe-signature"), webhook_secret)
        if problem:
            return JSONResponse({"error": f"bad signature: {problem}"}, status_code=400)
        try:
            event = json.loads(payload)
            event_id = str(event["id"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "not a Stripe event"}, status_code=400)
        with seen_lock:
            duplicate = event_id in seen_events
            seen_events.add(event_id)
        return {"received": True, "id": event_id, "duplicate": duplicate}

    @app.put("/__faults")
    def set_faults(faults: Faults) -> Any:
        app.state.faults = faults
        return faults.model_dump()

    return app


# --------------------------------------------------------------------------- serving


@dataclass
class RunningApi:
    url: str
    server: Any
    thread: threading.Thread
    cert_file: Path | None = None

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def self_signed_certificate(folder: Path, days: int, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A key and a self-signed certificate for ``host`` expiring in ``days`` days."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    # a unique subject per certificate: several in one CA bundle must not be mistaken for each other
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"runbook stand-in {secrets.token_hex(4)}"),
            x509.NameAttribute(NameOID.COMMON_NAME, host),
        ]
    )
    now = dt.datetime.now(dt.timezone.utc)
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    key_file, cert_file = folder / "stand-in.key", folder / "stand-in.pem"
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


def serve(
    dsn: str,
    *,
    port: int = 0,
    dashboard_token: str | None = None,
    webhook_secret: str | None = None,
    faults: Faults | None = None,
    tls_days: int | None = None,
    tls_dir: Path | None = None,
) -> RunningApi:
    """Serve the stand-in on 127.0.0.1 from a background thread; ``port=0`` picks a free port."""
    import socket

    import uvicorn

    app = create_app(
        dsn,
        dashboard_token=dashboard_token or secrets.token_urlsafe(16),
        webhook_secret=webhook_secret or f"whsec_{secrets.token_hex(12)}",
        faults=faults,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    tls: dict[str, Any] = {}
    cert_file = None
    if tls_days is not None:
        import tempfile

        key_file, cert_file = self_signed_certificate(tls_dir or Path(tempfile.mkdtemp(prefix="stand-in-tls-")), tls_days)
        tls = {"ssl_keyfile": str(key_file), "ssl_certfile": str(cert_file)}
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", **tls)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="stand-in-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.02)
    if not server.started:
        raise RuntimeError("the stand-in API did not start")
    scheme = "https" if tls else "http"
    return RunningApi(url=f"{scheme}://127.0.0.1:{sock.getsockname()[1]}", server=server, thread=thread, cert_file=cert_file)


def main(argv: list[str] | None = None) -> int:
    """``python -m sandbox.api [--port N]``: serve the stand-in in the foreground over
    RUNBOOK_DATABASE_URL (default: the sandbox). The dashboard token is
    RUNBOOK_PLATFORM_TOKEN and the webhook secret STRIPE_WEBHOOK_SECRET, as §0 names it;
    both are required, so that nothing secret is made up and printed."""
    import argparse
    import os
    import signal

    parser = argparse.ArgumentParser(prog="python -m sandbox.api", description=main.__doc__)
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--tls-days", type=int, help="serve HTTPS with a self-signed certificate expiring in N days")
    args = parser.parse_args(argv)
    token, secret = os.environ.get("RUNBOOK_PLATFORM_TOKEN"), os.environ.get("STRIPE_WEBHOOK_SECRET")
    if not token or not secret:
        parser.error("set RUNBOOK_PLATFORM_TOKEN (dashboard token) and STRIPE_WEBHOOK_SECRET (webhook secret)")
    from runbook.settings import load_settings
    from runbook.target import resolve_target

    settings = load_settings()
    # the stand-in serves the sandbox's database unless pointed at another one
    dsn = resolve_target(settings, sandbox=settings.database_url is None).dsn
    running = serve(dsn, port=args.port, dashboard_token=token, webhook_secret=secret, tls_days=args.tls_days)
    print(running.url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    running.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
