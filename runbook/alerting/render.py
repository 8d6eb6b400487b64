"""What each channel shows of a ``Message``: Slack Block Kit, an e-mail, an SMS, the
words a phone call speaks (TwiML) and a status-page incident. Pure functions, no I/O.

Every rendering carries the same facts: severity, rule, "value X against threshold
>= T", resource, time (ISO 8601 with its offset) and the link to the run. A message of
kind ``test`` is §2.3's "Production Alert Test". Limits are the channels' own (Slack's
150-character header, 320 characters of SMS, Twilio's 4,000 characters of TwiML), and
text from the message is escaped for each (Slack mrkdwn, XML).
"""

from __future__ import annotations

import re
from typing import Any, Literal
from xml.sax.saxutils import escape as xml_escape

from runbook.alerting.model import Message, Severity

TEST_TITLE = "Production Alert Test"  # §2.3
SMS_MAX = 320  # two concatenated GSM-7 segments and a bit: long enough, still one glance
SPOKEN_MAX = 1500  # the TwiML stays far below Twilio's 4,000 characters
SLACK_HEADER_MAX = 150
SLACK_TEXT_MAX = 3000
SLACK_FIELD_MAX = 2000

StatuspageStatus = Literal["investigating", "identified", "monitoring", "resolved"]
StatuspageImpact = Literal["none", "minor", "major", "critical"]

_KIND_WORDS = {
    "firing": "firing",
    "repeat": "still firing",
    "resolved": "resolved",
    "flapping": "flapping",
    "stable": "stable again",
    "escalation": "escalation",
    "ack-expired": "acknowledgement expired",
    "test": "test",
    "run-failed": "run failed",
    "incident-open": "incident opened",
    "incident-update": "incident updated",
    "incident-resolved": "incident resolved",
}

_SPOKEN_COMPARISONS = {
    ">=": "at or above",
    "<=": "at or below",
    "==": "equal to",
    "!=": "not equal to",
    ">": "above",
    "<": "below",
}
_SPOKEN_UNITS = {"%": "percent", "ms": "milliseconds", "GB": "gigabytes", "min": "minutes", "s": "seconds"}


def severity_label(severity: Severity) -> str:
    return "CRITICAL" if severity == Severity.critical else "WARNING"


def number(value: float) -> str:
    """A value as people read it: 5, 7.2, 0.004 (no 5.0, no 7.199999)."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def _with_unit(value: float, unit: str) -> str:
    return f"{number(value)} {unit}" if unit else number(value)


def value_line(message: Message) -> str:
    """'value 7.2 % against threshold >= 5 %' (empty when the message has neither)."""
    if message.value is None and message.threshold is None:
        return ""
    seen = _with_unit(message.value, message.unit) if message.value is not None else "unknown"
    if message.threshold is None:
        return f"value {seen}"
    comparison = f"{message.comparison} " if message.comparison else ""
    return f"value {seen} against threshold {comparison}{_with_unit(message.threshold, message.unit)}"


def when(message: Message) -> str:
    """The message's time, ISO 8601 with its offset, to the second."""
    return message.at.isoformat(timespec="seconds")


def headline(message: Message) -> str:
    """'CRITICAL firing: high-error-rate (api)'; 'Production Alert Test' for a test."""
    if message.kind == "test":
        return TEST_TITLE
    word = _KIND_WORDS[message.kind]
    if message.kind == "escalation" and message.level is not None:
        word = f"escalation level {message.level}"
    text = f"{severity_label(message.severity)} {word}"
    if message.rule:
        text += f": {message.rule}"
    if message.resource:
        text += f" ({message.resource})"
    return text


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 3, 0)].rstrip() + "..."


def _is_web_link(link: str | None) -> bool:
    # Slack refuses a whole message whose button has anything else: the page would be lost
    return bool(link) and link.startswith(("https://", "http://"))  # type: ignore[union-attr]


