"""The scheduler: least requests in flight, ties at random, the failed connector skipped."""

from __future__ import annotations

import random
from collections import Counter

from cc.protocol.apigw.scheduler import least_in_flight

__all__: list[str] = []


def test_least_busy_wins() -> None:
    load = {"a": 3, "b": 1, "c": 2}
    assert least_in_flight(list(load), load.__getitem__, lambda n: 0) == "b"


def test_ties_are_broken_by_the_random_source() -> None:
    load = {"a": 1, "b": 0, "c": 0}
    assert least_in_flight(list(load), load.__getitem__, lambda n: 0) == "b"
    assert least_in_flight(list(load), load.__getitem__, lambda n: n - 1) == "c"


def test_ties_spread_evenly() -> None:
    rng = random.Random(7)
    picks = Counter(least_in_flight(["a", "b"], lambda _: 0, rng.randrange) for _ in range(1000))
    assert abs(picks["a"] - picks["b"]) < 200


def test_exclude_and_empty() -> None:
    assert least_in_flight(["a", "b"], lambda c: 0 if c == "a" else 5, lambda n: 0, "a") == "b"
    assert least_in_flight(["a"], lambda _: 0, lambda n: 0, "a") is None
    assert least_in_flight([], lambda _: 0, lambda n: 0) is None


def test_one_keep_alive_client_is_not_pinned() -> None:
    """Sequential requests (one in flight at a time) alternate at random, unlike port % n."""
    rng = random.Random(1)
    in_flight = Counter[str]()
    served = Counter[str]()
    for _ in range(1000):
        chosen = least_in_flight(["a", "b"], in_flight.__getitem__, rng.randrange)
        assert chosen is not None
        served[chosen] += 1
    assert 400 <= served["a"] <= 600
