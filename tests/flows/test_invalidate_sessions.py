"""invalidate-sessions (§5.4): all, by user, by IP; the expiry becomes the action's time,
nothing is deleted, expired and out-of-scope sessions stay as they are; the preview
counts admin sessions and says it cannot be undone; batched and resumable on any key;
refusals exit 2 before anything is touched."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from flows.invalidate_sessions import InvalidateSessionsParameters, invalidate_sessions
from runbook.errors import ConfigError
from runbook.security.sessions import Scope, session_scope
from runbook.settings import SessionSettings
from tasks import secstate
from tasks.sessions import check_sessions_table, invalidate_batch, preview_sessions, read_back
from tasks.sessions import invalidate_sessions as invalidate_all
from tests.conftest import Platform, runbook_here

COLUMNS = {"RUNBOOK_SECURITY__SESSIONS__USER_COLUMN": "user_id", "RUNBOOK_SECURITY__SESSIONS__IP_COLUMN": "ip"}
Rows = dict[Any, datetime]


def _configure(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name, value in {**COLUMNS, "RUNBOOK_SECURITY__SESSIONS__BATCH_ROWS": "300", **env}.items():
        monkeypatch.setenv(name, value)


def _sessions(dsn: str, query: str = "SELECT id, expires_at FROM user_sessions") -> Rows:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(query).fetchall())


def _audit(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        return list(reversed(secstate.audit_rows(conn, "runbook_security", action="invalidate-sessions")))


def _run(**fields: Any) -> tuple[Any, dict[str, Any]]:
    params = InvalidateSessionsParameters(by="ana", reason="stolen cookies", confirm=True, **fields)
    state = invalidate_sessions(params, return_state=True)
    return state, state.result(raise_on_failure=False)


def _check_changed_exactly(before: Rows, after: Rows, in_scope: set[Any], at: datetime) -> int:
    """Every active session in scope now ends at ``at``; every other row is as it was."""
    assert after.keys() == before.keys()  # nothing deleted
    changed = 0
    for key, expiry in before.items():
        if key in in_scope and expiry > at:
            assert after[key] == at, key
            changed += 1
        else:
            assert after[key] == expiry, key  # expired, or out of scope: untouched
    return changed


def test_all_sessions_batched_audited_and_read_back(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    _configure(monkeypatch)
    before = _sessions(platform.dsn)
    state, report = _run(scope="all")
    assert state.is_completed(), state.message
    audit = _audit(platform.dsn)
    assert [(r["phase"], r["actor"], r["reason"], r["target"]) for r in audit] == [
        ("preview", "ana", "stolen cookies", "all"), ("applied", "ana", "stolen cookies", "all")]
    after_record = audit[-1]["after"]
    at = datetime.fromisoformat(after_record["at"])
    changed = _check_changed_exactly(before, _sessions(platform.dsn), set(before), at)
    assert changed > 1000 and after_record["invalidated"] == changed
    assert after_record["batches"] == -(-changed // 300)  # batches of RUNBOOK_SECURITY__SESSIONS__BATCH_ROWS
    assert audit[0]["preview"]["undo"] is None and audit[-1]["run_id"]
    assert report["outcome"] == "passed" and all(c["ok"] for c in report["checks"])
    assert report["read_back"] == {"active_left_in_scope": 0, "new_logins_in_scope": None, "out_of_scope_active": 0,
                                   "out_of_scope_invalidated": 0}
    preview = report["preview"]
    assert preview["counts"]["active sessions in scope"] >= changed and preview["counts"]["users"] > 100
    assert any("cannot be undone" in w for w in preview["warnings"])
    assert any("Admin sessions cannot be recognised" in w for w in preview["warnings"])  # none configured


def test_one_user_and_admin_sessions_warned(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(timezone.utc)
    with psycopg.connect(platform.dsn) as conn:
        user = conn.execute("SELECT user_id FROM user_sessions WHERE expires_at > %s GROUP BY 1 HAVING count(*) >= 2"
                            " ORDER BY 1 LIMIT 1", (now,)).fetchone()[0]
        conn.execute("UPDATE users SET plan = 'staff' WHERE id = %s", (user,))
    # admins recognised through the users table (plan = 'staff' here), and one by id
    _configure(monkeypatch, RUNBOOK_SECURITY__SESSIONS__ADMIN_TABLE="public.users", RUNBOOK_SECURITY__SESSIONS__ADMIN_COLUMN="plan",
               RUNBOOK_SECURITY__SESSIONS__ADMIN_VALUES='["staff"]', RUNBOOK_SECURITY__SESSIONS__ADMIN_USER_IDS='["999999"]')
    before = _sessions(platform.dsn)
    mine = set(_sessions(platform.dsn, f"SELECT id, expires_at FROM user_sessions WHERE user_id = {int(user)}"))
    state, report = _run(scope="user", user=str(user))
    assert state.is_completed(), state.message
    at = datetime.fromisoformat(_audit(platform.dsn)[-1]["after"]["at"])
    changed = _check_changed_exactly(before, _sessions(platform.dsn), mine, at)
    preview = report["preview"]
    assert preview["target"] == f"user={user}" and changed >= 2
    assert preview["counts"] == {"active sessions in scope": changed, "users": 1, "admin sessions": changed}
    assert any(f"{changed} admin session(s) will be ended" in w for w in preview["warnings"])
    assert all(s["admin"] and set(s) == {"user_id", "ip", "expires_at", "admin"} for s in preview["samples"])
    out = report["read_back"]
    assert out["active_left_in_scope"] == 0 and out["out_of_scope_invalidated"] == 0 and out["out_of_scope_active"] > 1000


@pytest.mark.parametrize("ip, match", [("192.0.2.7", "ip = '192.0.2.7'"), ("192.0.2.4/30", "ip <<= '192.0.2.4/30'")])
def test_one_address_or_network(platform: Platform, monkeypatch: pytest.MonkeyPatch, ip: str, match: str) -> None:
    _configure(monkeypatch)
    before = _sessions(platform.dsn)
    theirs = set(_sessions(platform.dsn, f"SELECT id, expires_at FROM user_sessions WHERE {match}"))
    assert 10 < len(theirs) < 200
    state, report = _run(scope="ip", ip=ip)
    assert state.is_completed(), state.message
    at = datetime.fromisoformat(_audit(platform.dsn)[-1]["after"]["at"])
    changed = _check_changed_exactly(before, _sessions(platform.dsn), theirs, at)
    assert changed > 0 and report["preview"]["counts"]["active sessions in scope"] == changed
    assert report["outcome"] == "passed"


def test_the_preview_never_shows_a_token_and_changes_nothing(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    _configure(monkeypatch)
    before = _sessions(platform.dsn)
    env = {"RUNBOOK_DATABASE_URL": platform.dsn}
    proc = runbook_here("invalidate-sessions", "--ip", "192.0.2.7", "--by", "ana", "--reason", "attack", env=env,
                        monkeypatch=monkeypatch)
    assert proc.returncode == 0, proc.stderr
    assert "nothing was changed; add --confirm to apply" in proc.stdout
    assert "This cannot be undone" in proc.stdout and "invalidate-sessions ip=192.0.2.7/32" in proc.stdout
    with psycopg.connect(platform.dsn) as conn:
        tokens = [r[0] for r in conn.execute("SELECT token_hash FROM user_sessions")]
    assert "token_hash" not in proc.stdout and not any(token in proc.stdout for token in tokens)
    assert _sessions(platform.dsn) == before
    assert [r["phase"] for r in _audit(platform.dsn)] == ["preview"]

    done = runbook_here("--json", "invalidate-sessions", "--ip", "192.0.2.7", "--by", "ana", "--reason", "attack", "--confirm",
                        env=env, monkeypatch=monkeypatch)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outcome"] == "passed"
    assert _sessions(platform.dsn) != before
    again = runbook_here("invalidate-sessions", "--ip", "192.0.2.7", "--by", "ana", "--reason", "attack", "--confirm",
                         env=env, monkeypatch=monkeypatch)
    assert again.returncode == 0 and "nothing to change" in again.stdout  # a second run is a no-op
    assert [r["phase"] for r in _audit(platform.dsn)] == ["preview", "preview", "applied", "preview", "noop"]


@pytest.mark.parametrize(
    "args, env, message",
    [
        (("--user", "42"), {"RUNBOOK_SECURITY__SESSIONS__USER_COLUMN": ""}, "RUNBOOK_SECURITY__SESSIONS__USER_COLUMN: not set"),
        (("--ip", "192.0.2.7"), {"RUNBOOK_SECURITY__SESSIONS__IP_COLUMN": ""}, "RUNBOOK_SECURITY__SESSIONS__IP_COLUMN: not set"),
        (("--all",), {"RUNBOOK_SECURITY__SESSIONS__EXPIRY_COLUMN": "valid_until"},
         "RUNBOOK_SECURITY__SESSIONS__EXPIRY_COLUMN: public.user_sessions has no column 'valid_until' (its columns: id, user_id"),
        (("--user", "42"), {"RUNBOOK_SECURITY__SESSIONS__USER_COLUMN": "account"}, "USER_COLUMN: public.user_sessions has no column 'account'"),
        (("--all",), {"RUNBOOK_SECURITY__SESSIONS__TABLE": "auth.sessions"}, "RUNBOOK_SECURITY__SESSIONS__TABLE: no table 'auth.sessions'"),
        (("--all",), {"RUNBOOK_SECURITY__SESSIONS__EXPIRY_COLUMN": "user_agent"}, "is text, not a timestamp"),
        (("--all",), {"RUNBOOK_SECURITY__SESSIONS__ADMIN_TABLE": "public.users"}, "RUNBOOK_SECURITY__SESSIONS__ADMIN_COLUMN: not set"),
        (("--all",), {"RUNBOOK_SECURITY__SESSIONS__CREATED_COLUMN": "ip"}, "CREATED_COLUMN: public.user_sessions.ip is inet, not a timestamp"),
        (("--all",), {"RUNBOOK_SECURITY__SESSIONS__CREATED_COLUMN": "begun"}, "CREATED_COLUMN: public.user_sessions has no column 'begun'"),
        (("--ip", "300.1.2.3"), {}, "is not an IP address or a CIDR network"),
        (("--ip", "192.0.2.7/24"), {}, "has host bits set"),
        (("--user", "not-a-number"), {}, "user: 'not-a-number' is not a value of public.user_sessions's user_id column"),
        (("--user", "42", "--ip", "192.0.2.7"), {}, "not allowed with argument"),
        ((), {}, "one of the arguments --all --user --ip is required"),
    ],
)
def test_refusals_exit_2_before_anything_is_touched(platform: Platform, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...],
                                                    env: dict[str, str], message: str) -> None:
    _configure(monkeypatch)
    before = _sessions(platform.dsn)
    proc = runbook_here("invalidate-sessions", *args, "--by", "ana", "--reason", "attack", "--confirm",
                        env={"RUNBOOK_DATABASE_URL": platform.dsn, **env}, monkeypatch=monkeypatch)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr
    assert _sessions(platform.dsn) == before
    with psycopg.connect(platform.dsn) as conn:
        if conn.execute("SELECT to_regclass('runbook_security.audit')").fetchone()[0] is not None:
            assert "applied" not in [r["phase"] for r in _audit(platform.dsn)]


def test_an_interrupted_invalidation_is_finished_by_running_it_again(platform: Platform) -> None:
    config = SessionSettings(user_column="user_id", ip_column="ip")
    at = datetime.now(timezone.utc)
    with psycopg.connect(platform.dsn, autocommit=True) as conn, psycopg.connect(platform.dsn, autocommit=True) as other:
        table = check_sessions_table(conn, config, Scope("all"))
        active = conn.execute("SELECT count(*) FROM user_sessions WHERE expires_at > %s", (at,)).fetchone()[0]
        assert invalidate_batch(conn, table, Scope("all"), at, 100) == 100  # then the run stopped
        # the batch was its own transaction: committed, seen from another connection
        assert other.execute("SELECT count(*) FROM user_sessions WHERE expires_at = %s", (at,)).fetchone()[0] == 100
        seen: list[tuple[int, int]] = []
        result = invalidate_all(conn, table, Scope("all"), at, batch_rows=1000, report=lambda d, t: seen.append((d, t)))
        assert result["invalidated"] == active - 100  # the re-run finds the rest, and only the rest
        assert seen[0] == (0, active - 100) and seen[-1] == (active - 100, active - 100)
        assert conn.execute("SELECT count(*) FROM user_sessions WHERE expires_at > %s", (at,)).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM user_sessions WHERE expires_at = %s", (at,)).fetchone()[0] == active


def test_a_login_after_the_action_is_told_apart_from_a_session_it_missed(platform: Platform) -> None:
    """A user (or the attacker) logging in while the action runs: with the created column
    it is a new login, not a session the invalidation left; without it, both count."""
    at = datetime.now(timezone.utc)
    scope = Scope("ip", "203.0.113.9")
    with psycopg.connect(platform.dsn, autocommit=True) as conn:
        user = conn.execute("SELECT id FROM users LIMIT 1").fetchone()[0]
        login = "INSERT INTO user_sessions (user_id, token_hash, ip, created_at, expires_at) VALUES (%s, %s, %s, %s, %s)"
        conn.execute(login, (user, "before-the-action", "203.0.113.9", at - timedelta(hours=1), at + timedelta(days=1)))
        with_created = check_sessions_table(conn, SessionSettings(ip_column="ip", created_column="created_at"), scope)
        assert invalidate_all(conn, with_created, scope, at, batch_rows=100, report=lambda d, t: None)["invalidated"] == 1
        conn.execute(login, (user, "after-the-action", "203.0.113.9", at + timedelta(seconds=5), at + timedelta(days=1)))
        back = read_back(conn, with_created, scope, at)
        assert back["active_left_in_scope"] == 0 and back["new_logins_in_scope"] == 1
        without = check_sessions_table(conn, SessionSettings(ip_column="ip"), scope)
        assert read_back(conn, without, scope, at) == {**back, "active_left_in_scope": 1, "new_logins_in_scope": None}


def test_the_flow_with_the_created_column_reads_back_no_new_login(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    _configure(monkeypatch, RUNBOOK_SECURITY__SESSIONS__CREATED_COLUMN="created_at")
    state, report = _run(scope="all")
    assert state.is_completed(), state.message
    assert report["read_back"]["new_logins_in_scope"] == 0 and report["read_back"]["active_left_in_scope"] == 0
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["sessions:new-logins"]["ok"] and not checks["sessions:new-logins"]["critical"]


def test_a_batch_refuses_to_run_inside_an_open_transaction(platform: Platform) -> None:
    with psycopg.connect(platform.dsn) as conn:
        table = check_sessions_table(conn, SessionSettings(), Scope("all"))  # opens a transaction
        with pytest.raises(RuntimeError, match="its own transaction"):
            invalidate_batch(conn, table, Scope("all"), datetime.now(timezone.utc), 10)


def test_scopes_are_validated() -> None:
    assert session_scope("ip", ip="2001:db8::/48").target == "ip=2001:db8::/48"
    assert session_scope("ip", ip=" 192.0.2.7 ").target == "ip=192.0.2.7/32"
    assert session_scope("user", user="42").target == "user=42"
    for kind, user, ip in [("all", "42", None), ("user", None, None), ("ip", None, None), ("ip", "4", "192.0.2.7"), ("some", None, None)]:
        with pytest.raises(ConfigError):
            session_scope(kind, user, ip)


# --------------------------------------------------------------------------- another platform's sessions

STORE = 'app."Session Store"'


@pytest.fixture
def session_store(variants: Platform, monkeypatch: pytest.MonkeyPatch) -> Platform:
    """A sessions table as another platform may keep it: quoted names, a uuid key, an inet
    address, a secret-looking column; in the variants database's app schema."""
    with psycopg.connect(variants.dsn) as conn:
        conn.execute(f"""
            CREATE TABLE {STORE} ("sessionId" uuid PRIMARY KEY, "userRef" text NOT NULL REFERENCES app."User" ("id"),
                                  "remote addr" inet, "secretToken" text NOT NULL, "valid until" timestamptz NOT NULL);
            INSERT INTO {STORE}
            SELECT md5('store-' || i)::uuid, 'c' || lpad(to_hex((1 + (i * 7) % 200) * 7919), 8, '0'),
                   ('203.0.113.' || (1 + i % 20))::inet, md5('secret-' || i),
                   now() - interval '10 days' + make_interval(mins => (i * 71) % (20 * 1440))
            FROM generate_series(1, 600) AS i""")
    for name, value in {"TABLE": "app.Session Store", "EXPIRY_COLUMN": "valid until", "USER_COLUMN": "userRef",
                        "IP_COLUMN": "remote addr", "ADMIN_TABLE": "app.User", "ADMIN_COLUMN": "emailAddress",
                        "ADMIN_VALUES": '["user1@example.test"]', "BATCH_ROWS": "50"}.items():
        monkeypatch.setenv(f"RUNBOOK_SECURITY__SESSIONS__{name}", value)
    return variants


