"""Channel lifecycle on the fast path (cc.ssh.lifecycle) and small-write batching (cc.ssh.coalesce).

A channel from the gateway to a connector's reverse target, as in test_channel_end:
``start_chisel_channel`` opens it with a callback, the connector's fast path takes
the CHANNEL_OPEN, and refusals carry the codes and reasons a Go peer expects.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cc.ssh import (
    OPEN_ADMINISTRATIVELY_PROHIBITED,
    OPEN_CONNECT_FAILED,
    ChannelOpenError,
    start_chisel_channel,
)
from tests.ssh.test_channel_end import Recorder
from tests.support.harness import STEP, Harness
from tests.support.net import free_port

__all__: list[str] = []


async def _gateway_conn(harness: Harness, target: str) -> Any:
    """The gateway's SSH connection to a connector that declares ``target``."""
    gateway = await harness.gateway()
    await harness.connect(gateway, [f"R:127.0.0.1:{free_port()}:{target}"])
    (session,) = gateway.sessions
    return session.conn


async def _start(conn: Any, target: str, session: Any) -> tuple[Any, Exception | None]:
    """Open a channel with ``start_chisel_channel``; (channel, what ``done`` was told)."""
    outcome: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
    chan = start_chisel_channel(conn, target.encode(), session, outcome.set_result)
    async with asyncio.timeout(STEP):
        return chan, await outcome


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()


async def test_an_opened_channel_is_started_before_done_and_carries_data(
    harness: Harness,
) -> None:
    target = f"127.0.0.1:{await harness.service(_echo)}"
    conn = await _gateway_conn(harness, target)
    recorder = Recorder()
    chan, error = await _start(conn, target, recorder)
    assert error is None
    assert chan.get_write_buffer_size() == 0 and not chan.is_closing()
    chan.write(b"ping")
    chan.write_eof()
    async with asyncio.timeout(STEP):
        await recorder.lost
    assert (recorder.received, recorder.events) == (4, ["eof", "lost"])


async def test_refusals_carry_the_codes_and_reasons_go_expects(harness: Harness) -> None:
    """Not declared: administratively prohibited; declared but nothing listens: connect failed
    with the dial's reason.  Both through the connector's fast CHANNEL_OPEN path."""
    closed_port = free_port()
    declared = f"127.0.0.1:{closed_port}"
    conn = await _gateway_conn(harness, declared)

    _, denied = await _start(conn, "127.0.0.1:1", Recorder())
    assert isinstance(denied, ChannelOpenError)
    assert (denied.code, denied.reason) == (
        OPEN_ADMINISTRATIVELY_PROHIBITED,
        "Denied outbound connection",
    )

    _, failed = await _start(conn, declared, Recorder())
    assert isinstance(failed, ChannelOpenError)
    assert failed.code == OPEN_CONNECT_FAILED
    assert failed.reason  # the dial's error text (its wording depends on the event loop)
    assert conn._channels == {}  # both refused channels are gone


async def test_eof_then_close_with_nothing_buffered_reach_the_service_in_order(
    harness: Harness,
) -> None:
    """write, write_eof, close at once (the quick EOF and CLOSE): the service reads the data
    and then a clean EOF, never a reset."""
    outcome: asyncio.Future[tuple[str, bytes]] = asyncio.get_running_loop().create_future()

    async def reader_to_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        try:
            while chunk := await reader.read(1 << 16):
                data += chunk
        except ConnectionResetError:
            outcome.set_result(("reset", data))
            return
        outcome.set_result(("eof", data))

    target = f"127.0.0.1:{await harness.service(reader_to_eof)}"
    conn = await _gateway_conn(harness, target)
    chan, error = await _start(conn, target, Recorder())
    assert error is None
    chan.write(b"last words")
    chan.write_eof()
    chan.close()
    async with asyncio.timeout(STEP):
        assert await outcome == ("eof", b"last words")


