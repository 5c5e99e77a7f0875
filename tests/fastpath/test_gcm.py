"""SSH packet crypto (aes-gcm@openssh.com) of both fast-path twins.

asyncssh's own GCMCipher is the independent reference: packets sealed by ours must
open with it and the other way round, and both twins must produce the same bytes.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest
from asyncssh.crypto.cipher import GCMCipher
from hypothesis import given, settings
from hypothesis import strategies as st

from cc import fastpath

KEY = bytes(range(16))
IV = bytes(range(100, 112))

payloads = st.binary(max_size=70_000)
heads = st.binary(max_size=9)


def _pair(impl: ModuleType, key: bytes = KEY, iv: bytes = IV) -> tuple[object, object]:
    return impl.GCMPacketCipher(key, iv), impl.GCMPacketCipher(key, iv)


def test_selector_exports_the_cipher_of_the_active_twin() -> None:
    expected = fastpath.implementations()[fastpath.IMPLEMENTATION].GCMPacketCipher
    assert fastpath.GCMPacketCipher is expected


@settings(max_examples=60, deadline=None)
@given(head=heads, payload=payloads)
def test_seal_then_open_round_trips(fastpath_impl: ModuleType, head: bytes, payload: bytes) -> None:
    sealer, opener = _pair(fastpath_impl)
    wire = bytes(sealer.seal(payload, head))
    length = int.from_bytes(wire[:4], "big")
    assert length % 16 == 0 and len(wire) == 4 + length + 16
    opened = opener.open_packet(wire, 0)
    assert opened is not None
    plain, used = opened
    assert bytes(plain) == head + payload and used == len(wire)


@settings(max_examples=40, deadline=None)
@given(payload=payloads)
def test_reference_asyncssh_opens_our_packets(fastpath_impl: ModuleType, payload: bytes) -> None:
    ours = fastpath_impl.GCMPacketCipher(KEY, IV)
    ref = GCMCipher("aes128-gcm", KEY, IV)
    for _ in range(2):  # the nonce must advance in step
        wire = bytes(ours.seal(payload))
        plain = ref.verify_and_decrypt(wire[:4], wire[4:-16], wire[-16:])
        assert plain is not None
        padlen = plain[0]
        assert padlen >= 4 and plain[1 : len(plain) - padlen] == payload


@settings(max_examples=40, deadline=None)
@given(payload=payloads)
def test_we_open_reference_asyncssh_packets(fastpath_impl: ModuleType, payload: bytes) -> None:
    ref = GCMCipher("aes128-gcm", KEY, IV)
    ours = fastpath_impl.GCMPacketCipher(KEY, IV)
    for _ in range(2):
        padlen = -(1 + len(payload)) % 16 or 16
        padlen = padlen + 16 if padlen < 4 else padlen
        plain = bytes([padlen]) + payload + os.urandom(padlen)
        header = len(plain).to_bytes(4, "big")
        body, tag = ref.encrypt_and_sign(header, plain)
        opened = ours.open_packet(body + tag, 0)
        assert opened is not None and bytes(opened[0]) == payload


@settings(max_examples=40, deadline=None)
@given(head=heads, payload=payloads, key=st.binary(min_size=32, max_size=32))
def test_both_twins_seal_identically(head: bytes, payload: bytes, key: bytes) -> None:
    sealed = {
        name: bytes(impl.GCMPacketCipher(key, IV).seal(payload, head))
        for name, impl in fastpath.implementations().items()
    }
    assert len(set(sealed.values())) == 1


def test_incomplete_packet_returns_none_at_every_split(fastpath_impl: ModuleType) -> None:
    sealer = fastpath_impl.GCMPacketCipher(KEY, IV)
    wire = bytes(sealer.seal(b"x" * 100))
    for cut in range(len(wire)):
        assert fastpath_impl.GCMPacketCipher(KEY, IV).open_packet(wire[:cut], 0) is None
    assert fastpath_impl.GCMPacketCipher(KEY, IV).open_packet(b"junk" + wire, 4) is not None


def test_several_packets_in_one_buffer(fastpath_impl: ModuleType) -> None:
    sealer, opener = _pair(fastpath_impl)
    messages = [b"a" * n for n in (0, 1, 15, 16, 4000, 32768)]
    buf = b"".join(bytes(sealer.seal(m)) for m in messages)
    offset, got = 0, []
    while offset < len(buf):
        opened = opener.open_packet(buf, offset)
        assert opened is not None
        got.append(bytes(opened[0]))
        offset += opened[1]
    assert got == messages


def test_tampering_is_detected(fastpath_impl: ModuleType) -> None:
    sealer, opener = _pair(fastpath_impl)
    wire = bytearray(sealer.seal(b"secret payload"))
    wire[10] ^= 1
    with pytest.raises(ValueError, match="authentication"):
        opener.open_packet(bytes(wire), 0)


@pytest.mark.parametrize("length", [0, 8, 17, (1 << 20) + 16])
def test_bad_length_field_is_rejected(fastpath_impl: ModuleType, length: int) -> None:
    wire = length.to_bytes(4, "big") + bytes(64)
    with pytest.raises(ValueError, match="bad SSH packet length"):
        fastpath_impl.GCMPacketCipher(KEY, IV).open_packet(wire, 0)


def test_nonce_counter_wraps_like_asyncssh(fastpath_impl: ModuleType) -> None:
    iv = bytes(4) + b"\xff" * 8
    ours = fastpath_impl.GCMPacketCipher(KEY, iv)
    ref = GCMCipher("aes128-gcm", KEY, iv)
    for _ in range(3):
        wire = bytes(ours.seal(b"wrap"))
        assert ref.verify_and_decrypt(wire[:4], wire[4:-16], wire[-16:]) is not None


def test_iv_must_be_twelve_bytes(fastpath_impl: ModuleType) -> None:
    with pytest.raises(ValueError, match="12-byte"):
        fastpath_impl.GCMPacketCipher(KEY, b"short")
