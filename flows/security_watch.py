"""``security-watch`` (runbook §5.1), every 5 minutes: the detectors over the security
sources since the last run, each finding with its evidence, routed as an alert (dedup,
silences, escalation: the monitoring issue's ledger), repeat offenders counted with a
suggested block, and expired blocks lifted."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from runbook.alerting.report import monitor_checks
from runbook.checks import CheckResult
from runbook.errors import ConfigError
from runbook.reports import artifact_key, conclude, expected_failures
from runbook.retry import RETRIES, backoff, retry_transient
from runbook.security.detectors import Detector, Finding, SpikeDetector, detect, spike
from runbook.security.sources import SourceMapping
from runbook.security.watch import RULES, Offence, Span, apply_offence, describe, plan_span, resource, samples
from runbook.settings import RunbookSettings, WatchSettings
from runbook.target import prepare
from tasks import security
from tasks.alerting import active_alerts, chain_problem, deliver_all, evaluate_event, load_alerting, run_link
from tasks.blocklist import lift_expired_blocks
from tasks.cloudflare import resolve_cloudflare
from tasks.secstate import SecurityState, security_state


def utcnow() -> datetime:
    """The watch's clock (tests set it: windows are judged on the events' own times)."""
    return datetime.now(timezone.utc)


class WatchParameters(BaseModel):
    """One watch run. Detectors and sources are settings (RUNBOOK_SECURITY__...)."""

    since: datetime | None = Field(None, description="Replay from this time (with until); the checkpoint is left alone.")
    until: datetime | None = Field(None, description="Replay up to this time; unset: now.")
    notify: bool = Field(True, description="Route the findings as alerts (off: report only).")


# --------------------------------------------------------------------------- steps


def check_configuration(settings: RunbookSettings) -> list[str]:
    """Every detector names a configured source and fields that source maps (exit 2);
    the sources the detectors read."""
    sec = settings.security
    names = [d.name for d in [*sec.detectors, *sec.spikes]]
    if len(set(names)) != len(names):
        raise ConfigError(f"RUNBOOK_SECURITY__DETECTORS: detector names must be unique, got {sorted(names)}")
    used: list[str] = []
    for d in [*sec.detectors, *sec.spikes]:
        mapping = sec.sources.get(d.source)
        if mapping is None:
            raise ConfigError(f"RUNBOOK_SECURITY__DETECTORS: detector {d.name!r} reads source {d.source!r}, which "
                              f"RUNBOOK_SECURITY__SOURCES does not configure (sources: {', '.join(sorted(sec.sources))})")
        fields = [*d.where, *getattr(d, "group_by", ()), *([d.distinct] if getattr(d, "distinct", None) else []),
                  *getattr(d, "ratio_where", {})]
        unmapped = sorted({f for f in fields if f not in mapping.fields})
        if unmapped:
            raise ConfigError(f"RUNBOOK_SECURITY__DETECTORS: detector {d.name!r} reads {', '.join(unmapped)}, which source "
                              f"{d.source!r} ({mapping.where}) does not map (fields: {', '.join(sorted(mapping.fields))})")
        if d.source not in used:
            used.append(d.source)
    return used


@task(name="check-sources", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def check_sources(state: SecurityState, sources: dict[str, SourceMapping]) -> None:
    """Each table exists with the mapped columns, each log file can be read (exit 2)."""
    with state.connect() as conn:
        for name, mapping in sources.items():
            if mapping.table is not None:
                security.check_source(conn, name, mapping)
            elif mapping.file is not None and not mapping.file.is_file():
                raise ConfigError(f"RUNBOOK_SECURITY__SOURCES__{name.upper()}__FILE: no file {str(mapping.file)!r}")


@contextmanager
def watch_lock(state: SecurityState) -> Iterator[datetime | None]:
    """One watch at a time per platform: the lock, and the checkpoint read under it."""
    conn = state.connect(("watch", security.WATCH_DDL))
    try:
        if not security.try_watch_lock(conn, state.schema):
            raise ConfigError("another security-watch run is evaluating this platform: this run did nothing")
        yield security.read_checkpoint(conn, state.schema)
    finally:
        conn.close()


@task(name="detect", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE,
      task_run_name="detect-{detector.name}")
def run_detector(state: SecurityState, mapping: SourceMapping, detector: Detector, span: Span, keep: int) -> list[Finding]:
    """The groups over the detector's threshold in some window whose evidence reaches
    into this run's span; the filter and a first cut of the threshold run in PostgreSQL."""
    lo = span.since - detector.window
    if mapping.file is not None:
        events, unreadable = security.read_file_events(mapping.file, mapping, lo, span.until)
        if unreadable:
            get_run_logger().warning("%s: %d lines could not be read (not JSON, or no time)", mapping.file, unreadable)
        judged = detector
    else:
        with state.connect() as conn:
            events, judged = security.candidate_events(conn, mapping, detector, lo, span.until, span.since)
    return [f for f in detect(judged, events, samples=keep) if f.last_at >= span.since]


