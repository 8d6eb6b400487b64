"""The errors runbook raises, and which of them are worth a retry.

    RunbookError                 every error runbook raises on purpose
    ├── ConfigError              a bad setting or parameter; nothing was touched (CLI exit 2)
    ├── ConcurrencyError         the same procedure already runs on the same database
    ├── TransientError           worth a retry: connection refused, timeout, throttling, 5xx
    ├── StoreError               the backup store refused an operation for good
    ├── BackupError              a backup could not be made
    └── VerificationFailed       a check found a problem (CLI exit 1)

Library errors are translated at the boundary (``raise ... from err``) so that a
message always names the thing involved and what to do, never a secret.
"""

from __future__ import annotations


class RunbookError(Exception):
    """Base of every error runbook raises on purpose."""


class ConfigError(RunbookError):
    """A setting or parameter is invalid; raised before anything is touched."""


class ConcurrencyError(RunbookError):
    """Another run of the same procedure holds the lock for this database."""


class TransientError(RunbookError):
    """A failure that may go away on its own; tasks retry it with backoff."""


class StoreError(RunbookError):
    """The backup store refused an operation (missing bucket, access denied, missing object)."""


class BackupError(RunbookError):
    """A backup could not be made."""


class VerificationFailed(RunbookError):
    """A verification ran and at least one critical check failed."""
