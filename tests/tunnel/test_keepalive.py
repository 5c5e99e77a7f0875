"""The one keepalive driver, on both ends of a real in-process session.

Between connector and gateway sits a TCP relay that can throttle the link (a
saturated slow path: answers queue behind megabytes of data) or freeze it (a
frozen peer or a NAT mapping that vanished: no FIN, no RST, just silence).
Traffic that keeps arriving proves the peer alive even when its answer to a
ping is late; a silent peer is closed within ``keepalive + timeout``.  Each
test runs on the asyncio loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from cc.gateway.gateway import Gateway, GatewaySession
from tests.support.harness import STEP, Harness, wait_until
from tests.support.net import free_port
from tests.tunnel.inprocess import LOOPS, run_on

__all__: list[str] = []

#: Short keepalive on whichever side must act; long enough for loopback round trips.
INTERVAL = 0.3
TIMEOUT = 0.5
#: Scheduling slack on top of interval + timeout (two CPUs shared with other tests).
SLACK = 1.5
#: Bytes per second the throttled relay lets through each way: megabytes queue ahead of
#: an answer, so it comes seconds late, far past LATE_TIMEOUT.
RATE = 1_000_000
#: The deadline on the saturated link: longer than any gap in the data on a busy machine.
LATE_TIMEOUT = 1.0


@pytest.fixture(autouse=True)
def _cc_logs_reach_caplog() -> Iterator[None]:
    """``setup_logging`` (run by CLI tests in this process) stops propagation; undo it here."""
    root = logging.getLogger("cc")
    saved = root.propagate
    root.propagate = True
    try:
        yield
    finally:
        root.propagate = saved


class Relay:
    """A TCP relay in front of the gateway: ``rate`` bytes/s each way; ``freeze()`` drops all.

    Throttled, it is a saturated slow link: the relay reads only as fast as it may
    write, so data queues in the sender's buffers and a ping's answer waits behind
    it.  Frozen, every byte is dropped and no FIN or RST is sent: silence.
    """

    def __init__(self, target_port: int, rate: float | None = None) -> None:
        self.target_port = target_port
        self.rate = rate
        self.frozen = False
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def freeze(self) -> None:
        self.frozen = True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pump(src, dst))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        started, sent = time.monotonic(), 0
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(16384):
                if self.frozen:
                    continue
                dst.write(data)
                await dst.drain()
                sent += len(data)
                if self.rate is not None:
                    await asyncio.sleep(max(0.0, started + sent / self.rate - time.monotonic()))
            if not self.frozen:
                dst.write_eof()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        for writer in self.writers:
            writer.close()


def can_listen(port: int) -> bool:
    """Whether a new listener (SO_REUSEADDR, as asyncio's) could bind 127.0.0.1:port now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
        return True


def only_session(gateway: Gateway) -> GatewaySession:
    assert len(gateway.sessions) == 1
    return next(iter(gateway.sessions))


async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A service that sends as fast as it may and swallows whatever comes in."""

    async def swallow() -> None:
        while await reader.read(1 << 16):
            pass

    sink = asyncio.get_running_loop().create_task(swallow())
    chunk = b"x" * (1 << 16)
    try:
        while not sink.done():
            writer.write(chunk)
            await writer.drain()
    finally:
        sink.cancel()


async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_late_answers_with_data_arriving_keep_the_session(
    loop_name: str,
) -> None:
    """Both directions saturated: each end's pings are answered after the deadline, but
    data keeps arriving, so neither end drops the session."""

    async def test(harness: Harness) -> None:
        gateway = await harness.gateway(keepalive=INTERVAL, keepalive_timeout=LATE_TIMEOUT)
        relay = Relay(gateway.ports[0], rate=RATE)
        url = await relay.start()
        service = await harness.service(firehose)
        port = free_port()
        running = await harness.connect(
            gateway,
            [f"R:127.0.0.1:{port}:127.0.0.1:{service}"],
            server=urlsplit(url),
            keepalive=INTERVAL,
            keepalive_timeout=LATE_TIMEOUT,
        )
        session = only_session(gateway)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        received = 0

        async def upload() -> None:
            chunk = b"y" * (1 << 16)
            while True:
                writer.write(chunk)
                await writer.drain()

        uploader = asyncio.get_running_loop().create_task(upload())
        try:
            until = time.monotonic() + 4.0
            while time.monotonic() < until:
                async with asyncio.timeout(STEP):
                    received += len(await reader.read(1 << 16))
            gateway_keepalive = session.keepalive
            connector_keepalive = running.connector.keepalive
            assert gateway_keepalive is not None and connector_keepalive is not None
            # pings went unanswered past the deadline, and only the traffic kept the session
            assert gateway_keepalive.spared_by_traffic > 0, "the gateway's pings were never late"
            assert connector_keepalive.spared_by_traffic > 0, "the connector's were never late"
            assert not gateway_keepalive.dead and not connector_keepalive.dead
            assert only_session(gateway) is session
            assert running.connector.connected.is_set()
            assert running.stats.reconnects == 0
            assert received > RATE  # the download went on all along
        finally:
            uploader.cancel()
            writer.close()
            await relay.close()

    run_on(loop_name, test)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_gateway_closes_a_silent_connector_and_frees_its_port(
    loop_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The connector goes silent (its own keepalive off, so only the gateway acts): the
    gateway closes the session within keepalive + timeout and the reverse port is free."""
    caplog.set_level(logging.INFO, logger="cc")

    async def test(harness: Harness) -> None:
        gateway = await harness.gateway(keepalive=INTERVAL, keepalive_timeout=TIMEOUT)
        relay = Relay(gateway.ports[0])
        url = await relay.start()
        service = await harness.service(idle)
        port = free_port()
        try:
            await harness.connect(
                gateway,
                [f"R:127.0.0.1:{port}:127.0.0.1:{service}"],
                server=urlsplit(url),
                keepalive=0.0,
                max_retry_count=0,
            )
            session = only_session(gateway)
            await asyncio.sleep(4 * INTERVAL)  # a healthy idle session survives several rounds
            assert only_session(gateway) is session
            assert not can_listen(port)
            relay.freeze()
            frozen_at = time.monotonic()
            await wait_until(lambda: not gateway.sessions and can_listen(port), STEP)
            elapsed = time.monotonic() - frozen_at
        finally:
            await relay.close()
        assert elapsed <= INTERVAL + TIMEOUT + SLACK, f"closed {elapsed:.2f}s after the freeze"
        assert any("No keepalive answer" in r.getMessage() for r in caplog.records)

    run_on(loop_name, test)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_connector_drops_a_silent_gateway(loop_name: str, caplog: pytest.LogCaptureFixture) -> None:
    """The gateway goes silent (its own keepalive long): the connector gives up on the
    session within keepalive + timeout."""
    caplog.set_level(logging.INFO, logger="cc")

    async def test(harness: Harness) -> None:
        gateway = await harness.gateway(keepalive=25.0)
        relay = Relay(gateway.ports[0])
        url = await relay.start()
        service = await harness.service(idle)
        try:
            running = await harness.connect(
                gateway,
                [f"R:127.0.0.1:{free_port()}:127.0.0.1:{service}"],
                server=urlsplit(url),
                keepalive=INTERVAL,
                keepalive_timeout=TIMEOUT,
            )
            await asyncio.sleep(4 * INTERVAL)
            assert running.connector.connected.is_set()
            assert running.stats.reconnects == 0
            relay.freeze()
            frozen_at = time.monotonic()
            await wait_until(lambda: not running.connector.connected.is_set(), STEP)
            elapsed = time.monotonic() - frozen_at
        finally:
            await relay.close()
        assert elapsed <= INTERVAL + TIMEOUT + SLACK, f"dropped {elapsed:.2f}s after the freeze"
        assert any("Keepalive: no answer" in r.getMessage() for r in caplog.records)

    run_on(loop_name, test)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_negative_durations_switch_the_keepalive_off(loop_name: str) -> None:
    """Go durations may be negative (``--keepalive -1s``); like chisel, that means off,
    on both ends, instead of an error that ends the session."""

    async def test(harness: Harness) -> None:
        gateway = await harness.gateway(keepalive=-1.0, keepalive_timeout=-1.0)
        service = await harness.service(idle)
        running = await harness.connect(
            gateway,
            [f"R:127.0.0.1:{free_port()}:127.0.0.1:{service}"],
            keepalive=-1.0,
            keepalive_timeout=-1.0,
        )
        session = only_session(gateway)
        await asyncio.sleep(0.5)
        assert not running.task.done()
        assert running.connector.connected.is_set()
        assert only_session(gateway) is session
        for driver in (session.keepalive, running.connector.keepalive):
            assert driver is not None
            assert not driver.state.enabled
            assert driver.state.reply_timeout == 0

    run_on(loop_name, test)
