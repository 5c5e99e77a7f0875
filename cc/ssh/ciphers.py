"""The AEAD ciphers the fast paths seal and open, registered in place of asyncssh's own.

asyncssh builds a new AESGCM object per packet and makes three passes of ChaCha20
per chacha20-poly1305 packet; ``cc.fastpath``'s packet ciphers keep one context per
key epoch and seal or open a whole wire packet in one call.  The classes below keep
asyncssh's ``Encryption`` interface (its key exchange and its own receive path still
use them) and add ``seal``/``open_packet`` for ``fastsend``/``fastrecv``.
"""

from __future__ import annotations

from typing import Any

from asyncssh import encryption as _encryption
from asyncssh.crypto import chacha as _chacha

from cc import fastpath
from cc.fastpath import BytesLike

__all__ = ["FAST_ENCRYPTIONS", "FastChachaEncryption", "FastGCMEncryption"]


class FastGCMEncryption(_encryption.Encryption):
    """asyncssh's Encryption interface over ``fastpath.GCMPacketCipher``.

    Replaces asyncssh 2.24.1 ``encryption.GCMEncryption`` (same wire format).
    """

    def __init__(self, cipher: fastpath.GCMPacketCipher) -> None:
        self.cipher = cipher

    @classmethod
    def new(
        cls,
        cipher_name: str,
        key: bytes,
        iv: bytes,
        mac_alg: bytes = b"",
        mac_key: bytes = b"",
        etm: bool = False,
    ) -> FastGCMEncryption:
        return cls(fastpath.GCMPacketCipher(key, iv))

    @classmethod
    def needs_mac(cls) -> bool:
        return False

    @classmethod
    def get_mac_params(cls, mac_alg: bytes) -> tuple[int, int, bool]:
        return 0, 16, True

    def seal(self, body: BytesLike, head: bytes, seq: int) -> BytesLike:
        """One wire packet (the GCM nonce counts itself; ``seq`` is not needed)."""
        return self.cipher.seal(body, head)

    def seal_in_place(self, buf: bytearray | memoryview, size: int, seq: int) -> bytearray:
        """One wire packet of the message already at ``buf[1 : 1 + size]`` (padded in place)."""
        return self.cipher.seal_in_place(buf, size)

    def open_packet(self, buf: bytearray, offset: int, seq: int) -> tuple[memoryview, int] | None:
        return self.cipher.open_packet(buf, offset)

    def packet_size(self, buf: BytesLike, offset: int, seq: int) -> int | None:
        """Wire size of the packet at ``buf[offset:]`` (its length is in clear), None if unknown."""
        if len(buf) - offset < 4:
            return None
        return 4 + int.from_bytes(buf[offset : offset + 4], "big") + 16

    def encrypt_packet(self, seq: int, header: bytes, packet: bytes) -> tuple[bytes, bytes]:
        data = self.cipher.encrypt(header, packet)
        return header + data[:-16], data[-16:]

    def decrypt_header(self, seq: int, first_block: bytes, header_len: int) -> tuple[bytes, bytes]:
        return first_block, first_block[:header_len]

    def decrypt_packet(
        self, seq: int, first: bytes, rest: bytes, header_len: int, mac: bytes
    ) -> bytes | None:
        try:
            return bytes(self.cipher.decrypt(first[:header_len], first[header_len:] + rest + mac))
        except ValueError:
            return None


class FastChachaEncryption(_encryption.ChachaEncryption):
    """asyncssh's chacha20-poly1305 for its own path, ``fastpath.ChachaPacketCipher`` for ours.

    The construction is stateless per packet (the nonce is the sequence number), so
    both can serve the same key epoch side by side.
    """

    def __init__(self, cipher: Any, key: bytes) -> None:
        super().__init__(cipher)
        self.fast = fastpath.ChachaPacketCipher(key)

    @classmethod
    def new(
        cls,
        cipher_name: str,
        key: bytes,
        iv: bytes,
        mac_alg: bytes = b"",
        mac_key: bytes = b"",
        etm: bool = False,
    ) -> FastChachaEncryption:
        return cls(_chacha.ChachaCipher(key), key)

    def seal(self, body: BytesLike, head: bytes, seq: int) -> BytesLike:
        return self.fast.seal(body, head, seq)

    def seal_in_place(self, buf: bytearray | memoryview, size: int, seq: int) -> bytearray:
        return self.fast.seal_in_place(buf, size, seq)

    def open_packet(self, buf: bytearray, offset: int, seq: int) -> tuple[memoryview, int] | None:
        return self.fast.open_packet(buf, offset, seq)

    def packet_size(self, buf: BytesLike, offset: int, seq: int) -> int | None:
        """Wire size of the packet at ``buf[offset:]`` (decrypting its length), None if unknown."""
        if len(buf) - offset < 4:
            return None
        _, length = self.decrypt_header(seq, bytes(buf[offset : offset + 4]), 4)
        return 4 + int.from_bytes(length, "big") + 16


for _alg, _enc, _cipher in (
    (b"aes128-gcm@openssh.com", FastGCMEncryption, "aes128-gcm"),
    (b"aes256-gcm@openssh.com", FastGCMEncryption, "aes256-gcm"),
    (b"chacha20-poly1305@openssh.com", FastChachaEncryption, "chacha20-poly1305"),
):
    if _alg in _encryption._enc_params:  # chacha needs Poly1305 in the OpenSSL build
        _encryption._enc_params[_alg] = (_enc, _cipher)

#: Encryptions whose packets the fast send and receive paths seal and open.
FAST_ENCRYPTIONS = (FastGCMEncryption, FastChachaEncryption)
