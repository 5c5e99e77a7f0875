"""Channels made and cleaned up without asyncssh's per-channel extras (cc.ssh.leanchan).

The close event and the child logger are made on first use and the log calls only
when shown: ``wait_closed`` and asyncssh's log lines must stay as asyncssh has them.
"""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
from asyncssh.logging import SSHLogger

from tests.ssh.test_channel_end import Recorder
from tests.ssh.test_lifecycle import _echo, _gateway_conn, _start
from tests.support.harness import STEP, Harness

__all__: list[str] = []


async def test_wait_closed_returns_whether_asked_before_or_after_the_close(
    harness: Harness,
) -> None:
    target = f"127.0.0.1:{await harness.service(_echo)}"
    conn = await _gateway_conn(harness, target)
    early, error = await _start(conn, target, Recorder())
    assert error is None
    waiting = asyncio.ensure_future(early.wait_closed())
    await asyncio.sleep(0)
    assert not waiting.done()
    late, error = await _start(conn, target, Recorder())
    assert error is None
    early.close()
    late.close()
    async with asyncio.timeout(STEP):
        await waiting
        await late.wait_closed()  # first asked after the channel was cleaned up
        await late.wait_closed()


async def test_asyncssh_channel_lines_keep_their_context_when_shown(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """At asyncssh's debug level 2 the channel's lines are all there, with ``chan=N``."""
    target = f"127.0.0.1:{await harness.service(_echo)}"
    conn = await _gateway_conn(harness, target)
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    SSHLogger.set_debug_level(2)
    try:
        recorder = Recorder()
        chan, error = await _start(conn, target, recorder)
        assert error is None
        number = chan._recv_chan
        chan.write_eof()
        async with asyncio.timeout(STEP):
            await recorder.lost
            await chan.wait_closed()
    finally:
        SSHLogger.set_debug_level(1)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("asyncssh")]
    context = rf"\[conn=\d+, chan={number}\] "
    for expected in (
        r"Set write buffer limits: low-water=16384, high-water=65536",
        r"  Initial send window \d+, packet size \d+",
        r"Channel closed",
    ):
        assert any(re.fullmatch(context + expected, line) for line in lines), expected


async def test_a_channel_that_fails_in_its_session_is_still_cleaned_up(
    harness: Harness,
) -> None:
    """An error from the session's connection_lost is logged and swallowed, as in asyncssh."""

    class Failing(Recorder):
        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            raise RuntimeError("session failed")

    target = f"127.0.0.1:{await harness.service(_echo)}"
    conn = await _gateway_conn(harness, target)
    recorder = Failing()
    chan, error = await _start(conn, target, recorder)
    assert error is None
    number = chan._recv_chan
    chan.close()
    async with asyncio.timeout(STEP):
        await recorder.lost
        await chan.wait_closed()
    assert number not in conn._channels