def test_quoted_names_and_a_uuid_key_by_ip(session_store: Platform) -> None:
    query = f'SELECT "sessionId", "valid until" FROM {STORE}'
    before = _sessions(session_store.dsn, query)
    theirs = set(_sessions(session_store.dsn, query + " WHERE \"remote addr\" = '203.0.113.5'"))
    state, report = _run(scope="ip", ip="203.0.113.5")
    assert state.is_completed(), state.message
    at = datetime.fromisoformat(_audit(session_store.dsn)[-1]["after"]["at"])
    assert _check_changed_exactly(before, _sessions(session_store.dsn, query), theirs, at) > 5
    text = json.dumps(report["preview"])
    assert "secretToken" not in text and "secret" not in text and "sessionId" not in text
    assert set(report["preview"]["samples"][0]) == {"userRef", "remote addr", "valid until", "admin"}


def test_a_text_key_and_a_uuid_user_with_no_ip_column(variants: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """The variants' own user_sessions: its key is the token (text), never shown."""
    monkeypatch.setenv("RUNBOOK_SECURITY__SESSIONS__USER_COLUMN", "user_id")
    monkeypatch.setenv("RUNBOOK_SECURITY__SESSIONS__BATCH_ROWS", "7")
    query = "SELECT token_hash, expires_at FROM user_sessions"
    with psycopg.connect(variants.dsn) as conn:
        user = conn.execute("SELECT user_id FROM user_sessions WHERE expires_at > now() GROUP BY 1 ORDER BY count(*) DESC"
                            " LIMIT 1").fetchone()[0]
    before = _sessions(variants.dsn, query)
    mine = set(_sessions(variants.dsn, query + f" WHERE user_id = '{user}'"))
    state, report = _run(scope="user", user=str(user))
    assert state.is_completed(), state.message
    at = datetime.fromisoformat(_audit(variants.dsn)[-1]["after"]["at"])
    assert _check_changed_exactly(before, _sessions(variants.dsn, query), mine, at) >= 1
    assert not any(token in json.dumps(report) for token in before)
    state, _ = _run(scope="ip", ip="192.0.2.7")
    assert state.is_failed() and "RUNBOOK_SECURITY__SESSIONS__IP_COLUMN: not set" in state.message


def test_admins_listed_by_id_are_counted_in_any_scope(platform: Platform) -> None:
    at = datetime.now(timezone.utc)
    with psycopg.connect(platform.dsn) as conn:
        admins = conn.execute("SELECT user_id, count(*) FROM user_sessions WHERE expires_at > %s GROUP BY 1 ORDER BY 1 LIMIT 2",
                              (at,)).fetchall()
        config = SessionSettings(user_column="user_id", ip_column="ip", admin_user_ids=[str(u) for u, _ in admins])
        table = check_sessions_table(conn, config, Scope("all"))
        preview = preview_sessions(conn, table, Scope("all"), at, batch_rows=10, samples=3)
    assert preview.counts["admin sessions"] == sum(n for _, n in admins)
    assert any(f"{sum(n for _, n in admins)} admin session(s) will be ended" in w for w in preview.warnings)
    assert len(preview.samples) == 3 and preview.undo is None and "This cannot be undone" in preview.markdown()
