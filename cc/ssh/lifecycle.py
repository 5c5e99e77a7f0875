"""Channel open, confirmation, EOF and close without asyncssh's generic dispatch.

Every tunnelled connection costs a CHANNEL_OPEN, its confirmation, an EOF and a
CLOSE each way.  Through asyncssh each received one is an SSHPacket, a log call and
a handler lookup, and the opener waits in two tasks (``_open_forward``, then
``_start_reading``).  Here the fast receive path hands those packets straight to
the channel, with the state checks and state changes of asyncssh 2.24.1
(``SSHConnection._process_channel_open`` / ``_process_channel_open_confirmation``,
``SSHChannel._process_eof`` / ``_process_close``), and an opener is called back
(``start_chisel_channel``) instead of awaiting.  asyncssh's per-channel logger is
only asked for when its level lets the line through (cc.ssh.leanchan makes it then).
Anything unexpected (a wrong state, extra data, a channel of another class) returns
False and takes asyncssh's path, which raises or logs as it always did.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import struct
from collections.abc import Callable
from typing import Any

from asyncssh import (
    MSG_CHANNEL_CLOSE,
    MSG_CHANNEL_EOF,
    MSG_CHANNEL_OPEN,
    MSG_CHANNEL_OPEN_CONFIRMATION,
    OPEN_CONNECT_FAILED,
    ChannelOpenError,
)
from asyncssh.logging import SSHLogger
from asyncssh.packet import PacketDecodeError, SSHPacket, String

__all__ = ["LifecycleChannelMixin", "LifecycleMixin", "OpenDone"]

#: Called once a channel opened by ``cc_start_open`` is open (None) or refused (why).
OpenDone = Callable[[Exception | None], None]

#: CHANNEL_OPEN of type ``chisel``: type byte, string "chisel", then three uint32s.
_CHISEL_OPEN_HEAD = b"\x00\x00\x00\x06chisel"
_OPEN_FIELDS = struct.Struct(">III")
_OPEN_FIELDS_AT = 1 + len(_CHISEL_OPEN_HEAD)
_TARGET_AT = _OPEN_FIELDS_AT + _OPEN_FIELDS.size
#: OPEN_CONFIRMATION without extra data: recipient, sender, window, packet size.
_CONFIRM_FIELDS = struct.Struct(">IIII")
_CONFIRM_LEN = 1 + _CONFIRM_FIELDS.size
#: EOF and CLOSE: type byte and recipient channel, nothing else.
_END_LEN = 5
#: Channel states in which asyncssh accepts a CLOSE.
_CLOSABLE_STATES = frozenset({"open", "eof_pending", "eof"})
#: Send states from which ``close`` with nothing buffered sends CLOSE at once.
_QUICK_CLOSE_STATES = frozenset({"open", "eof"})


class LifecycleMixin:
    """The connection side: lifecycle packets of ``chisel`` channels, handled directly."""

    def _cc_lifecycle(self, pkttype: int, payload: memoryview) -> bool:
        """Handle an OPEN/OPEN_CONFIRMATION/EOF/CLOSE; False: leave it to asyncssh."""
        conn: Any = self
        if pkttype in (MSG_CHANNEL_EOF, MSG_CHANNEL_CLOSE):
            if len(payload) != _END_LEN:
                return False
            chan = _ours(conn, int.from_bytes(payload[1:5], "big"))
            if chan is None:
                return False
            if pkttype == MSG_CHANNEL_EOF:
                if chan._recv_state != "open":
                    return False
                chan._recv_state = "eof_pending"
                chan._flush_recv_buf()
                return True
            if chan._recv_state not in _CLOSABLE_STATES:
                return False
            chan.cc_closed_by_peer()
            return True
        if pkttype == MSG_CHANNEL_OPEN_CONFIRMATION:
            if len(payload) != _CONFIRM_LEN:
                return False
            recv_chan, send_chan, window, pktsize = _CONFIRM_FIELDS.unpack_from(payload, 1)
            chan = _ours(conn, recv_chan)
            if chan is None or not chan._open_waiter or not pktsize:
                return False
            # asyncssh's process_open_confirmation; the packet's rest goes to the
            # opener, which checks it is empty
            chan._send_chan = send_chan
            chan._send_window = window
            chan._send_pktsize = pktsize
            if SSHLogger._debug_level >= 2:  # asyncssh's debug2, without making the logger
                chan.logger.debug2("  Initial send window %d, packet size %d", window, pktsize)
            chan._send_state = "open"
            chan._recv_state = "open"
            waiter = chan._open_waiter
            if not waiter.cancelled():
                waiter.set_result(SSHPacket(b""))
            chan._open_waiter = None
            return True
        if pkttype == MSG_CHANNEL_OPEN:
            if payload[1:_OPEN_FIELDS_AT] != _CHISEL_OPEN_HEAD or len(payload) < _TARGET_AT:
                return False
            send_chan, window, pktsize = _OPEN_FIELDS.unpack_from(payload, _OPEN_FIELDS_AT)
            if not pktsize:
                return False
            conn._cc_chisel_opened(send_chan, window, pktsize, bytes(payload[_TARGET_AT:]))
            return True
        return False

    def _cc_chisel_opened(self, send_chan: int, window: int, pktsize: int, target: bytes) -> None:
        """The tail of asyncssh's ``_process_channel_open`` for a ``chisel`` channel."""
        conn: Any = self
        try:
            chan, session = conn.cc_chisel_channel(target)
            chan.process_open(send_chan, window, pktsize, session)
        except ChannelOpenError as exc:
            conn.logger.debug1("Open failed for channel type chisel: %s", exc.reason)
            conn.send_channel_open_failure(send_chan, exc.code, exc.reason, exc.lang)


