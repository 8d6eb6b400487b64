"""The signals the monitor evaluates (issue 11 §1): the platform's metrics, its health
endpoint, its database, the freshness of its backups, and runbook's own scheduled runs,
each turned into ``Sample``s (runbook/alerting/model.py).

A source that does not answer is itself a signal, never an exception: its metrics come
back with value None (a rule on them keeps its state) and ``signal_up`` 0 for the
source, with the error's first line in the detail. The "up" metrics are the exception:
``health_up`` and ``database_up`` are 0, not None, when their peer does not answer,
since saying so is what they are for (§2.2 database-down).

Three layers per source:

    _read_<source>(client, ...)   raises: TransientError (refused, timeout, 5xx, 429),
                                  ConfigError (401/403/404: a setting is wrong),
                                  RunbookError (any other answer that is not usable)
    collect_<source>(client, ...) the plain collector: never raises for the source
    <source>_task(...)            the @task: builds its client, retries the transient
                                  (RUNBOOK_MONITOR__RETRIES) and raises the last error,
                                  which ``collect_signals`` turns into the same samples
                                  ``collect_<source>`` gives

``collect_signals`` runs the configured sources at once (threads; each task run is
a child of the calling flow run) and says which it skipped and why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field, SecretStr

from runbook.alerting.model import Sample
from runbook.backups import BackupStatus, select_backup
from runbook.errors import ConfigError, RunbookError, TransientError
from runbook.retry import retry_transient
from runbook.settings import SIGNAL_SOURCES, RunbookSettings
from runbook.target import Target
from tasks import postgres
from tasks.backups import first_line, read_catalog
from tasks.store import BackupStore, make_s3_client, open_store

# A platform with no DONE backup at all is as stale as can be: the age rule
# (backup_age_minutes > 75) must fire, and None would mean "keep the state", while
# JSON cannot carry infinity. About 1,900 years.
NO_BACKUP_AGE_MINUTES = 1e9
GB = 1e9  # decimal gigabytes, as §7.2's "80 GB" and disk vendors count
_FAILED_TYPES = ("FAILED", "CRASHED")
_DEPLOYMENT_PAGE = 200  # the Prefect server's default page limit
_MAX_DEPLOYMENT_PAGES = 50


class Signals(BaseModel):
    """What one collection gave: the samples, and the sources not collected with why."""

    samples: list[Sample] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict, description="source -> why it was not collected")

    def value(self, metric: str, resource: str) -> float | None:
        """The value of one sample (KeyError when there is none)."""
        for sample in self.samples:
            if sample.metric == metric and sample.resource == resource:
                return sample.value
        raise KeyError(f"no sample {metric}{{{resource}}}")


# --------------------------------------------------------------------------- shared


def source_up(source: str, detail: str = "answered") -> Sample:
    return Sample(metric="signal_up", resource=source, value=1.0, detail=detail)


def source_down(source: str, error: BaseException, values: dict[tuple[str, str], float | None]) -> list[Sample]:
    """The samples of a source that did not answer: ``values`` (metric, resource) ->
    what to report then (None, or 0 for an "up" metric), and signal_up 0."""
    detail = first_line(error)
    return [Sample(metric=m, resource=r, value=v, detail=detail) for (m, r), v in values.items()] + [
        Sample(metric="signal_up", resource=source, value=0.0, detail=detail)
    ]


def _guard(source: str, down: dict[tuple[str, str], float | None], read: Callable[[], list[Sample]]) -> list[Sample]:
    try:
        return read()
    except Exception as err:  # noqa: BLE001 - an unreachable source is a signal, reported in the samples
        return source_down(source, err, down)


def _where(url: str) -> str:
    """host:port of a URL, never its user or password."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _get(client: httpx.Client, path: str) -> httpx.Response:
    try:
        return client.get(path)
    except httpx.TimeoutException:
        raise TransientError(f"GET {path}: no answer from {_where(str(client.base_url))} within the timeout") from None
    except httpx.TransportError as err:
        raise TransientError(f"GET {path}: cannot reach {_where(str(client.base_url))}: {first_line(err)}") from None


