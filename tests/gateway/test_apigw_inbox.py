"""The relay's inbox: a read's timeout is a deadline served by one timer per inbox."""

from __future__ import annotations

import asyncio

import pytest

from cc.gateway.apigw.streams import Inbox, StreamClosed

__all__: list[str] = []


def _inbox() -> Inbox:
    return Inbox(lambda: None, lambda: None)


async def test_a_read_after_a_longer_one_still_times_out_on_time() -> None:
    inbox = _inbox()
    loop = asyncio.get_running_loop()
    loop.call_later(0.02, inbox.feed, b"a")
    assert await inbox.read(30.0) == b"a"  # leaves its timer set 30 s out
    started = loop.time()
    with pytest.raises(TimeoutError):
        await inbox.read(0.1)
    assert 0.09 <= loop.time() - started < 2.0


async def test_a_read_is_not_timed_out_by_an_earlier_reads_deadline() -> None:
    inbox = _inbox()
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, inbox.feed, b"a")
    assert await inbox.read(0.1) == b"a"  # its timer fires at 0.1 s, with no read waiting
    loop.call_later(0.3, inbox.feed, b"b")
    assert await inbox.read(1.0) == b"b"  # the timer fired before this deadline: re-armed
    started = loop.time()
    with pytest.raises(TimeoutError):
        await inbox.read(0.2)
    assert loop.time() - started >= 0.19


async def test_a_read_without_timeout_outlives_a_pending_timer() -> None:
    inbox = _inbox()
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, inbox.feed, b"a")
    assert await inbox.read(0.05) == b"a"
    loop.call_later(0.2, inbox.feed, b"b")
    assert await inbox.read() == b"b"


async def test_a_cancelled_read_leaves_the_next_one_its_own_deadline() -> None:
    inbox = _inbox()
    reading = asyncio.ensure_future(inbox.read(0.05))
    await asyncio.sleep(0.01)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    await asyncio.sleep(0.1)  # the old deadline passes with nobody waiting
    inbox.feed(b"x")
    assert await inbox.read(0.05) == b"x"
    with pytest.raises(TimeoutError):
        await inbox.read(0.05)


async def test_an_ended_inbox_keeps_no_timer() -> None:
    inbox = _inbox()
    reading = asyncio.ensure_future(inbox.read(60.0))
    await asyncio.sleep(0.01)
    inbox.fail(ConnectionResetError("gone"))
    with pytest.raises(StreamClosed):
        await reading
    assert inbox._timer is None  # nothing holds the inbox for the next minute
