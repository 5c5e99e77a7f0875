"""Rekey tests' setup: one fast cipher on offer, a low rekey limit, keys counted."""

from __future__ import annotations

import pytest

from cc.ssh import ciphers, connection

__all__ = ["FAST_CIPHERS", "REKEY_LIMIT", "cipher_id", "count_key_epochs"]

#: The ciphers the fast path seals and opens, and the asyncssh Encryption that wraps each.
FAST_CIPHERS = {
    "aes128-gcm@openssh.com": ciphers.FastGCMEncryption,
    "chacha20-poly1305@openssh.com": ciphers.FastChachaEncryption,
}
#: Low enough that a 16 MiB transfer rekeys dozens of times.
REKEY_LIMIT = 512 * 1024


def cipher_id(name: str) -> str:
    return name.split("-")[0]


def count_key_epochs(monkeypatch: pytest.MonkeyPatch, cipher: str) -> list[int]:
    """Offer only ``cipher`` and rekey every REKEY_LIMIT bytes; the list grows per key in use."""
    monkeypatch.setattr(connection, "ENCRYPTION_ALGS", (cipher,))
    monkeypatch.setattr(connection, "REKEY_BYTES", REKEY_LIMIT)
    encryption = FAST_CIPHERS[cipher]
    made: list[int] = []
    original = encryption.new.__func__  # type: ignore[attr-defined]

    def counting_new(cls: type, *args: object, **kwargs: object) -> object:
        made.append(1)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(encryption, "new", classmethod(counting_new))
    return made
