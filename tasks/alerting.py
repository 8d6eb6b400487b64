"""The alerting tasks: evaluate the rules into the state database, deliver the ledger
channel by channel (each channel its own task, so that one slow or down channel never
holds the others), fall back on the next channel for a critical page nobody got.

``Alerting`` is built once at a flow's start from the settings: the checked rules,
the chain, the channels that can send and their credentials (read from the
environment or Secret blocks, never from a parameter). A configuration that would
page nobody is refused there, before anything is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from runbook.alerting.config import Credentials, configured_channels, missing_parts, resolve_credentials
from runbook.alerting.engine import Policy
from runbook.alerting.escalation import Level, check_coverage
from runbook.alerting.model import CHANNELS, Delivery, Message, Sample
from runbook.alerting.rules import Rule, load_rules
from runbook.errors import ConfigError
from runbook.masking import mask
from runbook.retry import RETRIES, backoff, retry_transient
from runbook.settings import RunbookSettings
from runbook.target import Target
from tasks import alertstate
from tasks.postgres import connect


@dataclass
class Alerting:
    """Everything the alerting tasks need, resolved at a run's start."""

    settings: RunbookSettings
    state_dsn: str
    schema: str
    rules: list[Rule]
    chain: list[Level]
    credentials: Credentials
    usable: dict[str, str]  # channel -> its default recipients, for the channels that can send
    warnings: list[str]
    schema_ready: bool = False  # ensure_schema ran once in this run

    @property
    def alerts(self) -> Any:
        return self.settings.alerts

    def recipients(self, channel: str, to: str | None) -> list[str | None]:
        """The ledger rows one notification on ``channel`` makes ([] when it cannot send)."""
        if missing_parts(channel, self.alerts.channels, self.credentials, recipient=to):
            return []
        if to:
            return [to]
        twilio = self.alerts.channels.twilio
        if channel == "sms":
            return list(twilio.sms_to)
        if channel == "phone":
            return list(twilio.phone_to)
        return [None]

    def send(self, channel: str, recipient: str | None, message: Message, external_id: str | None) -> Delivery:
        from tasks import notify

        try:
            return notify.send(channel, recipient, message, self.alerts.channels, self.credentials, external_id=external_id)
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - a channel's bug must not stop the other channels; it is recorded
            return Delivery(ok=False, detail=mask(f"{type(err).__name__}: {err}".splitlines()[0], self.secrets()))

    def secrets(self) -> list[str]:
        return [*self.credentials.values(), self.state_dsn]

    def connect(self) -> psycopg.Connection[Any]:
        conn = connect(self.state_dsn, application="runbook-alerting", connect_timeout=self.settings.connect_timeout,
                       statement_timeout_s=60, autocommit=True)
        if not self.schema_ready:
            alertstate.ensure_schema(conn, self.schema)
            self.schema_ready = True
        return conn

    def cycle_config(self, link: str | None) -> alertstate.CycleConfig:
        a = self.alerts
        return alertstate.CycleConfig(
            schema=self.schema, rules=self.rules,
            policy=Policy(repeat_interval=timedelta(minutes=a.repeat_interval_minutes), flap_changes=a.flap_changes,
                          flap_window=timedelta(minutes=a.flap_window_minutes)),
            chain=self.chain, ack_ttl=timedelta(minutes=a.escalation.ack_minutes),
            min_interval=timedelta(seconds=a.evaluation_interval_seconds / 2), recipients=self.recipients, link=link,
            history_every=timedelta(minutes=self.settings.monitor.history_interval_minutes),
            history_keep=timedelta(days=self.settings.monitor.history_days),
        )


def state_database(settings: RunbookSettings, target: Target | None) -> str:
    """The DSN of the alert-state database (RUNBOOK_ALERTS__STATE_DATABASE_URL, else the
    platform's): where the alerts, the metric history and the recorded table sizes live."""
    if settings.alerts.state_database_url is not None:
        return settings.alerts.state_database_url.get_secret_value()
    if target is not None:
        return target.dsn
    raise ConfigError("RUNBOOK_ALERTS__STATE_DATABASE_URL: not set, and no platform database to keep the alert state in")


def load_alerting(settings: RunbookSettings, target: Target | None, *, need_chain: bool = True) -> Alerting:
    """Resolve and check the alerting configuration (ConfigError names the setting)."""
    a = settings.alerts
    state_dsn = state_database(settings, target)
    credentials = resolve_credentials(a.channels)
    usable = configured_channels(a.channels, credentials)
    if not usable:
        raise ConfigError(
            "RUNBOOK_ALERTS__CHANNELS: no channel can send: configure at least Slack (RUNBOOK_ALERTS__CHANNELS__SLACK__WEBHOOK_URL) "
            "or e-mail (RUNBOOK_ALERTS__CHANNELS__EMAIL__SMTP_HOST, __SENDER, __TO)"
        )
    rules = load_rules(a.rules, set(usable))
    warnings = [
        f"rule {r.name}: {c} is not configured ({', '.join(missing_parts(c, a.channels, credentials))})"
        for r in rules for c in r.routes() if c not in usable
    ]
    chain = [lv.model_copy() for lv in a.escalation.levels]
    alerting = Alerting(settings=settings, state_dsn=state_dsn, schema=a.state_schema, rules=rules, chain=chain,
                        credentials=credentials, usable=usable, warnings=warnings)
    if need_chain:
        problem = chain_problem(alerting)
        if problem:
            raise ConfigError(problem)
    return alerting


