"""SSH packet crypto (chacha20-poly1305@openssh.com) of both fast-path twins.

asyncssh's own ChachaCipher is the independent reference: packets sealed by ours
must open with it and the other way round, and both twins must produce the same
bytes.  The nonce is the packet sequence number, so every call names it.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest
from asyncssh.crypto.chacha import ChachaCipher
from hypothesis import given, settings
from hypothesis import strategies as st

from cc import fastpath

KEY = bytes(range(64))
payloads = st.binary(max_size=70_000)
heads = st.binary(max_size=9)
seqs = st.integers(min_value=0, max_value=(1 << 64) - 1)


def _reference_open(key: bytes, packet: bytes, seq: int) -> bytes:
    """asyncssh's path: decrypt the length, verify and decrypt the rest; the plaintext."""
    ref = ChachaCipher(key)
    nonce = seq.to_bytes(8, "big")
    total = int.from_bytes(ref.decrypt_header(packet[:4], nonce), "big")
    assert len(packet) == 4 + total + 16
    plain = ref.verify_and_decrypt(packet[:4], packet[4 : 4 + total], nonce, packet[4 + total :])
    assert plain is not None, "asyncssh refused our tag"
    return plain


def _reference_seal(key: bytes, body: bytes, seq: int) -> bytes:
    """asyncssh's encrypt_and_sign over a packet padded to OpenSSH's 8-byte rule."""
    padlen = -(1 + len(body)) % 8
    if padlen < 4:
        padlen += 8
    packet = bytes([padlen]) + body + os.urandom(padlen)
    header = len(packet).to_bytes(4, "big")
    encrypted, tag = ChachaCipher(key).encrypt_and_sign(header, packet, seq.to_bytes(8, "big"))
    return encrypted + tag


def test_selector_exports_the_cipher_of_the_active_twin() -> None:
    expected = fastpath.implementations()[fastpath.IMPLEMENTATION].ChachaPacketCipher
    assert fastpath.ChachaPacketCipher is expected


@settings(max_examples=40, deadline=None)
@given(head=heads, payload=payloads, seq=seqs)
def test_reference_asyncssh_opens_our_packets(
    fastpath_impl: ModuleType, head: bytes, payload: bytes, seq: int
) -> None:
    packet = bytes(fastpath_impl.ChachaPacketCipher(KEY).seal(payload, head, seq))
    plain = _reference_open(KEY, packet, seq)
    padlen = plain[0]
    assert padlen >= 4 and (len(plain)) % 16 == 0, "Go's 16-byte multiple"
    assert plain[1 : len(plain) - padlen] == head + payload


@settings(max_examples=40, deadline=None)
@given(payload=payloads, seq=seqs)
def test_we_open_reference_asyncssh_packets(
    fastpath_impl: ModuleType, payload: bytes, seq: int
) -> None:
    packet = _reference_seal(KEY, payload, seq)
    opened = fastpath_impl.ChachaPacketCipher(KEY).open_packet(packet + b"next", 0, seq)
    assert opened is not None
    body, used = opened
    assert bytes(body) == payload and used == len(packet)


@settings(max_examples=40, deadline=None)
@given(head=heads, payload=payloads, key=st.binary(min_size=64, max_size=64), seq=seqs)
def test_both_twins_seal_identically(head: bytes, payload: bytes, key: bytes, seq: int) -> None:
    sealed = [
        bytes(impl.ChachaPacketCipher(key).seal(payload, head, seq))
        for impl in fastpath.implementations().values()
    ]
    assert all(s == sealed[0] for s in sealed)
    for impl in fastpath.implementations().values():
        opened = impl.ChachaPacketCipher(key).open_packet(sealed[0], 0, seq)
        assert opened is not None and bytes(opened[0]) == head + payload


def test_incomplete_packet_returns_none_at_every_split(fastpath_impl: ModuleType) -> None:
    cipher = fastpath_impl.ChachaPacketCipher(KEY)
    packet = bytes(cipher.seal(b"x" * 100, b"\x5e", 7))
    for cut in range(len(packet)):
        assert cipher.open_packet(packet[:cut], 0, 7) is None, cut
    opened = cipher.open_packet(packet, 0, 7)
    assert opened is not None and bytes(opened[0]) == b"\x5e" + b"x" * 100


def test_several_packets_in_one_buffer(fastpath_impl: ModuleType) -> None:
    cipher = fastpath_impl.ChachaPacketCipher(KEY)
    stream = bytearray(b"junk")
    for seq, body in enumerate((b"one", b"two" * 1000, b"")):
        stream += cipher.seal(body, b"\x5e", seq)
    offset, seen = 4, []
    for seq in range(3):
        opened = cipher.open_packet(stream, offset, seq)
        assert opened is not None
        seen.append(bytes(opened[0]))
        offset += opened[1]
    assert seen == [b"\x5eone", b"\x5e" + b"two" * 1000, b"\x5e"] and offset == len(stream)


def test_a_wrong_sequence_number_or_tampering_is_detected(fastpath_impl: ModuleType) -> None:
    cipher = fastpath_impl.ChachaPacketCipher(KEY)
    packet = bytearray(cipher.seal(b"payload" * 10, b"\x5e", 41))
    with pytest.raises(ValueError):
        cipher.open_packet(packet, 0, 42)  # the length decrypts to garbage or the tag fails
    for index in (5, len(packet) - 1):
        broken = bytearray(packet)
        broken[index] ^= 1
        with pytest.raises(ValueError, match="authentication"):
            cipher.open_packet(broken, 0, 41)


@pytest.mark.parametrize("length", [0, 4, 12, (1 << 20) + 8])
def test_bad_length_field_is_rejected(fastpath_impl: ModuleType, length: int) -> None:
    """The length is encrypted: craft one with the length key so it decrypts to ``length``."""
    from cryptography.hazmat.primitives.ciphers import Cipher
    from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20

    nonce = bytes(8) + (3).to_bytes(8, "big")
    encrypt = Cipher(ChaCha20(KEY[32:], nonce), mode=None).encryptor()
    header = encrypt.update(length.to_bytes(4, "big"))
    with pytest.raises(ValueError, match="bad SSH packet length"):
        fastpath_impl.ChachaPacketCipher(KEY).open_packet(header + bytes(64), 0, 3)


def test_key_must_be_64_bytes(fastpath_impl: ModuleType) -> None:
    with pytest.raises(ValueError, match="64-byte key"):
        fastpath_impl.ChachaPacketCipher(bytes(32))