@task(name="spike", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE,
      task_run_name="spike-{detector.name}")
def run_spike(state: SecurityState, mapping: SourceMapping, detector: SpikeDetector, span: Span) -> list[Finding]:
    """This window's matching events against the same window of the previous days."""
    if mapping.file is not None:
        events, _ = security.read_file_events(mapping.file, mapping, span.until - detector.window - timedelta(days=detector.days),
                                              span.until)
        events = [e for e in events if all(e.fields.get(k) == v for k, v in detector.where.items())]
        counts = [sum(1 for e in events if span.until - detector.window - timedelta(days=d) <= e.at < span.until - timedelta(days=d))
                  for d in range(detector.days + 1)]
        current, baseline = counts[0], counts[1:]
        recent = [e for e in events if e.at >= span.until - detector.window][:5]
    else:
        with state.connect() as conn:
            current, baseline, recent = security.spike_counts(conn, mapping, detector, span.until)
    fires, mean = spike(detector, current, baseline)
    if not fires:
        return []
    first = recent[0].at if recent else span.until - detector.window
    return [Finding(detector=detector.name, group={"window": f"{detector.window_minutes:g}m"}, count=current, first_at=first,
                    last_at=span.until, severity=detector.severity,
                    note=f"{current} against a mean of {mean:.1f} in the same window of the previous {detector.days} days",
                    samples=[{"at": e.at.isoformat(), **e.fields} for e in recent])]


