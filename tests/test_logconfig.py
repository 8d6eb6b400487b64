"""runbook's own log records (runbook/logconfig.py): a secret logged on purpose, in every
way a record can carry it, never shows in any form; RUNBOOK_LOG_FORMAT=json makes each
record one JSON object on one line, in real flow runs and from the CLI."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from prefect import flow, get_client, get_run_logger, task
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from psycopg.conninfo import make_conninfo

from runbook import logconfig
from runbook.masking import dsn_url, secret_forms
from tasks.postgres import parse_dsn
from tests.conftest import ANCHOR, Platform

PASSWORD = "S3cr#t p@ss'w%rd\"\u00e9\\x"  # quotes, a backslash, %, a space, non-ASCII: every escaping differs
DSN = f"postgresql://ops:{quote(PASSWORD, safe='')}@db.internal:5432/platform"
# known to the run from its settings only (the first is also given to hide())
SETTINGS_PASSWORD = "Only-1n-the settings'\u00fc"
SETTINGS_DSN = f"postgresql://ops:{quote(SETTINGS_PASSWORD, safe='')}@db.internal:5432/platform"


def forms(dsn: str = DSN) -> set[str]:
    """Every shape the secret can take in text (runbook.masking's own list)."""
    return secret_forms(dsn) | secret_forms(str(parse_dsn(dsn)["password"]))


def leaks(text: str, dsn: str = DSN) -> list[str]:
    return sorted(form for form in forms(dsn) if form in text)


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    return [json.loads(line) for line in lines]  # every line is one JSON object


@pytest.fixture
def handler() -> Iterator[io.StringIO]:
    """A console-like handler on a logger of its own, with runbook's filter and format."""
    stream = io.StringIO()
    target = logging.StreamHandler(stream)
    target.addFilter(logconfig.MaskSecrets())
    target.setFormatter(logconfig.JsonLines())
    logger = logging.getLogger("runbook.test.leak")
    logger.addHandler(target)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield stream
    logger.removeHandler(target)


def test_a_secret_logged_on_purpose_never_shows_in_any_form(handler: io.StringIO) -> None:
    logconfig.hide(DSN)
    logger = logging.getLogger("runbook.test.leak")
    conninfo = make_conninfo("", **parse_dsn(DSN))
    logger.info("connecting to %s", DSN)
    logger.info("as a URL %s and as a conninfo %s", dsn_url(DSN), conninfo)
    logger.info(f"the password itself: {PASSWORD}")
    logger.info("in a structure %r", {"dsn": DSN, "password": PASSWORD})
    logger.warning("extra fields", extra={"dsn": DSN, "nested": {"secrets": [PASSWORD]}, "attempt": 2})
    logger.info("bad format %s %s", PASSWORD)  # too few arguments: still one masked record
    try:
        raise RuntimeError(f"could not connect to {conninfo}")
    except RuntimeError:
        logger.exception("failed with %s", PASSWORD)
    text = handler.getvalue()
    assert leaks(text) == []
    records = json_lines(text)
    assert len(records) == 7
    assert not [s for record in records for s in strings(record) if PASSWORD in s or "S3cr" in s]
    assert records[0]["message"] == "connecting to ***" and records[0]["level"] == "INFO" and records[0]["logger"] == "runbook.test.leak"
    assert records[0]["time"].endswith("+00:00")
    assert records[4]["dsn"] == "***" and records[4]["nested"] == {"secrets": ["***"]} and records[4]["attempt"] == 2
    assert "RuntimeError: could not connect to ***" in records[6]["exception"] and records[6]["message"] == "failed with ***"


def test_a_secret_known_only_later_is_masked_from_then_on(handler: io.StringIO) -> None:
    logger = logging.getLogger("runbook.test.leak")
    later = "block-held-dsn-password-42"
    logger.info("before: %s", "nothing secret yet")
    logconfig.hide(later, "", None)
    logger.info("after: %s", later)
    assert later not in handler.getvalue() and "after: ***" in handler.getvalue()


@task(name="leaky-task")
def leaky_task(dsn: str) -> None:
    get_run_logger().info("task sees %s", dsn, extra={"target": dsn})


@flow(name="leaky-flow")
def leaky_flow(dsn: str) -> None:
    get_run_logger().warning("flow sees %s", dsn)
    leaky_task(dsn)
    raise RuntimeError(f"cannot reach {dsn}")


@pytest.fixture
def json_console(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """A plain console handler on the root logger, configured as a run configures
    Prefect's: RUNBOOK_LOG_FORMAT=json and the DSN in the settings."""
    from runbook.settings import load_settings

    stream = io.StringIO()
    console = logging.StreamHandler(stream)
    logging.getLogger().addHandler(console)
    monkeypatch.setenv("RUNBOOK_LOG_FORMAT", "json")
    monkeypatch.setenv("RUNBOOK_DATABASE_URL", SETTINGS_DSN)
    load_settings()
    yield stream
    monkeypatch.delenv("RUNBOOK_LOG_FORMAT")
    load_settings()  # Prefect's text format back for the other tests
    logging.getLogger().removeHandler(console)


def test_real_flow_and_task_runs_log_json_lines_with_their_run_names_and_no_secret(json_console: io.StringIO) -> None:
    import warnings

    state = leaky_flow(SETTINGS_DSN, return_state=True)
    warnings.warn(f"a warning naming {SETTINGS_DSN}", UserWarning, stacklevel=1)  # a library's warning is a JSON record too
    assert state.is_failed()
    records = json_lines(json_console.getvalue())
    assert leaks(json_console.getvalue(), SETTINGS_DSN) == []
    flow_record = next(r for r in records if r["message"] == "flow sees ***")
    assert flow_record["flow_name"] == "leaky-flow" and flow_record["flow_run_name"] and flow_record["level"] == "WARNING"
    task_record = next(r for r in records if r["message"] == "task sees ***")
    assert task_record["task_run_name"].startswith("leaky-task") and task_record["target"] == "***"
    assert any("cannot reach ***" in r.get("exception", "") + r["message"] for r in records)  # Prefect's own report of the failure
    assert any(r["logger"] == "py.warnings" and "a warning naming ***" in r["message"] for r in records)

    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # what the Prefect UI shows went through the same filter
    with get_client(sync_client=True) as client:
        run_logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    assert any("flow sees ***" in log.message for log in run_logs)
    assert leaks("\n".join(log.message for log in run_logs), SETTINGS_DSN) == []


def test_the_cli_writes_one_json_object_per_log_line_and_never_the_dsn(platform: Platform, prefect_harness: str) -> None:
    host = parse_dsn(platform.admin_dsn)["host"]
    secret = "Cli-S3cret-pw"  # the test server trusts local connections: any password works
    env = {
        **os.environ, "PREFECT_API_URL": prefect_harness, "RUNBOOK_LOG_FORMAT": "json",
        "RUNBOOK_DATABASE_URL": f"postgresql://postgres:{secret}@/{platform.database}?host={host}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "runbook.cli", "--json", "log-report", "--end", ANCHOR.isoformat()],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] > 0  # stdout: the result, one object
    records = json_lines(done.stderr)
    assert {"time", "level", "logger", "message"} <= set(records[0])
    run_records = [r for r in records if r.get("flow_run_name")]
    assert any(r["message"].startswith("Beginning flow run") for r in run_records)
    assert any(r.get("task_run_name", "").startswith("summarise-logs") for r in records)
    assert secret not in done.stderr and secret not in done.stdout
