"""Shared fixtures: a real PostgreSQL server (pgserver), a real S3 endpoint (moto's
server on 127.0.0.1), one Prefect test harness for the whole session.

Each test gets its own database, copied from a seeded template (fast), and its own
backup store (a folder, or a fresh bucket), passed to runbook through the same
``RUNBOOK_*`` environment variables an operator would set.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from tests.servers import free_port, start_moto  # noqa: E402
from tests.standins import SlackStandIn, SmtpStandIn, StandIns, StatuspageStandIn, TwilioStandIn  # noqa: E402

TEMPLATE = "platform_template"
VARIANTS_TEMPLATE = "variants_template"
ANCHOR = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)


@contextlib.contextmanager
def _machine_lock(name: str) -> Iterator[None]:
    """A lock shared by the test processes of this machine (pytest-xdist's workers)."""
    import fcntl
    import tempfile

    with open(Path(tempfile.gettempdir()) / f"runbook-tests-{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[str]:
    """One Prefect server for the session; flows run as real flow runs against it."""
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="session")
def pg_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL 16 server started for the session, with a seeded template database."""
    from sandbox.platform import Sandbox, load_schema, seed_database

    home = tmp_path_factory.mktemp("pg")
    box = Sandbox(home)
    with _machine_lock("pgserver"):  # run as root, pgserver creates its OS user: one worker at a time
        server = box._server()
    admin = server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    template = server.get_uri(TEMPLATE)
    load_schema(template)
    seed_database(template, scale=1, anchor=ANCHOR)
    yield admin
    box.down()


@dataclass
class Platform:
    """One test's database and store, and the environment that points runbook at them."""

    admin_dsn: str
    dsn: str
    database: str
    store_url: str

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True)


def clone_database(admin_dsn: str, name: str, template: str = TEMPLATE) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    from tasks.postgres import with_database

    return with_database(admin_dsn, name)


def _dsn_url(admin_dsn: str, database: str) -> str:
    """A postgresql:// URL (what RUNBOOK_DATABASE_URL takes) for a database on the test server."""
    from tasks.postgres import parse_dsn

    params = parse_dsn(admin_dsn)
    return f"postgresql://{params.get('user', 'postgres')}@/{database}?host={params['host']}"


def _own_database(admin_dsn: str, prefix: str, template: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """A fresh copy of ``template`` and an empty local store, pointed at through the
    settings an operator would set; the copy is dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    clone_database(admin_dsn, name, template)
    dsn = _dsn_url(admin_dsn, name)
    store = tmp_path / "backups"
    monkeypatch.setenv("RUNBOOK_DATABASE_URL", dsn)
    monkeypatch.setenv("RUNBOOK_BACKUP_STORE", str(store))
    monkeypatch.setenv("RUNBOOK_HOME", str(tmp_path / "home"))
    # the store folder is the instance; named like the database, tests find backups at <store>/<database>/
    monkeypatch.setenv("RUNBOOK_INSTANCE", name)
    yield Platform(admin_dsn=admin_dsn, dsn=dsn, database=name, store_url=str(store))
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def platform(pg_admin_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """A fresh copy of the seeded platform database and an empty local store."""
    yield from _own_database(pg_admin_dsn, "t", TEMPLATE, tmp_path, monkeypatch)


@pytest.fixture
def empty_database(pg_admin_dsn: str) -> Iterator[str]:
    """The name of an empty database of its own on the test server (e.g. for the alert
    state, apart from the platform's), dropped afterwards."""
    name = f"e_{secrets.token_hex(4)}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def variants_template(pg_admin_dsn: str) -> str:
    """The "variants" database (sandbox/variants.sql), made once per session."""
    from sandbox.platform import load_variants
    from tasks.postgres import with_database

    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(VARIANTS_TEMPLATE)))
    load_variants(with_database(pg_admin_dsn, VARIANTS_TEMPLATE), anchor=ANCHOR)
    return VARIANTS_TEMPLATE