def _ours(conn: Any, number: int) -> Any:
    """Channel ``number`` if it is one of ours (its class takes these short cuts), else None."""
    chan = conn._channels.get(number)
    return chan if isinstance(chan, LifecycleChannelMixin) else None


class LifecycleChannelMixin:
    """The channel side: open with a callback, EOF and CLOSE without the generic flush.

    The channel class must also end as ``cc.ssh.ending.EofKeepingChannel`` does
    (``cc_closed_by_peer``): the receive path above relies on it.
    """

    def cc_start_open(self, chantype: bytes, extra: bytes, session: Any, done: OpenDone) -> None:
        """Send CHANNEL_OPEN now; start ``session`` once confirmed, then call ``done``.

        asyncssh's ``_open`` + ``_open_forward`` + ``_start_reading`` without their two
        tasks: the open waiter (which asyncssh's failure and connection-loss paths
        complete) gets a callback instead of an awaiting task.
        """
        chan: Any = self
        if chan._send_state != "closed":
            raise OSError("Channel already open")
        waiter: asyncio.Future[SSHPacket] = chan._conn._loop.create_future()
        chan._open_waiter = waiter
        chan._conn.send_packet(
            MSG_CHANNEL_OPEN,
            _CHISEL_OPEN_HEAD if chantype == b"chisel" else String(chantype),
            _OPEN_FIELDS.pack(chan._recv_chan, chan._recv_window, chan._recv_pktsize),
            extra,
            handler=chan,
        )
        waiter.add_done_callback(functools.partial(self._cc_opened, session, done))

    def _cc_opened(self, session: Any, done: OpenDone, waiter: asyncio.Future[SSHPacket]) -> None:
        chan: Any = self
        if waiter.cancelled():
            done(ChannelOpenError(OPEN_CONNECT_FAILED, "channel open cancelled"))
            return
        exc = waiter.exception()
        if exc is None:
            try:
                waiter.result().check_end()  # forward channels carry no extra data
            except PacketDecodeError as decode_error:
                exc = ChannelOpenError(OPEN_CONNECT_FAILED, str(decode_error))
                chan.abort()
        if exc is not None:
            if not isinstance(exc, Exception):  # KeyboardInterrupt and the like
                raise exc
            done(exc)
            return
        chan._session = session
        session.connection_made(chan)
        session.session_started()
        if chan._recv_paused == "starting":  # asyncssh's _start_reading
            chan._recv_paused = False
            chan._flush_recv_buf()
        done(None)

    def process_open(self, send_chan: int, window: int, pktsize: int, session: Any) -> None:
        """The peer opens this channel: asyncssh's ``process_open`` with a leaner finish.

        A session given at once (SOCKS, UDP) is started at once; an awaitable one (a
        dial) runs in one task, as asyncssh's does, whose errors asyncssh reports.
        """
        chan: Any = self
        chan._send_chan = send_chan
        chan._send_window = window
        chan._send_pktsize = pktsize
        if inspect.isawaitable(session):
            # asyncssh's conn.create_task (errors reported by _reap_task), without
            # ensure_future's type checks
            conn = chan._conn
            task = chan._loop.create_task(self._cc_await_session(session))
            task.add_done_callback(functools.partial(conn._reap_task, None))
            conn._tasks.add(task)
        else:
            self._cc_accept(session)

    async def _cc_await_session(self, pending: Any) -> None:
        try:
            session = await pending
        except ChannelOpenError as exc:
            self._cc_refuse(exc)
            return
        self._cc_accept(session)

    def _cc_accept(self, session: Any) -> None:
        """asyncssh's ``_finish_open_request`` of SSHChannel and SSHForwardChannel."""
        chan: Any = self
        conn = chan._conn
        if conn is None:  # the SSH connection went while the target was dialled
            session.connection_lost(ConnectionResetError("SSH connection closed"))
            self._cc_refuse(ChannelOpenError(OPEN_CONNECT_FAILED, "SSH connection closed"))
            return
        chan._session = session
        # asyncssh's send_channel_open_confirmation, its four UInt32s packed at once
        conn.send_packet(
            MSG_CHANNEL_OPEN_CONFIRMATION,
            _CONFIRM_FIELDS.pack(
                chan._send_chan, chan._recv_chan, chan._recv_window, chan._recv_pktsize
            ),
        )
        chan._send_state = "open"
        chan._recv_state = "open"
        session.connection_made(chan)
        if chan._session is not None:
            session.session_started()
            if chan._recv_paused:  # asyncssh's resume_reading
                chan._recv_paused = False
                chan._flush_recv_buf()

    def _cc_refuse(self, exc: ChannelOpenError) -> None:
        chan: Any = self
        if chan._conn is not None:
            chan._conn.send_channel_open_failure(chan._send_chan, exc.code, exc.reason, exc.lang)
        chan._loop.call_soon(chan._cleanup)

    def _cc_send(self, pkttype: int) -> None:
        """asyncssh's ``SSHChannel.send_packet`` for a packet that is only the channel number."""
        chan: Any = self
        if chan._send_chan is not None:
            chan._conn.send_packet(pkttype, chan._send_chan.to_bytes(4, "big"), handler=chan)

    def write_eof(self) -> None:
        """Nothing buffered: the EOF goes now (asyncssh would flush an empty buffer first)."""
        chan: Any = self
        if chan._send_state == "open" and not chan._send_buf and not chan._send_paused:
            self._cc_send(MSG_CHANNEL_EOF)
            chan._send_state = "eof"
            return
        super().write_eof()  # type: ignore[misc]

    def close(self) -> None:
        """Nothing buffered: the CLOSE goes now, as asyncssh's ``close`` would send it."""
        chan: Any = self
        if chan._send_state in _QUICK_CLOSE_STATES and not chan._send_buf and not chan._send_paused:
            self._cc_send(MSG_CHANNEL_CLOSE)
            chan._send_chan = None
            chan._send_state = "closed"
            if chan._recv_state != "closed":
                chan._discard_recv()
            return
        super().close()  # type: ignore[misc]
