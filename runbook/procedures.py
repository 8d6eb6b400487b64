"""Every procedure runbook offers, declared once.

A ``Procedure`` names the flow (its entrypoint, as prefect.yaml names it), the fixed
parameters of its mode (``dr-drill`` is the drill mode of ``disaster-recovery``), its
command-line arguments, how they become the flow's parameter model, and how its result
prints. The CLI (runbook/cli.py), ``deployments/serve.py`` and the deployment tests all
read this registry, so a new procedure is one entry here and one deployment in
prefect.yaml.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, get_type_hints

from runbook.errors import ConfigError

Result = dict[str, Any]


@dataclass(frozen=True)
class Procedure:
    """One procedure: CLI name = deployment name = flow name (but for a mode)."""

    name: str
    entrypoint: str  # "flows/backup.py:backup"
    help: str
    arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    parameters: Callable[[argparse.Namespace], dict[str, Any]] = lambda args: {}
    show: Callable[[Result], str] = lambda result: json.dumps(result, indent=2, default=str)
    mode: dict[str, Any] = field(default_factory=dict)  # fixed parameters of a mode of the flow
    progress: bool = False  # the CLI draws a progress bar from the run's progress events
    aliases: tuple[str, ...] = ()  # other command names (runbook ack = acknowledge)
    # The hook of read-only commands: the answer without a flow run (plain functions,
    # no Prefect server needed), or None when these arguments need the flow (silence
    # add). The CLI tries it first; the flow stays the same answer for the UI and
    # deployments. backup-list and silence list have one; checklist gets one too.
    direct: Callable[[argparse.Namespace], Result | None] | None = None

    def flow(self) -> Any:
        """The Prefect flow (imported on first use: flows import Prefect)."""
        path, name = self.entrypoint.split(":")
        return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)

    def parameter_model(self) -> type | None:
        """The pydantic model of the flow's ``params`` (the form in the Prefect UI)."""
        return get_type_hints(self.flow().fn).get("params")


# --------------------------------------------------------------------------- argument types


