"""Detectors, repeat offenders and block targets: pure, on generated attack patterns
mixed into a wide normal background, and on a golden event file."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from runbook.errors import ConfigError
from runbook.security.detectors import DEFAULT_DETECTORS, Detector, Event, block_duration, decayed_offences, detect
from runbook.security.targets import check_target

FIXTURES = Path(__file__).parent / "fixtures" / "security"
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)
BY_NAME = {d.name: d for d in DEFAULT_DETECTORS}


def background(seed: int = 7, hours: int = 6) -> list[Event]:
    """Normal traffic: 2,000 users logging in from 1,500 addresses, one failure in ten,
    and API calls spread over 300 keys."""
    rng = random.Random(seed)
    events = []
    for i in range(6000):
        at = T0 + timedelta(seconds=rng.uniform(0, hours * 3600))
        events.append(Event(at=at, fields={"ip": f"192.0.2.{rng.randrange(250)}" if i % 2 else f"198.18.{rng.randrange(6)}.{rng.randrange(250)}",
                                           "user": f"user{rng.randrange(2000)}", "success": rng.random() > 0.1}))
    return events


def api_background(seed: int = 8) -> list[Event]:
    rng = random.Random(seed)
    return [Event(at=T0 + timedelta(seconds=rng.uniform(0, 3600)), fields={"key": f"key{rng.randrange(300)}",
                  "ip": f"198.18.9.{rng.randrange(250)}", "status": 200}) for _ in range(20000)]


def attack(ip: str, users: list[str], start: datetime, every: timedelta) -> list[Event]:
    return [Event(at=start + i * every, fields={"ip": ip, "user": user, "success": False}) for i, user in enumerate(users)]


def test_the_background_alone_finds_nothing() -> None:
    events = background()
    for name in ("brute-force", "credential-stuffing"):
        assert detect(BY_NAME[name], events) == []
    for name in ("api-abuse-key", "api-abuse-ip", "api-unauthorized"):
        assert detect(BY_NAME[name], api_background()) == []


def test_brute_force_from_one_ip_is_found_with_its_evidence() -> None:
    burst = attack("203.0.113.66", ["admin"] * 40, T0 + timedelta(hours=2), timedelta(seconds=10))
    (finding,) = detect(BY_NAME["brute-force"], background() + burst)
    assert finding.group == {"ip": "203.0.113.66"} and finding.count >= 20
    assert finding.first_at >= burst[0].at and finding.last_at <= burst[-1].at
    assert len(finding.samples) == 5 and all(s["ip"] == "203.0.113.66" for s in finding.samples)


def test_credential_stuffing_counts_distinct_users() -> None:
    stuffing = attack("203.0.113.77", [f"victim{i}" for i in range(15)], T0 + timedelta(hours=1), timedelta(minutes=1))
    same_user = attack("203.0.113.78", ["bob"] * 15, T0 + timedelta(hours=1), timedelta(minutes=1))
    found = detect(BY_NAME["credential-stuffing"], background() + stuffing + same_user)
    assert [(f.group["ip"], f.count) for f in found] == [("203.0.113.77", 15)]


def test_an_abusive_api_key_is_found() -> None:
    abuse = [Event(at=T0 + timedelta(minutes=30, seconds=i * 0.05), fields={"key": "key-leaked", "ip": "198.18.9.1", "status": 200})
             for i in range(900)]
    found = detect(BY_NAME["api-abuse-key"], api_background() + abuse)
    assert [f.group for f in found] == [{"key": "key-leaked"}] and found[0].count >= 600


def test_a_slow_attack_just_under_the_threshold_does_not_fire() -> None:
    detector = BY_NAME["brute-force"]
    # 19 failures in every 10 minutes, for hours: always one under 20
    every = detector.window / 19 + timedelta(seconds=1)
    slow = attack("203.0.113.99", ["admin"] * 200, T0, every)
    assert detect(detector, background() + slow) == []
    faster = attack("203.0.113.99", ["admin"] * 200, T0, detector.window / 20 - timedelta(seconds=1))
    assert [f.group["ip"] for f in detect(detector, faster)] == ["203.0.113.99"]


def test_replaying_the_same_events_in_any_order_gives_the_same_findings() -> None:
    events = background() + attack("203.0.113.66", ["a"] * 30, T0 + timedelta(hours=3), timedelta(seconds=5))
    shuffled = list(events)
    random.Random(1).shuffle(shuffled)
    assert detect(BY_NAME["brute-force"], events) == detect(BY_NAME["brute-force"], shuffled)


def test_the_golden_event_file_gives_the_expected_findings() -> None:
    events = []
    for line in (FIXTURES / "auth-golden.jsonl").read_text().splitlines():
        record = json.loads(line)
        events.append(Event(at=datetime.fromisoformat(record.pop("at")), fields=record))
    detector = Detector(name="golden-brute-force", source="auth", where={"success": False}, window_minutes=5, threshold=3)
    found = [{"detector": f.detector, "group": f.group, "count": f.count, "first_at": f.first_at.isoformat(), "last_at": f.last_at.isoformat()}
             for f in detect(detector, events)]
    assert found == json.loads((FIXTURES / "auth-golden.expected.json").read_text())


@pytest.mark.parametrize("offences, expected_minutes", [(1, 60), (2, 120), (3, 240), (4, 480), (9, 1440)])
def test_repeat_offenders_double_up_to_the_cap(offences: int, expected_minutes: int) -> None:
    assert block_duration(offences, timedelta(hours=1), timedelta(days=1)) == timedelta(minutes=expected_minutes)


def test_offences_decay_after_quiet_periods() -> None:
    quiet = timedelta(days=1)
    assert decayed_offences(3, T0, T0 + timedelta(hours=23), quiet) == 3
    assert decayed_offences(3, T0, T0 + timedelta(days=2, hours=1), quiet) == 1
    assert decayed_offences(3, T0, T0 + timedelta(days=5), quiet) == 0


@pytest.mark.parametrize(
    "target, said",
    [("10.0.0.0/8", "private"), ("127.0.0.1", "loopback"), ("192.168.1.5", "private"), ("not-an-ip", "not an IP address"),
     ("93.184.216.7/24", "host bits set"), ("93.184.0.0/12", "host bits"), ("0.0.0.0/0", "broader than /16"),
     ("93.184.216.0/24", "allow-list"), ("1.2.3.4", "operator's own address")],
)
def test_block_targets_that_could_lock_out_the_team_are_refused(target: str, said: str) -> None:
    with pytest.raises(ConfigError, match="^ip: ") as err:
        check_target(target, allow_list=["93.184.216.0/25"], operator_ip="1.2.3.4")
    assert said in str(err.value)


def test_force_needs_a_reason_and_then_overrides() -> None:
    with pytest.raises(ConfigError, match="--force needs --reason"):
        check_target("10.1.2.3", allow_list=[], operator_ip=None, force=True)
    network, overridden = check_target("10.1.2.3", allow_list=[], operator_ip=None, force=True, reason="compromised VPN host")
    assert str(network) == "10.1.2.3/32" and overridden == ["10.1.2.3/32 is a private range"]
    assert check_target("2a00:1450:4001::/48", allow_list=[], operator_ip=None)[0].prefixlen == 48
    # an allow-list and an operator address of the other IP version do not stand in the way
    network, overridden = check_target("93.184.216.34", allow_list=["2a00:1450::/32"], operator_ip="2a00:1450::1")
    assert (str(network), overridden) == ("93.184.216.34/32", [])


def test_refused_ratio_fires_on_the_share_not_the_volume() -> None:
    detector = BY_NAME["api-refused-ratio"]
    busy_ok = [Event(at=T0 + timedelta(seconds=i), fields={"key": "k-busy", "status": 200 if i % 5 else 401}) for i in range(400)]
    refused = [Event(at=T0 + timedelta(seconds=2 * i), fields={"key": "k-bad", "status": 401 if i % 3 else 429}) for i in range(150)]
    few = [Event(at=T0 + timedelta(seconds=i), fields={"key": "k-few", "status": 401}) for i in range(detector.threshold - 1)]
    (finding,) = detect(detector, busy_ok + refused + few + api_background())
    assert finding.group == {"key": "k-bad"} and finding.count >= detector.threshold  # 401 and 429 both count
    with pytest.raises(ValueError, match="go together"):
        Detector(name="x", source="api", window_minutes=1, threshold=1, ratio=0.5)


def test_where_accepts_a_list_of_values() -> None:
    detector = Detector(name="refused", source="api", where={"status": [401, 403]}, group_by=("ip",), window_minutes=1, threshold=3)
    events = [Event(at=T0 + timedelta(seconds=i), fields={"ip": "1.2.3.4", "status": s}) for i, s in enumerate([401, 403, 200, 401])]
    assert [f.count for f in detect(detector, events)] == [3]
    with pytest.raises(ValueError, match="matches nothing"):
        Detector(name="refused", source="api", where={"status": []}, window_minutes=1, threshold=1)


def test_an_auth_failure_spike_is_judged_against_the_same_hour_of_previous_days() -> None:
    from runbook.security.detectors import DEFAULT_SPIKES, spike

    detector = DEFAULT_SPIKES[0]
    assert spike(detector, 200, [40, 50, 45, 60, 55, 38, 42]) == (True, pytest.approx(47.142857, rel=1e-5))
    assert spike(detector, 120, [40, 50, 45, 60, 55, 38, 42])[0] is False  # under 3x the mean
    assert spike(detector, 49, [0] * 7)[0] is False  # under min_count, however quiet the baseline
    assert spike(detector, 50, [])[0] is True


def test_a_continuing_attack_is_one_offence() -> None:
    from runbook.security.detectors import new_offence

    gap = timedelta(minutes=10)
    assert new_offence(T0, None, gap)
    assert not new_offence(T0 + timedelta(minutes=9), T0, gap)  # the same attack, seen by the next run
    assert new_offence(T0 + timedelta(minutes=11), T0, gap)  # it stopped for a window, then came back
