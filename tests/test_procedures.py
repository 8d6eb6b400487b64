"""How the registry prints results on the command line (pure: no flow runs)."""

from __future__ import annotations

from runbook.procedures import PROCEDURES


def test_a_verification_on_the_production_server_says_so_on_the_command_line() -> None:
    result = {
        "backup_id": "backup_20261201_010000", "database": "postgres", "outcome": "passed",
        "notes": ["the scratch database was restored on the platform's own server"],
        "checks": [{"name": "sha256", "ok": True, "detail": "match", "critical": True}],
    }
    text = PROCEDURES["backup-verify"].show(result)
    assert "note: the scratch database was restored on the platform's own server" in text
    assert "ok   sha256: match" in text


def test_every_procedure_has_a_distinct_command_and_help() -> None:
    assert all(p.help and p.entrypoint.startswith("flows/") for p in PROCEDURES.values())
    assert len({p.name for p in PROCEDURES.values()}) == len(PROCEDURES)
    assert [p.name for p in PROCEDURES.values() if p.mode] == ["dr-drill", "disaster-recovery"]
