"""``--backend URL``: hand plain HTTP requests to another server, so a gateway can hide
behind an ordinary web site as chisel's does.  We relay the connection's bytes as
they are (the already-read head first); the backend sees the original Host header,
as Go's ReverseProxy sends it.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import cast
from urllib.parse import urlsplit

from cc.log import get_logger
from cc.protocol import http

__all__ = ["proxy_to_backend"]

log = get_logger("server.backend")


class _Relay(asyncio.Protocol):
    """Copy bytes to ``peer``, pausing when it cannot keep up."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Relay | None = None
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None and peer.transport.can_write_eof():
            peer.transport.write_eof()
            if peer.eof:  # both directions are done: nothing closes these sockets otherwise
                peer.transport.close()
                return False
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


async def proxy_to_backend(client: asyncio.Transport, backend: str, first: bytes) -> None:
    """Connect to ``backend`` and relay ``client`` to it, starting with ``first``."""
    url = urlsplit(backend)
    secure = url.scheme == "https"
    host = url.hostname or "127.0.0.1"
    port = url.port or (443 if secure else 80)
    inbound = _Relay()
    outbound = _Relay()
    inbound.peer, outbound.peer = outbound, inbound
    inbound.transport = client
    loop = asyncio.get_running_loop()
    try:
        await loop.create_connection(
            lambda: outbound, host, port, ssl=ssl.create_default_context() if secure else None
        )
    except OSError as exc:
        log.warning("Backend %s unreachable: %s", backend, exc.strerror or exc)
        client.write(http.build_response(502, [("Connection", "close")], b"bad gateway\n"))
        client.close()
        return
    client.set_protocol(inbound)
    assert outbound.transport is not None
    outbound.transport.write(first)
    client.resume_reading()
