"""``stdio:host:port`` remotes: the process's stdin and stdout are the tunnelled connection.

This is what ``ssh -o ProxyCommand='cloud-connector client ... stdio:%h:%p'`` needs:
once the session is up, ONE ``chisel`` channel to ``host:port`` is opened, stdin is
copied into it and what comes back is written to stdout.  Half-close is kept: EOF on
stdin becomes the channel's EOF while the answer still flows, and the channel's EOF
closes our stdout (the reader sees EOF) while stdin still flows.  When both
directions are done the connector stops, so the process exits like ``nc`` would;
chisel instead keeps running and opens a new channel on the same, finished stdin.
A channel that ends without its EOF (the session died, the far end was reset) or
that cannot be opened makes the process exit non-zero: stdout cannot carry a reset,
so the exit status tells the reader that what it got was cut short.

Logs go to stderr in this mode (the CLI sets that up), so stdout carries only the
tunnelled bytes.  Pipes and sockets are read and written through the event loop;
anything else (a regular file, ``/dev/null``, a terminal) is read by a daemon
thread and written with blocking writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import asyncssh

from cc.log import get_logger
from cc.protocol.remote import Remote
from cc.ssh import ChannelOpenError, close_is_clean, open_chisel_channel
from cc.stats import RemoteStats, SessionStats

__all__ = ["StdioBridge", "StdioHost", "serve_stdio"]

log = get_logger("client.stdio")

READ_SIZE = 64 * 1024
STDOUT_HIGH_WATER = 1024 * 1024

SessionFactory = Callable[[], asyncssh.SSHTCPSession[bytes]]
Opener = Callable[[SessionFactory], Awaitable[object]]


class StdioHost(Protocol):
    """What :func:`serve_stdio` needs from the connector."""

    connected: asyncio.Event
    conn: Any
    stats: SessionStats

    def stop(self) -> None: ...

    def fail(self, reason: str) -> None: ...


async def serve_stdio(
    host: StdioHost, remote: Remote, stdin_fd: int = 0, stdout_fd: int = 1
) -> None:
    """Wait for a session, carry stdin/stdout through one channel, then stop ``host``.

    ``host.fail`` instead of ``host.stop`` when the channel was refused or cut.
    """
    stats = host.stats.remote(str(remote))
    target = remote.target().encode()
    failure: str | None = None
    try:
        while True:
            await host.connected.wait()
            conn = host.conn
            if conn is not None:
                break
            await asyncio.sleep(0.05)
        bridge = StdioBridge(stdin_fd, stdout_fd, stats)
        await bridge.run(lambda factory: open_chisel_channel(conn, target, factory))
        if bridge.cut is not None:
            failure = f"{remote}: stream cut short: {bridge.cut}"
    except (ChannelOpenError, OSError, asyncssh.Error) as exc:
        if stats is not None:
            stats.failed += 1
        failure = f"{remote}: {getattr(exc, 'reason', None) or exc}"
        log.error("%s", failure)
    # Not on cancellation: that is the connector ending without us.
    if failure is None:
        host.stop()
    else:
        host.fail(failure)


class StdioBridge:
    """Copies between two file descriptors and one channel, keeping half-close."""

    def __init__(self, stdin_fd: int, stdout_fd: int, stats: RemoteStats | None = None) -> None:
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.stats = stats
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._reader: asyncio.ReadTransport | None = None
        self._reader_thread: _ThreadReader | None = None
        self._writer: asyncio.WriteTransport | None = None
        self._blocking_stdout = False
        self._early: list[bytes] = []
        self._stdin_eof = False
        self._chan_eof = False
        self._chan_lost = False
        self._closed_by_us = False
        #: why the channel ended without its EOF (None: it ended cleanly)
        self.cut: str | None = None
        self._stdout_closed = False
        self._saved_blocking: dict[int, bool] = {}

    async def run(self, opener: Opener) -> None:
        """Open the channel with ``opener(factory)``, copy until both ways are done."""
        for fd in (self.stdin_fd, self.stdout_fd):
            with contextlib.suppress(OSError):
                self._saved_blocking[fd] = os.get_blocking(fd)
        if self.stats is not None:
            self.stats.open += 1
            self.stats.total += 1
        try:
            await opener(lambda: _StdioChannel(self))
            await self._connect_stdout()
            await self._connect_stdin()
            await self._done
        finally:
            if self.stats is not None:
                self.stats.open -= 1
            self._close_all()
            for fd, blocking in self._saved_blocking.items():
                with contextlib.suppress(OSError):
                    os.set_blocking(fd, blocking)

    # -- setup --------------------------------------------------------------------
    async def _connect_stdout(self) -> None:
        if not _pollable(self.stdout_fd):
            self._blocking_stdout = True
        else:
            pipe = os.fdopen(os.dup(self.stdout_fd), "wb", buffering=0)
            try:
                transport, _ = await self._loop.connect_write_pipe(
                    lambda: _StdoutProtocol(self), pipe
                )
            except (ValueError, OSError):
                pipe.close()
                self._blocking_stdout = True
            else:
                transport.set_write_buffer_limits(STDOUT_HIGH_WATER)
                self._writer = transport
        early, self._early = self._early, []
        for data in early:
            self.to_stdout(data)
        if self._chan_eof:
            self._end_stdout()

    async def _connect_stdin(self) -> None:
        if _pollable(self.stdin_fd):
            pipe = os.fdopen(os.dup(self.stdin_fd), "rb", buffering=0)
            try:
                transport, _ = await self._loop.connect_read_pipe(
                    lambda: _StdinProtocol(self), pipe
                )
            except (ValueError, OSError):
                pipe.close()
            else:
                self._reader = transport
                return
        self._reader_thread = _ThreadReader(self, self.stdin_fd)
        self._reader_thread.start()

    # -- stdin -> channel ---------------------------------------------------------------
    def from_stdin(self, data: bytes) -> None:
        chan = self.chan
        if chan is None or chan.is_closing() or self._stdin_eof:
            return
        chan.write(data)
        if self.stats is not None:
            self.stats.bytes_out += len(data)

    def stdin_ended(self) -> None:
        if self._stdin_eof:
            return
        self._stdin_eof = True
        chan = self.chan
        if chan is not None and not chan.is_closing():
            chan.write_eof()
        self._maybe_finish()

    def pause_stdin(self) -> None:
        if self._reader is not None and not self._reader.is_closing():
            self._reader.pause_reading()
        if self._reader_thread is not None:
            self._reader_thread.running.clear()

    def resume_stdin(self) -> None:
        if self._reader is not None and not self._reader.is_closing():
            self._reader.resume_reading()
        if self._reader_thread is not None:
            self._reader_thread.running.set()

    # -- channel -> stdout ----------------------------------------------------------------
    def to_stdout(self, data: bytes) -> None:
        if self._stdout_closed:
            return
        if self._writer is None and not self._blocking_stdout:
            self._early.append(data)  # the channel spoke before stdout was set up
            return
        if self._writer is not None:
            self._writer.write(data)
        else:
            try:
                _write_all(self.stdout_fd, data)
            except OSError as exc:
                self.stdout_failed(exc)
                return
        if self.stats is not None:
            self.stats.bytes_in += len(data)

    def channel_eof(self) -> None:
        self._chan_eof = True
        if self._writer is not None or self._blocking_stdout:
            self._end_stdout()
        self._maybe_finish()

    def _end_stdout(self) -> None:
        """EOF for our reader: flush, then release the descriptor."""
        if self._writer is not None:
            if not self._writer.is_closing():
                self._writer.write_eof()  # closes after the buffer is flushed
        else:
            self.stdout_closed()

    def stdout_closed(self) -> None:
        """The writer flushed and closed: drop our last reference to the pipe."""
        if self._stdout_closed:
            return
        self._stdout_closed = True
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self.stdout_fd)
            finally:
                os.close(devnull)
        self._maybe_finish()

    def stdout_failed(self, exc: BaseException) -> None:
        """Nobody reads our stdout any more (EPIPE): nothing we receive can be delivered."""
        log.debug("stdout: %s", exc)
        self._stdout_closed = True
        if self.chan is not None:
            # Without EOF: the far end resets its connection, as if our reader had.
            # Our reader left first, as with ``| head``: not a cut stream for us.
            self._closed_by_us = True
            self.chan.abort()
        self._maybe_finish()

    # -- the end ------------------------------------------------------------------------------
    def channel_lost(self, exc: BaseException | None) -> None:
        self._chan_lost = True
        if exc is not None:
            log.info("channel closed: %s", exc)
        chan = self.chan
        clean = self._chan_eof or self._closed_by_us or (chan is not None and close_is_clean(chan))
        if not clean:
            self.cut = str(exc) if exc is not None else "channel closed before its EOF"
        if not self._stdout_closed:
            self._end_stdout()
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        chan = self.chan
        if self._stdin_eof and self._chan_eof and chan is not None and not chan.is_closing():
            chan.close()
        stdout_done = self._stdout_closed or (self._writer is None and not self._blocking_stdout)
        if self._chan_lost and stdout_done and not self._done.done():
            self._done.set_result(None)

    def _close_all(self) -> None:
        if self.chan is not None:
            self.chan.close()
        if self._reader is not None:
            self._reader.close()
        if self._reader_thread is not None:
            self._reader_thread.stopping = True
            self._reader_thread.running.set()
        if self._writer is not None and not self._writer.is_closing():
            self._writer.close()


def _pollable(fd: int) -> bool:
    """Pipes and sockets go through the loop; files, /dev/null and terminals do not
    (epoll refuses the first two, and libuv, under uvloop, aborts on some of them)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _StdioChannel(asyncssh.SSHTCPSession[bytes]):
    def __init__(self, bridge: StdioBridge) -> None:
        self.bridge = bridge

    def connection_made(self, chan: Any) -> None:
        self.bridge.chan = chan

    def data_received(self, data: bytes, datatype: Any = None) -> None:
        self.bridge.to_stdout(data)

    def eof_received(self) -> bool:
        self.bridge.channel_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.bridge.channel_lost(exc)

    def pause_writing(self) -> None:
        self.bridge.pause_stdin()

    def resume_writing(self) -> None:
        self.bridge.resume_stdin()


