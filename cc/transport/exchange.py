"""One request, one answer: the I/O half of the upgrade and of the pre-flight GET.

The protocol object writes the request when connected and pipes what arrives into
a sans-I/O parser (``http.ResponseParser``, ``handshake.ClientHandshake``) until it
yields a result; it does no HTTP itself.  What it adds is the I/O story: a
connection that closes before any answer is explained by the TLS watch (a
refused client certificate shows up only as a close with TLS 1.3).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar, cast

from cc.protocol.errors import ProtocolError
from cc.transport.errors import DialError
from cc.transport.tls import TLSWatch

__all__ = ["Exchange"]

T = TypeVar("T")


class Exchange(asyncio.Protocol, Generic[T]):
    """Send ``request``; resolve ``done`` with the first result ``parse`` returns.

    ``parse`` gets every chunk received and returns None until it has a result; a
    ProtocolError from it becomes a DialError naming the exchange (``what``).
    Bytes that arrive after the result, before the caller takes the transport over,
    are kept in ``late``.  ``on_close`` may still make a result of what arrived
    when the peer closes first (a refusal whose body was cut short).
    """

    def __init__(
        self,
        request: bytes,
        parse: Callable[[bytes], T | None],
        watch: TLSWatch,
        what: str,
        on_close: Callable[[], T | None] | None = None,
    ) -> None:
        self.request = request
        self.parse = parse
        self.on_close = on_close
        self.watch = watch
        self.what = what
        self.received = False
        self.late = bytearray()
        self.done: asyncio.Future[T] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            self.late += data
            return
        self.received = True
        try:
            result = self.parse(data)
        except ProtocolError as exc:
            self.done.set_exception(DialError(f"{self.what}: bad HTTP response: {exc}"))
            return
        if result is not None:
            self.done.set_result(result)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        result = self.on_close() if self.on_close is not None else None
        if result is not None:
            self.done.set_result(result)
            return
        # TLS 1.3: a server refuses our client certificate only after the handshake,
        # so its alert (or its silence) arrives here rather than in connect_socket.
        error = self.watch.lost(exc) if not self.received else None
        self.done.set_exception(
            error or DialError(f"{self.what}: connection closed before a response")
        )
