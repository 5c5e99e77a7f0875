"""The failed-login table gateway workers share, over a plain buffer (no processes).

Two :class:`SlotFailures` over one buffer stand for two workers mapping one block;
tests/runtime/test_sharedfailures.py does it with real processes and the real lock.
"""

from __future__ import annotations

import contextlib

import pytest

from cc.protocol.authguard import AuthGuard, GuardPolicy, source_of
from cc.protocol.authslots import PROBE, SlotFailures, block_size, format_block

__all__: list[str] = []

POLICY = GuardPolicy(free_failures=2, base_delay=0.5, max_delay=8.0, ban_after=6, ban_time=60.0)


def _block(slots: int) -> bytearray:
    buffer = bytearray(block_size(slots))
    format_block(buffer, slots, bytes(range(16)))
    return buffer


def _guard(buffer: bytearray, policy: GuardPolicy = POLICY) -> AuthGuard:
    return AuthGuard(policy, SlotFailures(buffer, contextlib.nullcontext, policy.window))


def test_two_workers_on_one_block_share_one_budget() -> None:
    block = _block(64)
    one, two = _guard(block), _guard(block)
    # failures alternate between the workers; delays and the ban follow the sum
    delays = []
    for n in range(5):
        worker = one if n % 2 == 0 else two
        penalty = worker.failed("10.0.0.7", now=float(n))
        assert penalty.banned_for is None
        delays.append(penalty.delay)
    assert delays == [0.0, 0.0, 0.5, 1.0, 2.0]
    assert two.failed("10.0.0.7", now=5.0).banned_for == 60.0
    assert one.banned_for("10.0.0.7", now=6.0) == pytest.approx(59.0)
    assert one.banned_for("10.0.0.8", now=6.0) == 0.0
    # a success on one worker forgets the failures for both, not the ban
    one.failed("10.0.0.9", now=1.0)
    two.succeeded("10.0.0.9")
    assert one.table.peek("10.0.0.9") is not None
    assert one.failed("10.0.0.9", now=2.0).failures == 1
    assert two.banned_for("10.0.0.7", now=30.0) > 0


def test_an_ipv6_64_is_one_source_in_the_block_too() -> None:
    block = _block(64)
    one, two = _guard(block), _guard(block)
    for n in range(5):
        worker = one if n % 2 == 0 else two
        worker.failed(source_of(f"[2001:db8:1:2::{n + 1}]:4000"), now=float(n))
    penalty = one.failed(source_of("[2001:db8:1:2:ffff::9]:1"), now=6.0)
    assert penalty.banned_for == 60.0
    assert two.banned_for("2001:db8:1:2::/64", now=7.0) > 0


def test_a_flood_of_addresses_stays_in_the_block_and_keeps_the_ban() -> None:
    block = _block(256)
    size = len(block)
    guard = _guard(block)
    for n in range(6):
        guard.failed("192.0.2.1", now=float(n))
    assert guard.banned_for("192.0.2.1", now=10.0) > 0
    for n in range(20_000):
        guard.failed(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", now=10.0 + n * 0.001)
    assert len(block) == size, "the block never grows"
    assert len(guard) <= 256
    # unbanned records make room first, so the flood cannot wash the ban out
    assert guard.banned_for("192.0.2.1", now=40.0) > 0


def test_records_expire_after_the_window() -> None:
    policy = GuardPolicy(free_failures=0, base_delay=1.0, ban_after=100, window=60.0)
    guard = _guard(_block(PROBE), policy)
    for n in range(PROBE):
        guard.failed(f"10.0.0.{n}", now=0.0)
    assert len(guard) == PROBE
    assert guard.failed("10.0.0.0", now=30.0).failures == 2, "inside the window: counted"
    # a window later the stale records give their slots to newcomers
    for n in range(PROBE):
        guard.failed(f"10.1.0.{n}", now=100.0)
    assert guard.table.peek("10.0.0.3") is None
    assert guard.failed("10.0.0.0", now=200.0).failures == 1


def test_a_block_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(ValueError):
        SlotFailures(bytearray(block_size(64)), contextlib.nullcontext, 600.0)
    block = _block(64)
    with pytest.raises(ValueError):
        SlotFailures(block[:100], contextlib.nullcontext, 600.0)
    with pytest.raises(ValueError):
        format_block(bytearray(block_size(4)), 4, bytes(16))
