"""What a run works on: the database and the backup store, from the settings.

With no RUNBOOK_DATABASE_URL this is the sandbox (started on demand); the DSN may
also come from a Prefect Secret block for deployed runs. The DSN is a secret: it is
kept in a SecretStr and never logged; ``display`` is the redacted form.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

from runbook.errors import ConfigError
from runbook.settings import RunbookSettings, check_dsn, redact_dsn


@dataclass(frozen=True)
class Target:
    dsn_secret: SecretStr
    store_url: str
    sandbox: bool

    @property
    def dsn(self) -> str:
        return self.dsn_secret.get_secret_value()

    @property
    def display(self) -> str:
        return redact_dsn(self.dsn)


def database_dsn(settings: RunbookSettings) -> tuple[SecretStr | None, bool]:
    """The configured DSN (environment, config file or Secret block), or None for the sandbox."""
    if settings.database_url is not None:
        return settings.database_url, False
    if settings.database_url_secret_block:
        from prefect.blocks.system import Secret

        try:
            value = Secret.load(settings.database_url_secret_block).get()
        except ValueError:
            raise ConfigError(
                f"RUNBOOK_DATABASE_URL_SECRET_BLOCK: no Secret block named {settings.database_url_secret_block!r}"
            ) from None
        try:
            check_dsn(str(value))
        except ValueError as err:
            raise ConfigError(f"the Secret block {settings.database_url_secret_block!r}: {err}") from None
        return SecretStr(str(value)), False
    return None, True


def resolve_target(settings: RunbookSettings) -> Target:
    dsn, sandbox = database_dsn(settings)
    if dsn is None:
        from sandbox.platform import Sandbox

        box = Sandbox(settings.home)
        dsn = SecretStr(box.dsn())
        store = settings.backup_store or str(box.store)
    else:
        store = settings.backup_store or str(settings.home.resolve() / "backups")
    return Target(dsn_secret=dsn, store_url=store, sandbox=sandbox)


def prepare() -> tuple[RunbookSettings, Target]:
    """Settings and target at a flow's start (raises ConfigError before anything is touched)."""
    from runbook.settings import load_settings

    settings = load_settings()
    return settings, resolve_target(settings)
