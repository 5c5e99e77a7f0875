"""Tests for the per-sender UDP mapping table (cc/protocol/udpmap.py)."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cc.protocol.udpmap import SenderTable

Addr = tuple[str, int]


def addr(n: int) -> Addr:
    return ("127.0.0.1", 40000 + n)


def test_add_get_and_len() -> None:
    table: SenderTable[Addr, str] = SenderTable(max_senders=3)
    assert table.add(addr(1), "h1", now=0.0) == []
    assert len(table) == 1
    assert addr(1) in table
    assert table.get(addr(1), now=1.0) == "h1"
    assert table.get(addr(2), now=1.0) is None
    assert table.peek(addr(1)) == "h1"


def test_full_table_evicts_least_recently_used_not_the_newcomer() -> None:
    table: SenderTable[Addr, str] = SenderTable(max_senders=3)
    for n in range(3):
        table.add(addr(n), f"h{n}", now=float(n))
    table.get(addr(0), now=5.0)  # 0 is now the most recent; 1 is the LRU
    assert table.add(addr(3), "h3", now=6.0) == [(addr(1), "h1")]
    assert list(table) == [addr(2), addr(0), addr(3)]
    assert table.touch(addr(2), now=7.0)
    assert table.add(addr(4), "h4", now=8.0) == [(addr(0), "h0")]
    assert len(table) == 3


def test_re_adding_returns_the_replaced_value_to_close() -> None:
    table: SenderTable[str, object] = SenderTable(max_senders=2)
    first, second = object(), object()
    table.add("a", first, now=0.0)
    table.add("b", second, now=0.0)
    assert table.add("a", first, now=1.0) == []  # same object: nothing to close, no eviction
    replacement = object()
    assert table.add("a", replacement, now=2.0) == [("a", first)]
    assert len(table) == 2


def test_expire_removes_only_idle_entries_oldest_first() -> None:
    table: SenderTable[Addr, str] = SenderTable(idle_timeout=15.0)
    table.add(addr(1), "h1", now=0.0)
    table.add(addr(2), "h2", now=5.0)
    table.add(addr(3), "h3", now=10.0)
    table.touch(addr(1), now=12.0)  # traffic keeps 1 alive
    assert table.next_expiry() == 20.0
    assert table.expire(now=19.9) == []
    assert table.expire(now=25.0) == [(addr(2), "h2"), (addr(3), "h3")]
    assert table.expire(now=27.0) == [(addr(1), "h1")]
    assert len(table) == 0
    assert table.next_expiry() is None


def test_idle_entry_stays_usable_until_reaped() -> None:
    table: SenderTable[Addr, str] = SenderTable(idle_timeout=1.0)
    table.add(addr(1), "h1", now=0.0)
    assert table.get(addr(1), now=10.0) == "h1"  # refreshed, so not expired at 10.5
    assert table.expire(now=10.5) == []


def test_touch_remove_clear() -> None:
    table: SenderTable[Addr, str] = SenderTable()
    assert not table.touch(addr(1), now=0.0)
    table.add(addr(1), "h1", now=0.0)
    table.add(addr(2), "h2", now=0.0)
    assert table.remove(addr(1)) == "h1"
    assert table.remove(addr(1)) is None
    assert table.clear() == [(addr(2), "h2")]
    assert len(table) == 0


def test_infinite_timeout_never_expires() -> None:
    table: SenderTable[str, int] = SenderTable(idle_timeout=math.inf)
    table.add("a", 1, now=0.0)
    assert table.expire(now=1e18) == []
    assert table.next_expiry() is None


@pytest.mark.parametrize(
    ("max_senders", "idle_timeout"), [(0, 15.0), (10, 0.0), (10, -1.0), (10, math.nan)]
)
def test_bad_limits_are_rejected(max_senders: int, idle_timeout: float) -> None:
    with pytest.raises(ValueError):
        SenderTable(max_senders=max_senders, idle_timeout=idle_timeout)


ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "get", "touch", "remove", "expire"]),
        st.integers(min_value=0, max_value=12),
        st.floats(min_value=0.0, max_value=3.0),
    ),
    max_size=200,
)


@given(st.integers(min_value=1, max_value=6), ops)
def test_matches_a_reference_lru_model(
    max_senders: int, steps: list[tuple[str, int, float]]
) -> None:
    """Against a plain model: never over capacity, evicts the LRU, expires by idle time."""
    timeout = 5.0
    table: SenderTable[int, int] = SenderTable(max_senders=max_senders, idle_timeout=timeout)
    model: OrderedDict[int, tuple[int, float]] = OrderedDict()
    now = 0.0
    counter = 0
    for op, key, step in steps:
        now += step  # a monotonic clock
        if op == "add":
            counter += 1
            value = counter  # never equal to an earlier value, so a re-add returns the old one
            expected = []
            if key in model:
                expected.append((key, model.pop(key)[0]))
            while len(model) >= max_senders:
                lru, (lru_value, _) = model.popitem(last=False)
                expected.append((lru, lru_value))
            model[key] = (value, now)
            assert table.add(key, value, now) == expected
        elif op in ("get", "touch"):
            if key in model:
                model[key] = (model[key][0], now)
                model.move_to_end(key)
                expected_value: int | None = model[key][0]
            else:
                expected_value = None
            if op == "get":
                assert table.get(key, now) == expected_value
            else:
                assert table.touch(key, now) is (expected_value is not None)
        elif op == "remove":
            entry = model.pop(key, None)
            assert table.remove(key) == (None if entry is None else entry[0])
        else:
            gone = [(k, v) for k, (v, seen) in model.items() if seen <= now - timeout]
            for k, _ in gone:
                del model[k]
            assert table.expire(now) == gone
        assert len(table) == len(model) <= max_senders
        assert list(table) == list(model)
