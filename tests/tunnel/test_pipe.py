"""Data through the tunnel, ours to ours: bulk, many connections, half-close, stats.

Each test starts an in-process gateway and connector (see ``tests.support.harness``) and
a local TCP service, then talks to the service through the tunnel, reverse (the
gateway listens, the connector dials) and forward (the connector listens, the
gateway dials).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import struct

import pytest

from tests.support.harness import MODES, STEP, Harness, Tunnel, wait_until
from tests.support.streams import (
    DIGEST,
    Blob,
    answer_after_eof,
    bulk_exchange,
    digest_service,
    echo_handler,
    round_trip,
    send_all,
)

__all__: list[str] = []

BULK = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def bulk() -> tuple[Blob, Blob]:
    """(what the client sends, what the service sends): 64 MiB each."""
    return Blob(1, BULK), Blob(2, BULK)


# -- 1. bulk --------------------------------------------------------------------


@pytest.mark.parametrize("reverse", MODES)
async def test_bulk_64mib_each_way_one_connection(
    harness: Harness, bulk: tuple[Blob, Blob], reverse: bool
) -> None:
    """64 MiB each way at once through one tunnelled connection, checked by sha256.

    The service answers its digest only after our EOF, so the answer also proves
    that our half-close did not close the other direction.
    """
    service = await harness.service(digest_service(bulk[1].data))
    tunnel = await Tunnel(harness, service, reverse=reverse).start()
    async with asyncio.timeout(60):
        await bulk_exchange(tunnel.port, bulk)
    # the bytes really went through the tunnel, once
    stats = tunnel.connector_stats()
    assert stats.total == 1
    sent_by_client, sent_by_service = BULK, BULK + DIGEST
    if reverse:
        assert (stats.bytes_in, stats.bytes_out) == (sent_by_client, sent_by_service)
    else:
        assert (stats.bytes_out, stats.bytes_in) == (sent_by_client, sent_by_service)


# -- 2. many connections ----------------------------------------------------------


async def test_200_concurrent_connections_reverse(harness: Harness) -> None:
    """200 connections at once through one session, each echoing its own 64 KiB."""
    service = await harness.service(echo_handler)
    tunnel = await Tunnel(harness, service, reverse=True).start()
    rng = random.Random(3)
    payloads = [i.to_bytes(4, "big") + rng.randbytes(64 * 1024 - 4) for i in range(200)]
    async with asyncio.timeout(30):
        answers = await asyncio.gather(
            *(round_trip(tunnel.port, p, timeout=None) for p in payloads)
        )
    bad = [i for i, (p, a) in enumerate(zip(payloads, answers, strict=True)) if p != a]
    assert not bad, f"{len(bad)} connections got a wrong echo, e.g. #{bad[0]}"
    stats = tunnel.connector_stats()
    assert (stats.total, stats.failed) == (200, 0)
    assert stats.bytes_in == stats.bytes_out == 200 * 64 * 1024
    await wait_until(lambda: stats.open == 0 and tunnel.gateway_stats().open == 0)


@pytest.mark.parametrize("reverse", MODES)
async def test_slow_reader_stalls_the_sender(harness: Harness, reverse: bool) -> None:
    """A service that does not read pushes back to the client through the SSH window.

    Without end-to-end flow control the tunnel would buffer whatever the client
    sends; with it the client stalls after what the kernel's socket buffers and one
    channel window hold.  Once the service reads, every byte arrives.
    """
    release = asyncio.Event()
    received = hashlib.sha256()

    async def sleepy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        while chunk := await reader.read(1 << 20):
            received.update(chunk)
        writer.write(b"done")

    service = await harness.service(sleepy)
    tunnel = await Tunnel(harness, service, reverse=reverse).start()
    limit = 96 << 20
    data = random.Random(6).randbytes(1 << 20)
    sent = hashlib.sha256()
    size = 0
    reader, writer = await asyncio.open_connection("127.0.0.1", tunnel.port)
    try:
        while size < limit:
            writer.write(data)
            sent.update(data)
            size += len(data)
            try:
                async with asyncio.timeout(0.5):
                    await writer.drain()
            except TimeoutError:
                break  # stalled: the tunnel pushes back
        assert size < 64 << 20, f"the tunnel took {size >> 20} MiB from a stuck connection"
        release.set()
        async with asyncio.timeout(STEP):
            await writer.drain()
            writer.write_eof()
            assert await reader.read() == b"done"
    finally:
        writer.close()
    assert received.digest() == sent.digest()


# -- 3. half-close ------------------------------------------------------------------


@pytest.mark.parametrize("reverse", MODES)
async def test_half_close_client_eof_then_answer(harness: Harness, reverse: bool) -> None:
    """Our EOF reaches the service while its answer still comes back (chisel closes both)."""
    service = await harness.service(answer_after_eof)
    tunnel = await Tunnel(harness, service, reverse=reverse).start()
    request = random.Random(4).randbytes(300_000)
    async with asyncio.timeout(STEP):
        reader, writer = await asyncio.open_connection("127.0.0.1", tunnel.port)
        try:
            await send_all(writer, request, eof=True)
            answer = await reader.read(-1)  # the answer, then EOF from the service's close
        finally:
            writer.close()
    assert answer == b"%d %s" % (len(request), hashlib.sha256(request).hexdigest().encode())


@pytest.mark.parametrize("reverse", MODES)
async def test_half_close_service_eof_first(harness: Harness, reverse: bool) -> None:
    """The service ends its side first; our data still flows to it afterwards."""
    heard: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def greet_then_listen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello, I am done talking")
        writer.write_eof()
        heard.set_result(await reader.read(-1))

    service = await harness.service(greet_then_listen)
    tunnel = await Tunnel(harness, service, reverse=reverse).start()
    request = random.Random(5).randbytes(200_000)
    async with asyncio.timeout(STEP):
        reader, writer = await asyncio.open_connection("127.0.0.1", tunnel.port)
        try:
            assert await reader.read(-1) == b"hello, I am done talking"  # ends with EOF
            await send_all(writer, request, eof=True)
            assert await heard == request
            assert await reader.read() == b""
        finally:
            writer.close()


@pytest.mark.parametrize("reset", [pytest.param(True, id="rst"), pytest.param(False, id="fin")])
@pytest.mark.parametrize("reverse", MODES)
async def test_client_gone_before_channel_opens_leaks_nothing(
    harness: Harness, reverse: bool, reset: bool
) -> None:
    """Connect and hang up at once: the far side's connection must be closed too.

    uvloop reports the reset while reading is still paused for the channel being
    opened; the channel that opens afterwards used to stay open for ever, holding the
    service connection.
    """
    accepted, finished = 0, 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted, finished
        accepted += 1
        try:
            await reader.read(-1)
        finally:
            finished += 1

    service = await harness.service(count)
    tunnel = await Tunnel(harness, service, reverse=reverse).start()
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", tunnel.port)) as sock:
            if reset:  # close() sends RST instead of FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await wait_until(lambda: accepted == 5 and finished == 5)
    await wait_until(
        lambda: tunnel.connector_stats().open == 0 and tunnel.gateway_stats().open == 0
    )
    assert tunnel.connector_stats().total == tunnel.gateway_stats().total == 5


# -- 11. stats ------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", MODES)
async def test_stats_count_bytes_and_connections(harness: Harness, reverse: bool) -> None:
    """Both ends count each connection and the bytes in each direction exactly."""

    async def reply_50k(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)
        writer.write(bytes(50_000))
        await writer.drain()

    service = await harness.service(reply_50k)
    tunnel = await Tunnel(harness, service, reverse=reverse).start()
    for _ in range(2):
        async with asyncio.timeout(STEP):
            reader, writer = await asyncio.open_connection("127.0.0.1", tunnel.port)
            await send_all(writer, bytes(100_000), eof=True)
            assert len(await reader.read(-1)) == 50_000
            writer.close()
    conn, gw = tunnel.connector_stats(), tunnel.gateway_stats()
    await wait_until(lambda: conn.open == 0 and gw.open == 0)
    # bytes_out: read from the local socket into the tunnel; bytes_in: the other way
    upstream, downstream = 2 * 100_000, 2 * 50_000  # client->service, service->client
    client_side, service_side = (gw, conn) if reverse else (conn, gw)
    assert (client_side.total, client_side.failed) == (2, 0)
    assert (service_side.total, service_side.failed) == (2, 0)
    assert (client_side.bytes_out, client_side.bytes_in) == (upstream, downstream)
    assert (service_side.bytes_in, service_side.bytes_out) == (upstream, downstream)


async def test_stats_count_failed_dial(harness: Harness) -> None:
    """A reverse connection whose target refuses is counted as failed and reset."""
    # A bound socket that never listens refuses connections; an unbound "free" port
    # could let the kernel connect the dial to itself (TCP self-connect).
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        tunnel = await Tunnel(harness, refusing.getsockname()[1], reverse=True).start()
        async with asyncio.timeout(STEP):
            reader, writer = await asyncio.open_connection("127.0.0.1", tunnel.port)
            with pytest.raises(ConnectionResetError):
                await reader.read()
            writer.close()
        stats = tunnel.connector_stats()
        await wait_until(lambda: stats.failed == 1 and stats.open == 0)
    assert stats.total == 1
    assert (stats.bytes_in, stats.bytes_out) == (0, 0)
