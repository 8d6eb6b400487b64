"""What a run works on: the database, the backup store and the instance name that
keeps this platform's backups apart from any other's in the same store.

The sandbox is used only when asked for (``runbook demo``, ``runbook sandbox ...``,
``runbook --sandbox <procedure>`` or ``RUNBOOK_SANDBOX=true``): anywhere else an unset
DSN or store is a ConfigError naming the setting, never a silent fallback. The DSN may
come from a Prefect Secret block and the store from a Prefect Variable, both read when
the flow starts (so a changed Variable needs no redeploy). The DSN is a secret: it is
kept in a SecretStr and never logged; ``display`` is the redacted form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import SecretStr

from runbook.errors import ConfigError
from runbook.settings import RunbookSettings, check_backup_store, check_dsn, redact_dsn

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SANDBOX_HINT = "(the embedded sandbox is used only with --sandbox, runbook demo or RUNBOOK_SANDBOX=true)"


@dataclass(frozen=True)
class Target:
    dsn_secret: SecretStr
    store: str | None
    sandbox: bool
    instance: str
    store_problem: str | None = None

    @property
    def dsn(self) -> str:
        return self.dsn_secret.get_secret_value()

    @property
    def display(self) -> str:
        return redact_dsn(self.dsn)

    @property
    def store_url(self) -> str:
        """The backup store; a ConfigError naming the setting when none is configured
        (raised only by the procedures that use the store)."""
        if self.store is None:
            raise ConfigError(self.store_problem or f"RUNBOOK_BACKUP_STORE: not set {_SANDBOX_HINT}")
        return self.store


def default_instance(dsn: str) -> str:
    """The instance name derived from the DSN: ``host-port-database``, e.g.
    ``db.example.com-5432-postgres``; ``local-<port>-<database>`` for a Unix socket
    (its folder is machine-specific, the port and database are not). Never a credential."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    host = str(params.get("host") or params.get("hostaddr") or "").split(",")[0].strip()
    if not host or host.startswith(("/", "@")):
        host = "local"
    port = str(params.get("port") or "5432").split(",")[0].strip() or "5432"
    database = str(params.get("dbname") or "postgres")
    name = _UNSAFE.sub("_", f"{host.lower()}-{port}-{database}").lstrip("._-")
    return name[:128] or "local"


def database_dsn(settings: RunbookSettings) -> SecretStr:
    """The configured DSN (environment, config file or Secret block); a ConfigError
    naming the setting when there is none."""
    if settings.database_url is not None:
        return settings.database_url
    block = (settings.database_url_secret_block or "").strip()
    if not block:
        raise ConfigError(
            "RUNBOOK_DATABASE_URL: not set: set it to the platform's postgresql://user:password@host:port/database DSN, "
            f"or RUNBOOK_DATABASE_URL_SECRET_BLOCK to the Prefect Secret block holding it {_SANDBOX_HINT}"
        )
    from tasks.secrets import secret_block_value

    value = secret_block_value(block, "RUNBOOK_DATABASE_URL_SECRET_BLOCK", empty_hint=": save the DSN in it")
    try:
        check_dsn(str(value))
    except ValueError as err:
        raise ConfigError(f"RUNBOOK_DATABASE_URL_SECRET_BLOCK: the Secret block {block!r}: {err}") from None
    return SecretStr(str(value))


def backup_store(settings: RunbookSettings) -> tuple[str | None, str | None]:
    """(store, None), or (None, why not) when no store is configured. The Variable
    named by RUNBOOK_BACKUP_STORE_VARIABLE is read now, at the flow's start."""
    if settings.backup_store is not None:
        return settings.backup_store, None
    name = (settings.backup_store_variable or "").strip()
    if not name:
        return None, f"RUNBOOK_BACKUP_STORE: not set: a folder, file:///path or s3://bucket/prefix {_SANDBOX_HINT}"
    from prefect.variables import Variable

    value = Variable.get(name)
    if value is None:
        return None, f"RUNBOOK_BACKUP_STORE_VARIABLE: no Prefect Variable named {name!r}: create it (prefect variable set {name} s3://bucket/prefix)"
    if not str(value).strip():
        return None, f"RUNBOOK_BACKUP_STORE_VARIABLE: the Prefect Variable {name!r} is empty"
    try:
        return check_backup_store(str(value).strip()), None
    except ValueError as err:
        return None, f"RUNBOOK_BACKUP_STORE_VARIABLE: the Prefect Variable {name!r}: {err}"


def resolve_target(settings: RunbookSettings, *, sandbox: bool | None = None) -> Target:
    """The database, store and instance of this run (ConfigError before anything is touched)."""
    use_sandbox = settings.sandbox if sandbox is None else sandbox
    if use_sandbox:
        if settings.database_url is not None or (settings.database_url_secret_block or "").strip():
            raise ConfigError(
                "RUNBOOK_SANDBOX: the sandbox was asked for, but RUNBOOK_DATABASE_URL or RUNBOOK_DATABASE_URL_SECRET_BLOCK "
                "is set too: the sandbox is not the platform; unset one of them"
            )
        from sandbox.platform import Sandbox

        box = Sandbox(settings.home)
        dsn = SecretStr(box.dsn())
        store, problem = settings.backup_store or str(box.store), None
    else:
        dsn = database_dsn(settings)
        store, problem = backup_store(settings)
    instance = settings.instance or default_instance(dsn.get_secret_value())
    return Target(dsn_secret=dsn, store=store, sandbox=use_sandbox, instance=instance, store_problem=problem)


def prepare() -> tuple[RunbookSettings, Target]:
    """Settings and target at a flow's start (raises ConfigError before anything is touched)."""
    from runbook.settings import load_settings

    settings = load_settings()
    return settings, resolve_target(settings)
