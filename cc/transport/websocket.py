"""A byte stream carried in WebSocket binary messages, as an asyncio transport.

chisel treats the WebSocket as a pipe for the SSH byte stream: every write is one
binary message and readers ignore message boundaries.  ``WebSocketTransport`` is
the asyncio *protocol* of the TCP/TLS socket and, at the same time, the asyncio
*transport* that the SSH connection writes to, so asyncssh never knows it is
inside a WebSocket.  All framing lives in the sans-I/O ``cc.protocol.ws``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from time import monotonic
from typing import Any

from cc.fastpath import BytesLike
from cc.protocol.ws import WebSocketError, WebSocketStream
from cc.transport.rxbuf import receive_buffer

__all__ = ["RECEIVE_CLOCK_INFO", "WebSocketTransport"]

log = logging.getLogger(__name__)

#: Above this many unsent bytes in the socket we ask the inner protocol to pause.
WRITE_HIGH_WATER = 4 * 1024 * 1024
WRITE_LOW_WATER = 1 * 1024 * 1024
#: Below this many bytes, ``writelines`` joins its frames into one write.
SMALL_WRITE = 16 * 1024
#: ``get_extra_info`` name (of this transport, or the SSH connection over it) under
#: which the transport itself is found, for its ``last_received`` stamp.
RECEIVE_CLOCK_INFO = "cc_receive_clock"


class WebSocketTransport(asyncio.BufferedProtocol, asyncio.Transport):
    """Protocol of the outer socket, transport of the inner (SSH) protocol.

    A buffered protocol: reads land in the thread's receive buffer, frames are parsed
    (and unmasked) there, and an inner protocol with ``cc_stream_received`` gets the
    payload pieces as views of it, to copy only what it keeps (``cc.ssh.bulk``).
    """

    def __init__(self, outer: asyncio.Transport, ws: WebSocketStream) -> None:
        super().__init__()
        self._outer = outer
        self._ws = ws
        self._inner: asyncio.Protocol | None = None
        #: the inner protocol's ``cc_stream_received(pieces)``, when it has one
        self._feed: Any = None
        self._pending: list[bytes] = []
        self._closing = False
        self._lost = False
        self._eof = False
        self._inner_paused = False
        self._extra: dict[str, Any] = {}
        #: ``time.monotonic()`` of the last read from the socket: the keepalive's proof
        #: of life (one stamp per read keeps the hot path cheap)
        self.last_received = monotonic()
        outer.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)

    # -- wiring -----------------------------------------------------------
    def attach(self, inner: asyncio.Protocol) -> None:
        """Hand the byte stream to ``inner``; bytes that came early are replayed."""
        self._inner = inner
        self._feed = getattr(inner, "cc_stream_received", None)
        inner.connection_made(self)
        pending, self._pending = self._pending, []
        for chunk in pending:
            inner.data_received(chunk)
        if self._lost or self._eof:
            inner.connection_lost(None)

    def set_extra_info(self, **values: Any) -> None:
        self._extra.update(values)

    # -- outer protocol side ---------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover
        # We are installed with set_protocol() after the HTTP upgrade.
        pass

    def get_buffer(self, sizehint: int) -> memoryview:
        return receive_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self._received(self._ws.receive_views, receive_buffer()[:nbytes])

    def data_received(self, data: bytes) -> None:
        """Bytes that came some other way (after the upgrade, or from a test)."""
        self._received(self._ws.receive_data, data)

    def _received(self, parse: Callable[[Any], Sequence[BytesLike]], data: BytesLike) -> None:
        self.last_received = monotonic()
        try:
            chunks = parse(data)
        except WebSocketError as exc:
            log.warning("websocket protocol error from %s: %s", self.peer_text(), exc)
            self._fail(exc)
            return
        reply = self._ws.data_to_send()
        if reply and not self._outer.is_closing():
            self._outer.write(reply)
        if chunks:
            if self._inner is None:
                self._pending.append(b"".join(chunks))
            elif self._feed is not None:
                self._feed(chunks)  # views of the receive buffer: it copies what it keeps
            else:
                single = chunks[0] if len(chunks) == 1 else None
                self._inner.data_received(single if type(single) is bytes else b"".join(chunks))
        if self._ws.closed:
            self._outer.close()

    def eof_received(self) -> bool | None:
        self._eof = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner_paused = True
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner_paused = False
        if self._inner is not None:
            self._inner.resume_writing()

    # -- inner transport side --------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._ws.close_sent or self._outer.is_closing():
            return
        self._outer.write(self._ws.send_binary(data))

    def writelines(self, list_of_data: Any) -> None:
        """One frame per item, written together (one ``writev``, no joined copy).

        Writable items (the packets the fast path seals) are masked in place and
        framed with a header of their own; anything else is framed by copying.
        """
        if self._closing or self._ws.close_sent or self._outer.is_closing():
            return
        ws = self._ws
        out: list[BytesLike] = []
        size = 0
        for data in list_of_data:
            if type(data) is bytes or len(data) > ws.max_frame_size:
                out.append(ws.send_binary(data))
            else:
                out.append(ws.frame_in_place(data))
                out.append(data)
            size += len(out[-1])
        if size < SMALL_WRITE:
            self._outer.write(b"".join(out))  # one buffer: cheaper than a writev this small
        else:
            self._outer.writelines(out)

    def can_write_eof(self) -> bool:
        return False

    def is_closing(self) -> bool:
        return self._closing or self._outer.is_closing()

    def close(self) -> None:
        """Send a WebSocket close frame, then close the socket once it is flushed."""
        if self._closing:
            return
        self._closing = True
        if not self._outer.is_closing():
            with contextlib.suppress(WebSocketError):
                self._outer.write(self._ws.send_close(1000, ""))
            self._outer.close()

    def abort(self) -> None:
        self._closing = True
        self._outer.abort()

    def pause_reading(self) -> None:
        self._outer.pause_reading()

    def resume_reading(self) -> None:
        self._outer.resume_reading()

    def is_reading(self) -> bool:
        return bool(self._outer.is_reading())

    def get_write_buffer_size(self) -> int:
        return int(self._outer.get_write_buffer_size())

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == RECEIVE_CLOCK_INFO:
            return self
        if name in self._extra:
            return self._extra[name]
        return self._outer.get_extra_info(name, default)

    def peer_text(self) -> str:
        peer = self._outer.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if peer else "?"

    def _fail(self, exc: Exception) -> None:
        code = getattr(exc, "code", 1002)
        if not self._outer.is_closing():
            with contextlib.suppress(Exception):
                self._outer.write(self._ws.send_close(int(code), ""))
            self._outer.close()
