"""The app port against idle and slow clients: head deadline, caps per address and in total.

The app port is public and its sockets are the gateway's descriptors.  A client
that starts a head and never ends it gets 408 at the deadline; one that connects
and says nothing is closed; per address the newcomer past the cap is refused;
in total the oldest connection still waiting for a request head is closed for the
newcomer, and one whose request is being relayed never is.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.apigw import ApiGateway, Backend, Client, targets_yaml
from tests.support.net import LOOPBACK

__all__: list[str] = []

REQUEST = b"GET /x HTTP/1.1\r\nHost: api.test\r\n\r\n"


async def _served(api: ApiGateway, backend: Backend, **options: float) -> None:
    """The app port with ``options`` (AppConfig fields) and a connector serving ``backend``."""
    await api.start(targets_yaml(backend.port), app_options=options)
    await api.connect([f"127.0.0.1:{backend.port}"])


async def _open(
    port: int, source: str = LOOPBACK
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(LOOPBACK, port, local_addr=(source, 0))


async def _ended(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything the gateway sends until it closes (a reset counts as closed)."""
    try:
        async with asyncio.timeout(timeout):
            return await reader.read()
    except ConnectionResetError:
        return b"<reset>"


async def _status_line(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(5):
        return (await reader.readuntil(b"\r\n")).split(b" ")[1]


async def _status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Send a GET; the status of the answer (its first line only is read)."""
    writer.write(REQUEST)
    return await _status_line(reader)


async def test_a_head_begun_and_not_finished_gets_408(api: ApiGateway, backend: Backend) -> None:
    await _served(api, backend, head_timeout=0.5)
    reader, writer = await _open(api.port)
    started = time.monotonic()
    writer.write(b"GET /x HTTP/1.1\r\nHost: api")
    # a byte now and then does not move the deadline (it runs from the first byte)
    for _ in range(3):
        await asyncio.sleep(0.1)
        writer.write(b".")
    answer = await _ended(reader)
    took = time.monotonic() - started
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"request head not complete in time" in answer
    assert 0.4 < took < 3.0, took
    assert not backend.requests


async def test_a_connection_that_never_speaks_is_closed(api: ApiGateway, backend: Backend) -> None:
    await api.start(targets_yaml(backend.port), app_options={"head_timeout": 0.5})
    reader, writer = await _open(api.port)
    started = time.monotonic()
    answer = await _ended(reader)
    writer.close()
    assert answer == b""  # closed without a word: nothing was asked
    assert 0.4 < time.monotonic() - started < 3.0


async def test_between_requests_the_idle_timeout_applies(api: ApiGateway, backend: Backend) -> None:
    """The head deadline is for heads: a kept-alive client may think longer."""
    await _served(api, backend, head_timeout=0.3, idle_timeout=5.0)
    async with Client(api.port) as client:
        assert (await client.request("GET", "/one")).status == 200
        await asyncio.sleep(0.8)
        assert (await client.request("GET", "/two")).status == 200


async def test_past_the_per_address_cap_the_newcomer_is_refused(
    api: ApiGateway, backend: Backend
) -> None:
    await _served(api, backend, max_clients_per_source=3, max_clients=0)
    held = [await _open(api.port, "127.0.0.2") for _ in range(3)]
    refused_reader, refused_writer = await _open(api.port, "127.0.0.2")
    assert await _ended(refused_reader) in (b"", b"<reset>")
    refused_writer.close()
    # the three it holds still work, and another address is not affected
    for reader, writer in held:
        assert await _status(reader, writer) == b"200"
    other = await _open(api.port, "127.0.0.3")
    assert await _status(*other) == b"200"
    for _, writer in [*held, other]:
        writer.close()
    assert api.app is not None and api.app.refused == 1


async def test_when_full_the_oldest_waiting_connection_makes_room(
    api: ApiGateway, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    await _served(api, backend, max_clients=3, max_clients_per_source=0)
    idle = []
    for _ in range(3):
        idle.append(await _open(api.port))
        await asyncio.sleep(0.05)  # in this order: the first is the oldest
    newcomer = await _open(api.port)
    assert await _status(*newcomer) == b"200"
    assert await _ended(idle[0][0]) == b""  # the oldest idle one, closed cleanly
    for reader, writer in idle[1:]:
        assert await _status(reader, writer) == b"200"
    for _, writer in [*idle, newcomer]:
        writer.close()
    assert api.app is not None and api.app.evicted == 1
    assert "3 client connections: closed the oldest one waiting for a request" in caplog.text


async def test_a_connection_with_a_request_in_flight_is_never_closed_for_a_newcomer(
    api: ApiGateway, backend: Backend
) -> None:
    await _served(api, backend, max_clients=2, max_clients_per_source=0)
    busy = [await _open(api.port) for _ in range(2)]
    for _, writer in busy:
        writer.write(b"GET /sleep?s=1 HTTP/1.1\r\nHost: api.test\r\n\r\n")
    assert api.app is not None
    app = api.app
    deadline = time.monotonic() + 5
    while len(backend.requests) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    late_reader, late_writer = await _open(api.port)
    assert await _ended(late_reader) in (b"", b"<reset>")  # refused: every slot is busy
    late_writer.close()
    for reader, _ in busy:  # both slow answers arrive whole
        assert await _status_line(reader) == b"200"
    for _, writer in busy:
        writer.close()
    assert app.refused == 1 and app.evicted == 0


async def test_a_trusted_proxy_is_not_held_to_the_per_address_cap(
    api: ApiGateway, backend: Backend
) -> None:
    """A load balancer in front carries everyone's connections from one address."""
    await api.start(
        targets_yaml(backend.port),
        trusted="127.0.0.4",
        app_options={"max_clients_per_source": 2, "max_clients": 0},
    )
    await api.connect([f"127.0.0.1:{backend.port}"])
    balancer = [await _open(api.port, "127.0.0.4") for _ in range(4)]
    for reader, writer in balancer:
        assert await _status(reader, writer) == b"200"
    other = [await _open(api.port, "127.0.0.5") for _ in range(3)]
    assert await _ended(other[2][0]) in (b"", b"<reset>")  # the third from an untrusted one
    for _, writer in [*balancer, *other]:
        writer.close()
    assert api.app is not None and api.app.refused == 1