def _incident_line(message: Message) -> str:
    if message.incident_id is None:
        return ""
    level = f", level {message.level}" if message.level is not None else ""
    return f"incident {message.incident_id}{level} (acknowledge: runbook ack {message.incident_id} --by NAME)"


# --- Slack ---------------------------------------------------------------------------


def _mrkdwn(text: str) -> str:
    """Slack's three control characters escaped, so message text cannot ping or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(message: Message) -> str:
    """The fallback text (notifications, screen readers): headline, title, value, link."""
    head = headline(message)
    parts = [head, message.title if message.title != head else "", value_line(message), message.link or ""]
    return _cut(" | ".join(_one_line(p) for p in parts if p), SLACK_TEXT_MAX)


def slack_blocks(message: Message) -> list[dict[str, Any]]:
    """Block Kit: a header with the severity and the rule, the title and summary, the
    facts as fields, a button to the run (or the incident), and a context line."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(_one_line(headline(message)), SLACK_HEADER_MAX)}},
    ]
    lead = f"*{_mrkdwn(_one_line(message.title))}*" if message.title else ""
    if message.summary:
        lead += ("\n" if lead else "") + _mrkdwn(message.summary)
    if lead:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(lead, SLACK_TEXT_MAX)}})
    facts = [("Severity", severity_label(message.severity))] if message.kind != "test" else []
    facts += [
        ("Rule", message.rule),
        ("Value", value_line(message)),
        ("Resource", message.resource),
        ("Time", when(message)),
        ("Incident", _incident_line(message)),
    ]
    fields = [{"type": "mrkdwn", "text": _cut(f"*{name}*\n{_mrkdwn(text)}", SLACK_FIELD_MAX)} for name, text in facts if text]
    blocks.append({"type": "section", "fields": fields[:10]})  # Slack allows ten fields
    if _is_web_link(message.link):
        label = "Open the incident" if message.incident_id is not None else "Open the run"
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "action_id": "open-link", "text": {"type": "plain_text", "text": label}, "url": message.link}
                ],
            }
        )
    context = f"runbook | {message.kind}"
    if message.link and not _is_web_link(message.link):
        context += f" | {_mrkdwn(message.link)}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(context, SLACK_FIELD_MAX)}]})
    return blocks


# --- e-mail --------------------------------------------------------------------------


def email_subject(message: Message) -> str:
    """One line (a header cannot hold a line break): '[runbook] CRITICAL firing: ...'."""
    return _cut(_one_line(f"[runbook] {headline(message)}"), 200)


def email_body(message: Message) -> str:
    """Plain text: the title, the facts one per line, the summary, the link."""
    lines = [_one_line(message.title) if message.title else headline(message), ""]
    facts = [("Severity", severity_label(message.severity) if message.kind != "test" else "")]
    facts += [
        ("Rule", message.rule),
        ("Value", value_line(message)),
        ("Resource", message.resource),
        ("Time", when(message)),
        ("Incident", _incident_line(message)),
        ("Link", message.link or ""),
    ]
    lines += [f"{name + ':':<10}{text}" for name, text in facts if text]
    if message.summary:
        lines += ["", message.summary.strip()]
    if message.kind == "test":
        lines += ["", "This is a test of runbook's notification channels (runbook section 2.3). No action is needed."]
    lines += ["", f"-- runbook ({message.kind})"]
    return "\n".join(lines) + "\n"


# --- SMS and phone -------------------------------------------------------------------


def sms_text(message: Message) -> str:
    """At most SMS_MAX characters, plain ASCII punctuation (a non-GSM character would
    halve the segment size): headline, title, value, incident, time, link. The link
    and time are kept whole; the text before them is shortened when needed."""
    head = [f"[runbook] {headline(message)}"]
    if message.title and message.title != TEST_TITLE:
        head.append(message.title)
    head += [value_line(message), _incident_line(message)]
    tail = [when(message)]
    if message.link and len(message.link) <= SMS_MAX // 2:
        tail.append(message.link)
    tail_text = " " + " ".join(tail)
    front = ". ".join(_one_line(p) for p in head if p) + "."
    return _cut(front, SMS_MAX - len(tail_text)) + tail_text


