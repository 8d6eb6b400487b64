"""The Prefect API's global concurrency limits: one slot per database for the heavy
jobs (backup, db-maintenance, data-cleanup, dr-drill and disaster-recovery), so that
two of them never meet on the same database whatever started them (a schedule, the UI,
the CLI, another worker).

The limit is ``runbook-db-<instance>``, created with one slot when it does not exist
(an operator may raise it; runbook never lowers it back). It is always taken with
``strict=True``: Prefect's ``concurrency()`` runs *without any limit* when the limit
does not exist, and here a limit that cannot be taken is an error, never "unlimited".

Wait, then refuse: a job that finds the slot taken waits up to
``RUNBOOK_HEAVY_JOBS__WAIT_SECONDS`` (the staggered schedules make that an overrun,
which usually ends soon), then fails with a ConcurrencyError naming the run that holds
the slot. The holder is found by a tag (``db-slot:<instance>``) the holding run carries
while it holds the slot: Prefect's API does not list a global limit's lease holders.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType, FlowRunFilterTags
from prefect.client.schemas.objects import ConcurrencyLeaseHolder, StateType
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from runbook.errors import ConcurrencyError

SLOTS = 1  # a new limit's size: one heavy job per database at a time
# renewed while held; a killed holder's slot comes back after this (60 s: the server's minimum)
LEASE_SECONDS = 60.0
NOT_FINAL = [StateType.PENDING, StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING]


def limit_name(instance: str) -> str:
    """The global concurrency limit of one database (instance names are path-safe)."""
    return f"runbook-db-{instance}"


def holder_tag(instance: str) -> str:
    return f"db-slot:{instance}"


def free_slots(client: Any, instance: str) -> None:
    """Give every slot of the database's limit back now (what an operator does after a
    holder was killed, instead of waiting for its lease: ``prefect gcl update
    runbook-db-<instance> --active-slots 0``)."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    client.update_global_concurrency_limit(limit_name(instance), GlobalConcurrencyLimitUpdate(active_slots=0))


def ensure_limit(client: Any, name: str) -> int:
    """Create the limit with one slot unless it exists; its number of slots. An
    inactive limit is refused: Prefect grants every request on one (checked here)."""
    try:
        limit = client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=SLOTS))
        except ObjectAlreadyExists:  # another job created it meanwhile
            pass
        limit = client.read_global_concurrency_limit_by_name(name)
    if not limit.active:
        raise ConcurrencyError(
            f"the global concurrency limit {name} is inactive, which would let heavy jobs run on this database "
            "without a limit: activate it (prefect gcl enable " + name + ")"
        )
    return limit.limit


def holders(client: Any, instance: str, *, besides: str | None = None) -> list[str]:
    """The runs that carry the slot's tag and are not finished, as 'flow/run (id, state)'."""
    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[holder_tag(instance)]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=NOT_FINAL)),
        ),
        limit=10,
    )
    flows = {}
    named = []
    for run in runs:
        if str(run.id) == besides:
            continue
        if run.flow_id not in flows:
            flows[run.flow_id] = client.read_flow(run.flow_id).name
        state = run.state.name if run.state else "unknown"
        named.append(f"{flows[run.flow_id]}/{run.name} (flow run {run.id}, {state})")
    return named


def _retag(client: Any, run_id: str, tag: str, *, add: bool) -> None:
    current = set(client.read_flow_run(UUID(run_id)).tags or [])
    wanted = current | {tag} if add else current - {tag}
    if wanted != current:
        client.update_flow_run(UUID(run_id), tags=sorted(wanted))


def _logger() -> Any:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger("runbook.slots")


@contextmanager
def database_slot(instance: str, *, job: str, wait_seconds: float) -> Iterator[None]:
    """Hold the database's heavy-job slot for the block: wait up to ``wait_seconds``
    for it, then raise ConcurrencyError naming who holds it."""
    from prefect.runtime import flow_run

    from prefect.concurrency._asyncio import AcquireConcurrencySlotTimeoutError, ConcurrencySlotAcquisitionError

    name = limit_name(instance)
    run_id = str(flow_run.get_id() or "") or None
    with get_client(sync_client=True) as client:
        slots = ensure_limit(client, name)
    holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(run_id)) if run_id else None
    _logger().info("Taking the heavy-job slot %s (%d slot(s); waiting up to %g s while another heavy job holds it)", name, slots, wait_seconds)
    stack = ExitStack()
    try:
        stack.enter_context(
            # strict: a missing limit is an error, never "unlimited"; but a failed lease
            # renewal (a busy SQLite server answers 503) must not kill a half-done dump
            concurrency(name, occupy=1, timeout_seconds=wait_seconds, lease_duration=LEASE_SECONDS, strict=True, holder=holder,
                        raise_on_lease_renewal_failure=False)
        )
    except AcquireConcurrencySlotTimeoutError:
        with get_client(sync_client=True) as client:
            held_by = holders(client, instance, besides=run_id)
        who = ", ".join(held_by) if held_by else (
            "no unfinished runbook flow run carries its tag: a process outside a flow run holds it, or a crashed "
            f"run's lease, which the server frees within {LEASE_SECONDS:.0f} s"
        )
        raise ConcurrencyError(
            f"{job}: the database {instance} is busy: its heavy-job slot (global concurrency limit {name}, "
            f"{slots} slot(s)) is held by {who}; waited {wait_seconds:g} s (RUNBOOK_HEAVY_JOBS__WAIT_SECONDS)"
        ) from None
    except ConcurrencySlotAcquisitionError as err:  # e.g. the limit exists but is inactive: never run unlimited
        raise ConcurrencyError(f"{job}: cannot take the heavy-job slot {name} of {instance}: {err}") from None
    with stack:
        if run_id:
            with get_client(sync_client=True) as client:
                _retag(client, run_id, holder_tag(instance), add=True)
        try:
            yield
        finally:
            if run_id:
                with get_client(sync_client=True) as client:
                    _retag(client, run_id, holder_tag(instance), add=False)
