"""What each channel shows of a message, pure: Slack Block Kit, e-mail, SMS, the
phone call's TwiML, a status-page incident."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from runbook.alerting import render
from runbook.alerting.model import Message, Severity
from tests.standins import AT, LINK, alert_message

JST = timezone(timedelta(hours=9))


def firing(**changes: Any) -> Message:
    return alert_message(**changes)


def test_message_time_must_have_an_offset() -> None:
    with pytest.raises(ValidationError):
        firing(at=datetime(2026, 12, 2, 3, 4, 5))


@pytest.mark.parametrize(
    ("value", "shown"),
    [(5.0, "5"), (7.2, "7.2"), (7.199999, "7.2"), (5200.0, "5200"), (0.004, "0.004"), (-1.5, "-1.5"), (12345.678, "12345.68")],
)
def test_numbers_read_as_people_write_them(value: float, shown: str) -> None:
    assert render.number(value) == shown


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        ({}, "value 7.2 % against threshold >= 5 %"),
        ({"unit": "ms", "value": 5200.0, "threshold": 5000.0}, "value 5200 ms against threshold >= 5000 ms"),
        ({"unit": "", "value": 0.0, "threshold": 0.0, "comparison": "=="}, "value 0 against threshold == 0"),
        ({"value": None}, "value unknown against threshold >= 5 %"),
        ({"threshold": None}, "value 7.2 %"),
        ({"value": None, "threshold": None}, ""),
    ],
)
def test_value_against_threshold(changes: dict[str, Any], line: str) -> None:
    assert render.value_line(firing(**changes)) == line


def test_slack_blocks_carry_severity_rule_value_resource_time_and_link() -> None:
    blocks = render.slack_blocks(firing())
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": "CRITICAL firing: high-error-rate (api)"}}
    fields = {f["text"].split("\n")[0]: f["text"].split("\n", 1)[1] for f in blocks[2]["fields"]}
    assert fields == {
        "*Severity*": "CRITICAL",
        "*Rule*": "high-error-rate",
        "*Value*": "value 7.2 % against threshold &gt;= 5 %",  # Slack's mrkdwn escaping
        "*Resource*": "api",
        "*Time*": "2026-12-02T03:04:05+09:00",
    }
    (button,) = blocks[3]["elements"]
    assert blocks[3]["type"] == "actions" and button["url"] == LINK and button["text"]["text"] == "Open the run"
    assert "Error rate above 5 %" in blocks[1]["text"]["text"]
    text = render.slack_text(firing())
    assert "CRITICAL" in text and "value 7.2 % against threshold >= 5 %" in text and LINK in text


def test_slack_warning_without_link_has_no_button() -> None:
    blocks = render.slack_blocks(firing(severity=Severity.warning, link=None))
    assert blocks[0]["text"]["text"].startswith("WARNING ")
    assert all(b["type"] != "actions" for b in blocks)


def test_a_link_slack_would_refuse_goes_into_the_context_not_a_button() -> None:
    blocks = render.slack_blocks(firing(link="runs/0b5e"))
    assert all(b["type"] != "actions" for b in blocks)
    assert "runs/0b5e" in blocks[-1]["elements"][0]["text"]


def test_slack_escapes_text_that_would_ping_or_link() -> None:
    blocks = render.slack_blocks(firing(summary="<!channel> & <https://evil|click>"))
    assert "&lt;!channel&gt; &amp; &lt;https://evil|click&gt;" in blocks[1]["text"]["text"]


def test_slack_respects_block_kit_limits() -> None:
    blocks = render.slack_blocks(firing(rule="r" * 400, summary="s" * 5000))
    assert len(blocks[0]["text"]["text"]) <= 150
    assert len(blocks[1]["text"]["text"]) <= 3000
    assert all(len(f["text"]) <= 2000 for f in blocks[2]["fields"])
    json.dumps(blocks)


def test_test_message_is_production_alert_test() -> None:
    message = Message(kind="test", title="Production Alert Test", at=AT, summary="Sent by runbook alert-test.")
    assert render.slack_blocks(message)[0]["text"]["text"] == "Production Alert Test"
    assert render.slack_text(message).startswith("Production Alert Test")
    assert render.email_subject(message) == "[runbook] Production Alert Test"
    assert "Production Alert Test" in render.sms_text(message)
    assert "Production Alert Test" in render.spoken_text(message)


def test_email_subject_and_body() -> None:
    message = firing(incident_id=12, level=2, kind="escalation")
    assert render.email_subject(message) == "[runbook] CRITICAL escalation level 2: high-error-rate (api)"
    body = render.email_body(message)
    assert body.startswith("CRITICAL high-error-rate firing: api error rate 7.2 % >= 5 %\n")
    for line in (
        "Severity: CRITICAL",
        "Rule:     high-error-rate",
        "Value:    value 7.2 % against threshold >= 5 %",
        "Resource: api",
        "Time:     2026-12-02T03:04:05+09:00",
        "Incident: incident 12, level 2 (acknowledge: runbook ack 12 --by NAME)",
        f"Link:     {LINK}",
    ):
        assert line in body.splitlines()
    assert "Error rate above 5 % for 3 evaluations." in body


def test_email_subject_is_one_line() -> None:
    assert "\n" not in render.email_subject(firing(rule="a\nb", resource="c\r\nd"))


def test_sms_has_the_facts_within_320_characters() -> None:
    text = render.sms_text(firing())
    assert len(text) <= 320
    assert text.startswith("[runbook] CRITICAL firing: high-error-rate (api).")
    assert "value 7.2 % against threshold >= 5 %" in text
    assert text.endswith(f"2026-12-02T03:04:05+09:00 {LINK}")
    assert text.isascii()


def test_a_long_sms_is_shortened_before_the_time_and_link() -> None:
    text = render.sms_text(firing(title="t" * 1000, summary="s" * 1000))
    assert len(text) == 320
    assert text.endswith(f"... 2026-12-02T03:04:05+09:00 {LINK}")


def test_the_call_speaks_words_not_symbols_in_escaped_twiml() -> None:
    message = firing(title="api & db <down>", incident_id=7, level=3, kind="escalation")
    twiml = render.phone_twiml(message)
    say = ET.fromstring(twiml).find("Say")  # well-formed XML: the & and <> were escaped
    assert say is not None and say.get("loop") == "2"
    spoken = say.text or ""
    assert "api & db <down>" in spoken
    assert "Critical alert: escalation level 3: high error rate (api)." in spoken
    assert "The value is 7.2 percent, against a threshold of at or above 5 percent." in spoken
    assert "runbook ack 7" in spoken
    assert ">=" not in spoken and "%" not in spoken


@pytest.mark.parametrize(
    ("kind", "status"),
    [("incident-open", "investigating"), ("incident-update", "identified"), ("incident-resolved", "resolved")],
)
def test_statuspage_incident_status_follows_the_kind(kind: str, status: str) -> None:
    incident = render.statuspage_incident(firing(kind=kind), component_ids=["cmp1"])
    assert incident["status"] == status
    assert incident["impact_override"] == "critical"
    assert incident["body"] == "Error rate above 5 % for 3 evaluations."
    assert ("name" in incident) == (kind == "incident-open")
    assert incident["component_ids"] == ["cmp1"]
    assert incident["components"] == {"cmp1": "operational" if status == "resolved" else "major_outage"}


def test_statuspage_warning_is_minor_and_status_can_be_given() -> None:
    incident = render.statuspage_incident(firing(kind="incident-update", severity=Severity.warning), status="monitoring")
    assert incident == {"status": "monitoring", "body": "Error rate above 5 % for 3 evaluations.", "impact_override": "minor"}
