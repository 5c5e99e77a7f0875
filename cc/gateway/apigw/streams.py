"""Byte streams the relay reads with ``await`` and writes with back-pressure.

Three kinds behave alike (``read``, ``write``, ``drain``, ``abort``): a client's
socket (:class:`ClientProtocol`), a ``chisel`` channel to a target through a
connector (:class:`ChannelStream`) and TLS over such a channel (:class:`TLSStream`,
an ``ssl.SSLObject`` between two memory buffers, so the connector only ever
carries ciphertext and either event loop works).

Back-pressure both ways: what arrives is held in an :class:`Inbox` that pauses its
producer (socket reads, or the SSH window) past a high-water mark until the relay
has taken it; a write waits in ``drain`` while the far side's buffer is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, cast

import asyncssh

from cc.protocol.apigw.forwarding import ClientInfo
from cc.ssh.ending import close_is_clean
from cc.transport.reset import reset_transport

__all__ = ["ChannelStream", "ClientProtocol", "Inbox", "StreamClosed", "TLSStream"]

#: An inbox pauses its producer past this many bytes, and resumes it below a quarter.
INBOX_HIGH_WATER = 256 * 1024
SOCKET_HIGH_WATER = 512 * 1024


class StreamClosed(ConnectionError):
    """The stream was reset or lost before its end."""


class Inbox:
    """What arrived for one reader, in order; EOF is ``b""``, a failure is raised.

    A read's timeout is a deadline, not a timer of its own: one timer per inbox,
    armed for the earliest deadline and moved on when it fires early, so a request
    that waits twice (its head, then its answer) arms none after the first (a
    timer per wait cost a heap insert and removal each).
    """

    __slots__ = (
        "_chunks",
        "_deadline",
        "_eof",
        "_error",
        "_pause",
        "_paused",
        "_resume",
        "_size",
        "_timer",
        "_timer_at",
        "_waiter",
    )

    def __init__(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._pause = pause
        self._resume = resume
        self._paused = False
        #: when the waiting read times out (loop time; 0: never)
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    @property
    def at_eof(self) -> bool:
        return (self._eof or self._error is not None) and not self._chunks

    @property
    def pending(self) -> int:
        return self._size

    @property
    def paused(self) -> bool:
        return self._paused

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def feed(self, data: bytes) -> None:
        if not data or self._eof:
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._size > INBOX_HIGH_WATER and not self._paused:
            self._paused = True
            self._pause()
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._stop_timer()
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if self._error is None and not self._eof:
            self._error = exc
        self._eof = True
        self._stop_timer()
        self._wake()

    def take(self) -> bytes:
        """Everything that arrived and was not read yet (a connection handed on)."""
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        return data

    def unread(self, data: bytes) -> None:
        """Put back bytes that belong to the next reader (a pipelined request)."""
        if data:
            self._chunks.appendleft(data)
            self._size += len(data)

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Have the timer fire no later than ``deadline``."""
        self._deadline = deadline
        if self._timer is None or self._timer_at > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        """The timer: time out the waiting read if its deadline passed, else fire again then."""
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done() or not self._deadline:
            return  # no read waits with a deadline: the next one arms again
        loop = waiter.get_loop()
        if loop.time() + 0.001 >= self._deadline:  # timers may fire a hair early
            self._waiter = None
            waiter.set_exception(TimeoutError())
        else:
            self._arm(loop, self._deadline)

    async def read(self, timeout: float | None = None) -> bytes:
        """The bytes that arrived (at least one), ``b""`` at EOF; TimeoutError, StreamClosed."""
        if not self._chunks and not self._eof:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            if timeout is None:
                self._deadline = 0.0
            else:
                self._arm(loop, loop.time() + timeout)
            try:
                await waiter
            finally:
                self._waiter = None
                self._deadline = 0.0
        if self._chunks:
            data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
            self._chunks.clear()
            self._size = 0
            if self._paused:
                self._paused = False
                self._resume()
            return data
        if self._error is not None:
            raise StreamClosed(str(self._error) or type(self._error).__name__)
        return b""


