"""What a monitor run reports: its checks (a failed delivery fails the run, naming
the page) and the markdown of its artifacts."""

from __future__ import annotations

from typing import Any

from runbook.checks import CheckResult
from runbook.times import in_team_time


def monitor_checks(skipped: dict[str, str], cycle: Any, attempts: list[Any], undelivered: list[str], warnings: list[str]) -> list[CheckResult]:
    """The evaluation, the sources not collected and routing gaps (warnings), every
    failed delivery and every page that reached nobody (critical: the run fails)."""
    checks = [CheckResult(name="evaluation", ok=True,
                          detail=cycle.skipped or f"{cycle.evaluated} evaluations, {len(cycle.firing)} firing")]
    for source, why in sorted(skipped.items()):
        checks.append(CheckResult(name=f"source:{source}", ok=False, critical=False, detail=f"not collected: {why}"))
    for warning in warnings:
        checks.append(CheckResult(name="routing", ok=False, critical=False, detail=warning))
    for line in cycle.unrouted:
        checks.append(CheckResult(name="routing", ok=False, critical=False, detail=line))
    for attempt in attempts:
        if not attempt.ok:
            to = f" {attempt.recipient}" if attempt.recipient else ""
            checks.append(CheckResult(name=f"delivery:{attempt.channel}", ok=False,
                                      detail=f"{attempt.title!r} to {attempt.channel}{to}: {attempt.detail} ({attempt.status})"))
    for page in undelivered:
        checks.append(CheckResult(name="undelivered", ok=False, detail=f"nobody was reached: {page}"))
    sent = sum(1 for a in attempts if a.ok)
    if attempts:
        checks.append(CheckResult(name="deliveries", ok=sent == len(attempts), critical=False,
                                  detail=f"{sent} of {len(attempts)} delivered"))
    return checks


def _cell(value: Any) -> str:
    return str(value if value is not None else "").replace("|", "\\|").replace("\n", " ")


def _when(value: Any, zone: str) -> str:
    return in_team_time(value, zone).isoformat(timespec="seconds") if value is not None and hasattr(value, "tzinfo") else _cell(value)


def monitor_markdown(report: dict[str, Any], zone: str) -> str:
    lines = [f"# Monitor: {report['instance']}", ""]
    if report.get("skipped"):
        lines += [f"Evaluation skipped: {report['skipped']}", ""]
    lines += [f"{report['evaluated']} evaluations; {len(report['firing'])} alert(s) firing.", ""]
    if report["firing"]:
        lines += ["| rule | resource | severity | value | since | held |", "|---|---|---|---|---|---|"]
        for a in report["firing"]:
            held = "flapping" if a["flapping"] else (a["suppressed"] or "")
            lines.append(f"| {a['rule']} | {_cell(a['resource'])} | {a['severity']} | {_cell(a['value'])} | {_when(a['since'], zone)} | {_cell(held)} |")
        lines.append("")
    if report["notices"]:
        lines += ["## Notifications", ""] + [f"- {n['kind']}: {_cell(n['title'])}" for n in report["notices"]] + [""]
    if report["pages"]:
        lines += ["## Escalation", ""] + [
            f"- incident #{p['incident']} level {p['level']} ({p['name']}), round {p['round']}: {p['queued']} notification(s)"
            for p in report["pages"]] + [""]
    if report["deliveries"]:
        lines += ["## Deliveries", "", "| channel | to | kind | result | detail |", "|---|---|---|---|---|"]
        for d in report["deliveries"]:
            result = "sent" if d["ok"] else d["status"].upper()
            lines.append(f"| {d['channel']}{' (fallback)' if d['fallback'] else ''} | {_cell(d['recipient'] or 'default')} | {d['kind']} | {result} | {_cell(d['detail'])} |")
        lines.append("")
    if report["undelivered"]:
        lines += ["## NOT DELIVERED", ""] + [f"- {_cell(u)}" for u in report["undelivered"]] + [""]
    return "\n".join(lines)


def incident_markdown(incident_id: int, rows: list[dict[str, Any]], zone: str) -> str:
    lines = [f"# Incident #{incident_id}", "", "| when | what | level | by | detail |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {_when(r['at'], zone)} | {r['kind']} | {_cell(r['level'])} | {_cell(r['actor'])} | {_cell(r['detail'])} |")
    return "\n".join(lines)
