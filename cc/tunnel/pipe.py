"""One tunnelled TCP connection: a local socket on one side, a ``chisel`` channel on the other.

The pipe moves bytes both ways with flow control tied end to end (a slow reader
pauses the far writer through the SSH window instead of growing a buffer), keeps
half-close (EOF one way while the other still flows), and counts bytes for the
stats.  A connection that did not end by EOF ends in a reset on both sides: the
channel is closed without EOF (the far pipe resets its socket) and the local
socket is closed with SO_LINGER 0, so no reader takes a cut stream for a whole
one.  It stays plain asyncio on both sides: the fast path works underneath,
sealing and opening the SSH packets that carry the channel (cc.ssh).

The two ends point to the pipe and the pipe not to them (``Pipe.ends`` hands them
out once): without that cycle a closed connection is freed at once by reference
counting.  With it, 10,000 closed connections (their channels, transports and
buffers, ~20 MB) waited for a full cyclic collection, which may never come.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any, cast

import asyncssh

from cc.log import event, get_logger
from cc.runtime.reclaim import BURSTS
from cc.ssh import OPEN_CONNECT_FAILED, ChannelOpenError, close_is_clean
from cc.ssh.bulk import DATA_OFFSET, PAD_ROOM, prepared_room, send_data, send_prepared
from cc.stats import RemoteStats
from cc.transport.reset import reset_transport
from cc.transport.rxbuf import receive_buffer

__all__ = ["Pipe", "dial"]

#: ``-v`` shows one line when a tunnelled connection opens and one when it closes
#: (with its peer, the bytes each way and how long it lasted).
log = get_logger("tun")
_ids = itertools.count(1)

SOCKET_HIGH_WATER = 1024 * 1024
#: Most bytes one read of the socket takes.  What the channel cannot take at once
#: waits in its buffer until the pipe pauses, so this bounds what a stalled session
#: holds per connection (as uvloop's own 256,000-byte reads did).
SOCKET_READ = 256 * 1024
SOCKET_LOW_WATER = 256 * 1024


class Pipe:
    """Glue between an asyncio socket transport and an asyncssh channel."""

    #: a class attribute, so that __del__ finds it even while the interpreter exits
    _bursts = BURSTS

    def __init__(self, stats: RemoteStats | None = None, label: str = "") -> None:
        self._bursts.created()  # first: __del__ runs even if the rest fails
        self.stats = stats
        self.label = label
        self.transport: asyncio.Transport | None = None
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        #: bytes that arrived before the channel was open (uvloop may read before
        #: our pause in connection_made takes effect)
        self.early: list[bytes] = []
        self._socket_eof = False
        self._channel_eof = False
        #: the channel's send buffer is over its high-water mark: the socket is not read
        self.send_paused = False
        self._closed = False
        self.id = next(_ids)
        self._opened = time.monotonic()
        #: the socket's other end (``host:port``), once known
        self.peer = ""
        #: this connection's bytes, named as in RemoteStats: in = from the tunnel to
        #: the socket, out = from the socket into the tunnel
        self.bytes_in = 0
        self.bytes_out = 0
        if stats is not None:
            stats.open += 1
            stats.total += 1
            if stats.parent is not None:
                stats.parent.open += 1
                stats.parent.total += 1
        log.debug("conn#%d: %s: open", self.id, label)

    def __del__(self) -> None:
        # Freed once both ends are, with the channel and the transport that held
        # them: the memory a burst watch waits for, not just a closed connection.
        self._bursts.freed()

    def ends(self) -> tuple[asyncio.BufferedProtocol, asyncssh.SSHTCPSession[bytes]]:
        """The socket's protocol and the channel's session; each goes to its transport."""
        return _SocketSide(self), _ChannelSide(self)

    # -- both sides report here -----------------------------------------
    def flush_early(self) -> None:
        """The channel is open: send what came before it, then any early EOF."""
        chan = self.chan
        if chan is None:
            return
        early, self.early = self.early, []
        for data in early:
            chan.write(data)
            self.count_out(len(data))
        if self._socket_eof:
            chan.write_eof()
            self._maybe_finish()

    def count_out(self, size: int) -> None:
        """``size`` bytes went from the socket into the tunnel."""
        self.bytes_out += size
        stats = self.stats
        if stats is not None:
            stats.bytes_out += size
            if stats.parent is not None:
                stats.parent.bytes_out += size

    def _maybe_finish(self) -> None:
        if self._socket_eof and self._channel_eof:
            self.close()

    def close(self) -> None:
        """A clean end: flush both ends; the socket gets a FIN (if it has not yet)."""
        self._end(None)

    def reset(self, exc: BaseException) -> None:
        """Cut short: the channel closes without EOF, the socket is reset."""
        self._end(exc)

    def _end(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        if self.stats is not None:
            self.stats.open -= 1
            if self.stats.parent is not None:
                self.stats.parent.open -= 1
        if self.chan is not None:
            if exc is None:
                self.chan.close()
            else:
                self.chan.abort()  # CLOSE now, without a pending EOF or data
        if self.transport is not None:
            if exc is None:
                self.transport.close()
            else:
                reset_transport(self.transport)
        if log.isEnabledFor(logging.DEBUG):
            self._log_close(exc)

    def _log_close(self, exc: BaseException | None) -> None:
        """``-v``: who was on the socket, what went each way, how long it lasted."""
        lasted = time.monotonic() - self._opened
        peer = self.peer or "?"
        log.debug(
            "conn#%d: %s: closed after %.3fs: peer %s sent %d bytes, received %d bytes%s",
            self.id,
            self.label,
            lasted,
            peer,
            self.bytes_out,
            self.bytes_in,
            f" ({exc})" if exc else "",
            extra=event(
                "connection_closed",
                remote=self.label,
                peer=peer,
                bytes_in=self.bytes_in,
                bytes_out=self.bytes_out,
                duration_s=round(lasted, 6),
                error=str(exc) if exc else None,
            ),
        )


class _SocketSide(asyncio.BufferedProtocol):
    """The local TCP socket's protocol.

    Reads land in the thread's receive buffer and are sealed into packets from there
    (``cc.ssh.bulk``): when the channel can take a whole packet, the read lands behind
    room for its header and is sealed where it lies.  What the channel cannot take now
    is copied to ``chan.write``.
    """

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        #: the last read went to DATA_OFFSET of the buffer, to be sealed in place
        self.prepared = False

    def get_buffer(self, sizehint: int) -> memoryview:
        buf = receive_buffer()
        chan = self.pipe.chan
        room = 0 if chan is None or self.pipe.early else prepared_room(chan)
        self.prepared = bool(room)
        if room:
            room = min(room, SOCKET_READ, len(buf) - DATA_OFFSET - PAD_ROOM)
            return buf[DATA_OFFSET : DATA_OFFSET + room]
        return buf[:SOCKET_READ]

    def buffer_updated(self, nbytes: int) -> None:
        pipe = self.pipe
        chan = pipe.chan
        buf = receive_buffer()
        if self.prepared:
            if chan is not None and send_prepared(chan, buf, nbytes):
                pipe.count_out(nbytes)
                return
            data = buf[DATA_OFFSET : DATA_OFFSET + nbytes]
        else:
            data = buf[:nbytes]
        if chan is None or pipe.early:
            self.data_received(bytes(data))  # kept until the channel opens: a copy
            return
        taken = send_data(chan, data)
        if taken < nbytes:
            chan.write(data[taken:])  # copied into the channel's buffer
        pipe.count_out(nbytes)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.pipe.transport = tcp = cast(asyncio.Transport, transport)
        tcp.set_write_buffer_limits(SOCKET_HIGH_WATER, SOCKET_LOW_WATER)
        if not self.pipe.peer and log.isEnabledFor(logging.DEBUG):  # only -v shows it
            self.pipe.peer = _address(tcp.get_extra_info("peername"))
        if self.pipe.chan is None:
            # No channel yet (reverse remote being opened): hold the data back.
            tcp.pause_reading()

    def data_received(self, data: bytes) -> None:
        pipe = self.pipe
        if pipe.chan is None or pipe.early:
            pipe.early.append(data)
            if pipe.transport is not None:
                pipe.transport.pause_reading()
            return
        pipe.chan.write(data)
        pipe.count_out(len(data))

    def eof_received(self) -> bool:
        pipe = self.pipe
        pipe._socket_eof = True
        if pipe.chan is not None and not pipe.early:
            pipe.chan.write_eof()
        pipe._maybe_finish()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        # None: we closed it.  An error (the application reset it, a write failed):
        # the far end must see a reset too, so the channel closes without EOF.
        if exc is None:
            self.pipe.close()
        else:
            self.pipe.reset(exc)

    def pause_writing(self) -> None:
        if self.pipe.chan is not None:
            self.pipe.chan.pause_reading()

    def resume_writing(self) -> None:
        if self.pipe.chan is not None:
            self.pipe.chan.resume_reading()


class _ChannelSide(asyncssh.SSHTCPSession[bytes]):
    """The SSH channel's session."""

    #: channel data may come as a view of its packet's plaintext (``cc.ssh.bulk``):
    #: it goes straight to the socket's transport, which keeps what it cannot send
    cc_takes_views = True

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    def connection_made(self, chan: Any) -> None:
        self.pipe.chan = chan

    def session_started(self) -> None:
        if self.pipe._closed:
            # The socket went away while the channel was opening (uvloop reports a
            # reset even while reading is paused): close the channel, or it leaks.
            # Without EOF: the far end resets the connection it just made.
            if self.pipe.chan is not None:
                self.pipe.chan.abort()
            return
        self.pipe.flush_early()
        transport = self.pipe.transport
        # Not if the early data already filled the channel: asyncssh reports a pause
        # once, so reading again here would buffer the socket without bound.
        if transport is not None and not transport.is_closing() and not self.pipe.send_paused:
            transport.resume_reading()

    def data_received(self, data: bytes, datatype: Any = None) -> None:
        pipe = self.pipe
        if pipe.transport is not None and not pipe.transport.is_closing():
            pipe.transport.write(data)
            pipe.bytes_in += len(data)
            stats = pipe.stats
            if stats is not None:
                stats.bytes_in += len(data)
                if stats.parent is not None:
                    stats.parent.bytes_in += len(data)

    def eof_received(self) -> bool:
        pipe = self.pipe
        pipe._channel_eof = True
        transport = pipe.transport
        if transport is not None and transport.can_write_eof() and not transport.is_closing():
            transport.write_eof()
        pipe._maybe_finish()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        pipe = self.pipe
        # After the peer's EOF the socket has its FIN; without it the stream was cut
        # (session lost, or the far end reset), unless a chisel peer closed it.
        if pipe._channel_eof or (pipe.chan is not None and close_is_clean(pipe.chan)):
            pipe.close()
        else:
            pipe.reset(exc or ConnectionResetError("channel closed before its EOF"))

    def pause_writing(self) -> None:
        self.pipe.send_paused = True
        if self.pipe.transport is not None:
            self.pipe.transport.pause_reading()

    def resume_writing(self) -> None:
        self.pipe.send_paused = False
        transport = self.pipe.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()


def _address(sockname: Any) -> str:
    """``host:port`` (``[v6]:port``) of a socket address; "" if it has none (a Unix socket)."""
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        host, port = sockname[0], sockname[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return ""


async def dial(
    host: str,
    port: int,
    stats: RemoteStats,
    label: str,
    failed: Callable[[str, str], None] | None = None,
) -> asyncssh.SSHTCPSession[bytes]:
    """Connect to a channel's target; the channel half of the new pipe, or ChannelOpenError.

    Used by both ends for channels they accept (reverse on the connector, forward on
    the gateway), so a refused target is counted and reported the same way; ``failed``
    also learns of a refusal (the target as ``host:port``, and why).
    """
    pipe = Pipe(stats, label)
    pipe.peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    socket_end, channel_end = pipe.ends()
    try:
        await asyncio.get_running_loop().create_connection(lambda: socket_end, host, port)
    except OSError as exc:
        stats.count_failed()
        pipe.reset(exc)
        reason = str(exc.strerror or exc)
        log.info("%s: dial %s:%d failed: %s", label, host, port, reason)
        if failed is not None:
            failed(pipe.peer, reason)
        raise ChannelOpenError(OPEN_CONNECT_FAILED, reason) from None
    return channel_end
