"""The bulk data path (cc.ssh.bulk): sealed from and opened in the shared receive buffer.

Reads land in one buffer per thread, channel data is sealed straight from it and the
packets of each WebSocket payload piece are opened where they lie, so what a read
cuts (an SSH packet, a WebSocket header) is the case to get right.  With a receive
buffer of an odd few KiB every packet straddles reads and many frame headers do too;
a rekey every 512 KiB changes keys in between.  Every byte must still arrive, in
order, both ways, on both event loops and both fast ciphers.
"""

from __future__ import annotations

import asyncio

import pytest

from cc.ssh import bulk, fast_path_counts
from cc.transport import rxbuf
from tests.support.ciphers import FAST_CIPHERS, cipher_id, count_key_epochs
from tests.support.harness import MODES, Harness, Tunnel
from tests.support.streams import Blob, bulk_exchange, digest_service

__all__: list[str] = []

SIZE = 3 * 1024 * 1024
#: Not a divisor of anything on the wire: packets and frame headers fall across reads.
ODD_READ = 4093


@pytest.mark.parametrize("cipher", sorted(FAST_CIPHERS), ids=cipher_id)
@pytest.mark.parametrize("reverse", MODES)
async def test_reads_cut_anywhere_keep_the_stream(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, cipher: str, reverse: bool
) -> None:
    epochs = count_key_epochs(monkeypatch, cipher)
    monkeypatch.setattr(rxbuf._local, "view", memoryview(bytearray(ODD_READ)), raising=False)
    blobs = (Blob(21, SIZE), Blob(22, SIZE))
    service = await harness.service(digest_service(blobs[1].data))
    tunnel = await Tunnel(harness, service, reverse=reverse).start()
    before, sealed_before, keys_before = fast_path_counts(), bulk.sealed_count(), len(epochs)
    async with asyncio.timeout(60):
        await bulk_exchange(tunnel.port, blobs)
    # the bulk path sealed most reads (not those during a key exchange), packets were
    # opened, and keys changed meanwhile
    assert bulk.sealed_count() - sealed_before >= SIZE // ODD_READ
    assert fast_path_counts().opened - before.opened >= 2 * SIZE // ODD_READ
    assert len(epochs) - keys_before >= 4


@pytest.mark.parametrize("reverse", MODES)
async def test_whole_reads_take_the_bulk_path(harness: Harness, reverse: bool) -> None:
    """With the normal buffer too: the sockets' data goes out through ``cc_send_data``."""
    blobs = (Blob(23, SIZE), Blob(24, SIZE))
    service = await harness.service(digest_service(blobs[1].data))
    tunnel = await Tunnel(harness, service, reverse=reverse).start()
    sealed_before = bulk.sealed_count()
    async with asyncio.timeout(60):
        await bulk_exchange(tunnel.port, blobs)
    # 2 x 3 MiB in packets of at most 256 KiB, nearly all sealed from the buffer
    assert bulk.sealed_count() - sealed_before >= 2 * SIZE // (256 * 1024)