def parse_time(value: str) -> datetime:
    """An ISO time; one without an offset stays naive here and is read in the team's
    timezone (RUNBOOK_TIMEZONE) once the settings are loaded (``team_time``)."""
    from runbook.times import parse_time as parse

    try:
        return parse(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def team_time(moment: datetime | None) -> datetime | None:
    """A time from the command line, without an offset read in the team's timezone."""
    from runbook.settings import load_settings
    from runbook.times import maybe_team_time

    return maybe_team_time(moment, load_settings().timezone)


def positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {number}")
    return number


def positive_minutes(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of minutes") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0 minutes, not {value}")
    return number


def check_lines(checks: list[dict[str, Any]]) -> list[str]:
    """One line a check: ok, FAIL (critical) or warn, its name and detail."""
    return [f"  {'ok  ' if c['ok'] else ('FAIL' if c['critical'] else 'warn')} {c['name']}: {c['detail']}" for c in checks]


def failure_lines(checks: list[dict[str, Any]]) -> list[str]:
    """The failed checks only, one line each."""
    return [f"  {'FAIL' if c['critical'] else 'warn'} {c['name']}: {c['detail']}" for c in checks if not c["ok"]]


# --------------------------------------------------------------------------- backups


def _backup_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fingerprint", action=argparse.BooleanOptionalAction, default=None, help="record content fingerprints")
    p.add_argument("--no-prune", dest="prune", action="store_false", help="skip retention after the backup")
    p.add_argument("--prune-dry-run", action="store_true", help="only report what retention would remove")


def _backup_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.backup import BackupParameters

    return {"params": BackupParameters(fingerprint=args.fingerprint, prune=args.prune, prune_dry_run=args.prune_dry_run)}


def _show_backup(result: Result) -> str:
    line = f"backup {result['backup_id']} {result['status']}: {result['size_bytes']:,} bytes in {result['seconds']} s, sha256 {result['sha256']}"
    retention = result.get("retention")
    if retention:
        verb = "would remove" if retention["dry_run"] else "removed"
        line += f"\nretention {verb} {len(retention['removed'])} backup(s), kept {retention['kept']}"
    return line


def _verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backup-id", help="the backup to verify (default: the latest DONE)")
    p.add_argument("--at", type=parse_time, help="verify the latest DONE backup at or before this time (no offset: RUNBOOK_TIMEZONE)")
    p.add_argument("--deep", action="store_true", help="also compare content fingerprints")


def _verify_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.backup_verify import VerifyParameters

    return {"params": VerifyParameters(backup_id=args.backup_id, at=team_time(args.at), deep=args.deep)}


def _show_verify(result: Result) -> str:
    lines = [f"verification of {result['backup_id']} ({result['database']}): {result['outcome'].upper()}"]
    lines += [f"  note: {note}" for note in result.get("notes", [])]
    return "\n".join(lines + check_lines(result["checks"]))


def _show_list(result: Result) -> str:
    rows = result["backups"]
    if not rows:
        return f"no backups of {result['database']} in {result['store']}"
    lines = [f"{'id':<24} {'time':<26} {'size':>10} {'status':<8} {'age':>8}  verified"]
    for row in rows:
        line = f"{row['id']:<24} {row['time']:<26} {row['size']:>10} {row['status']:<8} {row['age']:>8}  {row['verified']}"
        lines.append(line + (f"  ({row['error']})" if row.get("error") else ""))
    return "\n".join(lines)


def _list_direct(args: argparse.Namespace) -> Result:
    """``backup-list`` without a flow run, without Prefect: the store's catalog read directly."""
    from datetime import timezone

    from runbook.target import prepare
    from tasks.catalog import list_backups

    settings, target = prepare()
    return list_backups(settings, target, datetime.now(timezone.utc))


def _prune_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--apply", action="store_true", help="really delete what the plan marks")


def _prune_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.backup_prune import PruneParameters

    return {"params": PruneParameters(dry_run=not args.apply)}


def _show_prune(result: Result) -> str:
    verb = "would remove" if result["dry_run"] else "removed"
    orphans = f"; {verb} {len(result['orphans'])} object(s) without a manifest" if result.get("orphans") else ""
    return f"retention {verb}: {', '.join(result['removed']) or 'nothing'} (kept {result['kept']}){orphans}" + (
        "\n(dry run: add --apply to delete)" if result["dry_run"] else ""
    )


# --------------------------------------------------------------------------- disaster recovery


def _dr_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backup-id", help="the backup to restore (default: the latest DONE)")
    p.add_argument("--at", type=parse_time, help="restore the latest DONE backup at or before this time (no offset: RUNBOOK_TIMEZONE)")
    p.add_argument("--rto-minutes", type=positive_minutes, default=240.0, help="RTO target (default 240, §6.3)")
    p.add_argument("--rpo-minutes", type=positive_minutes, default=60.0, help="RPO target (default 60, §6.3)")


def _drill_arguments(p: argparse.ArgumentParser) -> None:
    _dr_common(p)
    p.add_argument("--keep-restored", action="store_true", help="keep the scratch database afterwards")


def _recovery_arguments(p: argparse.ArgumentParser) -> None:
    _dr_common(p)
    p.add_argument("--confirm", metavar="DATABASE", help="the recovery target's database name, typed to confirm (required)")
    p.add_argument("--replace", action="store_true", help="move a non-empty target aside (renamed, kept) and restore into a new one")
    p.add_argument("--incident-at", type=parse_time, help="when the incident began (no offset: RUNBOOK_TIMEZONE; default: now)")
    p.add_argument("--accepted-by", help="the user acceptance test (§6.4): who accepted the recovered platform "
                   "(with --tried; the CLI cannot pause: without them it is recorded as not accepted)")
    p.add_argument("--tried", help="what the users tried in the acceptance test")
    p.add_argument("--not-accepted", action="store_true", help="the users refused the recovered platform (fails the recovery)")


def _dr_common_values(args: argparse.Namespace) -> dict[str, Any]:
    return dict(backup_id=args.backup_id, at=team_time(args.at), rto_target_minutes=args.rto_minutes, rpo_target_minutes=args.rpo_minutes)


def _drill_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.disaster_recovery import DrParameters, Mode

    return {"params": DrParameters(mode=Mode.DRILL, keep_restored=args.keep_restored, **_dr_common_values(args))}


def _recovery_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.disaster_recovery import DrParameters, Mode

    if not args.confirm:
        raise ConfigError(
            "a recovery needs --confirm <database>: the name of the database in RUNBOOK_RECOVERY_DATABASE_URL "
            "(from the Prefect UI, the run pauses and asks instead)"
        )
    return {
        "params": DrParameters(
            mode=Mode.RECOVER, confirm=args.confirm, replace=args.replace, incident_at=team_time(args.incident_at),
            acceptance=_acceptance(args), ask_acceptance=False,
            **_dr_common_values(args),
        )
    }


def _acceptance(args: argparse.Namespace) -> Any:
    from flows.disaster_recovery import UserAcceptance

    if not args.accepted_by and not args.tried:
        return None  # the CLI cannot pause: the recovery records the test as not accepted
    if not (args.accepted_by and args.tried):
        raise ConfigError("the user acceptance test needs both --accepted-by and --tried")
    return UserAcceptance(accepted=not args.not_accepted, accepted_by=args.accepted_by, tried=args.tried)


def _show_dr(result: Result) -> str:
    lines = [f"{result['mode']} of {result['database']} from {result['backup_id']} into {result['restored_into']}: {result['outcome'].upper()}"]
    for number, phase in enumerate(result["phases"], 1):
        lines.append(f"  {number}. {phase['name']:<17} {phase['status']:<8} {result['phase_seconds'][phase['name']]:>8.1f} s  {phase['detail']}")
    lines += failure_lines(result["checks"])
    lines += [f"  note: {note}" for note in result.get("notes", [])]
    lines.append(f"  {result['rpo']['message']}")
    lines.append(f"  {result['rto']['message']}" if result.get("rto") else "  RTO not achieved: the phases did not finish")
    return "\n".join(lines)


# --------------------------------------------------------------------------- deploys


def _deploy_verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", dest="environment", choices=["staging", "production"], default="staging", help="default: staging")
    p.add_argument("--base-url", help="the platform's base URL (default: RUNBOOK_PLATFORM_URL)")
    p.add_argument("--expected-version", help="the version the deploy should serve")
    p.add_argument("--samples", type=positive, help="requests per endpoint (default: RUNBOOK_DEPLOY__SAMPLES, 5)")
    p.add_argument("--no-rollback", dest="rollback", action="store_false", help="report only, even in production")


def _deploy_verify_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.deploy_verify import DeployVerifyParameters

    return {
        "params": DeployVerifyParameters(
            environment=args.environment, base_url=args.base_url, expected_version=args.expected_version,
            samples=args.samples, rollback=args.rollback,
        )
    }


def _show_deploy_verify(result: Result) -> str:
    lines = [f"deploy verification ({result['environment']}, {result['base_url']}): {result['outcome'].upper()}"]
    for row in result["rounds"][0]["endpoints"]:
        lines.append(f"  {row['path']:<28} p50 {row['p50_ms']:>7.1f} ms  p95 {row['p95_ms']:>7.1f} ms  {row['statuses']}")
    lines += failure_lines(result["checks"])
    rollback = result["rollback"]
    if rollback.get("done"):
        lines.append(f"  rolled back ({rollback['result']}); verification after it: {rollback.get('verified')}")
    elif rollback.get("error"):
        lines.append(f"  ROLLBACK FAILED: {rollback['error']}")
    return "\n".join(lines)


def _predeploy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deploy", action="store_true", help="then deploy staging, verify, production, verify")


def _predeploy_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.predeploy_check import PredeployParameters

    return {"params": PredeployParameters(deploy=args.deploy)}


def _show_predeploy(result: Result) -> str:
    return "\n".join([f"pre-deploy check: {result['outcome'].upper()}", *check_lines(result["checks"])])


# --------------------------------------------------------------------------- troubleshooting and maintenance

_CHECK_PREFIXES = {  # which checks belong to which component of diagnose
    "api": ("api", "status", "shape", "latency", "cache", "version"),
    "external-apis": ("external-apis", "coinmarketcap", "coingecko"),
    "payments": ("payments", "stripe"),
    "ai": ("ai", "openai", "anthropic"),
}


def _diagnose_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--component", choices=["api", "database", "external-apis", "payments", "ai", "all"], default="all")


def _diagnose_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.diagnose import Component, DiagnoseParameters

    return {"params": DiagnoseParameters(component=Component(args.component))}


def _show_diagnose(result: Result) -> str:
    lines = [f"diagnosis: {result['outcome'].upper()}"]
    for component, verdict in result["components"].items():
        lines.append(f"  {component}: {verdict}")
        for check in result["checks"]:
            if not check["ok"] and check["name"].split(":", 1)[0] in _CHECK_PREFIXES.get(component, (component,)):
                lines.append(f"    {'FAIL' if check['critical'] else 'warn'} {check['name']}: {check['detail']}")
        if component in result["advice"]:
            lines.append(f"    next: {result['advice'][component]}")
    return "\n".join(lines)


def _cert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", dest="hosts", action="append", default=[], help="host or host:port (repeatable; default RUNBOOK_CERTS__HOSTS)")
    p.add_argument("--no-renew", dest="renew", action="store_false", help="report only, even when a certificate is due")


def _cert_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.cert_check import CertParameters

    return {"params": CertParameters(hosts=args.hosts, renew=args.renew)}


def _show_cert(result: Result) -> str:
    lines = [f"certificates: {result['outcome'].upper()}"]
    for row in result["certificates"]:
        lines.append(f"  {row['host']:<32} expires {row['expires']:<22} {row['days_left']} days  chain {row['chain']}  hostname {row['hostname']}")
    return "\n".join(lines + failure_lines(result["checks"]))


def _scan_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scanner", dest="scanners", action="append", default=[],
                   help="run only this scanner (repeatable; default all of RUNBOOK_SECURITY__SCANNERS)")


