"""A reverse port held by a session that went silent goes to its connector's new
session; one held by a session that answers stays with it.  In-process gateway and
connector; the relay in between can make a path die without a FIN or RST.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from urllib.parse import urlsplit

import pytest

from tests.support.harness import Harness
from tests.support.net import LOOPBACK, free_port
from tests.support.streams import echo_handler, round_trip

__all__: list[str] = []

#: Scheduling/CI slack on top of keepalive + deadline.
SLACK = 2.0


def _remote(rev_port: int, target_port: int) -> str:
    return f"R:{LOOPBACK}:{rev_port}:{LOOPBACK}:{target_port}"


class _Relay:
    """A TCP relay in front of the gateway whose live connections can be black-holed.

    ``blackhole()`` is a NAT mapping that vanished: the relay keeps both sockets open
    and silently drops every byte, so neither end sees a FIN or RST; connections
    made afterwards pass normally (the connector's new path).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.live: list[list[bool]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        return int(self.server.sockets[0].getsockname()[1])

    def blackhole(self) -> None:
        for flag in self.live:
            flag[0] = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            writer.close()
            return
        flag = [True]
        self.live.append(flag)
        self.writers += [writer, up_writer]
        loop = asyncio.get_running_loop()
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = loop.create_task(self._pump(src, dst, flag))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, flag: list[bool]) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(1 << 16):
                if flag[0]:
                    dst.write(data)
                    await dst.drain()
            if flag[0]:
                dst.write_eof()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        for writer in self.writers:
            writer.close()


async def test_half_open_path_gateway_hands_the_port_to_the_new_session(
    harness: Harness,
) -> None:
    """The old path dies silently (no FIN/RST).  The connector's short keepalive notices
    long before the gateway's own (25 s) and reconnects over a new path while the stale
    session still holds the reverse port.  The gateway pings the holder, gets no answer
    within its deadline, closes it and gives the port to the new session: the very first
    reconnect succeeds (a Go client would give up on a config error)."""
    service_port = await harness.service(echo_handler)
    gateway = await harness.gateway(keepalive=25.0, keepalive_timeout=1.0)
    relay = _Relay(gateway.ports[0])
    relay_port = await relay.start()
    rev_port = free_port()
    try:
        running = await harness.connect(
            gateway,
            [_remote(rev_port, service_port)],
            server=urlsplit(f"http://{LOOPBACK}:{relay_port}"),
            keepalive=0.3,
            keepalive_timeout=0.5,
            # exactly one reconnect allowed: it has to work the first time
            max_retry_count=1,
            max_retry_interval=300.0,  # the default: only the first delay (~0.1 s) counts
            backoff_reset_after=0.0,
        )
        connector, task = running.connector, running.task
        assert await round_trip(rev_port, b"before") == b"before"
        relay.blackhole()
        cut_at = time.monotonic()
        async with asyncio.timeout(0.3 + 0.5 + SLACK):
            while connector.connected.is_set():
                await asyncio.sleep(0.01)
        noticed = time.monotonic() - cut_at
        async with asyncio.timeout(1.0 + SLACK):
            while not connector.connected.is_set():
                assert not task.done(), task.exception() if task.done() else None
                await asyncio.sleep(0.01)
        back = time.monotonic() - cut_at
        print(
            f"half-open path: connector noticed after {noticed:.2f}s, port back after {back:.2f}s"
        )
        assert len(gateway.sessions) == 1, "the stale session was not closed"
        assert await round_trip(rev_port, b"after") == b"after"
    finally:
        await relay.close()


async def test_live_holder_keeps_its_reverse_port(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """The stale-session check never takes a port from a session that answers: a second
    connector asking for the same reverse port is refused, the first keeps serving."""
    caplog.set_level(logging.INFO, logger="cc")
    service_port = await harness.service(echo_handler)
    gateway = await harness.gateway(keepalive_timeout=1)
    rev_port = free_port()
    remote = _remote(rev_port, service_port)
    first = await harness.connect(gateway, [remote], max_retry_count=-1, max_retry_interval=300.0)
    error = await harness.expect_fatal(gateway, [remote], max_retry_count=0)
    assert "gave up after 0 retries" in str(error)
    assert any("Server cannot listen" in r.getMessage() for r in caplog.records)
    assert not any("closing the stale session" in r.getMessage() for r in caplog.records)
    assert first.connector.connected.is_set()
    assert await round_trip(rev_port, b"still mine") == b"still mine"
