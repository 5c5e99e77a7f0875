"""Tests for the keepalive state machine (cc/protocol/keepalive.py)."""

from __future__ import annotations

import math

import pytest

from cc.protocol.errors import ProtocolError
from cc.protocol.keepalive import Keepalive, KeepaliveError


def test_schedule_follows_chisel_sleep_ping_wait_loop() -> None:
    ka = Keepalive(interval=25.0, reply_timeout=10.0, now=100.0)
    assert ka.enabled
    assert ka.next_ping_at(100.0) == 125.0
    assert ka.next_ping_at(130.0) == 130.0  # overdue: now, never in the past
    ka.ping_sent(125.0)
    assert ka.outstanding == 1
    assert ka.next_ping_at(126.0) is None  # one ping at a time
    assert ka.reply_received(125.5) == pytest.approx(0.5)
    assert ka.last_rtt == pytest.approx(0.5)
    assert ka.next_ping_at(126.0) == 150.5  # interval counted from the answer, as chisel sleeps


def test_zero_interval_disables_pings() -> None:
    ka = Keepalive(interval=0.0, reply_timeout=10.0)
    assert not ka.enabled
    assert ka.next_ping_at(1e9) is None
    assert not ka.is_dead(1e9)


def test_min_interval_floors_the_interval() -> None:
    assert Keepalive(interval=0.025, reply_timeout=5.0, min_interval=1.0).interval == 1.0
    assert Keepalive(interval=0.0, reply_timeout=5.0, min_interval=1.0).interval == 0.0
    assert Keepalive(interval=30.0, reply_timeout=5.0, min_interval=1.0).interval == 30.0


def test_unanswered_ping_means_dead_after_reply_timeout() -> None:
    ka = Keepalive(interval=25.0, reply_timeout=10.0)
    assert ka.dead_at() is None
    ka.ping_sent(25.0)
    assert ka.dead_at() == 35.0
    assert not ka.is_dead(34.9)
    assert ka.is_dead(35.0)


def test_inbound_traffic_defers_death_but_not_pings() -> None:
    ka = Keepalive(interval=25.0, reply_timeout=10.0)
    ka.activity(20.0)
    assert ka.next_ping_at(20.0) == 25.0  # traffic does not postpone the ping
    ka.ping_sent(25.0)
    ka.activity(33.0)  # data still arriving: the pong is queued behind it
    assert not ka.is_dead(40.0)
    assert ka.dead_at() == 43.0
    assert ka.overdue(35.0)  # past its deadline: only the traffic keeps it alive
    assert not ka.overdue(34.9)
    assert ka.is_dead(43.0)
    ka.activity(1.0)  # an out-of-order older timestamp never moves the clock back
    assert ka.dead_at() == 43.0


def test_zero_reply_timeout_never_declares_death_like_chisel() -> None:
    ka = Keepalive(interval=25.0, reply_timeout=0.0)
    ka.ping_sent(25.0)
    assert not ka.is_dead(1e9)
    assert not ka.overdue(1e9)
    assert ka.dead_at() is None


def test_unsolicited_reply_and_reset() -> None:
    ka = Keepalive(interval=5.0, reply_timeout=1.0)
    with pytest.raises(KeepaliveError):
        ka.reply_received(1.0)
    ka.ping_sent(5.0)
    ka.ping_sent(6.0)  # replies match requests in order
    assert ka.reply_received(7.0) == 2.0
    ka.reset(100.0)
    assert ka.outstanding == 0
    assert ka.last_rtt is None
    assert ka.next_ping_at(100.0) == 105.0
    assert isinstance(KeepaliveError("x"), ProtocolError)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bad_settings_are_rejected(bad: float) -> None:
    with pytest.raises(ValueError):
        Keepalive(interval=bad, reply_timeout=1.0)
    with pytest.raises(ValueError):
        Keepalive(interval=1.0, reply_timeout=bad)