class _StdinProtocol(asyncio.Protocol):
    def __init__(self, bridge: StdioBridge) -> None:
        self.bridge = bridge

    def data_received(self, data: bytes) -> None:
        self.bridge.from_stdin(data)

    def eof_received(self) -> bool:
        self.bridge.stdin_ended()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.debug("stdin: %s", exc)
        self.bridge.stdin_ended()


class _StdoutProtocol(asyncio.BaseProtocol):
    def __init__(self, bridge: StdioBridge) -> None:
        self.bridge = bridge

    def pause_writing(self) -> None:
        chan = self.bridge.chan
        if chan is not None:
            chan.pause_reading()

    def resume_writing(self) -> None:
        chan = self.bridge.chan
        if chan is not None:
            chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.bridge.stdout_failed(exc)
        else:
            self.bridge.stdout_closed()


class _ThreadReader(threading.Thread):
    """Blocking reads for a descriptor the loop cannot poll; a daemon, so exit never waits."""

    def __init__(self, bridge: StdioBridge, fd: int) -> None:
        super().__init__(name="cc-stdin", daemon=True)
        self.bridge = bridge
        self.fd = fd
        self.loop = asyncio.get_running_loop()
        self.running = threading.Event()
        self.running.set()
        self.stopping = False

    def run(self) -> None:
        try:
            while not self.stopping:
                self.running.wait()
                if self.stopping:
                    return
                data = os.read(self.fd, READ_SIZE)
                if not data:
                    break
                self.loop.call_soon_threadsafe(self.bridge.from_stdin, data)
        except OSError as exc:
            log.debug("stdin: %s", exc)
        except RuntimeError:  # the loop closed under us
            return
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.bridge.stdin_ended)