def _scan_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.security_scan import SecurityScanParameters

    return {"params": SecurityScanParameters(scanners=args.scanners)}


def _show_scan(result: Result) -> str:
    lines = [f"security scan: {result['outcome'].upper()} (fails at {result['fail_at']})"]
    for scanner in result["scanners"]:
        lines.append(f"  {scanner['name']:<16} {scanner['status']:<9} {scanner['findings']} finding(s), {scanner['failing']} failing")
    for row in result["findings"]:
        lines.append(f"  {'FAIL' if row['fails'] else '    '} {row['severity']:<9} {row['package']} {row['version']}  "
                     f"{row['advisory']}  fix: {row['fix_versions']}  [{row['state']}]")
    return "\n".join(lines + failure_lines(result["checks"]))


def _watch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=parse_time, help="replay from this time (with --until); the checkpoint is left alone")
    p.add_argument("--until", type=parse_time, help="replay up to this time (default now)")
    p.add_argument("--no-notify", dest="notify", action="store_false", help="report only, route no alerts")


def _watch_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.security_watch import WatchParameters

    return {"params": WatchParameters(since=team_time(args.since), until=team_time(args.until), notify=args.notify)}


def _show_watch(result: Result) -> str:
    lines = [f"security watch {result['since']} .. {result['until']}: {len(result['findings'])} finding(s)"]
    lines += [f"  {f['severity'].upper():<8} {f['detail']}" for f in result["findings"]]
    return "\n".join(lines + failure_lines(result["checks"]))


# --------------------------------------------------------------------------- performance and capacity (§4, §7)


def _performance_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--period", choices=["day", "week", "month"], default="week", help="the period, against the one before (default week)")
    p.add_argument("--end", type=parse_time, help="end of the period (default: now; no offset: RUNBOOK_TIMEZONE)")


def _performance_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.performance_report import PerformanceReportParameters

    return {"params": PerformanceReportParameters(period=args.period, end=team_time(args.end))}


def _show_performance(result: Result) -> str:
    from runbook.performance import Change

    lines = [f"performance report of {result['instance']}, {result['period']} {result['start']} to {result['end']}: {result['outcome'].upper()}"]
    for metric, figures in result["history"].items():
        shown = Change(**figures["mean"]).text if figures["current"]["mean"] is not None else figures["status"]
        lines.append(f"  {metric:<22} mean {shown}")
    lines.append(f"  throughput (§7.1): {result['throughput']}")
    if result["endpoint_field"] is None:
        lines.append("  per endpoint: none (RUNBOOK_PERFORMANCE__ENDPOINT=none)")
    for row in result["endpoints"]:
        lines.append(f"  {str(row['endpoint'])[:40]:<40} {row['rows']:>8} rows  p50 {Change(**row['p50_ms']).text}  p95 {Change(**row['p95_ms']).text}")
    if result.get("chart"):
        lines.append(f"  chart: {result['chart']} (in the backup store)")
    lines += failure_lines(result["checks"])
    return "\n".join(lines)