def _speakable(text: str) -> str:
    for symbol in sorted(_SPOKEN_COMPARISONS, key=len, reverse=True):
        text = text.replace(f" {symbol} ", f" {_SPOKEN_COMPARISONS[symbol]} ")
    text = text.replace("%", " percent")
    text = re.sub(r"(?<=\w)-(?=\w)", " ", text)  # high-error-rate: three words, not "minus"
    return _one_line(text)


def _spoken_value(message: Message) -> str:
    unit = _SPOKEN_UNITS.get(message.unit, message.unit)

    def said(value: float) -> str:
        return f"{number(value)} {unit}".strip()

    if message.value is None and message.threshold is None:
        return ""
    seen = said(message.value) if message.value is not None else "unknown"
    if message.threshold is None:
        return f"The value is {seen}."
    comparison = _SPOKEN_COMPARISONS.get(message.comparison or "", message.comparison or "")
    return f"The value is {seen}, against a threshold of {comparison} {said(message.threshold)}.".replace("  ", " ")


def spoken_text(message: Message) -> str:
    """What the call says: who calls, the severity and rule, the value, the resource, how
    to acknowledge."""
    if message.kind == "test":
        return "This is runbook. Production Alert Test. This call tests the phone channel. No action is needed."
    parts = [
        "This is runbook.",
        f"{severity_label(message.severity).capitalize()} alert: {_speakable(headline(message).split(' ', 1)[1])}.",
    ]
    if message.title:
        parts.append(_speakable(message.title).rstrip(".") + ".")
    parts.append(_spoken_value(message))
    if message.incident_id is not None:
        level = f", level {message.level}" if message.level is not None else ""
        parts.append(f"Incident {message.incident_id}{level}. To acknowledge, run: runbook ack {message.incident_id}.")
    return _cut(" ".join(p for p in parts if p), SPOKEN_MAX)


def phone_twiml(message: Message) -> str:
    """TwiML for a call: the spoken text, said twice (the first may be missed while the
    phone is picked up)."""
    return f'<Response><Say loop="2">{xml_escape(spoken_text(message))}</Say></Response>'


# --- status page ---------------------------------------------------------------------

_PAGE_STATUS: dict[str, StatuspageStatus] = {
    "incident-open": "investigating",
    "incident-update": "identified",
    "incident-resolved": "resolved",
}


def statuspage_impact(severity: Severity) -> StatuspageImpact:
    """A critical alert is a critical incident; a warning a minor one."""
    return "critical" if severity == Severity.critical else "minor"


def statuspage_incident(
    message: Message,
    *,
    component_ids: list[str] | tuple[str, ...] = (),
    status: StatuspageStatus | None = None,
    impact: StatuspageImpact | None = None,
) -> dict[str, Any]:
    """The ``incident`` object of a Statuspage create or update. The status follows the
    kind (open: investigating, update: identified, resolved: resolved) unless given;
    the affected components are marked (outage or degraded, operational once resolved)."""
    status = status or _PAGE_STATUS.get(message.kind, "investigating")
    impact = impact or statuspage_impact(message.severity)
    text = message.summary.strip() or _one_line(message.title)
    incident: dict[str, Any] = {"status": status, "body": text, "impact_override": impact}
    if message.kind == "incident-open" or message.kind not in _PAGE_STATUS:
        incident["name"] = _cut(_one_line(message.title) or headline(message), 250)
    if component_ids:
        if status == "resolved":
            state = "operational"
        else:
            state = "major_outage" if impact == "critical" else "partial_outage" if impact == "major" else "degraded_performance"
        incident["component_ids"] = list(component_ids)
        incident["components"] = {cid: state for cid in component_ids}
    return incident
