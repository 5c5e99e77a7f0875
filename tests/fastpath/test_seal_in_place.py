"""``seal_in_place`` of both packet ciphers and both twins, and ``open_packet``'s own buffer.

The bulk path reads channel data straight to where its packet's plaintext goes and
seals it there: the wire packet must be exactly what ``seal`` makes of the same
message (so every peer opens it), whatever the size, and both twins must agree.
It also hands the payload view that ``open_packet`` returns to a socket that may keep
it, so that view must not be a view of the buffer the packet was read from.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cc import fastpath

__all__: list[str] = []

GCM_KEY, GCM_IV = bytes(range(16)), bytes(range(100, 112))
CHACHA_KEY = bytes(range(64))

messages = st.binary(min_size=1, max_size=70_000)
seqs = st.integers(min_value=0, max_value=(1 << 64) - 1)


def _in_place(message: bytes, slack: int = 20) -> bytearray:
    """A buffer as the bulk path fills it: a free byte, the message, room for padding."""
    buf = bytearray(os.urandom(1 + len(message) + slack))  # stale bytes must not leak
    buf[1 : 1 + len(message)] = message
    return buf


@settings(max_examples=60, deadline=None)
@given(message=messages)
def test_gcm_in_place_is_seal(fastpath_impl: ModuleType, message: bytes) -> None:
    expected = fastpath_impl.GCMPacketCipher(GCM_KEY, GCM_IV).seal(message)
    sealer = fastpath_impl.GCMPacketCipher(GCM_KEY, GCM_IV)
    packet = sealer.seal_in_place(memoryview(_in_place(message)), len(message))
    assert bytes(packet) == bytes(expected)
    opened = fastpath_impl.GCMPacketCipher(GCM_KEY, GCM_IV).open_packet(packet, 0)
    assert opened is not None and bytes(opened[0]) == message


@settings(max_examples=60, deadline=None)
@given(message=messages, seq=seqs)
def test_chacha_in_place_is_seal(fastpath_impl: ModuleType, message: bytes, seq: int) -> None:
    cipher = fastpath_impl.ChachaPacketCipher(CHACHA_KEY)
    expected = cipher.seal(message, b"", seq)
    packet = cipher.seal_in_place(_in_place(message), len(message), seq)
    assert bytes(packet) == bytes(expected)
    opened = cipher.open_packet(packet, 0, seq)
    assert opened is not None and bytes(opened[0]) == message


@settings(max_examples=40, deadline=None)
@given(message=messages, seq=seqs, key=st.binary(min_size=64, max_size=64))
def test_both_twins_seal_in_place_identically(message: bytes, seq: int, key: bytes) -> None:
    sealed = set()
    for impl in fastpath.implementations().values():
        gcm = impl.GCMPacketCipher(key[:16], GCM_IV)
        chacha = impl.ChachaPacketCipher(key)
        sealed.add(
            (
                bytes(gcm.seal_in_place(_in_place(message), len(message))),
                bytes(chacha.seal_in_place(_in_place(message), len(message), seq)),
            )
        )
    assert len(sealed) == 1


@pytest.mark.parametrize("size", [0, 10, 11, 12, 26, 27, 28])
def test_the_padding_must_fit(fastpath_impl: ModuleType, size: int) -> None:
    """1 + size + padding (4..19 bytes, to a multiple of 16) must fit in the buffer."""
    need = 1 + size + (-(1 + size) % 16 or 16)
    need += 16 if need - 1 - size < 4 else 0
    gcm = fastpath_impl.GCMPacketCipher(GCM_KEY, GCM_IV)
    chacha = fastpath_impl.ChachaPacketCipher(CHACHA_KEY)
    for short in (bytearray(need - 1), memoryview(bytearray(need))[: need - 1]):
        with pytest.raises(ValueError):
            gcm.seal_in_place(short, size)
        with pytest.raises(ValueError):
            chacha.seal_in_place(short, size, 0)
    assert len(gcm.seal_in_place(bytearray(need), size)) == 4 + need + 16
    with pytest.raises(BufferError):
        gcm.seal_in_place(bytes(need), size)  # read-only: nowhere to pad
    with pytest.raises(ValueError):
        chacha.seal_in_place(bytearray(need), -1, 0)


def test_opened_payload_is_not_a_view_of_the_input(fastpath_impl: ModuleType) -> None:
    gcm = fastpath_impl.GCMPacketCipher(GCM_KEY, GCM_IV)
    chacha = fastpath_impl.ChachaPacketCipher(CHACHA_KEY)
    message = os.urandom(5000)
    for packet, opener in (
        (
            bytearray(gcm.seal(message)),
            lambda b: fastpath_impl.GCMPacketCipher(GCM_KEY, GCM_IV).open_packet(b, 0),
        ),
        (bytearray(chacha.seal(message, b"", 9)), lambda b: chacha.open_packet(b, 0, 9)),
    ):
        opened = opener(packet)
        assert opened is not None
        packet[:] = bytes(len(packet))  # the receive buffer is reused for the next read
        assert bytes(opened[0]) == message
