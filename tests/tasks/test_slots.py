"""The per-database heavy-job slot (a Prefect global concurrency limit) on the session's
Prefect server: created when missing, never "unlimited", and a second heavy job on the
same database refused after its wait, naming the run that holds the slot."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

import pytest
from prefect import flow, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

from flows.backup import BackupParameters, backup
from runbook.errors import ConcurrencyError
from tasks.slots import database_slot, holder_tag, limit_name
from tests.conftest import Platform


def _instance() -> str:
    return f"slot-test-{secrets.token_hex(3)}"


@flow(name="holds-the-slot")
def holds_the_slot(instance: str, taken: threading.Event, release: threading.Event) -> str:
    with database_slot(instance, job="holder", wait_seconds=30):
        taken.set()
        release.wait(60)
    return "released"


class Holder:
    """A flow run holding ``instance``'s slot in a thread until ``done()``."""

    def __init__(self, instance: str) -> None:
        self.taken, self.release = threading.Event(), threading.Event()
        self.result: list[object] = []
        self.thread = threading.Thread(
            target=lambda: self.result.append(holds_the_slot(instance, self.taken, self.release, return_state=True))
        )
        self.thread.start()
        assert self.taken.wait(60), "the holder never got the slot"

    def done(self) -> object:
        self.release.set()
        self.thread.join(60)
        return self.result[0]


def test_a_missing_limit_is_created_with_one_slot_and_an_existing_one_is_kept() -> None:
    fresh, raised = _instance(), _instance()
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(limit_name(raised), limit=3)
    for instance in (fresh, raised):
        with database_slot(instance, job="test", wait_seconds=5):
            with get_client(sync_client=True) as client:
                limit = client.read_global_concurrency_limit_by_name(limit_name(instance))
            assert limit.active_slots == 1
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(limit_name(fresh)).limit == 1
        assert client.read_global_concurrency_limit_by_name(limit_name(raised)).limit == 3
        assert client.read_global_concurrency_limit_by_name(limit_name(fresh)).active_slots == 0


def test_an_inactive_limit_refuses_instead_of_running_unlimited() -> None:
    instance = _instance()
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(limit_name(instance), limit=1)
        client.update_global_concurrency_limit(limit_name(instance), GlobalConcurrencyLimitUpdate(active=False))
    with pytest.raises(ConcurrencyError, match=limit_name(instance)):
        with database_slot(instance, job="test", wait_seconds=5):
            pytest.fail("ran without the slot")


def test_a_second_heavy_job_waits_then_fails_naming_the_holder() -> None:
    instance = _instance()
    holder = Holder(instance)
    try:
        with pytest.raises(ConcurrencyError) as refused:
            with database_slot(instance, job="backup", wait_seconds=1):
                pytest.fail("two heavy jobs on one database")
    finally:
        state = holder.done()
    message = str(refused.value)
    assert f"backup: the database {instance} is busy" in message
    assert "holds-the-slot/" in message and str(state.state_details.flow_run_id) in message  # type: ignore[attr-defined]
    assert "RUNBOOK_HEAVY_JOBS__WAIT_SECONDS" in message
    # the holder's tag is gone with the slot, which is free again
    with get_client(sync_client=True) as client:
        assert holder_tag(instance) not in client.read_flow_run(state.state_details.flow_run_id).tags  # type: ignore[attr-defined]
    with database_slot(instance, job="backup", wait_seconds=5):
        pass


def test_the_backup_flow_takes_its_databases_slot(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_HEAVY_JOBS__WAIT_SECONDS", "1")
    holder = Holder(platform.database)  # RUNBOOK_INSTANCE is the database's name in these tests
    try:
        state = backup(BackupParameters(prune=False), return_state=True)
    finally:
        held = holder.done()
    assert held.is_completed(), held  # type: ignore[attr-defined]
    assert state.is_failed()
    assert "backup: the database" in (state.message or "") and "holds-the-slot/" in (state.message or ""), state.message
    assert not list(Path(platform.store_url).rglob("*.manifest.json"))  # nothing was dumped
    monkeypatch.setenv("RUNBOOK_HEAVY_JOBS__WAIT_SECONDS", "90")  # a lost lease would come back within a minute
    again = backup(BackupParameters(prune=False), return_state=True)
    assert again.is_completed(), again.message
