"""One keepalive for both ends of a session: the timers and pings around ``Keepalive``.

The schedule and the verdict are the sans-I/O :class:`cc.protocol.keepalive.Keepalive`
(chisel's sleep/ping/wait loop plus a reply deadline).  This driver sends the
``ping`` global requests, feeds the answers back, and folds in the time the
session's WebSocket transport last received anything: SSH delivers the answer
behind the data the peer sent first, so on a saturated link a late answer with
data still arriving is a live peer, while a silent peer is declared dead at
``interval + reply_timeout`` at the latest.  The connector and the gateway use the
same driver; only what ``on_dead`` does differs (reconnect, or free the reverse
ports).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Protocol

import asyncssh

from cc.protocol.keepalive import Keepalive
from cc.ssh import send_global_request
from cc.transport.websocket import RECEIVE_CLOCK_INFO

__all__ = ["KeepaliveDriver", "ReceiveClock"]

_NEVER = float("-inf")


class ReceiveClock(Protocol):
    """Whatever stamps ``time.monotonic()`` on each read of the session's socket."""

    last_received: float


class KeepaliveDriver:
    """Pings ``conn`` on chisel's schedule; calls ``on_dead()`` once when the peer is silent.

    ``interval == 0`` sends no scheduled pings (``--keepalive 0s``) and
    ``timeout == 0`` never declares death (chisel's behaviour); :meth:`probe`
    works either way.  Construct once the SSH connection exists, then
    :meth:`start`; :meth:`stop` when the session ends.
    """

    def __init__(
        self,
        conn: Any,
        interval: float,
        timeout: float,
        on_dead: Callable[[], None],
        *,
        min_interval: float = 0.0,
    ) -> None:
        self._conn = conn
        self._on_dead = on_dead
        clock = conn.get_extra_info(RECEIVE_CLOCK_INFO)
        self._receive_clock: ReceiveClock | None = clock
        # Go durations may be negative; like chisel, anything <= 0 switches the feature off.
        interval, timeout = max(0.0, interval), max(0.0, timeout)
        self.state = Keepalive(interval, timeout, min_interval, now=time.monotonic())
        #: times a ping was unanswered past ``timeout`` and only traffic kept the session
        self.spared_by_traffic = 0
        self.dead = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pings: set[asyncio.Task[bool]] = set()

    # -- control --------------------------------------------------------------
    def start(self) -> None:
        """Start the schedule: the first ping goes ``interval`` from now."""
        if self._task is not None or self.dead:
            return
        if not self.state.outstanding:  # a probe in flight keeps its deadline
            self.state.reset(time.monotonic())
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        """Cancel the schedule and the pings in flight (not the caller, if it is one of them)."""
        current = asyncio.current_task()
        for task in (self._task, *self._pings):
            if task is not None and task is not current:
                task.cancel()

    async def probe(self, timeout: float) -> bool:
        """Ping now: True if the peer answers, or sends anything, within ``timeout``.

        The gateway asks this of a session that holds a port a newcomer wants,
        without waiting for the next scheduled ping.
        """
        if self.dead or self._conn.is_closed():
            return False
        sent_at = time.monotonic()
        reply = self._send_ping(sent_at)
        done, _ = await asyncio.wait({reply}, timeout=timeout)
        if reply in done:
            return not reply.cancelled() and reply.result()
        return self._last_received() > sent_at and not self._conn.is_closed()

    # -- the loop ---------------------------------------------------------------
    def _last_received(self) -> float:
        clock = self._receive_clock
        return _NEVER if clock is None else clock.last_received

    async def _run(self) -> None:
        state = self.state
        while True:
            now = time.monotonic()
            received = self._last_received()
            if received > _NEVER:
                state.activity(received)
            if state.is_dead(now):
                self._declare_dead()
                return
            if state.overdue(now):
                self.spared_by_traffic += 1
            ping_at = state.next_ping_at(now)
            if ping_at is not None and ping_at <= now:
                self._send_ping(now)
                continue
            wake_at = min((t for t in (ping_at, state.dead_at()) if t is not None), default=None)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if wake_at is None else wake_at - now):
                    await self._wake.wait()

    def _send_ping(self, now: float) -> asyncio.Task[bool]:
        self.state.ping_sent(now)
        task = asyncio.get_running_loop().create_task(self._await_reply())
        self._pings.add(task)
        task.add_done_callback(self._pings.discard)
        self._wake.set()
        return task

    async def _await_reply(self) -> bool:
        """One ping's answer (a failure reply is an answer too: Go peers send one)."""
        try:
            await send_global_request(self._conn, "ping", b"")
        except (OSError, asyncssh.Error):
            self.stop()
            return False
        if self._conn.is_closed():  # asyncssh fails pending requests when the connection ends
            self.stop()
            return False
        self.state.reply_received(time.monotonic())
        self._wake.set()
        return True

    def _declare_dead(self) -> None:
        if self.dead:
            return
        self.dead = True
        self.stop()
        self._on_dead()
