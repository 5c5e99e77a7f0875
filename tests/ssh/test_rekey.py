"""Key re-exchange in the middle of bulk transfers, on the fast send/receive paths.

Both fast ciphers: AES-GCM (its nonce counts itself across the epoch) and
ChaCha20-Poly1305 (its nonce is the sequence number, carried over rekeys).

The fast path seals and opens packets itself once keys are in place, so a rekey
(new keys, sequence numbers carried on, data deferred while it runs) is where it
could go wrong.  REKEY_BYTES is lowered so that a 16 MiB transfer rekeys dozens of
times in both directions.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.ciphers import FAST_CIPHERS, cipher_id, count_key_epochs
from tests.support.harness import MODES, Harness, Tunnel
from tests.support.streams import Blob, bulk_exchange, digest_service

SIZE = 16 * 1024 * 1024


@pytest.fixture(params=sorted(FAST_CIPHERS), ids=cipher_id)
def key_epochs(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    return count_key_epochs(monkeypatch, request.param)


@pytest.mark.parametrize("reverse", MODES)
async def test_transfer_survives_many_rekeys(
    harness: Harness, key_epochs: list[int], reverse: bool
) -> None:
    blobs = (Blob(11, SIZE), Blob(12, SIZE))
    service = await harness.service(digest_service(blobs[1].data))
    tunnel = await Tunnel(harness, service, reverse=reverse).start()
    keys_after_connect = len(key_epochs)
    async with asyncio.timeout(60):
        await bulk_exchange(tunnel.port, blobs)
    # 2 x 16 MiB each way with a 512 KiB limit: every side rekeys many times
    assert len(key_epochs) - keys_after_connect >= 4 * 16
