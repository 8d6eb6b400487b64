"""The sandbox: a local stand-in of the platform, so runbook works with no
configuration. A real PostgreSQL server (from the ``pgserver`` wheel, no root or
system install needed) with the platform's schema and deterministic synthetic data,
and a local folder as backup store. All state lives under one folder (``.runbook/``).
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg import sql

from runbook.errors import ConfigError

DATABASE = "platform"
_HERE = Path(__file__).parent
TABLES = ("users", "user_alerts", "market_data", "system_logs", "user_sessions", "auth_events", "api_requests", "security_events")


def load_schema(dsn: str) -> None:
    """Create the platform's tables and indexes (idempotent)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute((_HERE / "schema.sql").read_text())


def seed_database(dsn: str, scale: int = 1, anchor: datetime | None = None) -> dict[str, int]:
    """Replace the platform's rows in ``dsn`` with the deterministic data set of
    ``scale`` (scale 1: about 167,000 rows, 40 MB of database), timed relative to ``anchor``."""
    if scale < 1 or scale > 10_000:
        raise ConfigError(f"--scale must be between 1 and 10000, not {scale}")
    anchor = anchor or datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    script = (_HERE / "seed.sql").read_text()
    script = script.replace(":scale", str(int(scale))).replace(":anchor", f"'{anchor.isoformat()}'")
    with psycopg.connect(dsn, autocommit=True) as conn:
        database = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        conn.execute("SET synchronous_commit = off")
        with conn.transaction():
            conn.execute(script)
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(database), sql.Literal(f"runbook sandbox: scale={scale} anchor={anchor.isoformat()}")
            )
        )
        conn.execute("VACUUM ANALYZE")
        return {
            table: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]  # type: ignore[index]
            for table in TABLES
        }


VARIANT_TABLES = (
    "app.User", "app.audit log", "app.order", "app.usage %", "public.market_data", "public.system_logs",
    "public.user_alerts", "public.user_sessions", "public.users",
)


def load_variants(dsn: str, anchor: datetime | None = None) -> dict[str, int]:
    """Create and fill the "variants" schema in the empty database of ``dsn``: the tables
    of §0 with uuid, text, composite and no primary keys, quoted names in another schema,
    a partitioned table, an enum, a generated column, a view and a sequence (see
    variants.sql). Returns the row count of each table."""
    anchor = anchor or datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    script = (_HERE / "variants.sql").read_text().replace(":anchor", f"'{anchor.isoformat()}'")
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(script)
        conn.execute("VACUUM ANALYZE")
        counts = {}
        for table in VARIANT_TABLES:
            schema, _, name = table.partition(".")
            query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
            counts[table] = conn.execute(query).fetchone()[0]  # type: ignore[index]
        return counts


def _quiet_pgserver() -> None:
    logging.getLogger("pgserver").setLevel(logging.WARNING)


@dataclass
class Sandbox:
    """The sandbox under ``home``: ``home/pgdata`` (PostgreSQL) and ``home/backups``."""

    home: Path

    @property
    def pgdata(self) -> Path:
        return self.home.resolve() / "pgdata"

    @property
    def store(self) -> Path:
        return self.home.resolve() / "backups"

    def _server(self):  # type: ignore[no-untyped-def]
        _quiet_pgserver()
        try:
            import pgserver
        except ImportError:
            raise ConfigError(
                "the sandbox needs its extra: pip install -e '.[sandbox]' (or point RUNBOOK_DATABASE_URL at a PostgreSQL)"
            ) from None

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        try:
            return pgserver.get_server(self.pgdata, cleanup_mode=None)
        except subprocess.CalledProcessError as err:
            log = self.pgdata / "log"
            raise ConfigError(f"the sandbox PostgreSQL did not start ({err}); see {log}") from None

    def up(self) -> str:
        """Start the server (creating it and the platform's schema when new) and return
        the DSN of the platform database."""
        server = self._server()
        admin = server.get_uri()
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        dsn = server.get_uri(DATABASE)
        load_schema(dsn)
        return dsn

    def is_running(self) -> bool:
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return False
        import psutil

        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (ValueError, IndexError):
            return False
        return psutil.pid_exists(pid)

    def dsn(self) -> str:
        """The platform database's DSN, starting the sandbox if it is not running."""
        return self.up()

    def seed(self, scale: int = 1, anchor: datetime | None = None) -> dict[str, int]:
        """Replace the platform's rows with the synthetic data set of ``scale``."""
        if scale < 1 or scale > 10_000:
            raise ConfigError(f"--scale must be between 1 and 10000, not {scale}")
        return seed_database(self.up(), scale, anchor)

    def down(self) -> bool:
        """Stop the server; returns False when it was not running."""
        if not self.is_running():
            return False
        from pgserver._commands import pg_ctl
        import pwd
        import os

        user = None
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("pgserver").pw_name
            except KeyError:
                user = None
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=user)
        deadline = time.monotonic() + 30
        while self.is_running() and time.monotonic() < deadline:
            time.sleep(0.1)
        return True

    def describe(self) -> str | None:
        """The seed comment of the platform database, if seeded."""
        if not self.is_running():
            return None
        with psycopg.connect(self.up()) as conn:
            row = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
        text = row[0] if row else None
        return text if text and re.match(r"runbook sandbox", text) else None