def chain_problem(alerting: Alerting) -> str | None:
    """Why the escalation chain could page nobody or page level 1 too late, or None."""
    a = alerting.alerts
    slowest = max((r.for_ for r in alerting.rules if r.severity.value == "critical"), default=1)
    try:
        check_coverage(
            alerting.chain, lambda channel, to: missing_parts(channel, a.channels, alerting.credentials, recipient=to),
            first_page_after=timedelta(seconds=(slowest - 1) * a.evaluation_interval_seconds),
        )
    except ConfigError as err:
        return str(err)
    return None


def state_task(fn: Any, alerting: Alerting) -> Any:
    """A state-database task with the configured in-run retries (transient errors only)."""
    a = alerting.alerts
    return fn.with_options(retries=a.state_retries, retry_delay_seconds=a.state_retry_delay_seconds)


@task(name="evaluate-alerts", retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def evaluate_alerts(alerting: Alerting, samples: list[Sample], now: datetime, link: str | None) -> alertstate.CycleReport:
    """Evaluate every rule on the signals; record states, notifications, incidents and
    pages in the state database (one transaction: retried whole, never half-applied)."""
    with alerting.connect() as conn:
        report = alertstate.run_cycle(conn, alerting.cycle_config(link), samples, now)
    logger = get_run_logger()
    if report.skipped:
        logger.info("Evaluation skipped: %s", report.skipped)
    else:
        logger.info("%d evaluations, %d firing, %d notices, %d pages, %d deliveries queued",
                    report.evaluated, len(report.firing), len(report.notices), len(report.pages), report.queued)
    return report


@task(name="deliver-channel", cache_policy=NO_CACHE)
def deliver_channel(alerting: Alerting, channel: str, now: datetime, ids: list[int] | None = None) -> list[alertstate.Attempt]:
    """Send what the ledger holds for one channel (due now), and record each outcome.
    Not retried as a task: a failed delivery stays in the ledger and a later run retries it."""
    a = alerting.alerts
    with alerting.connect() as conn:
        rows = alertstate.claim(conn, alerting.schema, now, timedelta(seconds=a.lease_seconds), channel=channel, ids=ids)
        attempts = alertstate.deliver_rows(conn, alerting.schema, rows, alerting.send, now, a.max_attempts)
    logger = get_run_logger()
    for attempt in attempts:
        if attempt.ok:
            logger.info("%s %s: %s", channel, attempt.recipient or "(default)", attempt.detail or "sent")
        else:
            logger.error("%s %s: %s (%s)", channel, attempt.recipient or "(default)", attempt.detail, attempt.status)
    return attempts


def deliver_all(alerting: Alerting, now: datetime, *, ids: list[int] | None = None) -> tuple[list[alertstate.Attempt], list[str]]:
    """Deliver the due ledger, each channel concurrently; then the fallbacks of critical
    pages that reached nobody, channel after channel (at most one round per channel).
    Returns every attempt and the pages left undelivered."""
    futures = [deliver_channel.submit(alerting, channel, now, ids) for channel in CHANNELS]
    attempts = [a for f in futures for a in f.result()]
    undelivered: list[str] = []
    round_attempts = attempts
    for _ in range(len(CHANNELS)):
        with alerting.connect() as conn:
            new_ids, left = alertstate.plan_fallbacks(conn, alerting.schema, round_attempts, list(alerting.usable), now)
        undelivered += left
        if not new_ids:
            break
        get_run_logger().warning("%d critical page(s) reached nobody: falling back on the next channel", len(new_ids))
        futures = [deliver_channel.submit(alerting, channel, now, new_ids) for channel in CHANNELS]
        round_attempts = [a for f in futures for a in f.result()]
        attempts += round_attempts
    return attempts, undelivered


def run_link() -> str | None:
    """The Prefect UI URL of this run (None without a UI URL setting)."""
    from prefect.runtime import flow_run

    try:
        return flow_run.ui_url
    except Exception:  # noqa: BLE001 - a link is a nicety; a notification without one still goes
        return None


def incident_timelines(alerting: Alerting, cycle: alertstate.CycleReport) -> dict[int, list[dict[str, Any]]]:
    """The timeline of each incident this evaluation touched (opened, paged, resolved)."""
    touched = sorted({*cycle.opened, *cycle.resolved, *(p["incident"] for p in cycle.pages)})
    if not touched:
        return {}
    with alerting.connect() as conn:
        return {incident: alertstate.timeline(conn, alerting.schema, incident) for incident in touched}


def emergency_variable(alerting: Alerting) -> str:
    import re

    return "runbook_alerting_emergency_" + re.sub(r"[^a-z0-9_]+", "_", alerting.schema.lower())


def emergency_notify(alerting: Alerting, now: datetime, error: str) -> str:
    """The state database does not answer, so the ledger cannot be written: page the
    critical channels directly (Slack, e-mail, SMS, phone), at most once per repeat
    interval (the time of the last one is kept in a Prefect Variable, on the server
    that runs this flow). Returns what happened, one line."""
    from prefect.variables import Variable

    from runbook.alerting.model import FALLBACK_ORDER, Severity

    name = emergency_variable(alerting)
    last = Variable.get(name, default=None)
    if last:
        previous = datetime.fromisoformat(str(last))
        if now - previous < timedelta(minutes=alerting.alerts.repeat_interval_minutes):
            return f"held: the last direct page went at {previous.isoformat(timespec='seconds')}"
    message = Message(
        kind="firing", severity=Severity.critical, rule="alert-state-unreachable", resource=alerting.schema,
        title="CRITICAL alert state unreachable: runbook cannot record or deliver alerts through its ledger",
        summary=mask(error.splitlines()[0], alerting.secrets())
        + "\nThe state database is the platform's unless RUNBOOK_ALERTS__STATE_DATABASE_URL is set: the platform's database may be down.",
        link=run_link(), at=now,
    )
    results = []
    for channel in FALLBACK_ORDER:
        for recipient in alerting.recipients(channel, None):
            delivery = alerting.send(channel, recipient, message, None)
            results.append(f"{channel}: {'sent' if delivery.ok else delivery.detail}")
            if delivery.ok:
                Variable.set(name, now.isoformat(), overwrite=True)
    return "; ".join(results) or "no channel configured"


@task(name="queue-notification", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def queue_notification(alerting: Alerting, page_key: str, channels: list[tuple[str, str | None]], message: Message,
                       now: datetime) -> list[int]:
    """Put one message in the ledger on each channel (once per ``page_key``); the rows' ids."""
    with alerting.connect() as conn, conn.transaction():
        return alertstate.enqueue(conn, alerting.cycle_config(None), now, page_key, channels, message, None, None, alertstate.CycleReport())


@task(name="evaluate-event", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def evaluate_event(alerting: Alerting, rule_names: list[str], samples: list[Sample], now: datetime,
                   link: str | None) -> alertstate.CycleReport:
    """Evaluate a few rules on what an event says (a failed run, a missed backup), between
    the monitor's evaluations: the same alert states, so nothing is told twice."""
    cfg = alerting.cycle_config(link)
    cfg.rules = [r for r in alerting.rules if r.name in rule_names]
    with alerting.connect() as conn:
        return alertstate.run_cycle(conn, cfg, samples, now, scheduled=False)


@task(name="active-alerts", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def active_alerts(alerting: Alerting, rules: list[str]) -> dict[str, set[str]]:
    """The resources of these rules whose alert is pending or firing (what may resolve)."""
    with alerting.connect() as conn:
        return alertstate.active_resources(conn, alerting.schema, rules)


@task(name="acknowledge-incident", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def acknowledge_incident(alerting: Alerting, incident: int, by: str, note: str, now: datetime, ttl: timedelta) -> dict[str, Any]:
    """Record the acknowledgement, cancel the incident's pending pages, update the status page."""
    with alerting.connect() as conn:
        result = alertstate.acknowledge(conn, alerting.schema, incident, by, note, now, ttl, alerting.recipients)
    get_run_logger().info("incident #%d: %s", incident, result["detail"])
    return result


@task(name="read-timeline", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def read_timeline(alerting: Alerting, incident: int) -> list[dict[str, Any]]:
    with alerting.connect() as conn:
        return alertstate.timeline(conn, alerting.schema, incident)


@task(name="silences", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def silences_task(alerting: Alerting, action: str, now: datetime, **kw: Any) -> dict[str, Any]:
    """Add, expire or list silences (each change audited)."""
    return silences(alerting, action, now, **kw)


def silences(alerting: Alerting, action: str, now: datetime, **kw: Any) -> dict[str, Any]:
    """Add, expire or list silences (each change audited): ``silences_task`` without
    Prefect, what ``runbook silence list`` answers from without a flow run."""
    with alerting.connect() as conn:
        if action == "add":
            saved = alertstate.add_silence(conn, alerting.schema, kw["silence"], now)
            return {"silence": saved.model_dump(mode="json"),
                    "detail": f"silence #{saved.id} of {saved.matchers} by {saved.author} until {saved.ends_at.isoformat(timespec='minutes')}"}
        if action == "expire":
            return alertstate.expire_silence(conn, alerting.schema, kw["silence_id"], kw["by"], now)
        rows = alertstate.list_silences(conn, alerting.schema, now, include_ended=kw.get("include_ended", False))
        return {"silences": rows, "detail": f"{len(rows)} silence(s)"}
