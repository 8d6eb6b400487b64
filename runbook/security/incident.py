"""The decisions of ``security-incident`` (§5.3), without I/O: the six phases, which
containment actions to offer from the watch's findings, and the timeline report."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from runbook.security.detectors import block_duration

PHASES = ("detect", "assess", "contain", "investigate", "recover", "learn")
Severity = Literal["low", "medium", "high", "critical"]


class Suggestion(BaseModel):
    """A containment action the incident offers, with the parameters its flow takes."""

    action: str = Field(description="The action's flow: block-ip, restrict-db-access, emergency-api-disable...")
    params: dict[str, Any] = Field(default_factory=dict, description="Its own parameters (not by/reason/confirm).")
    why: str


def suggestions(findings: list[dict[str, Any]], offences: dict[str, int], *, base: timedelta, cap: timedelta,
                db_roles: bool, kill_switch: bool, sessions_by_ip: bool = False) -> list[Suggestion]:
    """Block each address the findings name (for the repeat-offender block); restrict the
    database and disable the APIs when they are configured, for the approver to choose."""
    out: list[Suggestion] = []
    seen: set[str] = set()
    for f in findings:
        resource = str(f["resource"])
        if " ip=" not in resource:
            continue
        ip = resource.split(" ip=", 1)[1].split(",")[0]
        if ip in seen:
            continue
        seen.add(ip)
        minutes = int(block_duration(max(1, offences.get(ip, 1)), base, cap).total_seconds() // 60)
        out.append(Suggestion(action="block-ip", params={"ip": ip, "minutes": minutes},
                              why=f"{f['detector']} from {ip} ({f['count']} at {f['last_at']:%H:%M} UTC), offence {offences.get(ip, 1)}"))
        if sessions_by_ip:
            out.append(Suggestion(action="invalidate-sessions", params={"scope": "ip", "ip": ip},
                                  why=f"end the sessions opened from {ip} (cannot be undone)"))
    if db_roles:
        out.append(Suggestion(action="restrict-db-access", why="the application roles lose access (leaked credentials)"))
    if kill_switch:
        out.append(Suggestion(action="emergency-api-disable", why="every API off until api-enable (last resort)"))
    return out


def chosen(typed: str, offered: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The phrases typed (one per line) that match an offered preview, and those that do not."""
    lines = [line.strip() for line in typed.splitlines() if line.strip()]
    picked = [line for line in dict.fromkeys(lines) if line in offered]
    unknown = [line for line in lines if line not in offered]
    return picked, unknown


def timeline_markdown(incident_id: int, title: str, rows: list[dict[str, Any]], *, zone_fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    lines = [f"# Security incident #{incident_id}: {title}", ""]
    for phase in PHASES:
        entries = [r for r in rows if r["phase"] == phase]
        lines += [f"## {phase.capitalize()}", ""]
        if not entries:
            lines += ["(nothing recorded)", ""]
            continue
        for r in entries:
            at: datetime = r["at"]
            lines.append(f"- {at.strftime(zone_fmt)} UTC, {r['actor']}: {_one_line(r['entry'])}")
        lines.append("")
    return "\n".join(lines)


def _one_line(text: str) -> str:
    return " / ".join(part.strip() for part in str(text).splitlines() if part.strip())