def _capacity_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--end", type=parse_time, help="review as of this time (default: now; no offset: RUNBOOK_TIMEZONE)")


def _capacity_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.capacity_review import CapacityReviewParameters

    return {"params": CapacityReviewParameters(end=team_time(args.end))}


def _show_capacity(result: Result) -> str:
    lines = [f"capacity review of {result['instance']} ({result['since']} to {result['until']}): {result['outcome'].upper()}"]
    for metric, review in result["metrics"].items():
        ahead = "; ".join(
            f"{t['value']:g} {t['label']}: {t['status']}" + (f" in {t['days']:.0f} days" if t["status"] == "growing" else "")
            for t in review["thresholds"]
        )
        current = "-" if review["current"] is None else f"{review['current']:,.2f}"
        lines.append(f"  {metric:<26} {current:>10}  {review['status']:<17} {ahead}")
    lines.append(f"  scale-up (§7.2): {result['scale_up']['detail']}")
    for window in result["windows"]:
        lines.append(f"  {window['window']}: {window['detail']}")
    if result.get("chart"):
        lines.append(f"  chart: {result['chart']} (in the backup store)")
    lines += failure_lines(result["checks"])
    return "\n".join(lines)


# --------------------------------------------------------------------------- incident actions (§5.4)


def _action_arguments(p: argparse.ArgumentParser) -> None:
    """What every incident action takes: who, why, and --confirm (the CLI cannot pause
    for a typed approval: without --confirm it only previews)."""
    p.add_argument("--by", required=True, help="who asks for it (kept in the audit)")
    p.add_argument("--reason", required=True, help="why (kept in the audit)")
    p.add_argument("--confirm", action="store_true", help="apply it; without it the preview is shown and nothing is changed")


def _action_parameters(model: str, **extra: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], dict[str, Any]]:
    """The parameters of the action whose model is ``module:Class``: --by, --reason,
    --confirm (preview only without it), and ``extra`` fields read from the arguments."""

    def build(args: argparse.Namespace) -> dict[str, Any]:
        path, name = model.split(":")
        cls = getattr(importlib.import_module(path), name)
        return {"params": cls(by=args.by, reason=args.reason, confirm=args.confirm, preview_only=not args.confirm,
                              **{key: read(args) for key, read in extra.items()})}

    return build


def _kill_switch_arguments(p: argparse.ArgumentParser) -> None:
    _action_arguments(p)
    p.add_argument("--force", action="store_true",
                   help="call the enable switch even though runbook recorded no disable (the reason says why)")


def _action_request(args: argparse.Namespace) -> dict[str, Any]:
    # the CLI cannot pause for a typed approval: without --confirm it only previews
    return {"by": args.by, "reason": args.reason, "confirm": args.confirm, "preview_only": not args.confirm}


def _block_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ip", help="the address or CIDR network, e.g. 93.184.216.34 or 93.184.216.0/24")
    _action_arguments(p)
    length = p.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=positive, help="how long it lasts (default RUNBOOK_SECURITY__BLOCK__DEFAULT_MINUTES)")
    length.add_argument("--permanent", action="store_true", help="no expiry: blocked until unblock-ip")
    p.add_argument("--force", action="store_true", help="block even a private range, the allow-list or your own address")
    p.add_argument("--operator-ip", help="your own address, never blocked without --force (default RUNBOOK_SECURITY__BLOCK__OPERATOR_IP)")


def _block_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.block_ip import BlockParameters

    return {"params": BlockParameters(ip=args.ip, minutes=args.minutes, permanent=args.permanent, force=args.force,
                                      operator_ip=args.operator_ip, **_action_request(args))}


def _unblock_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ip", help="the blocked address or network, as it was blocked")
    _action_arguments(p)


def _unblock_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.unblock_ip import UnblockParameters

    return {"params": UnblockParameters(ip=args.ip, **_action_request(args))}


def _show_action(result: Result) -> str:
    """An incident action's preview in full; then what was done, or that nothing was changed."""
    from runbook.security.actions import Preview

    preview = Preview.model_validate(result["preview"])
    lines = [preview.markdown(), "", f"undo: {preview.undo}" if preview.undo else "this cannot be undone"]
    lines += [f"READ BACK: {p}" for p in result.get("verification") or []]
    said = result.get("detail") or result.get("message")
    if result["outcome"] == "preview":
        lines.append("nothing was changed; add --confirm to apply")
    elif result["outcome"] == "noop":
        lines.append(f"nothing to change: nothing was changed{f' ({said})' if said else ''}")
    else:
        lines.append(str(said or result["outcome"]))
    return "\n".join(lines + failure_lines(result.get("checks", [])))


def _incident_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("title", help="what was detected, in a line")
    p.add_argument("--by", required=True, help="who leads the incident")
    p.add_argument("--severity", required=True, choices=["low", "medium", "high", "critical"], help="assess: how bad")
    p.add_argument("--scope", required=True, help="assess: what is affected")
    p.add_argument("--contain", action="append", default=[], metavar="PHRASE",
                   help="contain: apply the action of this preview phrase, e.g. 'block-ip 93.184.216.34/32' (repeatable; none: "
                        "the previews are shown and nothing is applied)")
    p.add_argument("--root-cause", required=True, help="investigate: the root cause")
    p.add_argument("--lessons", required=True, help="learn: what to change")
    p.add_argument("--findings-hours", type=positive, default=24, help="detect: the watch's findings of this many hours")


