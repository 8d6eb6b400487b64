"""What a channel's answer means for the ledger, pure: transient or permanent, the
wait a 429 asks for, one outcome for several recipients."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from runbook.alerting.model import Delivery
from runbook.alerting.outcome import combine, http_failure, is_permanent_smtp, is_permanent_status, retry_after_seconds

NOW = datetime(2026, 12, 2, 0, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("30", 30.0),
        (" 1.5 ", 1.5),
        ("-4", 0.0),
        ("Wed, 02 Dec 2026 00:01:00 GMT", 60.0),
        ("Tue, 01 Dec 2026 23:00:00 GMT", 0.0),  # already past
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, NOW) == seconds


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(400, True), (401, True), (403, True), (404, True), (410, True), (422, True), (408, False), (420, False),
     (429, False), (500, False), (502, False), (503, False)],
)
def test_http_status(status: int, permanent: bool) -> None:
    assert is_permanent_status(status) is permanent
    assert http_failure("x", status).permanent is permanent


@pytest.mark.parametrize(("code", "permanent"), [(421, False), (451, False), (452, False), (535, True), (550, True), (554, True)])
def test_smtp_code(code: int, permanent: bool) -> None:
    assert is_permanent_smtp(code) is permanent


def test_throttling_keeps_the_wait_and_the_first_line_of_the_reason() -> None:
    delivery = http_failure("SMS to +81", 429, "Too Many Requests\nmore lines", 30.0)
    assert delivery == Delivery(ok=False, detail="SMS to +81: HTTP 429 Too Many Requests (rate limited; asked to wait 30 s)",
                                retry_after_seconds=30.0)


def test_combine_several_recipients() -> None:
    ok = Delivery(ok=True, detail="a", external_id="SM1")
    bad = Delivery(ok=False, detail="b", permanent=True)
    slow = Delivery(ok=False, detail="c", retry_after_seconds=30)
    assert combine([ok]) is ok
    assert combine([ok, Delivery(ok=True, detail="d", external_id="SM2")]).external_id == "SM1,SM2"
    assert combine([ok, bad]) == Delivery(ok=False, detail="a; b", permanent=True, external_id="SM1")
    mixed = combine([bad, slow])
    assert not mixed.ok and not mixed.permanent and mixed.retry_after_seconds == 30
