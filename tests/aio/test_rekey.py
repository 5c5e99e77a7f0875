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

from cc import _asyncssh_compat
from tests.aio.harness import Harness
from tests.aio.test_tunnel import Blob, Tunnel, bulk_exchange, digest_service

SIZE = 16 * 1024 * 1024


FAST_CIPHERS = {
    "aes128-gcm@openssh.com": _asyncssh_compat._FastGCMEncryption,
    "chacha20-poly1305@openssh.com": _asyncssh_compat._FastChachaEncryption,
}


@pytest.fixture(params=sorted(FAST_CIPHERS), ids=lambda name: name.split("-")[0])
def key_epochs(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Only one cipher on offer, a lower rekey limit; the list grows by one per key in use."""
    cipher = request.param
    monkeypatch.setattr(_asyncssh_compat, "ENCRYPTION_ALGS", (cipher,))
    monkeypatch.setattr(_asyncssh_compat, "REKEY_BYTES", 512 * 1024)
    encryption = FAST_CIPHERS[cipher]
    made: list[int] = []
    original = encryption.new.__func__  # type: ignore[attr-defined]

    def counting_new(cls: type, *args: object, **kwargs: object) -> object:
        made.append(1)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(encryption, "new", classmethod(counting_new))
    return made


@pytest.mark.parametrize("reverse", [True, False], ids=["reverse", "forward"])
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
