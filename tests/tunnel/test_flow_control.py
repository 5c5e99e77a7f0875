"""Back-pressure from the session's socket to every tunnelled connection.

asyncssh ignores its transport's pause_writing, so each channel could queue a
whole window (4 MiB between our peers) in the one shared WebSocket buffer.  Here
the connector stops reading its WebSocket (a slow or stalled network), 32 clients
keep sending into the gateway, and the gateway must hold back: its socket buffer
stays near the high-water mark and the clients are slowed down through TCP.  Once
the connector reads again, every byte arrives, in order.

Two leaks this closes: channels flushing whole windows into a paused socket
buffer, and a pipe that resumed reading its client right after the first bytes
(sent before the channel opened) had filled the channel: asyncssh reports a pause
only once, so the gateway then read the client into memory as fast as it sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from cc.gateway.gateway import Gateway
from cc.ssh.flow import TransportFlowMixin
from cc.transport.websocket import WRITE_HIGH_WATER
from tests.support.ciphers import count_key_epochs
from tests.support.harness import STEP, Harness, wait_until
from tests.support.net import free_port

__all__: list[str] = []

STREAMS = 32
PER_STREAM = 8 * 1024 * 1024  # two whole 4 MiB windows each: 256 MiB if nothing held back


async def digest_sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    digest = hashlib.sha256()
    while chunk := await reader.read(1 << 18):
        digest.update(chunk)
    writer.write(digest.hexdigest().encode())
    await writer.drain()


async def upload(port: int, data: bytes, go: asyncio.Event | None = None) -> str:
    """Send ``data`` and return the service's digest; hold after the first chunk until ``go``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for offset in range(0, len(data), 1 << 18):
        writer.write(data[offset : offset + (1 << 18)])
        await writer.drain()
        if go is not None:
            await go.wait()
    writer.write_eof()
    answer = await reader.read()
    writer.close()
    return answer.decode()


def held_by_gateway(gateway: Gateway) -> int:
    """Bytes the gateway's session holds: its WebSocket buffer plus channel buffers."""
    session = next(iter(gateway.sessions))
    conn = session.conn
    channels = sum(chan._send_buf_len for chan in conn._channels.values())
    return int(conn._transport.get_write_buffer_size()) + channels


async def test_a_stalled_session_holds_back_its_channels(harness: Harness) -> None:
    gateway = await harness.gateway()
    service = await harness.service(digest_sink)
    port = free_port()
    running = await harness.connect(gateway, [f"R:127.0.0.1:{port}:127.0.0.1:{service}"])
    payload = os.urandom(PER_STREAM)
    expected = hashlib.sha256(payload).hexdigest()

    # Each client sends its first chunk at once (before its channel is open), then
    # waits: every stream must still be running when the connector stalls (unheld,
    # the first streams can finish before the last channel opens).
    go = asyncio.Event()
    uploads = [asyncio.ensure_future(upload(port, payload, go)) for _ in range(STREAMS)]
    conn = next(iter(gateway.sessions)).conn
    await wait_until(
        lambda: (
            len(conn._channels) == STREAMS
            and all(c._send_state == "open" for c in conn._channels.values())
        )
    )
    running.connector.conn._transport.pause_reading()
    go.set()
    peak = 0
    for _ in range(20):  # 2 s of the clients pushing against the stalled session
        await asyncio.sleep(0.1)
        peak = max(peak, held_by_gateway(gateway))
    # One high-water mark of socket buffer plus a little per channel, not 32 windows:
    # what the clients keep sending stays in their sockets (TCP back-pressure).
    assert peak < WRITE_HIGH_WATER + STREAMS * 512 * 1024, peak

    running.connector.conn._transport.resume_reading()
    async with asyncio.timeout(6 * STEP):
        answers = await asyncio.gather(*uploads)
    assert answers == [expected] * STREAMS
    await wait_until(lambda: held_by_gateway(gateway) == 0)


async def test_channels_hold_back_during_key_exchange(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncssh defers every packet while keys change; channels must not fill that list.

    Rekeying every 512 KiB under 8 busy uploads: what is deferred per key exchange
    stays small, not whole windows of data.
    """
    count_key_epochs(monkeypatch, "aes128-gcm@openssh.com")
    deferred_peaks: list[int] = []
    original = TransportFlowMixin._send_deferred_packets

    def measuring(self: object) -> None:
        pending = self._deferred_packets  # type: ignore[attr-defined]
        deferred_peaks.append(sum(len(arg) for _, args in pending for arg in args))
        original(self)  # type: ignore[arg-type]

    monkeypatch.setattr(TransportFlowMixin, "_send_deferred_packets", measuring)
    gateway = await harness.gateway()
    service = await harness.service(digest_sink)
    port = free_port()
    await harness.connect(gateway, [f"R:127.0.0.1:{port}:127.0.0.1:{service}"])
    payload = os.urandom(PER_STREAM)
    async with asyncio.timeout(6 * STEP):
        answers = await asyncio.gather(*(upload(port, payload) for _ in range(8)))
    assert answers == [hashlib.sha256(payload).hexdigest()] * 8
    assert len(deferred_peaks) > 20, "the transfer must rekey many times"
    # at most the flush that started the key exchange (one channel's buffer), not
    # every channel's window (~30 MB here without the hold)
    assert max(deferred_peaks) < 1024 * 1024, max(deferred_peaks)
