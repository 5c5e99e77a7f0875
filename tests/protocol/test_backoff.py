"""Reconnect backoff: chisel's exact schedule without jitter, bounded jitter otherwise."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cc.protocol.backoff import Backoff, Jitter


def _fixed(value: float) -> Backoff:
    return Backoff(jitter=Jitter.EQUAL, rand=lambda: value)


def test_no_jitter_reproduces_chisel_schedule() -> None:
    b = Backoff(jitter=Jitter.NONE)
    delays = [b.next_delay() for _ in range(14)]
    assert delays[:5] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert delays[11] == pytest.approx(204.8)
    assert delays[12:] == [300.0, 300.0]  # capped at --max-retry-interval's default


def test_attempts_count_delays_and_reset_restarts() -> None:
    b = Backoff(jitter=Jitter.NONE)
    assert b.attempts == 0
    for _ in range(3):
        b.next_delay()
    assert b.attempts == 3
    b.reset()
    assert b.attempts == 0
    assert b.next_delay() == pytest.approx(0.1)


def test_max_delay_is_configurable() -> None:
    b = Backoff(jitter=Jitter.NONE, max_delay=1.0)
    assert [b.next_delay() for _ in range(7)][-4:] == pytest.approx([0.8, 1.0, 1.0, 1.0])


def test_equal_jitter_spans_half_to_full_nominal() -> None:
    assert _fixed(0.0).next_delay() == pytest.approx(0.1)  # floor is min_delay
    low, high = _fixed(0.0), _fixed(0.999999)
    for _ in range(5):
        low.next_delay()
        high.next_delay()
    assert low.next_delay() == pytest.approx(1.6)  # 3.2 / 2
    assert high.next_delay() == pytest.approx(3.2, rel=1e-5)


def test_full_jitter_spans_min_to_nominal() -> None:
    values = itertools.cycle([0.0, 0.5])
    b = Backoff(jitter=Jitter.FULL, rand=lambda: next(values))
    assert b.next_delay() == pytest.approx(0.1)  # attempt 0: nominal 0.1, r=0
    assert b.next_delay() == pytest.approx(0.15)  # attempt 1: 0.1 + 0.5*(0.2-0.1)
    assert b.next_delay() == pytest.approx(0.1)  # never below min, never zero


def test_jitter_is_on_by_default_and_uses_injected_random() -> None:
    calls = []

    def rand() -> float:
        calls.append(1)
        return 0.5

    b = Backoff(rand=rand)
    assert b.jitter is Jitter.EQUAL
    b.next_delay()
    assert calls == [1]


def test_huge_attempt_counts_do_not_overflow() -> None:
    b = Backoff(jitter=Jitter.NONE, factor=1e300)
    delays = [b.next_delay() for _ in range(100)]
    assert delays[-1] == 300.0
    assert b.nominal_delay(10**9) == 300.0


@pytest.mark.parametrize(
    "kwargs",
    [{"min_delay": 0}, {"min_delay": 2, "max_delay": 1}, {"factor": 0.5}],
)
def test_invalid_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


@given(
    st.sampled_from(Jitter),
    st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=40),
    st.floats(0.1, 1000.0),
)
def test_delays_stay_within_min_and_max(
    jitter: Jitter, randoms: list[float], max_delay: float
) -> None:
    source = iter(randoms)
    b = Backoff(jitter=jitter, max_delay=max_delay, rand=lambda: next(source))
    for attempt in range(len(randoms)):
        delay = b.next_delay()
        assert b.min_delay <= delay <= b.max_delay
        assert delay <= b.nominal_delay(attempt) + 1e-12