def _incident_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.security_incident import IncidentParameters

    # the CLI cannot pause for input: every phase's answer is an argument (the Prefect UI asks instead)
    return {"params": IncidentParameters(title=args.title, by=args.by, severity=args.severity, scope=args.scope,
                                         contain=args.contain, root_cause=args.root_cause, lessons=args.lessons,
                                         findings_hours=args.findings_hours)}


def _show_incident(result: Result) -> str:
    lines = [f"security incident #{result['incident']} ({result['severity']}): {result['scope']}"]
    lines += [f"  offered: {phrase}" for phrase in result["offered"]]
    lines += [f"  {'applied' if a['ok'] else 'FAILED '}: {a['phrase']}: {a['message']}" for a in result["applied"]]
    lines += [f"  refused (not offered): {u}" for u in result["unknown"]]
    lines += [f"  undo when safe: {u}" for u in result["undo"]]
    lines += [f"  [{r['phase']}] {r['entry']}" for r in result["timeline"]]
    return "\n".join(lines)


def _cleanup_arguments(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="only plan and report (the default)")
    mode.add_argument("--apply", action="store_true", help="really delete / flag, in batches")
    p.add_argument("--policy", dest="policies", action="append", default=[], help="run only this policy (repeatable)")
    p.add_argument("--batch-size", type=positive, help="rows per batch (default RUNBOOK_CLEANUP__BATCH_SIZE)")
    p.add_argument(
        "--abandon-unfinished", action="store_true",
        help="abandon the policies' unfinished runs instead of resuming them (reports what they had changed)",
    )


def _cleanup_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.data_cleanup import CleanupParameters

    return {
        "params": CleanupParameters(
            dry_run=not args.apply, policies=args.policies, batch_size=args.batch_size, abandon_unfinished=args.abandon_unfinished
        )
    }


def _show_cleanup(result: Result) -> str:
    lines = []
    for plan in result["plans"]:
        lines.append(f"  {plan['policy']:<20} {plan['action']:<13} {plan['rows']:>12,} rows in {plan['table']} (before {plan['cutoff']})")
        if plan.get("problem"):
            lines.append(f"    CANNOT RUN: {plan['problem']}")
    for entry in result.get("unfinished", []):
        if entry["verdict"] == "abandon":
            verb = "would abandon" if result["dry_run"] else "abandoned"
        else:
            verb = "would resume" if result["dry_run"] else "resumed"
        lines.append(f"  {verb} unfinished run {entry['run_id']} of {entry['policy']} (cutoff {entry['cutoff']}): it had {entry['done']}")
    if result["dry_run"]:
        return "\n".join(["clean-up plan (dry run: add --apply to do it):", *lines])
    done = []
    for r in result["results"]:
        if r["outcome"] == "done":
            done.append(f"  {r['policy']:<20} {r['rows']:>12,} rows in {r['batches']} batches" + (" (resumed)" if r["resumed"] else ""))
        else:
            before = f" ({r['rows']:,} rows in {r['batches']} batches before it stopped)" if r["batches"] else ""
            done.append(f"  {r['policy']:<20} {r['outcome'].upper()}: {r['error']}{before}")
    complete = all(r["outcome"] == "done" for r in result["results"])
    unfinished = [line for line in lines if "unfinished run" in line]
    return "\n".join([*unfinished, "clean-up done:" if complete else "clean-up incomplete:", *done])


def _maintenance_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-vacuum", dest="vacuum", action="store_false", help="report only")
    p.add_argument("--apply", action="store_true", help="create a missing recommended index CONCURRENTLY")


def _maintenance_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.db_maintenance import MaintenanceParameters

    return {"params": MaintenanceParameters(vacuum=args.vacuum, apply=args.apply)}


def _show_maintenance(result: Result) -> str:
    lines = [f"maintenance of {result['database']}: {result['outcome'].upper()}"]
    if result["vacuumed"]:
        lines.append(f"  VACUUM ANALYZE: {', '.join(result['vacuumed'])}")
    for check in result["checks"]:
        lines.append(f"  {'ok  ' if check['ok'] else 'warn'} {check['name']}: {check['detail']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- alerting


def _monitor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-deliver", dest="deliver", action="store_false", help="evaluate and queue only; deliver on the next run")


def _monitor_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.monitor import MonitorParameters

    return {"params": MonitorParameters(deliver=args.deliver)}


def _show_monitor(result: Result) -> str:
    lines = [f"monitor of {result['instance']}: {result['message']}"]
    for alert in result["firing"]:
        held = " (flapping)" if alert["flapping"] else (f" ({alert['suppressed']})" if alert["suppressed"] else "")
        lines.append(f"  FIRING {alert['severity']:<8} {alert['rule']} on {alert['resource']}: {alert['value']}{held}")
    for notice in result["notices"]:
        lines.append(f"  told: {notice['title']}")
    for page in result["pages"]:
        lines.append(f"  paged: incident #{page['incident']} level {page['level']} ({page['name']})")
    for d in result["deliveries"]:
        if not d["ok"]:
            lines.append(f"  NOT DELIVERED on {d['channel']} {d['recipient'] or ''}: {d['detail']} ({d['status']})")
    lines += [f"  NOBODY REACHED: {u}" for u in result["undelivered"]]
    return "\n".join(lines)


def _alert_test_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channel", dest="channels", action="append", default=[], help="test only this channel (repeatable)")


def _alert_test_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.alert_test import AlertTestParameters

    return {"params": AlertTestParameters(channels=args.channels)}


def _show_alert_test(result: Result) -> str:
    return "\n".join(["Production Alert Test:", *check_lines(result["checks"])])


def _ack_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("incident", type=positive, help="the incident's number, as its pages say")
    p.add_argument("--by", required=True, help="who takes it")
    p.add_argument("--note", default="", help="what is being done")


def _ack_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.acknowledge import AckParameters

    return {"params": AckParameters(incident=args.incident, by=args.by, note=args.note)}


def _show_ack(result: Result) -> str:
    return result["detail"]


def _duration(value: str) -> float:
    """30m, 2h, 1d or a number of minutes."""
    units = {"m": 1, "h": 60, "d": 1440}
    text = value.strip().lower()
    try:
        number = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration such as 30m, 2h or 1d") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: a silence must last more than 0 minutes")
    return number