@pytest.fixture
def variants(pg_admin_dsn: str, variants_template: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """A fresh copy of the "variants" database (uuid, text, composite and no keys; quoted
    names in another schema; a partitioned table...) and an empty local store, pointed
    at through the same settings as ``platform``."""
    yield from _own_database(pg_admin_dsn, "v", variants_template, tmp_path, monkeypatch)


@dataclass
class S3:
    endpoint: str
    client: object

    def new_bucket(self) -> str:
        bucket = f"rb-{secrets.token_hex(4)}"
        self.client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
        return bucket


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3]:
    """moto's S3 server on 127.0.0.1, spoken to over HTTP by boto3."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server, endpoint = start_moto(free_port())
    from tasks.store import make_s3_client

    yield S3(endpoint=endpoint, client=make_s3_client(endpoint))
    server.stop()


@pytest.fixture
def s3_platform(platform: Platform, s3_server: S3, monkeypatch: pytest.MonkeyPatch) -> Platform:
    """The platform with its backups in a fresh S3 bucket."""
    bucket = s3_server.new_bucket()
    platform.store_url = f"s3://{bucket}/backups"
    monkeypatch.setenv("RUNBOOK_BACKUP_STORE", platform.store_url)
    monkeypatch.setenv("RUNBOOK_S3_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("RUNBOOK_BACKUP__PART_SIZE_MB", "5")
    return platform


def scratch_databases(admin_dsn: str, kind: str = "verify") -> list[str]:
    """Scratch databases of backup-verify (``verify``) or of drills (``drill``) still on the server."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"runbook\\_{kind}\\_%",))
        return [r[0] for r in rows]


def runbook_here(*args: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> subprocess.CompletedProcess[str]:
    """The same command in this process (no interpreter start-up): for the cases that
    need no process of their own. Prefect's own log lines are not captured here."""
    import contextlib
    import io
    import signal

    from runbook.cli import main

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out, err = io.StringIO(), io.StringIO()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        signal.signal(signal.SIGTERM, previous)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


# --- notification channels' stand-ins (tests/standins.py): each starts in milliseconds,
# so each test gets its own, with nothing recorded and no fault queued.


@pytest.fixture
def slack_standin() -> Iterator[SlackStandIn]:
    """Slack: an incoming webhook and chat.postMessage on 127.0.0.1."""
    standin = SlackStandIn()
    yield standin
    standin.stop()


@pytest.fixture
def smtp_standin() -> Iterator[SmtpStandIn]:
    """An SMTP server (aiosmtpd) on 127.0.0.1, no login."""
    standin = SmtpStandIn()
    yield standin
    standin.stop()


@pytest.fixture
def twilio_standin() -> Iterator[TwilioStandIn]:
    """Twilio's Messages and Calls on 127.0.0.1."""
    standin = TwilioStandIn()
    yield standin
    standin.stop()


@pytest.fixture
def statuspage_standin() -> Iterator[StatuspageStandIn]:
    """Atlassian Statuspage's incidents on 127.0.0.1."""
    standin = StatuspageStandIn()
    yield standin
    standin.stop()


@pytest.fixture
def standins(
    slack_standin: SlackStandIn, smtp_standin: SmtpStandIn, twilio_standin: TwilioStandIn, statuspage_standin: StatuspageStandIn
) -> StandIns:
    """Every channel's stand-in, with ``channel_settings()`` and ``settings_env()``
    pointing runbook at all of them."""
    return StandIns(slack_standin, smtp_standin, twilio_standin, statuspage_standin)


def free_database_slot(instance: str) -> None:
    """A test that kills a heavy job with SIGKILL gives its database's slot back, as an
    operator would (``prefect gcl update runbook-db-<instance> --active-slots 0``),
    rather than waiting a minute for the killed run's lease to expire."""
    from prefect import get_client

    from tasks.slots import free_slots

    with get_client(sync_client=True) as client:
        free_slots(client, instance)
