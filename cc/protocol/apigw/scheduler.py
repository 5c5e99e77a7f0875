"""Which connector serves a request: the least busy one, ties broken at random.

socket-gateway picks ``client source port % count``, so a keep-alive client (or a
load balancer in front, with a few long-lived connections) pins all of its
requests on one inner layer.  Choosing per request by requests in flight spreads
load by what each connector is actually doing, and a slow connector gets fewer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["least_in_flight"]

T = TypeVar("T")


def least_in_flight(
    candidates: Sequence[T],
    in_flight: Callable[[T], int],
    randbelow: Callable[[int], int],
    exclude: object = None,
) -> T | None:
    """The candidate with the fewest requests in flight, a random one among equals.

    ``randbelow(n)`` returns 0..n-1 (``random.randrange``; tests pass their own).
    ``exclude`` is never chosen (a retry must not land on the connector that just
    failed); None if there is no candidate.
    """
    best: list[T] = []
    least = -1
    for candidate in candidates:
        if candidate is exclude:
            continue
        load = in_flight(candidate)
        if least < 0 or load < least:
            least = load
            best = [candidate]
        elif load == least:
            best.append(candidate)
    if not best:
        return None
    if len(best) == 1:
        return best[0]
    return best[randbelow(len(best))]