def _silence_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["add", "list", "expire"])
    p.add_argument("silence_id", nargs="?", type=positive, help="expire: the silence's number")
    p.add_argument("--rule", help="add: the rule (or a prefix ending in '*')")
    p.add_argument("--resource", help="add: the resource (or a prefix ending in '*')")
    p.add_argument("--severity", choices=["warning", "critical"], help="add: only this severity")
    p.add_argument("--for", dest="minutes", type=_duration, help="add: how long, e.g. 2h (at most 7 days)")
    p.add_argument("--author", default="", help="add: who silences; expire: who ends it")
    p.add_argument("--reason", default="", help="add: why")
    p.add_argument("--all", dest="include_ended", action="store_true", help="list: ended silences too")


def _silence_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.silence import SilenceParameters

    return {"params": SilenceParameters(
        action=args.action, rule=args.rule, resource=args.resource, severity=args.severity, minutes=args.minutes,
        author=args.author, reason=args.reason, silence_id=args.silence_id, include_ended=args.include_ended,
    )}


def _silence_direct(args: argparse.Namespace) -> Result | None:
    """``silence list`` without a flow run; the other actions change state: a flow run."""
    if args.action != "list":
        return None
    from datetime import timezone

    from runbook.settings import load_settings
    from runbook.target import resolve_target
    from tasks.alerting import load_alerting, silences

    settings = load_settings()
    target = resolve_target(settings) if settings.alerts.state_database_url is None else None
    alerting = load_alerting(settings, target, need_chain=False)
    return silences(alerting, "list", datetime.now(timezone.utc), include_ended=args.include_ended)


def _show_silence(result: Result) -> str:
    if "silences" not in result:
        return result["detail"]
    lines = [result["detail"]]
    for s in result["silences"]:
        ended = f", ended by {s['expired_by']}" if s.get("expired_by") else ""
        lines.append(f"  #{s['id']} {s['matchers']} until {s['ends_at']} by {s['author']}: {s['reason']}{ended}")
    return "\n".join(lines)


def _notify_failure_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--signal", choices=["flow-run", "backup-missing"], default="flow-run")
    p.add_argument("--flow-run-id", help="flow-run: the run that failed")


def _notify_failure_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.notify_failure import FailureParameters

    return {"params": FailureParameters(signal=args.signal, flow_run_id=args.flow_run_id)}


def _show_notify_failure(result: Result) -> str:
    return result["message"]


# --------------------------------------------------------------------------- logs


def _log_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hours", type=positive, default=24, help="the window: this many hours back (default 24)")
    p.add_argument("--end", type=parse_time, help="end of the window (default: now; no offset: RUNBOOK_TIMEZONE)")
    p.add_argument("--top", type=positive, help="error groups shown (default RUNBOOK_LOGS__TOP, 10)")


def _log_report_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.log_report import LogReportParameters

    return {"params": LogReportParameters(hours=args.hours, end=team_time(args.end), top=args.top)}


def _show_log_report(result: Result) -> str:
    levels = ", ".join(f"{level} {rows}" for level, rows in result["levels"].items()) or "no rows"
    lines = [
        f"log report of {result['table']} from {result['start']} to {result['end']}: {result['outcome'].upper()}",
        f"  {result['rows']} rows ({levels}); {result['errors']} errors ({result['error_pct']:.1f} %)",
    ]
    times = result["response_time"]
    if times is None:
        lines.append("  response time: not recorded (RUNBOOK_LOGS__RESPONSE_TIME=none)")
    elif times["rows"]:
        lines.append(
            f"  {result['fields']['response_time']}: p50 {times['p50']:.0f}  p90 {times['p90']:.0f}  p95 {times['p95']:.0f}  "
            f"p99 {times['p99']:.0f}  max {times['max']:.0f}  over {times['rows']} rows"
            + (f" ({times['without'] + times['not_numbers']} without a number left out)" if times["without"] or times["not_numbers"] else "")
        )
    if result["error_groups"]:
        lines.append(f"  errors by action and message (top {len(result['error_groups'])} of {result['group_count']}):")
        for group in result["error_groups"]:
            lines.append(f"    {group['rows']:>7}  {group['action']:<20} {group['message'][:100]}  (last {group['last_seen']})")
    lines += failure_lines(result["checks"])
    return "\n".join(lines)


# --------------------------------------------------------------------------- incident actions (§5.4)


def _sessions_arguments(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every active session")
    which.add_argument("--user", help="one user's sessions (the value of RUNBOOK_SECURITY__SESSIONS__USER_COLUMN)")
    which.add_argument("--ip", help="the sessions of an address or a CIDR network")
    _action_arguments(p)


def _sessions_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.invalidate_sessions import InvalidateSessionsParameters

    scope = "all" if args.all else ("user" if args.user is not None else "ip")
    return {"params": InvalidateSessionsParameters(scope=scope, user=args.user, ip=args.ip, **_action_request(args))}


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=parse_time, required=True, help="start of the range, included (no offset: RUNBOOK_TIMEZONE)")
    p.add_argument("--until", type=parse_time, required=True, help="end of the range, excluded; not in the future")
    p.add_argument("--source", dest="sources", action="append", default=[],
                   help="only this source of RUNBOOK_SECURITY__LOG_EXPORT__SOURCES (repeatable; default: all)")
    _action_arguments(p)