def _refusal(response: httpx.Response, path: str) -> Exception:
    """Why a non-2xx answer is not usable, sorted for the retry."""
    status = response.status_code
    reason = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            reason = str(body.get("error") or body.get("message") or body.get("status") or "")
    except ValueError:
        pass
    text = f"GET {path}: HTTP {status}" + (f": {reason.splitlines()[0]}" if reason.strip() else "")
    if status == 429 or status >= 500:
        return TransientError(text)
    if status in (401, 403):
        return ConfigError(f"{text}; check RUNBOOK_PLATFORM_TOKEN")
    if status == 404:
        return ConfigError(f"{text}; check RUNBOOK_PLATFORM_URL and RUNBOOK_MONITOR__METRICS_PATH / __HEALTH_PATH")
    return RunbookError(text)


def platform_client(base_url: str, *, token: SecretStr | None, timeout_s: float, ca_bundle: Path | None = None) -> httpx.Client:
    """An HTTP client on the platform; the token goes in a header only (never a URL or a log)."""
    import ssl

    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token is not None else {}
    verify: bool | ssl.SSLContext = ssl.create_default_context(cafile=str(ca_bundle)) if ca_bundle else True
    return httpx.Client(base_url=base_url, timeout=httpx.Timeout(timeout_s), headers=headers, verify=verify, follow_redirects=False)


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("runbook.signals")


# --------------------------------------------------------------------------- 1. platform metrics


