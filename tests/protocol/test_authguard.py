"""Per-source login penalties and bans, and the rate-limited failure log (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cc.protocol.authguard import AuthGuard, FailureLog, GuardPolicy, source_of

__all__: list[str] = []

POLICY = GuardPolicy(
    free_failures=3,
    base_delay=0.5,
    max_delay=8.0,
    ban_after=10,
    ban_time=60.0,
    max_ban_time=200.0,
    window=600.0,
    max_sources=100,
)


@pytest.mark.parametrize(
    ("address", "source"),
    [
        ("10.0.0.7:51234", "10.0.0.7"),
        ("10.0.0.7", "10.0.0.7"),
        ("[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"),
        ("[2001:db8:1:2:ffff::1]:1", "2001:db8:1:2::/64"),
        ("[::ffff:10.0.0.7]:80", "10.0.0.7"),
        ("[fe80::1%eth0]:22", "fe80::/64"),
        ("?", "?"),
    ],
)
def test_a_source_is_an_ipv4_address_or_an_ipv6_64(address: str, source: str) -> None:
    assert source_of(address) == source


def test_free_failures_cost_nothing_then_the_delay_doubles_to_its_cap() -> None:
    guard = AuthGuard(POLICY)
    delays = [guard.failed("a", now=float(i)).delay for i in range(9)]
    assert delays == [0.0, 0.0, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_ban_after_enough_failures_doubles_on_repeat_up_to_the_cap() -> None:
    guard = AuthGuard(POLICY)
    for i in range(9):
        assert guard.failed("a", now=i).banned_for is None
    assert guard.banned_for("a", now=9) == 0.0
    penalty = guard.failed("a", now=9)
    assert penalty.banned_for == 60.0
    assert guard.banned_for("a", now=10) == pytest.approx(59.0)
    assert guard.banned_for("b", now=10) == 0.0, "another source is not affected"
    assert guard.banned_for("a", now=69.5) == 0.0
    bans = []
    now = 70.0
    for _ in range(3):
        for _ in range(10):
            now += 1
            penalty = guard.failed("a", now=now)
        assert penalty.banned_for is not None
        bans.append(penalty.banned_for)
        now += penalty.banned_for
    assert bans == [120.0, 200.0, 200.0]


def test_a_success_forgets_failures_but_not_a_running_ban() -> None:
    guard = AuthGuard(POLICY)
    for i in range(5):
        guard.failed("a", now=i)
    guard.succeeded("a")
    assert guard.failed("a", now=6).delay == 0.0
    for i in range(10):
        guard.failed("b", now=i)
    guard.succeeded("b")
    assert guard.banned_for("b", now=20) > 0


def test_failures_older_than_the_window_are_forgotten() -> None:
    guard = AuthGuard(POLICY)
    for i in range(8):
        guard.failed("a", now=i)
    assert guard.failed("a", now=8 + 601).delay == 0.0
    assert len(guard) == 1
    guard.failed("b", now=5000)
    assert len(guard) == 1, "a quiet source is dropped from the table"


def test_the_table_is_bounded_oldest_first() -> None:
    guard = AuthGuard(POLICY)
    for i in range(250):
        guard.failed(f"s{i}", now=float(i) / 1000)
    assert len(guard) == 100
    for _ in range(2):
        guard.failed("s249", now=1.0)
    assert guard.failed("s249", now=1.0).delay == 0.5, "the newest source kept its count"


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 5)), max_size=200))
def test_delay_and_ban_stay_within_policy(events: list[tuple[str, float]]) -> None:
    guard = AuthGuard(POLICY)
    now = 0.0
    for source, step in events:
        now += step
        penalty = guard.failed(source, now)
        assert 0.0 <= penalty.delay <= POLICY.max_delay
        assert penalty.banned_for is None or POLICY.ban_time <= penalty.banned_for <= 200.0
        assert guard.banned_for(source, now) <= POLICY.max_ban_time


def test_failure_log_summarises_a_flood() -> None:
    log = FailureLog(interval=60.0)
    first = log.record("10.0.0.7", 0.0, "Login failed for user: x (from 10.0.0.7:1)")
    assert first is not None and first.startswith("Login failed for user: x")
    assert all(log.record("10.0.0.7", t / 10, "...") is None for t in range(1, 500))
    assert log.flush(59.0) == []
    assert log.flush(60.0) == ["499 failed logins from 10.0.0.7 in the last 60 s"]
    assert log.record("10.0.0.7", 70.0, "...") is None, "still in a noisy interval"
    assert log.flush(120.0) == ["1 failed logins from 10.0.0.7 in the last 60 s"]
    assert log.flush(180.0) == [], "a quiet interval ends the summaries"
    assert log.record("10.0.0.7", 200.0, "again") is not None


def test_failure_log_is_bounded() -> None:
    log = FailureLog(interval=60.0, max_sources=10)
    lines = [log.record(f"10.0.0.{i}", 0.0, f"fail {i}") for i in range(30)]
    assert sum(line is not None for line in lines) == 10, "the overflow is only summarised"
    assert "20 failed logins from other addresses" in " ".join(log.flush(60.0))


def test_failures_during_a_long_ban_keep_the_delay_at_its_cap() -> None:
    """Failures go on counting while banned; 2 ** 1100 once overflowed the delay."""
    guard = AuthGuard(GuardPolicy(ban_after=10**6))
    delays = {guard.failed("a", now=i * 0.001).delay for i in range(1200)}
    assert max(delays) == GuardPolicy().max_delay
