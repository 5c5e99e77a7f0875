"""``WebSocketStream.receive_views`` and ``frame_in_place``: the copy-free ways in and out.

``receive_views`` must read exactly what ``receive_data`` reads, whatever the cuts,
handing out views of the caller's buffer (unmasked in place) instead of copies;
``frame_in_place`` must put on the wire exactly what ``send_binary`` does.  Run on
every fast-path twin.
"""

from __future__ import annotations

import itertools
import os
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cc.protocol.ws import Opcode, WebSocketClosedError, WebSocketStream

__all__: list[str] = []

KEY = b"\x11\x22\x33\x44"


def stream(fastpath: ModuleType, is_client: bool, **kw: object) -> WebSocketStream:
    kw.setdefault("mask_key_source", lambda n: KEY[:n])
    return WebSocketStream(is_client=is_client, fastpath=fastpath, **kw)  # type: ignore[arg-type]


def wire_of(fastpath: ModuleType, payloads: list[bytes], to_server: bool) -> bytes:
    """Frames as the other side sends them, with pings in between."""
    keys = itertools.cycle([b"\x01\x02\x03\x04", b"\xa0\xb1\xc2\xd3"])
    sender = stream(fastpath, to_server, mask_key_source=lambda n: next(keys))
    return b"".join(sender.send_binary(p) + sender.send_ping(b"p") for p in payloads)


def views_at(ws: WebSocketStream, wire: bytes, cuts: list[int]) -> tuple[bytes, int]:
    """Feed ``wire`` cut at ``cuts``, each read into a fresh writable buffer, as a socket would.

    Returns the joined payload and how many pieces were views of their read's buffer.
    """
    out: list[bytes] = []
    views = 0
    for a, b in itertools.pairwise([0, *cuts, len(wire)]):
        buf = bytearray(wire[a:b])
        for piece in ws.receive_views(memoryview(buf)):
            if isinstance(piece, memoryview):
                assert piece.obj is buf, "a view of anything but the read's own buffer"
                views += 1
            out.append(bytes(piece))  # copied before the next read reuses nothing here
    return b"".join(out), views


@pytest.mark.parametrize("to_server", [True, False])
def test_views_of_the_buffer_unmasked_in_place(fastpath_impl: ModuleType, to_server: bool) -> None:
    payload = os.urandom(5000)
    wire = wire_of(fastpath_impl, [payload], to_server)
    buf = bytearray(wire)
    ws = stream(fastpath_impl, not to_server)
    pieces = ws.receive_views(memoryview(buf))
    assert len(pieces) == 1 and isinstance(pieces[0], memoryview)
    assert pieces[0].obj is buf and pieces[0] == payload
    header = 8 if to_server else 4  # 126-length header, plus the key when masked
    assert bytes(buf[header : header + 5000]) == payload  # unmasked where it lies
    assert ws.data_to_send().startswith(b"\x8a")  # the ping was answered as usual


@given(
    payloads=st.lists(st.binary(max_size=3000), max_size=6),
    cuts=st.lists(st.integers(0, 20000), max_size=10),
    to_server=st.booleans(),
)
@settings(max_examples=150, deadline=None)
def test_views_read_what_copies_read(
    fastpath_impl: ModuleType, payloads: list[bytes], cuts: list[int], to_server: bool
) -> None:
    wire = wire_of(fastpath_impl, payloads, to_server)
    points = sorted({c for c in cuts if c <= len(wire)})
    copies = stream(fastpath_impl, not to_server)
    expected = b"".join(
        b"".join(copies.receive_data(wire[a:b]))
        for a, b in itertools.pairwise([0, *points, len(wire)])
    )
    viewer = stream(fastpath_impl, not to_server)
    got, _ = views_at(viewer, wire, points)
    assert got == expected == b"".join(payloads)
    assert viewer.data_to_send() == copies.data_to_send()
    assert viewer.pongs_received == copies.pongs_received


def test_a_held_back_header_still_reads_right(fastpath_impl: ModuleType) -> None:
    """A read that ends inside a header: the next read's pieces are copies, still right."""
    payloads = [os.urandom(70000), os.urandom(300)]
    wire = wire_of(fastpath_impl, payloads, True)
    got, views = views_at(stream(fastpath_impl, False), wire, [3, 70021])
    assert got == b"".join(payloads)
    assert views >= 1  # after the held-back header, later reads are views again


@pytest.mark.parametrize("is_client", [True, False])
def test_frame_in_place_writes_what_send_binary_writes(
    fastpath_impl: ModuleType, is_client: bool
) -> None:
    for size in (0, 1, 125, 126, 65535, 65536, 300000):
        payload = os.urandom(size)
        expected = stream(fastpath_impl, is_client).send_binary(payload)
        buf = bytearray(payload)
        header = stream(fastpath_impl, is_client).frame_in_place(buf)
        assert header + buf == expected, size


def test_frame_in_place_refuses_what_it_cannot_frame(fastpath_impl: ModuleType) -> None:
    ws = stream(fastpath_impl, True, max_frame_size=100)
    with pytest.raises(ValueError):
        ws.frame_in_place(bytearray(101))
    ws.send_close()
    with pytest.raises(WebSocketClosedError):
        ws.frame_in_place(bytearray(1))


def test_views_and_copies_agree_on_every_opcode_frame(fastpath_impl: ModuleType) -> None:
    """A text frame's UTF-8 is still checked when read as views."""
    sender = stream(fastpath_impl, True)
    text = "grüße".encode()
    wire = sender.send_text("grüße") + sender.send_binary(b"bin")
    got, _ = views_at(stream(fastpath_impl, False), wire, [7])
    assert got == text + b"bin"
    assert Opcode.TEXT == 1