def _field(document: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(document, dict) or part not in document:
            raise KeyError(path)
        document = document[part]
    return document


def _read_platform_metrics(client: httpx.Client, fields: dict[str, str], path: str) -> list[Sample]:
    response = _get(client, path)
    if not response.is_success:
        raise _refusal(response, path)
    try:
        document = response.json()
    except ValueError:
        raise RunbookError(f"GET {path}: the answer is not JSON ({response.headers.get('content-type', 'no content type')})") from None
    if not isinstance(document, dict):
        raise RunbookError(f"GET {path}: the answer is not a JSON object")
    samples: list[Sample] = []
    for metric, field in fields.items():
        if not field:
            continue  # turned off in RUNBOOK_MONITOR__METRIC_FIELDS
        try:
            raw = _field(document, field)
        except KeyError:
            samples.append(Sample(metric=metric, resource="api", value=None, detail=f"no field {field!r} in the answer of {path}"))
            continue
        # a bool is an int to Python, never a measurement
        value = float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None
        if value is None or not math.isfinite(value):
            samples.append(Sample(metric=metric, resource="api", value=None, detail=f"{field} is {raw!r}, not a number"))
        else:
            samples.append(Sample(metric=metric, resource="api", value=value, detail=f"{field} = {raw} ({path})"))
    return samples + [source_up("metrics", f"GET {path}: HTTP {response.status_code}")]


def _metrics_down(fields: dict[str, str]) -> dict[tuple[str, str], float | None]:
    return {(metric, "api"): None for metric, field in fields.items() if field}


def collect_platform_metrics(client: httpx.Client, fields: dict[str, str], path: str = "/api/monitoring/metrics") -> list[Sample]:
    """The platform's metrics (error rate, p95, CPU, memory, disk), resource "api":
    ``fields`` maps each metric to its JSON field (a dotted path for a nested one)."""
    return _guard("metrics", _metrics_down(fields), lambda: _read_platform_metrics(client, fields, path))


@task(name="collect-platform-metrics", retries=1, retry_delay_seconds=1, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def platform_metrics_task(
    base_url: str, token: SecretStr | None, fields: dict[str, str], path: str, timeout_s: float, ca_bundle: Path | None = None
) -> list[Sample]:
    """Read the platform's metrics endpoint (error rate, p95, CPU, memory, disk)."""
    _logger().info("Reading the platform's metrics at %s%s", _where(base_url), path)
    with platform_client(base_url, token=token, timeout_s=timeout_s, ca_bundle=ca_bundle) as client:
        return _read_platform_metrics(client, fields, path)


# --------------------------------------------------------------------------- 2. health


def _read_health(client: httpx.Client, path: str) -> list[Sample]:
    response = _get(client, path)
    latency = response.elapsed.total_seconds() * 1000
    if response.is_success:
        detail = f"GET {path}: HTTP {response.status_code} in {latency:.0f} ms"
    else:
        detail = first_line(_refusal(response, path)) + f" in {latency:.0f} ms"
    return [
        Sample(metric="health_up", resource="api", value=1.0 if response.is_success else 0.0, detail=detail),
        Sample(metric="health_latency_ms", resource="api", value=round(latency, 3), detail=detail),
        source_up("health", detail),
    ]


_HEALTH_DOWN: dict[tuple[str, str], float | None] = {("health_up", "api"): 0.0, ("health_latency_ms", "api"): None}


def collect_health(client: httpx.Client, path: str = "/api/health") -> list[Sample]:
    """health_up (1 on a 2xx answer, else 0, also when nothing answers) and the
    latency of the health endpoint, resource "api"."""
    return _guard("health", _HEALTH_DOWN, lambda: _read_health(client, path))


@task(name="check-platform-health", retries=1, retry_delay_seconds=1, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def health_task(base_url: str, path: str, timeout_s: float, ca_bundle: Path | None = None) -> list[Sample]:
    """Time the platform's health endpoint."""
    _logger().info("Checking the platform's health at %s%s", _where(base_url), path)
    # no token: the health endpoint is public (§1.4), and a token is sent only where needed
    with platform_client(base_url, token=None, timeout_s=timeout_s, ca_bundle=ca_bundle) as client:
        return _read_health(client, path)


# --------------------------------------------------------------------------- 3. database


def _read_database(dsn: str, instance: str, timeout_s: int) -> list[Sample]:
    with postgres.session(
        dsn, application="runbook monitor", connect_timeout=timeout_s, statement_timeout_s=timeout_s, autocommit=True
    ) as conn:
        try:
            conn.execute("SELECT 1")
        except psycopg.Error as err:
            raise postgres.translate_pg_error(err, dsn, "SELECT 1") from None
        up = Sample(metric="database_up", resource=instance, value=1.0, detail="SELECT 1 answered")
        try:
            # client backends only: background processes (autovacuum, checkpointer, WAL
            # writer...) are in pg_stat_activity but not counted against max_connections
            row = conn.execute(
                "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
                " current_setting('max_connections')::int, current_database(), pg_database_size(current_database())"
            ).fetchone()
            assert row is not None
        except psycopg.Error as err:
            # it answers, but not this: say so on the two figures, the database is up
            detail = first_line(postgres.translate_pg_error(err, dsn, "read connections and size"))
            return [
                up,
                Sample(metric="database_connections_pct", resource=instance, value=None, detail=detail),
                Sample(metric="database_size_gb", resource=instance, value=None, detail=detail),
                source_up("database", detail),
            ]
    connections, max_connections, database, size = row
    pct = 100.0 * connections / max_connections if max_connections else None
    return [
        up,
        Sample(
            metric="database_connections_pct",
            resource=instance,
            value=None if pct is None else round(pct, 3),
            detail=f"{connections} client connections of max_connections {max_connections}",
        ),
        Sample(
            metric="database_size_gb",
            resource=instance,
            value=round(size / GB, 6),
            detail=f"{database}: {size / GB:.3f} GB (10^9 bytes; {size / 2**30:.3f} GiB), pg_database_size {size} bytes",
        ),
        source_up("database", "SELECT 1 answered"),
    ]


def _database_down(instance: str) -> dict[tuple[str, str], float | None]:
    return {("database_up", instance): 0.0, ("database_connections_pct", instance): None, ("database_size_gb", instance): None}


def collect_database(dsn: str, instance: str, *, timeout_s: int = 5) -> list[Sample]:
    """database_up (1 when SELECT 1 answers, 0 otherwise, bad credentials included),
    client connections as % of max_connections, and pg_database_size in decimal GB;
    resource ``instance``."""
    return _guard("database", _database_down(instance), lambda: _read_database(dsn, instance, timeout_s))


@task(name="check-database-health", retries=1, retry_delay_seconds=1, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def database_task(dsn: SecretStr, instance: str, timeout_s: int) -> list[Sample]:
    """Check that the platform's database answers; read its connections and size."""
    _logger().info("Checking the database of %s", instance)
    return _read_database(dsn.get_secret_value(), instance, timeout_s)


# --------------------------------------------------------------------------- 4. backup freshness


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must carry a timezone (datetime.now(timezone.utc))")
    return now


def _read_backup_age(store: BackupStore, instance: str, now: datetime) -> list[Sample]:
    _aware(now)
    manifests, _ = read_catalog(store, instance)
    done = [m for m in manifests if m.status is BackupStatus.DONE]
    if not done:
        others = f" ({len(manifests)} not DONE)" if manifests else ""
        sample = Sample(
            metric="backup_age_minutes",
            resource=instance,
            value=NO_BACKUP_AGE_MINUTES,
            detail=f"no DONE backup in {store.url}/{instance}{others}",
        )
        return [sample, source_up("backups", f"listed {store.url}/{instance}")]
    newest = select_backup(manifests)
    # the age of the data it holds (its snapshot), which is what the 1-hour RPO is about
    taken = newest.snapshot_at or newest.started_at
    minutes = (now - taken).total_seconds() / 60
    skew = " (in the future: check the clocks)" if minutes < 0 else ""
    detail = f"{newest.id}, snapshot at {taken.astimezone(timezone.utc).isoformat(timespec='seconds')}, {max(minutes, 0):.1f} min ago{skew}"
    return [
        Sample(metric="backup_age_minutes", resource=instance, value=round(max(minutes, 0.0), 3), detail=detail),
        source_up("backups", f"listed {store.url}/{instance}"),
    ]


def collect_backup_age(store: BackupStore, instance: str, *, now: datetime) -> list[Sample]:
    """Minutes since the snapshot of the newest DONE backup of ``instance`` (from the
    backup catalog); ``NO_BACKUP_AGE_MINUTES`` when there is none; resource ``instance``."""
    _aware(now)  # a wrong clock is a bug here, not the store being down
    return _guard("backups", {("backup_age_minutes", instance): None}, lambda: _read_backup_age(store, instance, now))


def open_monitored_store(url: str, *, s3_endpoint_url: str | None, timeout_s: int) -> BackupStore:
    """The store, with the monitor's short S3 timeouts; never creates a folder."""
    client = make_s3_client(s3_endpoint_url, connect_timeout=timeout_s, read_timeout=timeout_s) if url.startswith("s3://") else None
    return open_store(url, s3_endpoint_url=s3_endpoint_url, client=client)


@task(name="check-backup-freshness", retries=1, retry_delay_seconds=1, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def backup_age_task(store_url: str, s3_endpoint_url: str | None, instance: str, now: datetime, timeout_s: int) -> list[Sample]:
    """Age of the newest DONE backup in the store (the 1-hour RPO, §6.3)."""
    store = open_monitored_store(store_url, s3_endpoint_url=s3_endpoint_url, timeout_s=timeout_s)
    _logger().info("Reading the backup catalog of %s in %s", instance, store.url)
    return _read_backup_age(store, instance, now)


# --------------------------------------------------------------------------- 5. runbook's own runs


def _prefect_error(err: Exception) -> Exception:
    from prefect.exceptions import PrefectHTTPStatusError

    if isinstance(err, httpx.TimeoutException):
        return TransientError("Prefect API: no answer within the timeout")
    if isinstance(err, httpx.TransportError):
        return TransientError(f"Prefect API: cannot reach it: {first_line(err)}")
    if isinstance(err, PrefectHTTPStatusError):
        status = err.response.status_code
        text = f"Prefect API: HTTP {status}"
        return TransientError(text) if status == 429 or status >= 500 else RunbookError(text)
    return err


def scheduled_deployments(client: Any, tag: str) -> list[Any]:
    """Deployments tagged ``tag`` that are not paused and have an active schedule."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags
    from prefect.client.schemas.sorting import DeploymentSort

    found: list[Any] = []
    for page in range(_MAX_DEPLOYMENT_PAGES):
        batch = client.read_deployments(
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[tag])),
            sort=DeploymentSort.NAME_ASC,
            limit=_DEPLOYMENT_PAGE,
            offset=page * _DEPLOYMENT_PAGE,
        )
        found.extend(batch)
        if len(batch) < _DEPLOYMENT_PAGE:
            break
    return [d for d in found if not d.paused and any(s.active for s in d.schedules or [])]


def _read_deployment_runs(client: Any, tag: str) -> list[Sample]:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import TERMINAL_STATES
    from prefect.client.schemas.sorting import FlowRunSort

    try:
        samples = []
        for deployment in scheduled_deployments(client, tag):
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=sorted(TERMINAL_STATES, key=str))),
                ),
                sort=FlowRunSort.END_TIME_DESC,
                limit=1,
            )
            if not runs or runs[0].state is None:
                samples.append(Sample(metric="deployment_failed", resource=deployment.name, value=0.0, detail="no finished run yet"))
                continue
            run, state = runs[0], runs[0].state
            failed = state.type.value in _FAILED_TYPES
            ended = run.end_time.astimezone(timezone.utc).isoformat(timespec="seconds") if run.end_time else "?"
            message = (state.message or "").strip()
            detail = f"run {run.name} ({run.id}) {state.name} at {ended}" + (f": {message.splitlines()[0]}" if message else "")
            samples.append(Sample(metric="deployment_failed", resource=deployment.name, value=1.0 if failed else 0.0, detail=detail))
    except Exception as err:
        raise _prefect_error(err) from err
    return samples + [source_up("prefect", f"{len(samples)} scheduled deployments tagged {tag!r}")]


def collect_deployment_runs(client: Any, tag: str = "runbook") -> list[Sample]:
    """For each scheduled deployment tagged ``tag`` (a Prefect SyncPrefectClient is
    ``client``): deployment_failed 1 when its newest finished run Failed or Crashed,
    else 0 (also when it never finished a run); resource the deployment's name. When
    the API does not answer no deployment is known: only signal_up{prefect} 0."""
    return _guard("prefect", {}, lambda: _read_deployment_runs(client, tag))


@task(name="check-scheduled-runs", retries=1, retry_delay_seconds=1, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def deployment_runs_task(tag: str, timeout_s: float) -> list[Sample]:
    """The newest finished run of each of runbook's scheduled deployments."""
    from prefect import get_client

    _logger().info("Reading the newest finished run of each scheduled deployment tagged %r", tag)
    try:
        client = get_client(sync_client=True, httpx_settings={"timeout": httpx.Timeout(timeout_s)})
        with client:
            return _read_deployment_runs(client, tag)
    except RunbookError:
        raise
    except Exception as err:
        raise _prefect_error(err) from err


# --------------------------------------------------------------------------- all of them


def collect_signals(settings: RunbookSettings, target: Target, *, now: datetime) -> Signals:
    """Collect every configured, enabled source at once; the others are listed in
    ``skipped`` with the reason (and logged), never left out silently. Never raises
    for a source that does not answer."""
    _aware(now)
    monitor = settings.monitor
    options: dict[str, Any] = {"retries": monitor.retries, "retry_delay_seconds": monitor.retry_delay_seconds}
    skipped: dict[str, str] = {}
    jobs: dict[str, tuple[dict[tuple[str, str], float | None], Callable[[], list[Sample]]]] = {}
    url = settings.platform_url
    ca_bundle = settings.deploy.ca_bundle  # the platform's TLS, as deploy-verify trusts it

    for source in SIGNAL_SOURCES:
        if source not in monitor.sources:
            skipped[source] = "disabled: not in RUNBOOK_MONITOR__SOURCES"
        elif source in ("metrics", "health") and not url:
            skipped[source] = "RUNBOOK_PLATFORM_URL: not set"
        elif source == "backups" and target.store is None:
            skipped[source] = target.store_problem or "RUNBOOK_BACKUP_STORE: not set"
    if "metrics" not in skipped:
        fields = monitor.metric_fields
        jobs["metrics"] = (_metrics_down(fields), lambda: platform_metrics_task.with_options(**options)(
            url, settings.platform_token, fields, monitor.metrics_path, monitor.http_timeout_seconds, ca_bundle))
    if "health" not in skipped:
        jobs["health"] = (_HEALTH_DOWN, lambda: health_task.with_options(**options)(
            url, monitor.health_path, monitor.http_timeout_seconds, ca_bundle))
    if "database" not in skipped:
        jobs["database"] = (_database_down(target.instance), lambda: database_task.with_options(**options)(
            target.dsn_secret, target.instance, monitor.database_timeout_seconds))
    if "backups" not in skipped:
        jobs["backups"] = ({("backup_age_minutes", target.instance): None}, lambda: backup_age_task.with_options(**options)(
            target.store_url, settings.s3_endpoint_url, target.instance, now, monitor.store_timeout_seconds))
    if "prefect" not in skipped:
        jobs["prefect"] = ({}, lambda: deployment_runs_task.with_options(**options)(
            monitor.deployment_tag, monitor.prefect_timeout_seconds))

    log = _logger()
    for source, reason in skipped.items():
        log.warning("Signal source %s skipped: %s", source, reason)
    results: dict[str, list[Sample]] = {}
    if jobs:
        # each thread runs in a copy of this context, so each task run belongs to the calling flow run
        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="signals") as pool:
            futures = {
                source: pool.submit(copy_context().run, _guard, source, down, run) for source, (down, run) in jobs.items()
            }
            results = {source: future.result() for source, future in futures.items()}
    samples = [sample for source in SIGNAL_SOURCES for sample in results.get(source, [])]
    for sample in samples:
        if sample.metric == "signal_up" and sample.value == 0:
            log.error("Signal source %s did not answer: %s", sample.resource, sample.detail)
    return Signals(samples=samples, skipped=skipped)
