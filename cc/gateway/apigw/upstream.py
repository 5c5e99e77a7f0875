"""Connections to targets through connectors: opened as ``chisel`` channels, kept for reuse.

A request to a target costs a channel open (one round trip to the connector, plus
its TCP connect) and, for https, a TLS handshake.  Keep-alive connections are
kept per (connector session, target, TLS settings) and reused, so a busy target
costs neither after the first request.  A kept connection that the target closed
(or that received anything while idle) is dropped when it is next taken.

A target that closes a connection right after its answer (a tiny idle timeout, a
request limit) races the next request: the close is still on its way through the
tunnel when the connection is taken again.  A request that cannot be retried (a
POST, a body) therefore takes a kept connection only after a ping round trip to
the connector: SSH keeps order, so a close the connector had seen before it
answered has arrived by then (:meth:`UpstreamPool.take_checked`).  One ping
serves every request waiting on the same session.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import asyncssh

from cc.protocol.apigw.targets import Target
from cc.protocol.hosts import bare_host
from cc.ssh import (
    OPEN_CONNECT_FAILED,
    ChannelOpenError,
    open_chisel_channel,
    send_global_request,
)

from .streams import ChannelStream, StreamClosed, TLSStream

if TYPE_CHECKING:
    from cc.gateway.session import GatewaySession

__all__ = ["SessionLost", "TargetUnreachable", "Upstream", "UpstreamPool"]

#: Idle connections kept per (session, target).
MAX_IDLE = 64

Upstream = ChannelStream | TLSStream


class TargetUnreachable(Exception):
    """The connector could not reach the target, or TLS to it failed: 502, no retry."""


class SessionLost(Exception):
    """The connector's session went away while the channel opened: another may serve."""


def _key(session: GatewaySession, target: Target) -> tuple[Any, ...]:
    return (session.id, target.connection_key)


class UpstreamPool:
    """Idle upstream connections by (session, target), most recently used first."""

    def __init__(self, max_idle: int = MAX_IDLE) -> None:
        self.max_idle = max_idle
        self._idle: defaultdict[tuple[Any, ...], list[Upstream]] = defaultdict(list)
        #: how many connections were opened (tests and stats tell reuse from this)
        self.opened = 0
        #: the ping in flight per session: (when it was sent, its task)
        self._pings: dict[int, tuple[float, asyncio.Task[None]]] = {}
        #: pings sent by take_checked (tests tell the check happened)
        self.pings = 0

    def take(self, session: GatewaySession, target: Target) -> Upstream | None:
        idle = self._idle.get(_key(session, target))
        while idle:
            stream = idle.pop()
            if stream.reusable:
                return stream
            stream.abort()
        return None

    async def take_checked(
        self, session: GatewaySession, target: Target, timeout: float
    ) -> Upstream | None:
        """A kept connection still open after a round trip through its connector."""
        idle = self._idle.get(_key(session, target))
        if not idle:
            return None
        await self._sync(session, idle[-1].pooled_at, timeout)
        return self.take(session, target)

    async def _sync(self, session: GatewaySession, since: float, timeout: float) -> None:
        """Wait for a ping to the connector sent after ``since`` to be answered."""
        conn = session.conn
        if conn is None or conn.is_closed():
            return
        pending = self._pings.get(session.id)
        if pending is None or pending[0] < since or pending[1].done():
            task = asyncio.ensure_future(_ping(conn, timeout))
            self._pings[session.id] = (time.monotonic(), task)
            task.add_done_callback(lambda _: self._pings.pop(session.id, None))
            self.pings += 1
            pending = self._pings[session.id]
        await asyncio.shield(pending[1])

    def give(self, session: GatewaySession, target: Target, stream: Upstream) -> None:
        idle = self._idle[_key(session, target)]
        if len(idle) >= self.max_idle or not stream.reusable:
            stream.close()
            return
        stream.pooled_at = time.monotonic()
        idle.append(stream)

    def forget(self, session: GatewaySession) -> None:
        """Drop a gone session's connections (they are closed with it)."""
        for key in [k for k in self._idle if k[0] == session.id]:
            del self._idle[key]

    def close(self) -> None:
        for idle in self._idle.values():
            for stream in idle:
                stream.close()
        self._idle.clear()

    async def open(
        self,
        session: GatewaySession,
        target: Target,
        context: ssl.SSLContext | None,
        timeout: float,
    ) -> Upstream:
        """A new connection to ``target`` through ``session``: TargetUnreachable, SessionLost."""
        conn = session.conn
        if conn is None or conn.is_closed():
            raise SessionLost("session closed")
        channel = ChannelStream()
        opening = asyncio.ensure_future(
            open_chisel_channel(conn, target.address.encode(), lambda: channel)
        )
        try:
            async with asyncio.timeout(timeout):
                # shielded: a request cancelled mid-open (client gone, timeout) must not
                # leave a channel that opens later with nobody to close it
                await asyncio.shield(opening)
        except BaseException as exc:
            if not opening.done():
                opening.add_done_callback(lambda _: channel.abort())
            elif not opening.cancelled() and opening.exception() is None:
                channel.abort()
            if not isinstance(exc, asyncio.CancelledError):
                self._open_failed(conn, target, opening)
            raise
        self.opened += 1
        if context is None:
            return channel
        return await self._tls(conn, target, channel, context, timeout)

    @staticmethod
    def _open_failed(conn: Any, target: Target, opening: asyncio.Future[Any]) -> None:
        """Translate a failed channel open (re-raised by the caller if it is none of these)."""
        if not opening.done() or opening.cancelled():
            if not opening.done():
                raise TargetUnreachable("no channel within the connect timeout") from None
            return
        exc = opening.exception()
        if isinstance(exc, ChannelOpenError):
            if exc.code == OPEN_CONNECT_FAILED and not conn.is_closed():
                raise TargetUnreachable(f"connector could not connect: {exc.reason}") from None
            if conn.is_closed():
                raise SessionLost(exc.reason) from None
            raise TargetUnreachable(f"connector refused the channel: {exc.reason}") from None
        if isinstance(exc, OSError | asyncssh.Error):
            raise SessionLost(str(exc) or type(exc).__name__) from None

    async def _tls(
        self,
        conn: Any,
        target: Target,
        channel: ChannelStream,
        context: ssl.SSLContext,
        timeout: float,
    ) -> Upstream:
        stream = TLSStream(channel, context, bare_host(target.hostname))
        try:
            await stream.handshake(timeout)
        except ssl.SSLError as exc:
            channel.abort()
            raise TargetUnreachable(f"TLS to {target.address}: {exc}") from None
        except TimeoutError:
            channel.abort()
            raise TargetUnreachable("no TLS handshake within the connect timeout") from None
        except StreamClosed as exc:
            if conn.is_closed():
                raise SessionLost(str(exc)) from None
            raise TargetUnreachable(f"TLS to {target.address}: connection closed") from None
        except BaseException:
            channel.abort()
            raise
        return stream


async def _ping(conn: Any, timeout: float) -> None:
    """One ping round trip; a failure is no news here (the streams show a lost session)."""
    with contextlib.suppress(OSError, asyncssh.Error, TimeoutError):
        async with asyncio.timeout(timeout):
            await send_global_request(conn, "ping", b"")