async def test_small_packets_of_one_loop_pass_leave_in_one_write_in_order(
    harness: Harness,
) -> None:
    """50 small writes in one pass: one transport write carries them all (a counter wraps the
    real transport's ``write``), and the echo returns every byte in order."""
    target = f"127.0.0.1:{await harness.service(_echo)}"
    conn = await _gateway_conn(harness, target)
    received = bytearray()
    all_back = asyncio.get_running_loop().create_future()
    chunks = [b"%03d," % i for i in range(50)]
    expected = b"".join(chunks)

    class Collector(Recorder):
        def data_received(self, data: bytes, datatype: object = None) -> None:
            received.extend(data)
            if len(received) >= len(expected) and not all_back.done():
                all_back.set_result(None)

    chan, error = await _start(conn, target, Collector())
    assert error is None
    await asyncio.sleep(0.1)  # nothing else in flight on this connection

    transport = conn._transport
    real_write = transport.write
    writes: list[int] = []

    def counting_write(data: bytes) -> None:
        writes.append(len(data))
        real_write(data)

    transport.write = counting_write
    try:
        for chunk in chunks:
            chan.write(chunk)
        assert writes == []  # all wait for the end of this loop pass
        async with asyncio.timeout(STEP):
            await all_back
    finally:
        del transport.write
    assert bytes(received) == expected
    assert len(writes) == 1


async def test_a_large_packet_goes_at_once_after_what_waits(harness: Harness) -> None:
    """A packet over the batching size is written at once, behind the small ones waiting:
    the order on the wire (and so the sequence numbers) is kept."""
    target = f"127.0.0.1:{await harness.service(_echo)}"
    conn = await _gateway_conn(harness, target)
    received = bytearray()
    big = bytes(range(256)) * 128  # 32 KiB: one packet, above the batching size
    expected = b"small" + big
    all_back = asyncio.get_running_loop().create_future()

    class Collector(Recorder):
        def data_received(self, data: bytes, datatype: object = None) -> None:
            received.extend(data)
            if len(received) >= len(expected) and not all_back.done():
                all_back.set_result(None)

    chan, error = await _start(conn, target, Collector())
    assert error is None
    await asyncio.sleep(0.1)
    transport = conn._transport
    real_write = transport.write
    writes: list[int] = []

    def counting_write(data: bytes) -> None:
        writes.append(len(data))
        real_write(data)

    transport.write = counting_write
    try:
        chan.write(b"small")
        chan.write(big)
        assert len(writes) >= 1  # the big one (and the small one before it) went at once
        async with asyncio.timeout(STEP):
            await all_back
    finally:
        del transport.write
    assert bytes(received) == expected


async def test_bulk_data_sealed_after_waiting_small_packets_goes_behind_them(
    harness: Harness,
) -> None:
    """The bulk path (``cc_send_data``, written with ``writelines``) first sends the small
    packets waiting for the end of the pass: sealed earlier, they carry the lower sequence
    numbers, so the peer would otherwise fail their MAC and drop the session."""
    target = f"127.0.0.1:{await harness.service(_echo)}"
    conn = await _gateway_conn(harness, target)
    big = bytes(range(256)) * 128  # 32 KiB: what one socket read hands the bulk path
    loop = asyncio.get_running_loop()
    channels = []
    for expected in (b"small", big):
        received = bytearray()
        back: asyncio.Future[bytes] = loop.create_future()

        class Collector(Recorder):
            def data_received(
                self,
                data: bytes,
                datatype: object = None,
                received: bytearray = received,
                back: asyncio.Future[bytes] = back,
                expected: bytes = expected,
            ) -> None:
                received.extend(data)
                if len(received) >= len(expected) and not back.done():
                    back.set_result(bytes(received))

        chan, error = await _start(conn, target, Collector())
        assert error is None
        channels.append((chan, back, expected))
    await asyncio.sleep(0.1)
    (small_chan, small_back, _), (big_chan, big_back, _) = channels
    small_chan.write(b"small")  # waits for the end of this pass
    assert conn._cc_batch is not None
    taken = conn.cc_send_data(big_chan, memoryview(big))
    assert taken == len(big)  # the bulk path sealed it, in this same pass
    async with asyncio.timeout(STEP):
        assert await small_back == b"small"
        assert await big_back == big
    assert not conn.is_closed()
