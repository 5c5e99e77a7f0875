"""Two TCP (or TLS) connections spliced into one: what a named service's leg becomes.

A WebRoute leg is a raw byte pipe once linked, so the far end of it is just another
socket: :func:`splice` copies both ways with back-pressure (a full writer pauses the
other side's reads), keeps half-close where the transport has it (EOF one way, the
other still flows) and closes both when both are done or either is lost; one cut
by a reset (or a failed write) before its EOF resets the other, so a cut stream
never reaches anyone as a whole one.
"""

from __future__ import annotations

import asyncio
from typing import cast

from cc.stats import RemoteStats
from cc.transport.reset import reset_transport

__all__ = ["Holding", "Relay", "dial_paused", "splice"]


class _Side(asyncio.Protocol):
    def __init__(self, relay: Relay, transport: asyncio.Transport, outbound: bool) -> None:
        self.relay = relay
        self.transport = transport
        self.outbound = outbound  # bytes it receives count as bytes_out
        self.peer: _Side | None = None
        self.eof = False
        self.lost = False

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None
        self.peer.transport.write(data)
        self.relay.count(len(data), self.outbound)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        assert peer is not None
        if peer.lost or peer.transport.is_closing() or not peer.transport.can_write_eof():
            peer.transport.close()
            return False
        peer.transport.write_eof()
        if peer.eof:
            peer.transport.close()
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.peer is not None:
            if exc is not None and not self.eof:
                # cut before its end: a reset on the other side too, never a clean end
                reset_transport(self.peer.transport)
            else:
                self.peer.transport.close()  # after what it still has to write
        self.relay.side_lost()

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.transport.resume_reading()


class Relay:
    """A splice in progress; ``done`` resolves when both connections are closed."""

    def __init__(self, stats: RemoteStats | None) -> None:
        self.stats = stats
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lost = 0
        if stats is not None:
            stats.open += 1
            stats.total += 1

    def count(self, size: int, outbound: bool) -> None:
        if self.stats is None:
            return
        if outbound:
            self.stats.bytes_out += size
        else:
            self.stats.bytes_in += size

    def side_lost(self) -> None:
        self._lost += 1
        if self._lost == 2 and not self.done.done():
            if self.stats is not None:
                self.stats.open -= 1
            self.done.set_result(None)


def splice(
    inner: asyncio.Transport,
    outer: asyncio.Transport,
    *,
    to_inner: bytes = b"",
    to_outer: bytes = b"",
    stats: RemoteStats | None = None,
) -> Relay:
    """Copy between two transports whose reading is paused; early bytes go first.

    ``inner`` is the local side (what we dialled or accepted), ``outer`` the WebRoute
    leg: bytes from inner count as ``bytes_out`` in ``stats``.
    """
    relay = Relay(stats)
    a = _Side(relay, inner, outbound=True)
    b = _Side(relay, outer, outbound=False)
    a.peer, b.peer = b, a
    held_a, held_b = _held(inner), _held(outer)
    inner.set_protocol(a)
    outer.set_protocol(b)
    for side, early in ((a, held_b.buffer + to_inner), (b, held_a.buffer + to_outer)):
        if early:
            side.transport.write(bytes(early))
    for side, held in ((a, held_a), (b, held_b)):
        if held.eof:  # it ended before the splice: pass its EOF on now
            side.eof_received()
    inner.resume_reading()
    outer.resume_reading()
    return relay


def _held(transport: asyncio.Transport) -> Holding:
    protocol = transport.get_protocol()
    return protocol if isinstance(protocol, Holding) else Holding()


class Holding(asyncio.Protocol):
    """A fresh connection that waits to be spliced: reading paused, early bytes kept.

    uvloop may deliver a first read (and the EOF after it) even when
    ``connection_made`` pauses reading, so what arrives is kept and forwarded by
    :func:`splice`, never dropped, and an early EOF is passed on, not a close.
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).pause_reading()

    def data_received(self, data: bytes) -> None:
        self.buffer += data

    def eof_received(self) -> bool:
        self.eof = True  # a client that sent everything and half-closed waits too
        return True


async def dial_paused(host: str, port: int, timeout: float) -> asyncio.Transport:
    """TCP to ``host:port`` with reading paused; OSError or TimeoutError if it fails."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        transport, _ = await loop.create_connection(Holding, host, port)
    return transport
