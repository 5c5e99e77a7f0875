"""The fast send and receive paths really run during a bulk transfer.

Both paths fall back to asyncssh's own code silently (a cipher they do not know, a
state they do not accept), so a change elsewhere could switch them off with every
transfer test still green.  ``cc.ssh.fast_path_counts()`` counts the packets they
seal and open; a few MiB through a tunnel must go through them, in whole packets of
at most the channel's packet size: ours to ours (both ends in this process, 256 KiB
packets) and ours to the real chisel (our connector in this process, 32 KiB packets).
Marked ``e2e`` so the run with ``CC_NO_EXTENSIONS=1`` holds the pure twin to it too.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cc import fastpath
from cc.connector.connector import Connector, ConnectorConfig
from cc.protocol import keys
from cc.protocol.remote import parse_remote
from cc.ssh import (
    CHANNEL_MAX_PACKET,
    LARGE_CHANNEL_MAX_PACKET,
    FastPathCounts,
    ciphers,
    connection,
    fast_path_counts,
)
from tests.support import net as peers
from tests.support.chisel import SEED_FINGERPRINT, chisel_binary, sha256_roundtrip
from tests.support.ciphers import FAST_CIPHERS, cipher_id
from tests.support.harness import STEP, Harness
from tests.support.net import free_port
from tests.support.processes import Processes

__all__: list[str] = []

pytestmark = pytest.mark.e2e

PAYLOAD = os.urandom(4 * 1024 * 1024)
TWIN_MODULE = {"cython": "cc._fastpath", "python": "cc._fastpath_py"}


def _delta(before: FastPathCounts) -> FastPathCounts:
    after = fast_path_counts()
    return FastPathCounts(after.sealed - before.sealed, after.opened - before.opened)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(1 << 16):
        writer.write(chunk)
        await writer.drain()
    writer.write_eof()


async def _round_trip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    _, answer = await asyncio.gather(send(), reader.read(-1))
    writer.close()
    return answer


def test_counts_are_a_named_pair_of_ints() -> None:
    counts = fast_path_counts()
    assert isinstance(counts.sealed, int) and isinstance(counts.opened, int)
    assert counts.sealed >= 0 and counts.opened >= 0


@pytest.mark.parametrize("cipher", sorted(FAST_CIPHERS), ids=cipher_id)
async def test_ours_to_ours_bulk_transfer_runs_the_fast_paths(
    monkeypatch: pytest.MonkeyPatch, cipher: str
) -> None:
    monkeypatch.setattr(connection, "ENCRYPTION_ALGS", (cipher,))
    harness = Harness(keys.private_key_pem_for_asyncssh(keys.generate_private_key()))
    try:
        service = await harness.service(_echo)
        gateway = await harness.gateway()
        port = free_port()
        await harness.connect(gateway, [f"R:127.0.0.1:{port}:127.0.0.1:{service}"])
        # The packet cipher in use comes from the twin cc.fastpath selected (the
        # CC_NO_EXTENSIONS=1 run of the e2e tests checks the pure one here).
        for session in gateway.sessions:
            enc = session.conn._send_encryption
            context = enc.cipher if isinstance(enc, ciphers.FastGCMEncryption) else enc.fast
            assert type(context).__module__ == TWIN_MODULE[fastpath.IMPLEMENTATION]
        before = fast_path_counts()
        async with asyncio.timeout(6 * STEP):
            answer = await _round_trip(port, PAYLOAD)
        counts = _delta(before)
    finally:
        await harness.aclose()
    assert hashlib.sha256(answer).digest() == hashlib.sha256(PAYLOAD).digest()
    # Each way one end seals and the other opens at least this many data packets.
    least = 2 * len(PAYLOAD) // LARGE_CHANNEL_MAX_PACKET
    assert counts.sealed >= least, counts
    assert counts.opened >= least, counts


@pytest.mark.interop
@pytest.mark.parametrize("cipher", sorted(FAST_CIPHERS), ids=cipher_id)
async def test_ours_to_chisel_bulk_transfer_runs_the_fast_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cipher: str
) -> None:
    chisel = chisel_binary()  # skips, naming CHISEL_BIN, when it is not set
    monkeypatch.setattr(connection, "ENCRYPTION_ALGS", (cipher,))
    procs = Processes(tmp_path)
    try:
        with peers.tcp_echo_server() as echo:
            _, url = procs.chisel_server(chisel, "--reverse", "--key", "someseed")
            port = peers.free_port()
            remote = parse_remote(f"R:127.0.0.1:{port}:127.0.0.1:{echo.port}")
            connector = Connector(
                ConnectorConfig(
                    server=urlsplit(url),
                    remotes=[remote],
                    fingerprint=SEED_FINGERPRINT,
                    max_retry_count=0,
                )
            )
            running = asyncio.ensure_future(connector.run())
            try:
                async with asyncio.timeout(15):
                    await connector.connected.wait()
                before = fast_path_counts()
                await asyncio.to_thread(sha256_roundtrip, port, PAYLOAD)
                counts = _delta(before)
            finally:
                connector.stop()
                await asyncio.wait_for(asyncio.gather(running, return_exceptions=True), 20)
    finally:
        procs.stop_all()
    # Only our connector counts here: it seals what goes up and opens what comes back.
    least = len(PAYLOAD) // CHANNEL_MAX_PACKET
    assert counts.sealed >= least, counts
    assert counts.opened >= least, counts
