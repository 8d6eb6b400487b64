"""``runbook <procedure> [options]``: run a procedure as a real Prefect flow run.

Exit codes: 0 success; 1 the procedure ran and found a problem; 2 bad input or
configuration, detected before anything was touched (one message, no traceback).
``--json`` prints the flow's result as one JSON object on stdout and nothing else there.
With ``PREFECT_API_URL`` set the run is recorded on that server; otherwise Prefect's
ephemeral mode is used.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from runbook.errors import ConfigError

EXIT_OK, EXIT_PROBLEM, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too, with our wording
        raise UsageError(f"{self.prog}: {message}")


def _parse_time(value: str) -> datetime:
    """An ISO time; one without an offset stays naive here and is read in the team's
    timezone (RUNBOOK_TIMEZONE) once the settings are loaded (``_team_time``)."""
    from runbook.times import parse_time

    try:
        return parse_time(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _team_time(moment: datetime | None) -> datetime | None:
    """A time from the command line, without an offset read in the team's timezone."""
    from runbook.settings import load_settings
    from runbook.times import maybe_team_time

    return maybe_team_time(moment, load_settings().timezone)


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {number}")
    return number


def _positive_minutes(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of minutes") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0 minutes, not {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    # --json may come before or after the procedure; the subcommands' copy must not
    # overwrite the top-level value with its default, hence SUPPRESS there.
    parser = _Parser(prog="runbook", description="The platform's operations guide as Prefect flows.")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    parser.add_argument("--sandbox", action="store_true", help="work on the embedded sandbox, not the platform (RUNBOOK_SANDBOX=true)")
    common = _Parser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the result as one JSON object on stdout"
    )
    common.add_argument("--sandbox", action="store_true", default=argparse.SUPPRESS, help="work on the embedded sandbox")
    sub = parser.add_subparsers(dest="procedure", metavar="<procedure>", parser_class=_Parser)

    p = sub.add_parser("backup", parents=[common], help="back up the database (§6.1)")
    p.add_argument("--fingerprint", action=argparse.BooleanOptionalAction, default=None, help="record content fingerprints")
    p.add_argument("--no-prune", dest="prune", action="store_false", help="skip retention after the backup")
    p.add_argument("--prune-dry-run", action="store_true", help="only report what retention would remove")

    p = sub.add_parser("backup-verify", parents=[common], help="verify a backup (§6.2)")
    p.add_argument("--backup-id", help="the backup to verify (default: the latest DONE)")
    p.add_argument("--at", type=_parse_time, help="verify the latest DONE backup at or before this time (no offset: RUNBOOK_TIMEZONE)")
    p.add_argument("--deep", action="store_true", help="also compare content fingerprints")

    sub.add_parser("backup-list", parents=[common], help="list the backups")

    p = sub.add_parser("backup-prune", parents=[common], help="apply backup retention (dry run unless --apply)")
    p.add_argument("--apply", action="store_true", help="really delete what the plan marks")

    p = sub.add_parser("sandbox", parents=[common], help="the local stand-in of the platform")
    p.add_argument("action", choices=["up", "seed", "down", "status"])
    p.add_argument("--scale", type=_positive, default=1, help="data set size for seed (1 is about 40 MB)")

    dr_common = _Parser(add_help=False)
    dr_common.add_argument("--backup-id", help="the backup to restore (default: the latest DONE)")
    dr_common.add_argument("--at", type=_parse_time, help="restore the latest DONE backup at or before this time (no offset: RUNBOOK_TIMEZONE)")
    dr_common.add_argument("--rto-minutes", type=_positive_minutes, default=240.0, help="RTO target (default 240, §6.3)")
    dr_common.add_argument("--rpo-minutes", type=_positive_minutes, default=60.0, help="RPO target (default 60, §6.3)")

    p = sub.add_parser("dr-drill", parents=[common, dr_common], help="disaster-recovery drill into a scratch database (§6.4)")
    p.add_argument("--keep-restored", action="store_true", help="keep the scratch database afterwards")

    p = sub.add_parser("disaster-recovery", parents=[common, dr_common], help="recover into RUNBOOK_RECOVERY_DATABASE_URL (§6.4)")
    p.add_argument("--confirm", metavar="DATABASE", help="the recovery target's database name, typed to confirm (required)")
    p.add_argument("--replace", action="store_true", help="move a non-empty target aside (renamed, kept) and restore into a new one")
    p.add_argument("--incident-at", type=_parse_time, help="when the incident began (no offset: RUNBOOK_TIMEZONE; default: now)")

    p = sub.add_parser("deploy-verify", parents=[common], help="verify a deploy; roll back a bad production deploy (§1.4-1.5)")
    p.add_argument("--env", dest="environment", choices=["staging", "production"], default="staging", help="default: staging")
    p.add_argument("--base-url", help="the platform's base URL (default: RUNBOOK_PLATFORM_URL)")
    p.add_argument("--expected-version", help="the version the deploy should serve")
    p.add_argument("--samples", type=_positive, help="requests per endpoint (default: RUNBOOK_DEPLOY__SAMPLES, 5)")
    p.add_argument("--no-rollback", dest="rollback", action="store_false", help="report only, even in production")

    p = sub.add_parser("predeploy-check", parents=[common], help="secrets and gate commands before a deploy (§1.1-1.3)")
    p.add_argument("--deploy", action="store_true", help="then deploy staging, verify, production, verify")

    p = sub.add_parser("diagnose", parents=[common], help="the troubleshooting steps of §3")
    p.add_argument("--component", choices=["api", "database", "external-apis", "payments", "ai", "all"], default="all")

    p = sub.add_parser("cert-check", parents=[common], help="TLS certificates: expiry, chain, hostname (§4.3)")
    p.add_argument("--host", dest="hosts", action="append", default=[], help="host or host:port (repeatable; default RUNBOOK_CERTS__HOSTS)")
    p.add_argument("--no-renew", dest="renew", action="store_false", help="report only, even when a certificate is due")

    p = sub.add_parser("data-cleanup", parents=[common], help="the retention rules of §4.5 (dry run unless --apply)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="only plan and report (the default)")
    mode.add_argument("--apply", action="store_true", help="really delete / flag, in batches")
    p.add_argument("--policy", dest="policies", action="append", default=[], help="run only this policy (repeatable)")
    p.add_argument("--batch-size", type=_positive, help="rows per batch (default RUNBOOK_CLEANUP__BATCH_SIZE)")
    p.add_argument(
        "--abandon-unfinished", action="store_true",
        help="abandon the policies' unfinished runs instead of resuming them (reports what they had changed)",
    )

    p = sub.add_parser("db-maintenance", parents=[common], help="VACUUM ANALYZE and the index/settings report (§4.4, §7.4)")
    p.add_argument("--no-vacuum", dest="vacuum", action="store_false", help="report only")
    p.add_argument("--apply", action="store_true", help="create a missing recommended index CONCURRENTLY")

    sub.add_parser("demo", parents=[common], help="sandbox up, seed, backup, backup-verify, print the report")
    return parser


# --------------------------------------------------------------------------- running flows


def _run_flow(flow_fn: Callable[..., Any], **kwargs: Any) -> tuple[bool, Any]:
    """Run a flow and return (completed, result or exception)."""
    state = flow_fn(**kwargs, return_state=True)
    try:
        result = state.result(raise_on_failure=False)
    except BaseException as err:  # noqa: BLE001 - a crashed run has no result
        result = err
    return state.is_completed(), result


def _procedure(name: str, args: argparse.Namespace) -> tuple[bool, Any]:
    if name == "backup":
        from flows.backup import BackupParameters, backup

        params = BackupParameters(fingerprint=args.fingerprint, prune=args.prune, prune_dry_run=args.prune_dry_run)
        return _run_flow(backup, params=params)
    if name == "backup-verify":
        from flows.backup_verify import VerifyParameters, backup_verify

        params = VerifyParameters(backup_id=args.backup_id, at=_team_time(args.at), deep=args.deep)
        return _run_flow(backup_verify, params=params)
    if name == "backup-list":
        from flows.backup_list import backup_list

        return _run_flow(backup_list)
    if name == "backup-prune":
        from flows.backup_prune import PruneParameters, backup_prune

        return _run_flow(backup_prune, params=PruneParameters(dry_run=not args.apply))
    if name in ("dr-drill", "disaster-recovery"):
        from flows.disaster_recovery import DrParameters, Mode, disaster_recovery

        common = dict(backup_id=args.backup_id, at=_team_time(args.at), rto_target_minutes=args.rto_minutes, rpo_target_minutes=args.rpo_minutes)
        if name == "dr-drill":
            params = DrParameters(mode=Mode.DRILL, keep_restored=args.keep_restored, **common)
        else:
            if not args.confirm:
                raise ConfigError(
                    "a recovery needs --confirm <database>: the name of the database in RUNBOOK_RECOVERY_DATABASE_URL "
                    "(from the Prefect UI, the run pauses and asks instead)"
                )
            params = DrParameters(
                mode=Mode.RECOVER, confirm=args.confirm, replace=args.replace, incident_at=_team_time(args.incident_at), **common
            )
        return _run_flow(disaster_recovery, params=params)
    if name == "deploy-verify":
        from flows.deploy_verify import DeployVerifyParameters, deploy_verify

        params = DeployVerifyParameters(
            environment=args.environment, base_url=args.base_url, expected_version=args.expected_version,
            samples=args.samples, rollback=args.rollback,
        )
        return _run_flow(deploy_verify, params=params)
    if name == "predeploy-check":
        from flows.predeploy_check import PredeployParameters, predeploy_check

        return _run_flow(predeploy_check, params=PredeployParameters(deploy=args.deploy))
    if name == "diagnose":
        from flows.diagnose import Component, DiagnoseParameters, diagnose

        return _run_flow(diagnose, params=DiagnoseParameters(component=Component(args.component)))
    if name == "cert-check":
        from flows.cert_check import CertParameters, cert_check

        return _run_flow(cert_check, params=CertParameters(hosts=args.hosts, renew=args.renew))
    if name == "data-cleanup":
        from flows.data_cleanup import CleanupParameters, data_cleanup

        from runbook import progress

        params = CleanupParameters(
            dry_run=not args.apply, policies=args.policies, batch_size=args.batch_size, abandon_unfinished=args.abandon_unfinished
        )
        stop_listening = progress.listen(progress.Bar(sys.stderr))
        try:
            return _run_flow(data_cleanup, params=params)
        finally:
            stop_listening()
    if name == "db-maintenance":
        from flows.db_maintenance import MaintenanceParameters, db_maintenance

        return _run_flow(db_maintenance, params=MaintenanceParameters(vacuum=args.vacuum, apply=args.apply))
    raise UsageError(f"unknown procedure {name!r}")


def _sandbox(args: argparse.Namespace) -> dict[str, Any]:
    from runbook.settings import load_settings
    from sandbox.platform import Sandbox

    settings = load_settings()
    box = Sandbox(settings.home)
    if args.action == "up":
        box.up()
        return {"sandbox": "up", "home": str(box.home.resolve()), "store": str(box.store)}
    if args.action == "seed":
        counts = box.seed(args.scale)
        return {"sandbox": "seeded", "scale": args.scale, "rows": counts}
    if args.action == "down":
        return {"sandbox": "down" if box.down() else "was not running"}
    return {"sandbox": "running" if box.is_running() else "stopped", "home": str(box.home.resolve()), "data": box.describe()}


# --------------------------------------------------------------------------- output


def _human(name: str, result: Any) -> str:
    if not isinstance(result, dict):
        return str(result)
    if name == "backup":
        line = f"backup {result['backup_id']} {result['status']}: {result['size_bytes']:,} bytes in {result['seconds']} s, sha256 {result['sha256']}"
        retention = result.get("retention")
        if retention:
            verb = "would remove" if retention["dry_run"] else "removed"
            line += f"\nretention {verb} {len(retention['removed'])} backup(s), kept {retention['kept']}"
        return line
    if name == "backup-verify":
        lines = [f"verification of {result['backup_id']} ({result['database']}): {result['outcome'].upper()}"]
        lines += _check_lines(result["checks"])
        return "\n".join(lines)
    if name == "backup-list":
        rows = result["backups"]
        if not rows:
            return f"no backups of {result['database']} in {result['store']}"
        lines = [f"{'id':<24} {'time':<26} {'size':>10} {'status':<8} {'age':>8}  verified"]
        for row in rows:
            line = f"{row['id']:<24} {row['time']:<26} {row['size']:>10} {row['status']:<8} {row['age']:>8}  {row['verified']}"
            lines.append(line + (f"  ({row['error']})" if row.get("error") else ""))
        return "\n".join(lines)
    if name == "backup-prune":
        verb = "would remove" if result["dry_run"] else "removed"
        orphans = f"; {verb} {len(result['orphans'])} object(s) without a manifest" if result.get("orphans") else ""
        return f"retention {verb}: {', '.join(result['removed']) or 'nothing'} (kept {result['kept']}){orphans}" + (
            "\n(dry run: add --apply to delete)" if result["dry_run"] else ""
        )
    if name in ("dr-drill", "disaster-recovery"):
        lines = [f"{result['mode']} of {result['database']} from {result['backup_id']} into {result['restored_into']}: {result['outcome'].upper()}"]
        for number, phase in enumerate(result["phases"], 1):
            lines.append(f"  {number}. {phase['name']:<17} {phase['status']:<8} {result['phase_seconds'][phase['name']]:>8.1f} s  {phase['detail']}")
        for check in result["checks"]:
            if not check["ok"]:
                lines.append(f"  {'FAIL' if check['critical'] else 'warn'} {check['name']}: {check['detail']}")
        lines.append(f"  {result['rpo']['message']}")
        lines.append(f"  {result['rto']['message']}" if result.get("rto") else "  RTO not achieved: the phases did not finish")
        return "\n".join(lines)
    if name == "deploy-verify":
        lines = [f"deploy verification ({result['environment']}, {result['base_url']}): {result['outcome'].upper()}"]
        for row in result["rounds"][0]["endpoints"]:
            lines.append(f"  {row['path']:<28} p50 {row['p50_ms']:>7.1f} ms  p95 {row['p95_ms']:>7.1f} ms  {row['statuses']}")
        for check in result["checks"]:
            if not check["ok"]:
                lines.append(f"  {'FAIL' if check['critical'] else 'warn'} {check['name']}: {check['detail']}")
        rollback = result["rollback"]
        if rollback.get("done"):
            lines.append(f"  rolled back ({rollback['result']}); verification after it: {rollback.get('verified')}")
        elif rollback.get("error"):
            lines.append(f"  ROLLBACK FAILED: {rollback['error']}")
        return "\n".join(lines)
    if name == "diagnose":
        lines = [f"diagnosis: {result['outcome'].upper()}"]
        for component, verdict in result["components"].items():
            lines.append(f"  {component}: {verdict}")
            for check in result["checks"]:
                if not check["ok"] and check["name"].split(":", 1)[0] in _CHECK_PREFIXES.get(component, (component,)):
                    lines.append(f"    {'FAIL' if check['critical'] else 'warn'} {check['name']}: {check['detail']}")
            if component in result["advice"]:
                lines.append(f"    next: {result['advice'][component]}")
        return "\n".join(lines)
    if name == "data-cleanup":
        lines = []
        for plan in result["plans"]:
            lines.append(f"  {plan['policy']:<20} {plan['action']:<13} {plan['rows']:>12,} rows in {plan['table']} (before {plan['cutoff']})")
            if plan.get("problem"):
                lines.append(f"    CANNOT RUN: {plan['problem']}")
        for entry in result.get("unfinished", []):
            verb = ("would abandon" if result["dry_run"] else "abandoned") if entry["verdict"] == "abandon" else ("would resume" if result["dry_run"] else "resumed")
            lines.append(f"  {verb} unfinished run {entry['run_id']} of {entry['policy']} (cutoff {entry['cutoff']}): it had {entry['done']}")
        if result["dry_run"]:
            return "\n".join(["clean-up plan (dry run: add --apply to do it):", *lines])
        done = []
        for r in result["results"]:
            if r["outcome"] == "done":
                done.append(f"  {r['policy']:<20} {r['rows']:>12,} rows in {r['batches']} batches" + (" (resumed)" if r["resumed"] else ""))
            else:
                done.append(f"  {r['policy']:<20} {r['outcome'].upper()}: {r['error']}" + (f" ({r['rows']:,} rows in {r['batches']} batches before it stopped)" if r["batches"] else ""))
        complete = all(r["outcome"] == "done" for r in result["results"])
        return "\n".join([*[line for line in lines if "unfinished run" in line], "clean-up done:" if complete else "clean-up incomplete:", *done])
    if name == "db-maintenance":
        lines = [f"maintenance of {result['database']}: {result['outcome'].upper()}"]
        if result["vacuumed"]:
            lines.append(f"  VACUUM ANALYZE: {', '.join(result['vacuumed'])}")
        for check in result["checks"]:
            lines.append(f"  {'ok  ' if check['ok'] else 'warn'} {check['name']}: {check['detail']}")
        return "\n".join(lines)
    if name == "cert-check":
        lines = [f"certificates: {result['outcome'].upper()}"]
        for row in result["certificates"]:
            lines.append(f"  {row['host']:<32} expires {row['expires']:<22} {row['days_left']} days  chain {row['chain']}  hostname {row['hostname']}")
        for check in result["checks"]:
            if not check["ok"]:
                lines.append(f"  {'FAIL' if check['critical'] else 'warn'} {check['name']}: {check['detail']}")
        return "\n".join(lines)
    if name == "predeploy-check":
        lines = [f"pre-deploy check: {result['outcome'].upper()}"]
        lines += _check_lines(result["checks"])
        return "\n".join(lines)
    return json.dumps(result, indent=2, default=str)


def _check_lines(checks: list[dict[str, Any]]) -> list[str]:
    """One line a check: ok, FAIL (critical) or warn, its name and detail."""
    return [f"  {'ok  ' if c['ok'] else ('FAIL' if c['critical'] else 'warn')} {c['name']}: {c['detail']}" for c in checks]


_CHECK_PREFIXES = {  # which checks belong to which component of diagnose
    "api": ("api", "status", "shape", "latency", "cache", "version"),
    "external-apis": ("external-apis", "coinmarketcap", "coingecko"),
    "payments": ("payments", "stripe"),
    "ai": ("ai", "openai", "anthropic"),
}


def _fail_message(result: Any) -> str:
    if isinstance(result, BaseException):
        text = str(result).strip()
        return text.splitlines()[0] if text else type(result).__name__
    if isinstance(result, dict) and result.get("message"):
        return str(result["message"])
    if isinstance(result, dict) and result.get("failed"):
        return "failed checks: " + ", ".join(result["failed"])
    return "the procedure failed"


def _install_signal_handlers() -> None:
    def stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        print(f"runbook: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.procedure:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    as_json = args.json
    _install_signal_handlers()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Without PREFECT_API_URL, Prefect starts a temporary server; its first start on a
    # new machine (database migrations, no bytecode cache) can exceed the 20 s default.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

    def emit(payload: Any, code: int) -> int:
        if as_json:
            sys.stdout.write(json.dumps(payload, default=str) + "\n")
        return code

    # The sandbox only when asked for: the flag (or demo) reaches the flows, which read
    # their settings themselves, as RUNBOOK_SANDBOX for this process only.
    sandbox_before = os.environ.get("RUNBOOK_SANDBOX")
    if args.sandbox or args.procedure == "demo":
        os.environ["RUNBOOK_SANDBOX"] = "true"
    try:
        return _main(args, as_json, emit)
    finally:
        if sandbox_before is None:
            os.environ.pop("RUNBOOK_SANDBOX", None)
        else:
            os.environ["RUNBOOK_SANDBOX"] = sandbox_before


def _main(args: argparse.Namespace, as_json: bool, emit: Callable[[Any, int], int]) -> int:
    try:
        from runbook.settings import load_settings

        load_settings()  # bad settings exit 2 before any flow run starts
        if args.procedure == "sandbox":
            payload = _sandbox(args)
            if not as_json:
                print(json.dumps(payload, indent=2, default=str))
            return emit(payload, EXIT_OK)
        if args.procedure == "demo":
            return _demo(as_json)
        completed, result = _procedure(args.procedure, args)
    except (ConfigError, ValidationError) as err:
        message = str(err).splitlines()[0] if isinstance(err, ConfigError) else _validation_message(err)
        print(f"runbook: {message}", file=sys.stderr)
        return emit({"error": message, "exit_code": EXIT_BAD_INPUT}, EXIT_BAD_INPUT)
    except KeyboardInterrupt as err:
        print(f"runbook: interrupted ({err})", file=sys.stderr)
        return 130

    if completed:
        if not as_json:
            print(_human(args.procedure, result))
        return emit(result, EXIT_OK)
    if isinstance(result, ConfigError):
        print(f"runbook: {_fail_message(result)}", file=sys.stderr)
        return emit({"error": _fail_message(result), "exit_code": EXIT_BAD_INPUT}, EXIT_BAD_INPUT)
    if isinstance(result, dict):
        if not as_json:
            print(_human(args.procedure, result))
        print(f"runbook: {args.procedure} failed: {_fail_message(result)}", file=sys.stderr)
        return emit(result, EXIT_PROBLEM)
    print(f"runbook: {args.procedure} failed: {_fail_message(result)}", file=sys.stderr)
    return emit({"error": _fail_message(result), "exit_code": EXIT_PROBLEM}, EXIT_PROBLEM)


def _validation_message(err: ValidationError) -> str:
    problem = err.errors()[0]
    return f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}"


def _demo(as_json: bool) -> int:
    """The README's first command: a sandbox with data, one backup, its verification, a DR drill."""
    from runbook.settings import load_settings
    from sandbox.platform import Sandbox

    settings = load_settings()
    box = Sandbox(settings.home)
    if box.describe() is None:
        counts = box.seed(1)
        if not as_json:
            print(f"sandbox seeded under {Path(settings.home).resolve()}: {counts}", file=sys.stderr)
    args = argparse.Namespace(fingerprint=True, prune=True, prune_dry_run=False)
    completed, backup_result = _procedure("backup", args)
    if isinstance(backup_result, ConfigError):
        raise backup_result  # exit 2, e.g. a DSN set beside the sandbox
    if not completed:
        print(f"runbook: backup failed: {_fail_message(backup_result)}", file=sys.stderr)
        return EXIT_PROBLEM
    if not as_json:
        print(_human("backup", backup_result))
    verify_args = argparse.Namespace(backup_id=backup_result["backup_id"], at=None, deep=True)
    verified, verify_result = _procedure("backup-verify", verify_args)
    if not as_json:
        print(_human("backup-verify", verify_result))
    drill_args = argparse.Namespace(
        backup_id=backup_result["backup_id"], at=None, rto_minutes=240.0, rpo_minutes=60.0, keep_restored=False
    )
    drilled, drill_result = _procedure("dr-drill", drill_args)
    if as_json:
        sys.stdout.write(
            json.dumps({"backup": backup_result, "verification": verify_result, "drill": drill_result}, default=str) + "\n"
        )
    else:
        print(_human("dr-drill", drill_result) if isinstance(drill_result, dict) else f"drill: {_fail_message(drill_result)}")
    return EXIT_OK if verified and drilled else EXIT_PROBLEM


if __name__ == "__main__":
    raise SystemExit(main())