def _export_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.export_security_logs import ExportSecurityLogsParameters

    return {"params": ExportSecurityLogsParameters(since=team_time(args.since), until=team_time(args.until), sources=args.sources,
                                                   **_action_request(args))}


# --------------------------------------------------------------------------- the operations calendar (§4, §8)


def _answer(value: str) -> tuple[str, str]:
    from runbook.calendar import Answer

    text, sep, answer = value.rpartition("=")
    choices = [a.value for a in Answer]
    if not sep or not text.strip() or answer.strip() not in choices:
        raise argparse.ArgumentTypeError(f"{value!r}: expected ITEM=ANSWER, ANSWER one of {', '.join(choices)}")
    return text.strip(), answer.strip()


def _period_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answer", dest="answers", action="append", type=_answer, default=[], metavar="ITEM=ANSWER",
                   help='a checklist item only a person answers, e.g. "cost review=done" (repeatable; '
                   "the CLI cannot pause: an item not given is recorded not confirmed)")
    p.add_argument("--by", dest="answered_by", help="who gives the answers (required with --answer)")


def _period_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.periods import PeriodParameters

    return {"params": PeriodParameters(answers=dict(args.answers), answered_by=args.answered_by, ask_people=False)}


def _checklist_lines(lines: list[dict[str, Any]]) -> list[str]:
    marks = {"done": "[x]", "not done": "[ ]", "not confirmed": "[?]", "not applicable": "[-]"}
    return [f"  {marks.get(l['tick'], '[ ]')} {l['text']}: {l['tick']}" + (f" ({l['by']})" if l.get("by") else "")
            + (f": {l['reason']}" if l.get("reason") else "") for l in lines]


def _show_period(result: Result) -> str:
    lines = [f"{result['period']} maintenance of {result['instance']}: {result['outcome'].upper()}"]
    lines += [f"  {o['name']:<20} {o['status']:<15} {o['message']}" for o in result["items"]]
    lines.append("checklist:")
    return "\n".join(lines + _checklist_lines(result["checklist"]))


def _checklist_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--period", choices=["daily", "weekly", "monthly"], default="daily", help="default: daily")


def _checklist_parameters(args: argparse.Namespace) -> dict[str, Any]:
    from flows.checklist import ChecklistParameters, PeriodName

    return {"params": ChecklistParameters(period=PeriodName(args.period))}


def _checklist_direct(args: argparse.Namespace) -> Result:
    """The latest checklist read directly from its history: no flow run."""
    from flows.checklist import latest

    return latest(args.period)


def _show_checklist(result: Result) -> str:
    head = f"{result['period']} checklist of {result['instance']}, {result['at']}: {result['outcome'].upper()}"
    return "\n".join([head, *_checklist_lines(result["checklist"])])


# --------------------------------------------------------------------------- the registry