class _Drain:
    """A writer's pause flag and the future ``drain`` waits on."""

    __slots__ = ("_paused", "_waiter")

    def __init__(self) -> None:
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, exc: BaseException) -> None:
        self._paused = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def wait(self, closed: Callable[[], bool]) -> None:
        if self._paused and not closed():
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter


class ClientProtocol(asyncio.Protocol):
    """A client's socket on the app port; ``task`` serves it and is cancelled when it goes."""

    def __init__(self, serve: Callable[[ClientProtocol], Any], buffered: bytes = b"") -> None:
        self._serve = serve
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.inbox = Inbox(self._pause_reading, self._resume_reading)
        #: read by the worker that handed this connection on: it comes first
        self.inbox.feed(buffered)
        self._drain = _Drain()
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self.peer = ("", 0)
        self.local_port = 0
        #: who this client is, as the relay describes it upstream (set once, by the app)
        self.info: ClientInfo | None = None
        #: waiting for (the rest of) a request head: the app may close it for a newcomer
        self.waiting = False
        #: a request head was read on this connection
        self.served = False

    # -- asyncio -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(SOCKET_HIGH_WATER)
        peer = transport.get_extra_info("peername") or ("", 0)
        local = transport.get_extra_info("sockname") or ("", 0)
        self.peer = (str(peer[0]), int(peer[1]))
        self.local_port = int(local[1])
        self.task = asyncio.get_running_loop().create_task(self._serve(self))

    def data_received(self, data: bytes) -> None:
        self.inbox.feed(data)

    def eof_received(self) -> bool:
        # A client that ends its side has gone, as nginx takes it (proxy_ignore_client_abort
        # off): the transport closes and its request is cancelled upstream.
        self.inbox.feed_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.inbox.fail(exc or StreamClosed("client closed"))
        self._drain.fail(StreamClosed("client closed"))
        if self.task is not None and not self.task.done():
            self.task.cancel()  # a gone client cancels its upstream request

    def pause_writing(self) -> None:
        self._drain.pause()

    def resume_writing(self) -> None:
        self._drain.resume()

    def _pause_reading(self) -> None:
        if not self.closed:
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if not self.closed:
            self.transport.resume_reading()

    # -- the stream --------------------------------------------------------------
    def read(self, timeout: float | None = None) -> Coroutine[Any, Any, bytes]:
        """The inbox's read itself (no coroutine of our own wrapped around it)."""
        return self.inbox.read(timeout)

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        await self._drain.wait(lambda: self.closed)

    @property
    def must_drain(self) -> bool:
        """Whether ``drain`` would wait: skip the await (and its coroutine) when not."""
        return self._drain.paused

    def write_eof(self) -> None:
        if not self.closed and self.transport.can_write_eof():
            self.transport.write_eof()

    def close(self) -> None:
        if not self.closed:
            self.transport.close()

    def abort(self) -> None:
        """Cut the client off with a reset: the response it was reading is incomplete."""
        if not self.closed:
            reset_transport(self.transport)

    def hold(self) -> None:
        """Stop reading from the socket: its next bytes may be for another worker."""
        if not self.closed:
            self.transport.pause_reading()

    def release(self) -> None:
        """Read again after :meth:`hold` (unless the inbox holds the producer back)."""
        if not self.closed and not self.inbox.paused:
            self.transport.resume_reading()

    @property
    def fileno(self) -> int:
        sock = self.transport.get_extra_info("socket")
        return -1 if sock is None else int(sock.fileno())

    def detach(self) -> None:
        """Another worker took the socket: close our copy only (no FIN, no reset)."""
        self.task = None
        if not self.closed:
            self.closed = True
            self.transport.close()


