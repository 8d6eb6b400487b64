"""``runbook <procedure> [options]``: run a procedure as a real Prefect flow run.

Exit codes: 0 success; 1 the procedure ran and found a problem; 2 bad input or
configuration, detected before anything was touched (one message, no traceback).
``--json`` prints the flow's result as one JSON object on stdout and nothing else there.
With ``PREFECT_API_URL`` set the run is recorded on that server; otherwise on the local
server of ``runbook server start`` when it runs (runbook/server.py), else Prefect's
ephemeral mode is used. Read-only commands (``backup-list``, ``silence list``: a
registry entry's ``direct``) answer without a flow run, and so without Prefect.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from runbook.errors import ConfigError, RunbookError
from runbook.procedures import PROCEDURES, positive

EXIT_OK, EXIT_PROBLEM, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too, with our wording
        raise UsageError(f"{self.prog}: {message}")


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

    for procedure in PROCEDURES.values():
        procedure.arguments(sub.add_parser(procedure.name, aliases=list(procedure.aliases), parents=[common], help=procedure.help))

    p = sub.add_parser("sandbox", parents=[common], help="the local stand-in of the platform")
    p.add_argument("action", choices=["up", "seed", "down", "status"])
    p.add_argument("--scale", type=positive, default=1, help="data set size for seed (1 is about 40 MB)")

    p = sub.add_parser("server", parents=[common], help="the local Prefect server under RUNBOOK_HOME that the CLI shares")
    p.add_argument("action", choices=["start", "stop", "status"])

    p = sub.add_parser(
        "demo", parents=[common],
        help="on the sandbox: backup, backup-verify, dr-drill, data-cleanup (dry run), deploy-verify, daily checklist, "
        "capacity review, a monitor alert to a Slack stand-in; a one-screen summary",
    )
    p.add_argument("--keep-server", action="store_true", help="leave the local Prefect server up to browse the runs")
    return parser


# --------------------------------------------------------------------------- running flows


def _run_flow(flow_fn: Callable[..., Any], **kwargs: Any) -> tuple[bool, Any]:
    """Run a flow and return (completed, result or exception)."""
    state = _without_heartbeats(flow_fn, kwargs)
    try:
        result = state.result(raise_on_failure=False)
    except BaseException as err:  # noqa: BLE001 - a crashed run has no result
        result = err
    return state.is_completed(), result


def _without_heartbeats(flow_fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """The flow's final state. Prefect's flow-run heartbeats (every 180 s by default) cost
    up to a second at the end of every flow and subflow, waiting for the heartbeat
    thread's sleep; nothing of runbook watches them (no zombie-run automation), so the
    CLI's runs send none unless PREFECT_FLOWS_HEARTBEAT_FREQUENCY is set explicitly.
    Deployed runs (a worker's) keep Prefect's default."""
    if os.environ.get("PREFECT_FLOWS_HEARTBEAT_FREQUENCY") or os.environ.get("PREFECT_RUNNER_HEARTBEAT_FREQUENCY"):
        return flow_fn(**kwargs, return_state=True)
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return flow_fn(**kwargs, return_state=True)


def _procedure(name: str, args: argparse.Namespace) -> tuple[bool, Any]:
    """Run the named procedure of the registry with the arguments parsed for it."""
    procedure = PROCEDURES.get(name)
    if procedure is None:
        raise UsageError(f"unknown procedure {name!r}")
    kwargs = procedure.parameters(args)
    if not procedure.progress:
        return _run_flow(procedure.flow(), **kwargs)
    from runbook import progress

    stop_listening = progress.listen(progress.Bar(sys.stderr))
    try:
        return _run_flow(procedure.flow(), **kwargs)
    finally:
        stop_listening()


def _direct(args: argparse.Namespace) -> tuple[bool, Any] | None:
    """A read-only command answered without a flow run (its registry entry's ``direct``),
    or None when it needs its flow."""
    procedure = PROCEDURES.get(args.procedure)
    if procedure is None or procedure.direct is None:
        return None
    try:
        result = procedure.direct(args)
    except (ConfigError, ValidationError):
        raise
    except Exception as err:  # noqa: BLE001 - reported as the flow's failure would be: exit 1, its first line
        return False, err
    return None if result is None else (True, result)


def _server(args: argparse.Namespace) -> dict[str, Any]:
    from runbook.server import LocalServer
    from runbook.settings import load_settings

    server = LocalServer.from_settings(load_settings())
    if args.action == "start":
        return server.start()
    if args.action == "stop":
        return server.stop()
    return server.status()


def _show_server(payload: dict[str, Any]) -> str:
    if "url" not in payload:
        return f"server {payload['server']}" + (f": stopped {', '.join(payload['stopped'])}" if payload.get("stopped") else "")
    workers = ", ".join(f"{w['name']} pid {w['pid']} {'alive' if w['alive'] else 'NOT RUNNING'}" for w in payload["workers"])
    lines = [
        f"server {payload['server']} at {payload['url']} (pid {payload['pid']}, log {payload['log']})",
        f"workers on pool {payload['work_pool']}: {workers or 'none'}",
        f"deployments: {payload['deployments']}; {'served' if payload['serving'] else 'NOT served'}",
    ]
    if "started" in payload:
        lines.append(f"started: {', '.join(payload['started'])}" if payload["started"] else "already running")
    return "\n".join(lines)


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
    """A procedure's result as its registry entry prints it."""
    if not isinstance(result, dict):
        return str(result)
    procedure = PROCEDURES.get(name)
    return procedure.show(result) if procedure else json.dumps(result, indent=2, default=str)


def _fail_message(result: Any) -> str:
    if isinstance(result, BaseException):
        text = str(result).strip()
        return text.splitlines()[0] if text else type(result).__name__
    if isinstance(result, dict) and result.get("message"):
        return str(result["message"])
    if isinstance(result, dict) and result.get("failed"):
        return "failed checks: " + ", ".join(result["failed"])
    return "the procedure failed"


_STOPPED: list[str] = []  # the signal that stopped this run, once one did


_WAKEUP: list[int] = []  # the read end of the signal wakeup pipe


def _install_signal_handlers() -> None:
    _STOPPED.clear()

    def stop(signum: int, _frame: Any) -> None:
        _STOPPED.append(signal.Signals(signum).name)
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, stop)
    # While a flow runs, Prefect's engine swaps in its own SIGTERM handler, and a signal
    # that lands while a task run is being set up can surface as another error that the
    # flow reports as a failed step. The wakeup pipe sees every signal whatever Python
    # handler is installed, so the run is still known to have been stopped.
    if _WAKEUP:
        try:
            os.read(_WAKEUP[0], 4096)  # what an earlier run in this process saw is not this one's
        except BlockingIOError:
            pass
    else:
        try:
            read, write = os.pipe()
            os.set_blocking(read, False)
            os.set_blocking(write, False)
            signal.set_wakeup_fd(write, warn_on_full_buffer=False)
            _WAKEUP.append(read)
        except (ValueError, OSError):  # not the main thread: the handler alone
            pass


def _stopped_by_signal() -> str | None:
    """The signal that stopped this run, if one was received (by any handler)."""
    if _STOPPED:
        return _STOPPED[0]
    if _WAKEUP:
        try:
            seen = os.read(_WAKEUP[0], 1024)
        except BlockingIOError:
            seen = b""
        if signal.SIGTERM.value in seen:
            _STOPPED.append("SIGTERM")
            return "SIGTERM"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        print(str(err), file=sys.stderr)  # "runbook <procedure>: ...", as argparse names it
        return EXIT_BAD_INPUT
    if not args.procedure:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    args.procedure = next((p.name for p in PROCEDURES.values() if args.procedure in p.aliases), args.procedure)
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
    before = {name: os.environ.get(name) for name in ("RUNBOOK_SANDBOX", "PREFECT_API_URL")}
    if args.sandbox or args.procedure == "demo":
        os.environ["RUNBOOK_SANDBOX"] = "true"
    try:
        return _main(args, as_json, emit)
    finally:
        for name, value in before.items():  # this process's only (main() may run in a test's process)
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _main(args: argparse.Namespace, as_json: bool, emit: Callable[[Any, int], int]) -> int:
    try:
        from runbook.settings import load_settings

        settings = load_settings()  # bad settings exit 2 before any flow run starts
        if args.procedure == "server":
            payload = _server(args)
            if not as_json:
                print(_show_server(payload))
            return emit(payload, EXIT_OK)
        if args.procedure == "demo":
            return _demo(as_json, args.keep_server, settings)
        if args.procedure != "sandbox":
            from runbook.server import use_if_running

            use_if_running(settings)  # `runbook server` runs: the runs (and Variable reads) go there
        # read-only commands answer without a flow run, so without Prefect at all
        answered = _direct(args)
        if answered is None and args.procedure != "sandbox":
            from runbook.logconfig import configure

            configure(settings)  # every record of the runs to come: secrets masked, JSON if asked
        if args.procedure == "sandbox":
            payload = _sandbox(args)
            if not as_json:
                print(json.dumps(payload, indent=2, default=str))
            return emit(payload, EXIT_OK)
        completed, result = answered if answered is not None else _procedure(args.procedure, args)
    except (ConfigError, ValidationError) as err:
        message = str(err).splitlines()[0] if isinstance(err, ConfigError) else _validation_message(err)
        print(f"runbook: {message}", file=sys.stderr)
        return emit({"error": message, "exit_code": EXIT_BAD_INPUT}, EXIT_BAD_INPUT)
    except KeyboardInterrupt as err:
        print(f"runbook: interrupted ({err})", file=sys.stderr)
        return 130
    except RunbookError as err:  # runbook server start could not start it
        print(f"runbook: {args.procedure} {getattr(args, 'action', '')}: {err}", file=sys.stderr)
        return emit({"error": str(err), "exit_code": EXIT_PROBLEM}, EXIT_PROBLEM)
    stopped = _stopped_by_signal()
    if stopped:
        # the interrupt may surface inside Prefect's engine as another error, which the
        # flow then reports as a failed step: the run was stopped, and says so
        print(f"runbook: interrupted (stopped by {stopped}): {_fail_message(result)}", file=sys.stderr)
        return emit({"error": f"stopped by {stopped}", "exit_code": 130}, 130)

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


def _demo(as_json: bool, keep_server: bool, settings: Any) -> int:
    """The README's first command (runbook/demo.py)."""
    from runbook.demo import run_demo
    from runbook.logconfig import configure

    def run(name: str, argv: list[str]) -> tuple[bool, Any]:
        return _procedure(name, build_parser().parse_args([name, *argv]))

    return run_demo(as_json, keep_server, run, lambda: configure(settings))


def run() -> int:
    """The ``runbook`` command: :func:`main`, then a quick exit. After a flow run the
    interpreter's shutdown spent about 0.6 s collecting the objects Prefect's import
    made (every module's garbage, twice); frozen, the collector leaves them to the
    process's end. Threads, atexit handlers (Prefect's log and event drains) and
    buffered output are finished as usual."""
    code = main()
    gc.freeze()
    return code


if __name__ == "__main__":
    raise SystemExit(run())
