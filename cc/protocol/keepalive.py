"""Keepalive/liveness state, sans-I/O.

chisel's schedule (``share/tunnel/tunnel.go`` ``keepAliveLoop``): sleep
``--keepalive``, send the global request ``ping`` (want-reply), wait for the
answer, and repeat; one ping at a time, the next one ``interval`` after the last
answer.  chisel never times the answer out, so a silently dead path (NAT state
dropped, peer host gone) hangs the client until TCP gives up, which can take
many minutes.  :class:`Keepalive` keeps chisel's schedule and adds a bound: a
ping unanswered for ``reply_timeout`` means the connection is dead.

Inbound traffic (:meth:`Keepalive.activity`) does not postpone pings, because
chisel's peers and any proxy in between expect the pings on schedule and
outbound traffic alone proves nothing.  It does postpone death: SSH delivers
the ``pong`` in order behind data the peer already sent, so on a saturated
slow link the answer can be late while the peer is plainly alive.

The timers and the sending live in the I/O layer (``cc.tunnel.keepalive``);
Go-style durations live in :mod:`cc.protocol.durations`.
"""

from __future__ import annotations

import math
from collections import deque

from .errors import ProtocolError

__all__ = ["Keepalive", "KeepaliveError"]


class KeepaliveError(ProtocolError):
    """A reply arrived for a ping that was never sent: requests and replies lost sync."""


class Keepalive:
    """When to ping, and whether the peer has gone silent for too long.

    ``interval == 0`` disables scheduled pings (chisel's ``--keepalive 0s``).
    ``reply_timeout == 0`` never declares the peer dead (chisel's behaviour).
    ``min_interval`` floors ``interval`` so a typo such as ``25ms`` cannot
    flood the peer.  Times are seconds on one monotonic clock.
    """

    def __init__(
        self,
        interval: float,
        reply_timeout: float,
        min_interval: float = 0.0,
        *,
        now: float = 0.0,
    ) -> None:
        for name, value in (
            ("interval", interval),
            ("reply_timeout", reply_timeout),
            ("min_interval", min_interval),
        ):
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        self.interval = max(interval, min_interval) if interval > 0 else 0.0
        self.reply_timeout = reply_timeout
        self.last_rtt: float | None = None
        self._pending: deque[float] = deque()
        self._base = now
        self._last_activity = now

    @property
    def enabled(self) -> bool:
        """Whether pings are scheduled at all."""
        return self.interval > 0

    @property
    def outstanding(self) -> int:
        """Pings sent and not yet answered."""
        return len(self._pending)

    def reset(self, now: float) -> None:
        """Start over on a fresh connection: nothing outstanding, the clock starts at ``now``."""
        self._pending.clear()
        self._base = now
        self._last_activity = now
        self.last_rtt = None

    def next_ping_at(self, now: float) -> float | None:
        """When to send the next ping (never before ``now``), or None.

        None while disabled or while a ping is unanswered: like chisel, one ping
        at a time, the next one ``interval`` after the last answer.
        """
        if not self.enabled or self._pending:
            return None
        return max(self._base + self.interval, now)

    def ping_sent(self, now: float) -> None:
        """Record that a ``ping`` request went out at ``now``."""
        self._pending.append(now)

    def reply_received(self, now: float) -> float:
        """Record the answer to the oldest ping; return its round-trip time in seconds."""
        if not self._pending:
            raise KeepaliveError("ping reply received but no ping is outstanding")
        rtt = max(0.0, now - self._pending.popleft())
        self.last_rtt = rtt
        self._base = now
        self.activity(now)
        return rtt

    def activity(self, now: float) -> None:
        """Inbound traffic at ``now``: proof of life that defers :meth:`is_dead`."""
        self._last_activity = max(self._last_activity, now)

    def dead_at(self) -> float | None:
        """The time :meth:`is_dead` turns true unless something arrives, or None."""
        if not self._pending or self.reply_timeout <= 0:
            return None
        return max(self._pending[0], self._last_activity) + self.reply_timeout

    def overdue(self, now: float) -> bool:
        """The oldest ping has waited ``reply_timeout``: dead, unless traffic says otherwise."""
        return bool(self._pending) and 0 < self.reply_timeout <= now - self._pending[0]

    def is_dead(self, now: float) -> bool:
        """A ping has gone unanswered, and the peer silent, for ``reply_timeout``."""
        deadline = self.dead_at()
        return deadline is not None and now >= deadline