class ChannelStream(asyncssh.SSHTCPSession[bytes]):
    """A ``chisel`` channel to a target, as a stream; ``lost`` once it can carry no more."""

    def __init__(self) -> None:
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self.inbox = Inbox(self._pause_reading, self._resume_reading)
        self._drain = _Drain()
        self.lost = False
        self.eof = False
        #: when it was last put in the pool of kept connections
        self.pooled_at = 0.0

    # -- asyncssh ----------------------------------------------------------------
    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def data_received(self, data: bytes, datatype: Any = None) -> None:
        self.inbox.feed(data)

    def eof_received(self) -> bool:
        self.eof = True
        self.inbox.feed_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if exc is None and not self.eof and not (self.chan and close_is_clean(self.chan)):
            # closed before its EOF: the target reset its connection (cc.ssh.ending),
            # which must not pass for the end of a close-delimited answer
            exc = StreamClosed("the target's connection was reset")
        if exc is not None:  # the session died or the connector reset the connection
            self.inbox.fail(exc)
        else:
            self.inbox.feed_eof()
        self._drain.fail(StreamClosed(str(exc) if exc else "channel closed"))

    def pause_writing(self) -> None:
        self._drain.pause()

    def resume_writing(self) -> None:
        self._drain.resume()

    def _pause_reading(self) -> None:
        if self.chan is not None and not self.lost:
            self.chan.pause_reading()

    def _resume_reading(self) -> None:
        if self.chan is not None and not self.lost:
            self.chan.resume_reading()

    # -- the stream --------------------------------------------------------------
    def read(self, timeout: float | None = None) -> Coroutine[Any, Any, bytes]:
        """The inbox's read itself (no coroutine of our own wrapped around it)."""
        return self.inbox.read(timeout)

    def write(self, data: bytes) -> None:
        if self.lost or self.chan is None:
            raise StreamClosed("channel closed")
        self.chan.write(data)

    async def drain(self) -> None:
        await self._drain.wait(lambda: self.lost)
        if self.lost and self.inbox.at_eof and not self.eof:
            raise StreamClosed("channel closed")

    @property
    def must_drain(self) -> bool:
        """Whether ``drain`` would wait or fail: skip the await when not."""
        return self._drain.paused or self.lost

    def write_eof(self) -> None:
        if self.chan is not None and not self.lost:
            with contextlib.suppress(OSError, asyncssh.Error):
                self.chan.write_eof()

    @property
    def reusable(self) -> bool:
        """Idle and open: nothing arrived since the last response, no EOF, not lost."""
        return not self.lost and not self.eof and not self.inbox.pending

    def close(self) -> None:
        if self.chan is not None and not self.lost:
            self.chan.close()

    def abort(self) -> None:
        """Close without EOF: the connector resets its connection to the target."""
        if self.chan is not None and not self.lost:
            self.chan.abort()


class TLSStream:
    """TLS to the target over a channel, end to end: the connector relays ciphertext."""

    def __init__(self, inner: ChannelStream, context: ssl.SSLContext, server_name: str) -> None:
        self.inner = inner
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._in, self._out, server_hostname=server_name)
        self._eof = False
        self.pooled_at = 0.0

    def _flush(self) -> None:
        pending = self._out.read()
        if pending:
            self.inner.write(pending)

    async def _fill(self, timeout: float | None) -> None:
        data = await self.inner.read(timeout)
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()

    async def handshake(self, timeout: float) -> None:
        """TLS handshake, bounded; ssl.SSLError (e.g. SSLCertVerificationError) on failure."""
        while True:
            try:
                self._ssl.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                await self._fill(timeout)

    async def read(self, timeout: float | None = None) -> bytes:
        while True:
            if self._eof:
                return b""
            try:
                data = self._ssl.read(256 * 1024)
            except ssl.SSLWantReadError:
                self._flush()
                await self._fill(timeout)
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                data = b""  # a missing close_notify: framing tells a truncated body
            except ssl.SSLError as exc:
                raise StreamClosed(f"TLS: {exc}") from None
            if not data:
                self._eof = True
            return data

    def write(self, data: bytes) -> None:
        self._ssl.write(data)
        self._flush()

    async def drain(self) -> None:
        await self.inner.drain()

    @property
    def must_drain(self) -> bool:
        return self.inner.must_drain

    def write_eof(self) -> None:
        with contextlib.suppress(ssl.SSLError):
            self._ssl.unwrap()
        with contextlib.suppress(StreamClosed):
            self._flush()
        self.inner.write_eof()

    @property
    def lost(self) -> bool:
        return self.inner.lost

    @property
    def reusable(self) -> bool:
        return self.inner.reusable and not self._eof and not self._in.pending

    def close(self) -> None:
        self.inner.close()

    def abort(self) -> None:
        self.inner.abort()
