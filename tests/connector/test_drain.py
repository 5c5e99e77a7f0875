"""``Connector.stop()``: open connections may finish (bounded by drain_timeout), new
ones are refused at once, and ``run()`` returns normally.  In-process, so stop() is
called directly; the CLI's SIGTERM path is in tests/system/test_signals.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time

from tests.support.harness import STEP, Harness, RunningConnector
from tests.support.net import LOOPBACK, blob, free_port

__all__: list[str] = []

#: Scheduling/CI slack on top of a computed deadline.
SLACK = 2.0


class _SlowService:
    """Sends ``chunks`` x ``chunk`` bytes, one every ``pause`` s, then closes; counts clients."""

    def __init__(self, chunks: int, chunk: int, pause: float, forever: bool = False) -> None:
        self.payload = blob(chunks * chunk, seed=42)
        self.chunk = chunk
        self.pause = pause
        self.forever = forever
        self.accepted = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            if self.forever:
                while True:
                    writer.write(b"x" * self.chunk)
                    await writer.drain()
                    await asyncio.sleep(self.pause)
            for offset in range(0, len(self.payload), self.chunk):
                writer.write(self.payload[offset : offset + self.chunk])
                await writer.drain()
                await asyncio.sleep(self.pause)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


async def _start_tunnel(
    harness: Harness, service: _SlowService, drain_timeout: float
) -> tuple[RunningConnector, int]:
    """A reverse remote to ``service``; returns the running connector and its port."""
    service_port = await harness.service(service.handle)
    gateway = await harness.gateway()
    rev_port = free_port()
    remote = f"R:{LOOPBACK}:{rev_port}:{LOOPBACK}:{service_port}"
    running = await harness.connect(
        gateway, [remote], max_retry_count=0, drain_timeout=drain_timeout
    )
    return running, rev_port


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    data = bytearray()
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(1 << 16):
            data += chunk
    return bytes(data)


async def _refused(port: int) -> bool:
    """A new connection through the tunnel gets no data: closed or reset at once."""
    try:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
    except ConnectionRefusedError:
        return True
    try:
        async with asyncio.timeout(STEP):
            return await _read_all(reader) == b""
    finally:
        writer.close()


async def test_stop_drains_an_open_connection_then_returns(harness: Harness) -> None:
    service = _SlowService(chunks=40, chunk=16 * 1024, pause=0.04)  # ~1.6 s of data
    running, rev_port = await _start_tunnel(harness, service, drain_timeout=8.0)
    connector, task = running.connector, running.task
    reader, writer = await asyncio.open_connection(LOOPBACK, rev_port)
    first = await asyncio.wait_for(reader.readexactly(32 * 1024), STEP)
    connector.stop()
    stopped_at = time.monotonic()

    assert await _refused(rev_port), "a new connection got through while draining"
    assert service.accepted == 1
    assert not task.done(), "run() returned while a connection was still open"

    rest = await asyncio.wait_for(_read_all(reader), STEP)
    finished_at = time.monotonic()
    writer.close()
    data = first + rest
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(service.payload).hexdigest()

    async with asyncio.timeout(STEP):
        await task  # returns normally: stop() is not an error
    returned_at = time.monotonic()
    print(
        f"drained: transfer ended {finished_at - stopped_at:.2f}s after stop(), "
        f"run() returned {returned_at - finished_at:.2f}s later"
    )
    assert finished_at - stopped_at > 0.5  # the transfer really outlived stop()
    assert returned_at - stopped_at < 8.0
    assert connector.stats.state == "stopped"


async def test_stop_drain_is_bounded_by_drain_timeout(harness: Harness) -> None:
    service = _SlowService(chunks=1, chunk=1024, pause=0.05, forever=True)
    running, rev_port = await _start_tunnel(harness, service, drain_timeout=1.0)
    reader, writer = await asyncio.open_connection(LOOPBACK, rev_port)
    await asyncio.wait_for(reader.readexactly(4096), STEP)
    running.connector.stop()
    stopped_at = time.monotonic()
    async with asyncio.timeout(STEP):
        await running.task
    elapsed = time.monotonic() - stopped_at
    print(f"endless connection cut after {elapsed:.2f}s (drain_timeout 1s)")
    assert 0.9 <= elapsed < 1.0 + SLACK
    # The tunnel is gone: the endless stream ends.
    async with asyncio.timeout(STEP):
        await _read_all(reader)
    writer.close()