@task(name="record-findings", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def record_findings(state: SecurityState, findings: list[Finding], detectors: dict[str, timedelta], watch: WatchSettings,
                    now: datetime) -> list[tuple[Finding, str, Offence | None]]:
    """Store the findings and count the offences of their addresses (decayed, doubling
    block suggestions); each finding with what its notification says."""
    with state.connect(("watch", security.WATCH_DDL)) as conn:
        ips = sorted({str(f.group["ip"]) for f in findings if "ip" in f.group})
        previous = security.read_offences(conn, state.schema, ips)
        out: list[tuple[Finding, str, Offence | None]] = []
        offences: list[dict[str, Any]] = []
        for f in sorted(findings, key=lambda f: (f.first_at, f.detector)):
            offence = None
            if "ip" in f.group:
                ip = str(f.group["ip"])
                offence = apply_offence(previous.get(ip), f, detectors.get(f.detector, timedelta(minutes=10)),
                                        quiet=timedelta(hours=watch.offence_quiet_hours),
                                        base=timedelta(minutes=watch.block_base_minutes), cap=timedelta(minutes=watch.block_cap_minutes))
                previous[ip] = {"offences": offence.offences, "last_evidence_at": f.last_at,
                                "last_offence_at": f.first_at if offence.new else (previous.get(ip) or {}).get("last_offence_at", f.first_at)}
                offences.append({"ip": ip, "offences": offence.offences, "first_at": f.first_at, "last_at": f.last_at,
                                 "detector": f.detector, "new": offence.new})
            out.append((f, describe(f, offence), offence))
        rows = [{"detector": f.detector, "resource": resource(f), "severity": f.severity.value, "count": f.count,
                 "first_at": f.first_at, "last_at": f.last_at, "samples": f.samples, "detail": d} for f, d, _ in out]
        security.save_watch(conn, state.schema, until=None, now=now, run_id=_run_id(), findings=rows, offences=offences)
    return out


@task(name="advance-checkpoint", retries=RETRIES, retry_delay_seconds=backoff(), retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def advance_checkpoint(state: SecurityState, until: datetime, now: datetime) -> None:
    """The next run starts where this one ended (only once its findings are in the ledger)."""
    with state.connect(("watch", security.WATCH_DDL)) as conn:
        security.save_watch(conn, state.schema, until=until, now=now, run_id=_run_id(), findings=[], offences=[])


def _run_id() -> str | None:
    from prefect.runtime import flow_run

    return str(flow_run.id) if flow_run.id else None


def findings_markdown(span: Span, found: list[tuple[Finding, str, Offence | None]]) -> str:
    lines = [f"# Security watch {span.since:%Y-%m-%d %H:%M:%S} to {span.until:%H:%M:%S} UTC", ""]
    if span.clipped:
        lines += [f"**{span.clipped} of older backlog was not read** (RUNBOOK_SECURITY__WATCH__MAX_CATCHUP_HOURS).", ""]
    if not found:
        return "\n".join(lines + ["No detector fired."])
    for f, detail, _ in found:
        lines += [f"## {f.severity.value.upper()} {resource(f)}", "", detail, ""]
        if f.samples:
            keys = list(dict.fromkeys(k for s in f.samples for k in s))
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(str(s.get(k, "")).replace("|", "\\|")[:80] for k in keys) + " |" for s in f.samples]
            lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the flow


@flow(name="security-watch")
@expected_failures
def security_watch(params: WatchParameters = WatchParameters()) -> Any:
    """§5.1 real-time watch: CRITICAL security events, brute force and credential
    stuffing per address, API abuse per key and address, refused-request ratios and
    auth-failure spikes, judged on the events' own times since the previous run. Each
    finding is an alert (security-critical or security-warning) with its evidence; an
    address's repeat offences double the suggested block. Fails when a notification
    could not be delivered."""
    logger = get_run_logger()
    settings, target = prepare()
    sec = settings.security
    used = check_configuration(settings)
    state = security_state(settings, target.dsn)
    alerting = load_alerting(settings, target, need_chain=False) if params.notify else None
    resolve_cloudflare(sec.block.cloudflare)  # expired blocks are lifted there too: a bad setting is exit 2 now, not later
    check_sources(state, {name: sec.sources[name] for name in used})
    now = utcnow()
    replay = params.since is not None
    with watch_lock(state) as checkpoint:
        try:
            span = plan_span(checkpoint, now, lookback=timedelta(minutes=sec.watch.lookback_minutes),
                             max_catchup=timedelta(hours=sec.watch.max_catchup_hours), since=params.since, until=params.until)
        except ValueError as err:
            raise ConfigError(f"since/until: {err}") from None
        if span.clipped:
            logger.warning("The watch was behind by more than %s h: %s of older events were not read", sec.watch.max_catchup_hours,
                           span.clipped)
        found: list[Finding] = []
        for d in sec.detectors:
            found += run_detector(state, sec.sources[d.source], d, span, sec.watch.samples)
        for sp in sec.spikes:
            found += run_spike(state, sec.sources[sp.source], sp, span)
        recorded = record_findings(state, found, {d.name: d.window for d in sec.detectors}, sec.watch, now)
        for f, detail, _ in recorded:
            logger.warning("%s %s", f.severity.value.upper(), detail)
        checks = [CheckResult(name="watch", ok=True, detail=f"{len(recorded)} findings from {span.since.isoformat(timespec='seconds')}")]
        report: dict[str, Any] = {"since": span.since.isoformat(), "until": span.until.isoformat(), "replay": replay,
                                  "findings": [{"resource": resource(f), "severity": f.severity.value, "count": f.count,
                                                "first_at": f.first_at.isoformat(), "last_at": f.last_at.isoformat(),
                                                "detail": d, "samples": f.samples} for f, d, _ in recorded]}
        if alerting is not None:
            coverage = chain_problem(alerting)
            active = active_alerts(alerting, list(RULES)) if not replay else {}
            cycle = evaluate_event(alerting, list(RULES), samples([(f, d) for f, d, _ in recorded], active), now, run_link())
            attempts, undelivered = deliver_all(alerting, now)
            checks += monitor_checks({}, cycle, attempts, undelivered, alerting.warnings)[1:]
            if coverage:
                checks.append(CheckResult(name="escalation", ok=False, detail=coverage))
            report["notices"] = cycle.notices
        if not replay:
            advance_checkpoint(state, span.until, now)
            lifted = lift_expired_blocks(state, settings, now)
            report["blocks_lifted"] = [row["network"] for row in lifted["lifted"]]
            checks.append(CheckResult(
                name="expired-blocks", ok=not lifted["failed"], critical=False,
                detail="; ".join(f"{f['network']}: {f['problem']}" for f in lifted["failed"])
                or f"{len(lifted['lifted'])} expired block(s) lifted"))
    create_markdown_artifact(key=artifact_key("security-watch", target.instance), markdown=findings_markdown(span, recorded),
                             description="Security watch: findings and their evidence")
    if recorded:
        create_table_artifact(key=artifact_key("security-findings", target.instance),
                              table=[{k: v for k, v in row.items() if k != "samples"} for row in report["findings"]],
                              description="Findings of this run")
    passed = (f"{len(recorded)} findings: " + ", ".join(f["resource"] for f in report["findings"][:5])) if recorded else "no findings"
    return conclude(checks, report, passed=passed, failed_as="security-watch")
