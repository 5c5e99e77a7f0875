"""One session's life: the loops we run on, which channels a connector accepts, and
what the gateway releases when a session ends.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import asyncssh
import pytest

from cc.gateway.gateway import Gateway, GatewaySession
from cc.protocol.remote import parse_remote
from cc.ssh import ChannelOpenError, open_chisel_channel
from tests.support.harness import STEP, ChannelSink, Harness, wait_until
from tests.support.inprocess import LOOP_FACTORIES
from tests.support.net import free_port
from tests.support.streams import echo_handler, round_trip

__all__: list[str] = []


def test_both_loops_are_configured() -> None:
    assert set(LOOP_FACTORIES) == {"asyncio", "uvloop"}


async def test_runs_on_the_loop_in_its_name(request: pytest.FixtureRequest) -> None:
    """The parametrization really switches loops (uvloop's Loop is not a BaseEventLoop)."""
    loop = asyncio.get_running_loop()
    expected = request.node.callspec.id.split("-")[0]
    actual = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
    assert actual == expected


def only_session(gateway: Gateway) -> GatewaySession:
    assert len(gateway.sessions) == 1
    return next(iter(gateway.sessions))


# -- 9. the connector dials only what it declared -------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "127.0.0.1:1",  # not among the remotes
        "localhost:{service}",  # the same service under another name
        "127.0.0.1:{service}/udp",  # declared as TCP only
        "socks",
        "127.0.0.1:{service}\x00",
    ],
)
async def test_connector_refuses_undeclared_targets(
    harness: Harness, caplog: pytest.LogCaptureFixture, target: str
) -> None:
    service = await harness.service(echo_handler)
    gateway = await harness.gateway()
    await harness.connect(gateway, [f"R:127.0.0.1:{free_port()}:127.0.0.1:{service}"])
    session = only_session(gateway)
    with (
        caplog.at_level(logging.WARNING, logger="cc.client"),
        pytest.raises(ChannelOpenError) as info,
    ):
        async with asyncio.timeout(STEP):
            await open_chisel_channel(
                session.conn, target.format(service=service).encode(), ChannelSink
            )
    assert info.value.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
    warnings = [r for r in caplog.records if r.name == "cc.client" and r.levelno >= logging.WARNING]
    assert any("Denied channel" in r.getMessage() for r in warnings)
    assert only_session(gateway) is session, "a refused channel leaves the session up"


async def test_connector_accepts_its_declared_target(harness: Harness) -> None:
    service = await harness.service(echo_handler)
    gateway = await harness.gateway()
    remote = parse_remote(f"R:127.0.0.1:{free_port()}:127.0.0.1:{service}")
    await harness.connect(gateway, [remote])
    session = only_session(gateway)
    async with asyncio.timeout(STEP):
        chan, collector = await open_chisel_channel(
            session.conn, remote.target().encode(), ChannelSink
        )
        assert isinstance(collector, ChannelSink)
        chan.write(b"ping through a hand-made channel")
        chan.write_eof()
        await collector.done
        chan.close()
    assert bytes(collector.data) == b"ping through a hand-made channel"


# -- 10. what a session's end releases --------------------------------------------------


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


async def test_reverse_port_released_when_connector_stops(harness: Harness) -> None:
    service = await harness.service(echo_handler)
    gateway = await harness.gateway()
    port = free_port()
    remote = f"R:127.0.0.1:{port}:127.0.0.1:{service}"
    first = await harness.connect(gateway, [remote])
    assert await round_trip(port, b"one") == b"one"
    assert not can_listen(port), "the session's listener holds the port"
    await first.stop()
    await wait_until(lambda: not gateway.sessions, timeout=2.0)
    await wait_until(lambda: can_listen(port), timeout=2.0)
    # and the next session of the same connector config gets it again
    await harness.connect(gateway, [remote])
    assert await round_trip(port, b"two") == b"two"


async def test_reverse_port_released_when_gateway_drops_session(harness: Harness) -> None:
    service = await harness.service(echo_handler)
    gateway = await harness.gateway()
    port = free_port()
    running = await harness.connect(
        gateway, [f"R:127.0.0.1:{port}:127.0.0.1:{service}"], max_retry_count=0
    )
    only_session(gateway).close()
    await wait_until(lambda: can_listen(port), timeout=2.0)
    async with asyncio.timeout(STEP):
        await wait_until(running.task.done)
    assert not running.connector.connected.is_set()


async def test_session_end_closes_its_live_connections(harness: Harness) -> None:
    service = await harness.service(echo_handler)
    gateway = await harness.gateway()
    port = free_port()
    running = await harness.connect(
        gateway, [f"R:127.0.0.1:{port}:127.0.0.1:{service}"], drain_timeout=0.2
    )
    async with asyncio.timeout(STEP):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"still here?")
        assert await reader.readexactly(11) == b"still here?"
        await running.stop()
        try:
            rest = await reader.read(-1)  # EOF (or a reset) once the session is gone
        except ConnectionError:
            rest = b""
        writer.close()
    assert rest == b""


async def test_connector_reconnects_after_the_session_drops(harness: Harness) -> None:
    service = await harness.service(echo_handler)
    gateway = await harness.gateway()
    port = free_port()
    running = await harness.connect(gateway, [f"R:127.0.0.1:{port}:127.0.0.1:{service}"])
    first = only_session(gateway)
    first.close()
    await wait_until(lambda: not running.connector.connected.is_set())
    await wait_until(running.connector.connected.is_set)
    assert only_session(gateway) is not first
    assert running.stats.reconnects >= 1
    assert await round_trip(port, b"again") == b"again"
