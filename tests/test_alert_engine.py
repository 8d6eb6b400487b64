"""The alert rules and state machine, pure: no database, no clock but the one passed in."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from runbook.alerting.engine import AlertState, Policy, evaluate, new_state
from runbook.alerting.rules import DEFAULT_RULES, Rule, load_rules
from runbook.errors import ConfigError

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)
MIN = timedelta(minutes=1)
POLICY = Policy(repeat_interval=timedelta(hours=4), flap_changes=4, flap_window=timedelta(minutes=30))


def rule(**kw: object) -> Rule:
    base = {"name": "high-error-rate", "metric": "error_rate_pct", "comparison": ">=", "threshold": 5, "severity": "critical", "for": 2}
    return Rule.model_validate({**base, **kw})


def run(r: Rule, values: list[float | None], *, start: AlertState | None = None, suppressed: list[str | None] | None = None,
        step: timedelta = MIN, at: datetime = T0) -> tuple[AlertState, list[tuple[int, str]]]:
    """Evaluate ``values`` one minute apart; the notices as (minute, kind)."""
    state = start or new_state(r, "api")
    sent = []
    for i, value in enumerate(values):
        state, notices = evaluate(state, r, value, at + i * step, POLICY, suppressed=(suppressed or [None] * len(values))[i])
        sent += [(i, n.kind) for n in notices]
    return state, sent


@pytest.mark.parametrize(
    "comparison, threshold, value, breached",
    [(">=", 5, 5, True), (">=", 5, 4.99, False), (">", 80, 80, False), (">", 80, 80.1, True), ("<=", 0, 0, True),
     ("<=", 0, 1, False), ("<", 1, 0.5, True), ("==", 1, 1, True), ("!=", 1, 1, False)],
)
def test_comparisons(comparison: str, threshold: float, value: float, breached: bool) -> None:
    assert rule(comparison=comparison, threshold=threshold).breached(value) is breached


def test_the_defaults_are_the_guides_rules() -> None:
    by_name = {r.name: r for r in DEFAULT_RULES}
    # §2.2
    assert (by_name["high-error-rate"].threshold, by_name["high-error-rate"].severity.value) == (5, "critical")
    assert by_name["high-error-rate"].routes() == ("slack", "email", "sms")
    assert (by_name["high-response-time"].threshold, by_name["high-response-time"].severity.value) == (5000, "warning")
    assert by_name["database-down"].routes() == ("slack", "email", "sms", "phone")
    assert by_name["database-down"].for_ == 1 and by_name["database-down"].threshold == 0
    # §7.1 warning/critical pairs, §7.2's 80 GB
    assert {(n, by_name[n].threshold) for n in ("cpu-warning", "cpu-critical", "memory-warning", "memory-critical", "disk-warning",
                                                "disk-critical", "database-size")} == {
        ("cpu-warning", 70), ("cpu-critical", 85), ("memory-warning", 80), ("memory-critical", 90), ("disk-warning", 80),
        ("disk-critical", 90), ("database-size", 80)}
    load_rules(DEFAULT_RULES, {"slack", "email"})  # every default rule reaches Slack or e-mail


@pytest.mark.parametrize(
    "bad, said",
    [({"metric": "errors"}, "unknown metric 'errors'"), ({"channels": ["pager"]}, "unknown channel 'pager'"),
     ({"inhibited_by": ["nope"]}, "inhibited_by names no rule 'nope'")],
)
def test_bad_rules_are_refused_naming_the_setting(bad: dict[str, object], said: str) -> None:
    with pytest.raises(ConfigError, match="RUNBOOK_ALERTS__RULES") as err:
        load_rules([rule(**bad)])
    assert said in str(err.value)


def test_a_rule_whose_channels_cannot_send_is_refused() -> None:
    with pytest.raises(ConfigError, match="none of its channels"):
        load_rules([rule(channels=["sms", "phone"])], {"slack"})


def test_a_blip_shorter_than_for_sends_nothing() -> None:
    state, sent = run(rule(**{"for": 3}), [9, 9, 1, 9, 9, 1])
    assert sent == [] and state.status == "inactive"


def test_fires_once_after_for_then_repeats_then_resolves() -> None:
    r = rule()
    state, sent = run(r, [9, 9, 9, 9])
    assert sent == [(1, "firing")] and state.status == "firing" and state.active_since == T0
    # four hours on: one repeat; then it clears: resolved, once
    later, sent = run(r, [9] * 3, start=state, step=timedelta(hours=2), at=T0 + 4 * MIN)
    assert sent == [(2, "repeat")]
    done, sent = run(r, [1, 1], start=later, at=T0 + timedelta(hours=5))
    assert sent == [(0, "resolved")] and done.status == "inactive"


def test_no_value_keeps_the_state_and_never_resolves() -> None:
    state, _ = run(rule(), [9, 9])
    kept, sent = run(rule(), [None, None, None], start=state)
    assert kept.status == "firing" and sent == []


def test_flapping_collapses_to_one_notice_until_stable() -> None:
    r = rule(**{"for": 1})
    values = [9, 1] * 6  # twelve changes in twelve minutes
    state, sent = run(r, values)
    kinds = [k for _, k in sent]
    assert kinds.count("flapping") == 1
    assert kinds[: kinds.index("flapping")] == ["firing", "resolved", "firing", "resolved"]
    assert "firing" not in kinds[kinds.index("flapping") + 1:]
    # stable (firing) for a whole window: one "stable" notice, then quiet
    settled, sent = run(r, [9] * 40, start=state, at=T0 + 12 * MIN)
    assert [k for _, k in sent] == ["stable"] and settled.flapping is False and settled.told


def test_silence_holds_notices_and_its_end_notifies_at_once() -> None:
    r = rule(**{"for": 1})
    silenced = "silenced by silence #1"
    state, sent = run(r, [9, 9, 9, 9], suppressed=[silenced, silenced, None, None])
    assert sent == [(2, "firing")]  # the minute the silence ended, not four hours later
    # told before the silence, silenced, then unsilenced: told again at once
    state, _ = run(r, [9])
    state, sent = run(r, [9, 9, 9], start=state, suppressed=[silenced, None, None])
    assert sent == [(1, "firing")]


def test_a_firing_resolved_while_silenced_resolves_quietly() -> None:
    r = rule(**{"for": 1})
    _, sent = run(r, [9, 1], suppressed=["silenced by silence #1"] * 2)
    assert sent == []


def test_dedup_keys_name_the_episode() -> None:
    r = rule(**{"for": 1})
    keys = []
    state = new_state(r, "api")
    for i, v in enumerate([9, 1, 9]):
        state, notices = evaluate(state, r, v, T0 + i * timedelta(hours=1), POLICY)
        keys += [n.dedup_key for n in notices]
    assert keys == ["firing:high-error-rate|api#1", "resolved:high-error-rate|api#1", "firing:high-error-rate|api#2"]


def test_keep_firing_holds_a_firing_alert_until_the_signal_has_been_clear_that_long() -> None:
    kept = rule(**{"for": 1, "keep_firing_minutes": 10})
    # fires at 0; clear from 1; a breach at 5 starts the wait again; clear from 6 on: resolved at 16, not before
    state, sent = run(kept, [9, 0, 0, 0, 0, 9] + [0] * 12)
    assert sent == [(0, "firing"), (16, "resolved")]
    assert state.status == "inactive" and state.clear_since is None
    # held, it is still firing for the incident and the escalation, with the clear value seen
    held, _ = run(kept, [9, 0, 0])
    assert held.status == "firing" and held.last_value == 0 and held.clear_since == T0 + MIN
    # no value while held neither resolves nor restarts the wait; without keep_firing the first clear resolves
    state, sent = run(kept, [9, 0, None, None], step=timedelta(minutes=5))
    assert state.status == "firing" and state.clear_since == T0 + 5 * MIN and sent == [(0, "firing")]
    assert run(kept, [9, 0, None, None, 0], step=timedelta(minutes=5))[1] == [(0, "firing"), (4, "resolved")]
    assert run(rule(**{"for": 1}), [9, 0])[1] == [(0, "firing"), (1, "resolved")]


def test_security_critical_is_kept_firing_past_the_whole_escalation_chain() -> None:
    security = {r.name: r for r in DEFAULT_RULES}["security-critical"]
    assert security.keep_firing_minutes > 60  # §9's last level pages at 60 minutes
