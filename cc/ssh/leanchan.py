"""A channel without the per-channel extras of asyncssh that a tunnel never uses.

asyncssh 2.24.1 gives every channel an ``asyncio.Event`` (for ``wait_closed``), a
child logger with its own context string, and two log calls (the write buffer
limits at creation, "Channel closed" at the end) whose arguments are formatted
before the level is looked at.  A tunnelled connection is one channel, so each of
them is paid per connection on both ends.  Here the event and the logger are made
when first asked for, and the two log calls are made only when asyncssh's logger
would emit them: what ``-v`` shows, and what ``wait_closed`` does, stay the same.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from asyncssh import OPEN_CONNECT_FAILED, ChannelOpenError
from asyncssh.logging import SSHLogger

__all__ = ["LeanChannelMixin"]

#: asyncssh's default write buffer limits (``set_write_buffer_limits()``).
_HIGH_WATER = 65536
_LOW_WATER = _HIGH_WATER // 4


class LeanChannelMixin:
    """Channel creation and cleanup of asyncssh 2.24.1, the event and logger made lazily.

    Must come before asyncssh's ``SSHChannel`` in the class's bases: its
    ``__init__`` replaces asyncssh's (it does not call it).
    """

    _cc_close_event: asyncio.Event | None = None
    _cc_logger: SSHLogger | None = None
    _cc_cleaned = False

    def __init__(
        self,
        conn: Any,
        loop: asyncio.AbstractEventLoop,
        encoding: str | None,
        errors: str,
        window: int,
        max_pktsize: int,
    ) -> None:
        """``SSHChannel.__init__`` without its event, child logger and first log call."""
        chan: Any = self
        chan._conn = conn
        chan._loop = loop
        chan._session = None
        chan._extra = {"connection": conn}
        chan._env = {}
        chan._str_env = None
        chan._command = None
        chan._subsystem = None
        chan._send_state = "closed"
        chan._send_chan = None
        chan._send_window = 0
        chan._send_pktsize = 0
        chan._send_paused = False
        chan._send_buf = []
        chan._send_buf_len = 0
        chan._recv_state = "closed"
        chan._init_recv_window = window
        chan._recv_window = window
        chan._recv_pktsize = max_pktsize
        chan._recv_paused = "starting"
        chan._recv_buf = []
        chan._request_queue = []
        chan._open_waiter = None
        chan._request_waiters = []
        chan._recv_chan = conn.add_channel(chan)
        self._cc_parent_logger: SSHLogger = conn.logger
        self._cc_number = chan._recv_chan
        chan.set_encoding(encoding, errors)
        if self._cc_parent_logger.isEnabledFor(logging.DEBUG):
            chan.set_write_buffer_limits()  # logs the limits, as asyncssh does
        else:
            # set_write_buffer_limits() without its log call: nothing is buffered yet,
            # so its _pause_resume_writing() has nothing to do
            chan._send_high_water = _HIGH_WATER
            chan._send_low_water = _LOW_WATER

    @property
    def logger(self) -> SSHLogger:
        """asyncssh's per-channel logger (context ``chan=N``), made on first use."""
        logger = self._cc_logger
        if logger is None:
            logger = self._cc_parent_logger.get_child(context=f"chan={self._cc_number}")
            self._cc_logger = logger
        return logger

    @property
    def _close_event(self) -> asyncio.Event:
        """What ``wait_closed`` waits on: made on first use, set if already cleaned up."""
        event = self._cc_close_event
        if event is None:
            event = self._cc_close_event = asyncio.Event()
            if self._cc_cleaned:
                event.set()
        return event

    @_close_event.setter
    def _close_event(self, event: asyncio.Event) -> None:
        self._cc_close_event = event

    def _cleanup(self, exc: Exception | None = None) -> None:
        """``SSHChannel._cleanup``; the event set only if made, the log call only if shown."""
        chan: Any = self
        if chan._open_waiter:
            if not chan._open_waiter.cancelled():
                chan._open_waiter.set_exception(
                    ChannelOpenError(OPEN_CONNECT_FAILED, "SSH connection closed")
                )
            chan._open_waiter = None
        if chan._request_waiters:
            for waiter in chan._request_waiters:
                if not waiter.cancelled():
                    if exc:
                        waiter.set_exception(exc)
                    else:
                        waiter.set_result(False)
            chan._request_waiters = []
        if chan._session is not None:
            try:
                chan._session.connection_lost(exc)
            except Exception:
                self.logger.debug1("Uncaught exception in session ignored", exc_info=sys.exc_info)
            chan._session = None
        self._cc_cleaned = True
        if self._cc_close_event is not None:
            self._cc_close_event.set()
        conn = chan._conn
        if conn:
            if self._cc_parent_logger.isEnabledFor(logging.INFO):
                self.logger.info("Channel closed%s", ": " + str(exc) if exc else "")
            conn.detach_x11_listener(chan)
            conn.remove_channel(chan._recv_chan)
            chan._send_chan = None
            chan._recv_chan = None
            chan._conn = None
