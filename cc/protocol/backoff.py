"""Reconnect delays: chisel's exponential backoff, with jitter.

chisel uses jpillora/backoff with ``Min`` 100 ms, ``Factor`` 2, ``Max`` =
``--max-retry-interval`` (5 min) and no jitter: ``min * 2**attempt`` capped at max.
Without jitter, every connector cut off by the same gateway restart retries at the
same instants and the gateway meets a stampede on each wave; so jitter is on by
default here.  ``EQUAL`` jitter (half fixed, half random) keeps the delay growing and
never below half its nominal value; ``FULL`` is jpillora's own jitter form, uniform
between ``min`` and the nominal delay (never zero, so a dead server is never hammered);
``NONE`` reproduces chisel's exact delays.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable

__all__ = ["DEFAULT_MAX_DELAY", "DEFAULT_MIN_DELAY", "Backoff", "Jitter"]

#: chisel's first retry delay (jpillora/backoff's default Min), seconds.
DEFAULT_MIN_DELAY = 0.1
#: chisel's default ``--max-retry-interval``, seconds.
DEFAULT_MAX_DELAY = 300.0
# 2**64 * 0.1 s already dwarfs any max; stop exponentiating there (no float overflow).
_MAX_EXPONENT = 64


class Jitter(enum.Enum):
    """How the nominal delay is randomised."""

    NONE = "none"
    FULL = "full"
    EQUAL = "equal"


class Backoff:
    """Delay before each reconnect attempt; ``reset()`` after a good connection.

    ``attempts`` counts the delays handed out since the last reset, which is what
    chisel's ``b.Attempt()`` reports and compares with ``--max-retry-count``.
    ``rand`` returns floats in [0, 1); inject one for deterministic tests.
    """

    __slots__ = ("_attempts", "_rand", "factor", "jitter", "max_delay", "min_delay")

    def __init__(
        self,
        *,
        min_delay: float = DEFAULT_MIN_DELAY,
        max_delay: float = DEFAULT_MAX_DELAY,
        factor: float = 2.0,
        jitter: Jitter = Jitter.EQUAL,
        rand: Callable[[], float] | None = None,
    ) -> None:
        if not min_delay > 0:
            raise ValueError("min_delay must be > 0")
        if not max_delay >= min_delay:
            raise ValueError("max_delay must be >= min_delay")
        if not factor >= 1:
            raise ValueError("factor must be >= 1")
        self.min_delay = float(min_delay)
        self.max_delay = float(max_delay)
        self.factor = float(factor)
        self.jitter = jitter
        self._rand = rand if rand is not None else random.SystemRandom().random
        self._attempts = 0

    @property
    def attempts(self) -> int:
        """Delays returned since construction or the last ``reset()``."""
        return self._attempts

    def nominal_delay(self, attempt: int) -> float:
        """The un-jittered delay of attempt ``attempt`` (0-based): chisel's exact value."""
        exponent = min(attempt, _MAX_EXPONENT)
        try:
            return min(self.min_delay * self.factor**exponent, self.max_delay)
        except OverflowError:
            return self.max_delay

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; advances ``attempts``."""
        nominal = self.nominal_delay(self._attempts)
        self._attempts += 1
        if self.jitter is Jitter.NONE:
            return nominal
        r = min(max(self._rand(), 0.0), 1.0)
        if self.jitter is Jitter.FULL:
            return self.min_delay + r * (nominal - self.min_delay)
        half = nominal / 2
        return max(self.min_delay, half + r * half)

    def reset(self) -> None:
        """Start again from ``min_delay`` (after a connection that lasted)."""
        self._attempts = 0
