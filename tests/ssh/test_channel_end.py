"""A CLOSE never swallows an EOF queued behind data (cc.ssh.ending), either way.

Between our peers a CLOSE without EOF means a reset (issue 11 bug 3), so an EOF
that asyncssh drops when a CLOSE overtakes it would turn clean ends into resets.
A hand-made channel from the gateway to a connector's reverse target (the
connector's pipe dials a local service) is the test's end of the channel.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cc.ssh import open_chisel_channel
from tests.support.harness import STEP, Harness
from tests.support.net import free_port

__all__: list[str] = []

MiB = 1 << 20


class Recorder:
    """A channel session that records what it was told, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.received = 0
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, chan: Any) -> None:
        pass

    def session_started(self) -> None:
        pass

    def data_received(self, data: bytes, datatype: object = None) -> None:
        self.received += len(data)

    def eof_received(self) -> bool:
        self.events.append("eof")
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


async def _channel_to_service(harness: Harness, service: int) -> tuple[Any, Recorder]:
    gateway = await harness.gateway()
    target = f"127.0.0.1:{service}"
    await harness.connect(gateway, [f"R:127.0.0.1:{free_port()}:{target}"])
    (session,) = gateway.sessions
    async with asyncio.timeout(STEP):
        chan, recorder = await open_chisel_channel(session.conn, target.encode(), Recorder)  # type: ignore[arg-type]
    assert isinstance(recorder, Recorder)
    return chan, recorder


async def test_an_eof_written_behind_data_is_sent_before_the_close(harness: Harness) -> None:
    """write(8 MiB), write_eof(), close() at once, while the window is far smaller:
    the service reads every byte and then a clean EOF, not a reset."""
    size = 8 * MiB
    outcome: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()

    async def slow_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.2)  # the CLOSE is queued long before the data is through
        count = 0
        try:
            while chunk := await reader.read(1 << 16):
                count += len(chunk)
        except ConnectionResetError:
            outcome.set_result(("reset", count))
            return
        outcome.set_result(("eof", count))

    chan, _ = await _channel_to_service(harness, await harness.service(slow_reader))
    chan.write(b"\0" * size)
    chan.write_eof()
    chan.close()
    async with asyncio.timeout(STEP):
        assert await outcome == ("eof", size)


async def test_a_received_eof_behind_paused_data_is_delivered_before_the_close(
    harness: Harness,
) -> None:
    """Our end pauses reading; the service sends 1 MiB and closes, so the far pipe sends
    data, EOF and CLOSE: on resuming, the session gets all the data, the EOF, then the end."""
    size = MiB

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.read() == b""
        writer.write(b"\1" * size)
        await writer.drain()

    chan, recorder = await _channel_to_service(harness, await harness.service(answer))
    chan.pause_reading()
    chan.write_eof()  # the service answers after our EOF; the pipe closes after its own
    await asyncio.sleep(0.3)  # data, EOF and CLOSE arrive while we do not read
    assert recorder.events == []
    chan.resume_reading()
    async with asyncio.timeout(STEP):
        await recorder.lost
    assert (recorder.received, recorder.events) == (size, ["eof", "lost"])