PROCEDURES: dict[str, Procedure] = {
    p.name: p
    for p in [
        Procedure("backup", "flows/backup.py:backup", "back up the database (§6.1)",
                  _backup_arguments, _backup_parameters, _show_backup),
        Procedure("backup-verify", "flows/backup_verify.py:backup_verify", "verify a backup (§6.2)",
                  _verify_arguments, _verify_parameters, _show_verify),
        Procedure("backup-list", "flows/backup_list.py:backup_list", "list the backups", show=_show_list, direct=_list_direct),
        Procedure("backup-prune", "flows/backup_prune.py:backup_prune", "apply backup retention (dry run unless --apply)",
                  _prune_arguments, _prune_parameters, _show_prune),
        Procedure("dr-drill", "flows/disaster_recovery.py:disaster_recovery", "disaster-recovery drill into a scratch database (§6.4)",
                  _drill_arguments, _drill_parameters, _show_dr, mode={"mode": "drill"}),
        Procedure("disaster-recovery", "flows/disaster_recovery.py:disaster_recovery", "recover into RUNBOOK_RECOVERY_DATABASE_URL (§6.4)",
                  _recovery_arguments, _recovery_parameters, _show_dr, mode={"mode": "recover"}),
        Procedure("deploy-verify", "flows/deploy_verify.py:deploy_verify", "verify a deploy; roll back a bad production deploy (§1.4-1.5)",
                  _deploy_verify_arguments, _deploy_verify_parameters, _show_deploy_verify),
        Procedure("predeploy-check", "flows/predeploy_check.py:predeploy_check", "secrets and gate commands before a deploy (§1.1-1.3)",
                  _predeploy_arguments, _predeploy_parameters, _show_predeploy),
        Procedure("diagnose", "flows/diagnose.py:diagnose", "the troubleshooting steps of §3",
                  _diagnose_arguments, _diagnose_parameters, _show_diagnose),
        Procedure("cert-check", "flows/cert_check.py:cert_check", "TLS certificates: expiry, chain, hostname (§4.3)",
                  _cert_arguments, _cert_parameters, _show_cert),
        Procedure("security-watch", "flows/security_watch.py:security_watch",
                  "security watch: brute force, credential stuffing, API abuse, CRITICAL events, spikes (§5.1)",
                  _watch_arguments, _watch_parameters, _show_watch),
        Procedure("security-incident", "flows/security_incident.py:security_incident",
                  "security incident (§5.3): detect, assess, contain, investigate, recover, learn; a timeline",
                  _incident_arguments, _incident_parameters, _show_incident),
        Procedure("security-scan", "flows/security_scan.py:security_scan", "dependency vulnerability scan: pip-audit, npm audit (§5.2, §3.5)",
                  _scan_arguments, _scan_parameters, _show_scan),
        Procedure("restrict-db-access", "flows/restrict_db_access.py:restrict_db_access",
                  "take CONNECT and/or LOGIN from the application roles, end their sessions (§5.4; preview unless --confirm)",
                  _action_arguments, _action_parameters("flows.restrict_db_access:RestrictDbAccessParameters"), _show_action),
        Procedure("restore-db-access", "flows/restore_db_access.py:restore_db_access",
                  "put back the access restrict-db-access took, exactly as recorded (preview unless --confirm)",
                  _action_arguments, _action_parameters("flows.restore_db_access:RestoreDbAccessParameters"), _show_action),
        Procedure("emergency-api-disable", "flows/emergency_api_disable.py:emergency_api_disable",
                  "turn every API off with the configured kill switch (§5.4; preview unless --confirm)",
                  _action_arguments, _action_parameters("flows.emergency_api_disable:ApiDisableParameters"), _show_action),
        Procedure("api-enable", "flows/api_enable.py:api_enable",
                  "turn the APIs on again after emergency-api-disable (preview unless --confirm)",
                  _kill_switch_arguments, _action_parameters("flows.api_enable:ApiEnableParameters", force=lambda a: a.force),
                  _show_action),
        Procedure("block-ip", "flows/block_ip.py:block_ip", "block an address or network: blocklist table and Cloudflare (§5.4)",
                  _block_arguments, _block_parameters, _show_action),
        Procedure("unblock-ip", "flows/unblock_ip.py:unblock_ip", "lift the block of an address or network (§5.4)",
                  _unblock_arguments, _unblock_parameters, _show_action),
        Procedure("data-cleanup", "flows/data_cleanup.py:data_cleanup", "the retention rules of §4.5 (dry run unless --apply)",
                  _cleanup_arguments, _cleanup_parameters, _show_cleanup, progress=True),
        Procedure("db-maintenance", "flows/db_maintenance.py:db_maintenance", "VACUUM ANALYZE and the index/settings report (§4.4, §7.4)",
                  _maintenance_arguments, _maintenance_parameters, _show_maintenance),
        Procedure("monitor", "flows/monitor.py:monitor", "collect the signals, evaluate the alert rules, notify, escalate (§2, §7, §9)",
                  _monitor_arguments, _monitor_parameters, _show_monitor),
        Procedure("alert-test", "flows/alert_test.py:alert_test", 'send "Production Alert Test" through every configured channel (§2.3)',
                  _alert_test_arguments, _alert_test_parameters, _show_alert_test),
        Procedure("acknowledge", "flows/acknowledge.py:acknowledge", "acknowledge an incident: its pages stop (§9)",
                  _ack_arguments, _ack_parameters, _show_ack, aliases=("ack",)),
        Procedure("silence", "flows/silence.py:silence", "add, list or expire a silence (at most 7 days, audited)",
                  _silence_arguments, _silence_parameters, _show_silence, direct=_silence_direct),
        Procedure("notify-failure", "flows/notify_failure.py:notify_failure", "what the automations run when a flow run fails",
                  _notify_failure_arguments, _notify_failure_parameters, _show_notify_failure),

        Procedure("invalidate-sessions", "flows/invalidate_sessions.py:invalidate_sessions",
                  "end active sessions: all, by user or by IP (§5.4); cannot be undone; preview unless --confirm",
                  _sessions_arguments, _sessions_parameters, _show_action, progress=True),
        Procedure("export-security-logs", "flows/export_security_logs.py:export_security_logs",
                  "export the security logs of a time range to the backup store, with sha256 and row counts (§5.4)",
                  _export_arguments, _export_parameters, _show_action, progress=True),
        Procedure("log-report", "flows/log_report.py:log_report", "errors, levels and response times in system_logs (§2.4-2.5, §8)",
                  _log_report_arguments, _log_report_parameters, _show_log_report),
        Procedure("daily-maintenance", "flows/daily_maintenance.py:daily_maintenance",
                  "the daily procedures of §4.1 as subflows and the daily checklist of §8",
                  _period_arguments, _period_parameters, _show_period),
        Procedure("weekly-maintenance", "flows/weekly_maintenance.py:weekly_maintenance",
                  "the weekly procedures of §4.2 as subflows and the weekly checklist of §8",
                  _period_arguments, _period_parameters, _show_period),
        Procedure("monthly-maintenance", "flows/monthly_maintenance.py:monthly_maintenance",
                  "the monthly procedures of §4.3 as subflows and the monthly checklist of §8",
                  _period_arguments, _period_parameters, _show_period),
        Procedure("checklist", "flows/checklist.py:checklist", "the latest daily, weekly or monthly checklist (§8)",
                  _checklist_arguments, _checklist_parameters, _show_checklist, direct=_checklist_direct),
        Procedure("performance-report", "flows/performance_report.py:performance_report",
                  "p50/p95, error rate and req/s of a day/week/month against the previous, per endpoint (§4.1, §8, §7.1)",
                  _performance_arguments, _performance_parameters, _show_performance),
        Procedure("capacity-review", "flows/capacity_review.py:capacity_review",
                  "capacity-plan review: trends, days to the §7.1-7.2 thresholds, scale-up, RPO/RTO at the projected size (§7, §4.3)",
                  _capacity_arguments, _capacity_parameters, _show_capacity),
    ]
}
