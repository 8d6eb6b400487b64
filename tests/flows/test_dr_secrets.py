"""A drill on a server with password authentication, with a hook that prints its whole
environment: the hook gets a postgresql:// URL it can connect with, none of the worker's
secrets, and the password shows nowhere runbook writes (logs, artifacts, the result,
the store), in any of its forms."""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from prefect import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogHandler
from psycopg import sql

from flows.backup import BackupParameters, backup
from flows.disaster_recovery import DrParameters, disaster_recovery
from runbook.masking import secret_forms
from tasks.postgres import parse_dsn
from tests.conftest import Platform, scratch_databases

PASSWORD = "p@ss:w/rd?#%&+ 'q\"\\x=9"  # every character a URL or a conninfo treats specially

# the second restore-services step: connects with the URL it was given, keeps an unmasked
# copy of its environment for the test, and prints the URL and the password decoded
CONNECT = """
import json, os, sys
import psycopg
from psycopg.conninfo import conninfo_to_dict
url = os.environ["RUNBOOK_RESTORED_DATABASE_URL"]
json.dump(dict(os.environ), open(sys.argv[1], "w"))
with psycopg.connect(url) as conn:
    user, db, users = conn.execute("SELECT current_user, current_database(), (SELECT count(*) FROM users)").fetchone()
print("hook connected as", user, "to", db, "users:", users)
print("url:", url)
print("password:", conninfo_to_dict(url)["password"])
print("conninfo:", " ".join(f"{k}={v}" for k, v in conninfo_to_dict(url).items()))
"""


def _all(read: Any, **filters: Any) -> list[Any]:
    """Every page of a Prefect client read (the server answers at most 200 at a time)."""
    items: list[Any] = []
    while page := read(**filters, limit=200, offset=len(items)):
        items += page
    return items


@pytest.fixture
def password_auth(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A role with a password on the test server, which must give it (scram-sha-256 for
    that role on the Unix socket); runbook pointed at the platform as that role."""
    role = f"rb_pw_{secrets.token_hex(3)}"
    with psycopg.connect(platform.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(sql.Identifier(role), sql.Literal(PASSWORD)))
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])  # type: ignore[index]
        original = hba.read_text()
        hba.write_text(f"local all {role} scram-sha-256\n" + original)
        conn.execute("SELECT pg_reload_conf()")
    socket_dir = parse_dsn(platform.admin_dsn)["host"]
    url = f"postgresql://{role}:{quote(PASSWORD, safe='')}@/{platform.database}?host={socket_dir}"
    monkeypatch.setenv("RUNBOOK_DATABASE_URL", url)
    try:
        yield url
    finally:
        hba.write_text(original)
        with psycopg.connect(platform.admin_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_a_hook_printing_its_environment_on_a_password_server_leaks_no_form_of_the_password(
    platform: Platform, password_auth: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(password_auth.replace(quote(PASSWORD, safe=""), "wrong"))  # the server really asks
    monkeypatch.setenv("RUNBOOK_PLATFORM_TOKEN", "platform-token-in-the-worker")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-in-the-worker")
    monkeypatch.setenv("HOOK_VISIBLE", "listed-in-env")
    seen_file = tmp_path / "hook-env.json"
    monkeypatch.setenv("RUNBOOK_DR__RESTORE_SERVICES", json.dumps([
        {"name": "print env", "command": ["env"]},
        {"name": "connect", "command": [sys.executable, "-c", CONNECT, str(seen_file)], "env": ["HOOK_VISIBLE"]},
    ]))
    backup(BackupParameters(prune=False))
    state = disaster_recovery(DrParameters(), return_state=True)
    report = state.result(raise_on_failure=False)
    assert state.is_completed(), state.message
    assert {p["name"]: p["status"] for p in report["phases"]}["restore-services"] == "ok"

    # what the hook got: a real postgresql:// URL with the password, and nothing of the worker's
    seen = json.loads(seen_file.read_text())
    url = seen["RUNBOOK_RESTORED_DATABASE_URL"]
    assert url.startswith("postgresql://rb_pw_") and quote(PASSWORD, safe="") in url
    assert seen["RUNBOOK_DR_MODE"] == "drill" and seen["RUNBOOK_RESTORED_DATABASE"].startswith("runbook_drill_")
    assert seen["HOOK_VISIBLE"] == "listed-in-env"
    assert not {"RUNBOOK_DATABASE_URL", "RUNBOOK_PLATFORM_TOKEN", "AWS_SECRET_ACCESS_KEY"} & set(seen)

    # what runbook kept: the flow run's logs, every artifact, the result, the store
    APILogHandler().flush()  # the run's last log lines are sent in the background
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        logs = [log.message for log in _all(client.read_logs, log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))]
        artifacts = [a.data for a in _all(client.read_artifacts)]
    assert any("hook connected as rb_pw_" in line and f"to {seen['RUNBOOK_RESTORED_DATABASE']}" in line for line in logs)
    assert any("RUNBOOK_RESTORED_DATABASE_URL=***" in line for line in logs)  # env's line, masked
    assert not scratch_databases(platform.admin_dsn, "drill")
    kept = {
        "logs": "\n".join(logs),
        "artifacts": json.dumps(artifacts, default=str),
        "result": json.dumps(report, default=str),
        "store": "\n".join(p.read_text(errors="replace") for p in Path(platform.store_url).rglob("*.json")),
    }
    forms = secret_forms(PASSWORD) | {quote(PASSWORD, safe="").lower()}
    for where, text in kept.items():
        leaked = [form for form in forms if form in text or form.lower() in text.lower() and "%" in form]
        assert not leaked, f"the password shows in the {where}: {leaked}"
