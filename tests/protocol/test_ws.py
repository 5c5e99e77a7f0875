"""cc.protocol.ws: the sans-I/O WebSocket stream, run on every fast-path twin.

Frames are built here by hand (``frame()``), not with the code under test, so an encoder
bug cannot hide a parser bug.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cc.protocol.errors import ProtocolError
from cc.protocol.ws import (
    CloseCode,
    Opcode,
    WebSocketClosedError,
    WebSocketError,
    WebSocketStream,
)

__all__: list[str] = []

KEY = b"\x11\x22\x33\x44"


def frame(
    opcode: int,
    payload: bytes = b"",
    mask: bytes | None = None,
    *,
    fin: bool = True,
    rsv: int = 0,
    length: int | None = None,
) -> bytes:
    """An RFC 6455 frame written out by hand; ``length`` can lie about the payload."""
    size = len(payload) if length is None else length
    first = bytes([(0x80 if fin else 0) | rsv | opcode])
    bit = 0x80 if mask is not None else 0
    if size <= 125:
        head = first + bytes([bit | size])
    elif size <= 0xFFFF:
        head = first + bytes([bit | 126]) + size.to_bytes(2, "big")
    else:
        head = first + bytes([bit | 127]) + size.to_bytes(8, "big")
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def cframe(opcode: int, payload: bytes = b"", **kw: object) -> bytes:
    """A frame as a client sends it (masked)."""
    return frame(opcode, payload, KEY, **kw)  # type: ignore[arg-type]


@pytest.fixture
def make(fastpath_impl: ModuleType) -> Callable[..., WebSocketStream]:
    """Build streams on the fast-path twin under test, with a predictable mask key."""

    def factory(is_client: bool, **kw: object) -> WebSocketStream:
        kw.setdefault("mask_key_source", lambda n: KEY[:n])
        return WebSocketStream(is_client=is_client, fastpath=fastpath_impl, **kw)  # type: ignore[arg-type]

    return factory


def feed(ws: WebSocketStream, data: bytes, cuts: list[int] | None = None) -> bytes:
    """Feed ``data`` split at ``cuts`` and return the joined payload."""
    points = [0, *(cuts or []), len(data)]
    out: list[bytes] = []
    for a, b in itertools.pairwise(points):
        out.extend(ws.receive_data(data[a:b]))
    assert all(out), "empty payload pieces must not be reported"
    return b"".join(out)


def assert_error(ws: WebSocketStream, data: bytes, code: CloseCode) -> WebSocketError:
    with pytest.raises(WebSocketError) as info:
        ws.receive_data(data)
    assert info.value.code == code
    assert isinstance(info.value, ProtocolError)
    return info.value


# --- RFC 6455 section 5.7 examples ----------------------------------------------------


def test_rfc_masked_hello_to_server(make: Callable[..., WebSocketStream]) -> None:
    server = make(False)
    assert server.receive_data(bytes.fromhex("818537fa213d7f9f4d5158")) == [b"Hello"]


def test_rfc_unmasked_hello_to_client(make: Callable[..., WebSocketStream]) -> None:
    client = make(True)
    assert client.receive_data(bytes.fromhex("810548656c6c6f")) == [b"Hello"]


def test_rfc_fragmented_hello(make: Callable[..., WebSocketStream]) -> None:
    client = make(True)
    assert client.receive_data(bytes.fromhex("010348656c80026c6f")) == [b"Hel", b"lo"]


def test_rfc_ping_gets_pong(make: Callable[..., WebSocketStream]) -> None:
    client = make(True)
    assert client.receive_data(bytes.fromhex("890548656c6c6f")) == []
    # A client's pong is masked; with the RFC's key it is the RFC's masked pong.
    rfc = make(True, mask_key_source=lambda n: bytes.fromhex("37fa213d"))
    rfc.receive_data(bytes.fromhex("890548656c6c6f"))
    assert rfc.data_to_send() == bytes.fromhex("8a8537fa213d7f9f4d5158")
    assert client.data_to_send() == frame(Opcode.PONG, b"Hello", KEY)
    assert client.data_to_send() == b""


def test_server_pong_is_unmasked(make: Callable[..., WebSocketStream]) -> None:
    server = make(False)
    server.receive_data(cframe(Opcode.PING, b"abc"))
    assert server.data_to_send() == frame(Opcode.PONG, b"abc")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 256, 65535, 65536, 200_000])
def test_length_encodings(make: Callable[..., WebSocketStream], size: int) -> None:
    payload = os.urandom(size)
    client, server = make(True), make(False)
    assert feed(client, frame(Opcode.BINARY, payload)) == payload
    assert feed(server, cframe(Opcode.BINARY, payload)) == payload


def test_pong_is_recorded(make: Callable[..., WebSocketStream]) -> None:
    client = make(True)
    assert (client.last_pong, client.pongs_received) == (None, 0)
    client.receive_data(frame(Opcode.PONG, b"1") + frame(Opcode.PONG, b"2"))
    assert (client.last_pong, client.pongs_received) == (b"2", 2)
    assert client.data_to_send() == b""


# --- chunking -------------------------------------------------------------------------

STREAM_PARTS = [
    (frame(Opcode.BINARY, b"first"), b"first"),
    (frame(Opcode.TEXT, b"te", fin=False), b"te"),
    (frame(Opcode.PING, b"p1"), b""),
    (frame(Opcode.CONT, b"xt", fin=False), b"xt"),
    (frame(Opcode.PONG, b"q"), b""),
    (frame(Opcode.CONT, b"!"), b"!"),
    (frame(Opcode.BINARY, b""), b""),
    (frame(Opcode.BINARY, bytes(range(200))), bytes(range(200))),
    (frame(Opcode.PING, b""), b""),
    (frame(Opcode.BINARY, b"z" * 70000), b"z" * 70000),
]


def _server_stream() -> tuple[bytes, bytes]:
    """The same frames as a client would send them (masked), and the expected payload."""
    wire = bytearray()
    for raw, _ in STREAM_PARTS:
        # Re-mask each frame: take opcode/fin back from the hand-written unmasked frame.
        fin, opcode = bool(raw[0] & 0x80), raw[0] & 0x0F
        length = raw[1] & 0x7F
        hlen = {126: 4, 127: 10}.get(length, 2)
        wire += frame(opcode, raw[hlen:], KEY, fin=fin)
    return bytes(wire), b"".join(p for _, p in STREAM_PARTS)


@pytest.mark.parametrize("is_client", [True, False])
def test_split_at_every_byte_boundary(
    make: Callable[..., WebSocketStream], is_client: bool
) -> None:
    if is_client:
        wire, expected = b"".join(r for r, _ in STREAM_PARTS), b"".join(p for _, p in STREAM_PARTS)
    else:
        wire, expected = _server_stream()
    small = len(wire) - 69000  # every boundary except deep inside the 70000-byte payload
    for cut in [*range(small), *range(len(wire) - 20, len(wire) + 1)]:
        ws = make(is_client)
        assert feed(ws, wire, [cut]) == expected, cut
        assert ws.pongs_received == 1
        assert ws.data_to_send().startswith(b"\x8a")  # the pong of the last ping


@pytest.mark.parametrize("is_client", [True, False])
def test_byte_by_byte(make: Callable[..., WebSocketStream], is_client: bool) -> None:
    wire, expected = (
        (b"".join(r for r, _ in STREAM_PARTS[:-1]), b"".join(p for _, p in STREAM_PARTS[:-1]))
        if is_client
        else _server_stream()
    )
    if not is_client:
        wire, expected = wire[: -(70000 + 14)], expected[:-70000]
    ws = make(is_client)
    assert feed(ws, wire, list(range(1, len(wire)))) == expected


def test_many_frames_in_one_call(make: Callable[..., WebSocketStream]) -> None:
    payloads = [os.urandom(n) for n in range(300)]
    server = make(False)
    out = server.receive_data(b"".join(cframe(Opcode.BINARY, p) for p in payloads))
    assert out == [p for p in payloads if p]


def test_large_frame_is_delivered_as_it_arrives(make: Callable[..., WebSocketStream]) -> None:
    payload = os.urandom(100_000)
    wire = cframe(Opcode.BINARY, payload)
    server = make(False)
    first = server.receive_data(wire[:50_000])
    assert b"".join(first) == payload[: 50_000 - 14]  # no waiting for the whole frame
    second = server.receive_data(wire[50_000:])
    assert b"".join(first + second) == payload


def test_accepts_bytearray_and_memoryview(make: Callable[..., WebSocketStream]) -> None:
    server = make(False)
    wire = cframe(Opcode.BINARY, b"hello world")
    assert server.receive_data(bytearray(wire[:5])) == []
    assert server.receive_data(memoryview(wire)[5:]) == [b"hello world"]


def test_only_latest_ping_is_answered(make: Callable[..., WebSocketStream]) -> None:
    server = make(False)
    server.receive_data(b"".join(cframe(Opcode.PING, b"%d" % i) for i in range(1000)))
    assert server.data_to_send() == frame(Opcode.PONG, b"999")


# --- close handshake ------------------------------------------------------------------


def test_peer_close_is_echoed(make: Callable[..., WebSocketStream]) -> None:
    server = make(False)
    payload = (1001).to_bytes(2, "big") + "bye ✓".encode()
    assert server.receive_data(cframe(Opcode.BINARY, b"x") + cframe(Opcode.CLOSE, payload)) == [
        b"x"
    ]
    assert server.closed and server.close_sent
    assert (server.close_code, server.close_reason) == (1001, "bye ✓")
    assert server.data_to_send() == frame(Opcode.CLOSE, (1001).to_bytes(2, "big"))
    assert server.send_close() == b""
    err = assert_error(server, cframe(Opcode.BINARY, b"late"), CloseCode.PROTOCOL_ERROR)
    assert "after the close" in err.reason
    assert server.data_to_send() == b""  # our close was already sent


def test_empty_close(make: Callable[..., WebSocketStream]) -> None:
    client = make(True)
    client.receive_data(frame(Opcode.CLOSE))
    assert (client.close_code, client.close_reason) == (CloseCode.NO_STATUS_RCVD, "")
    assert client.data_to_send() == frame(Opcode.CLOSE, b"", KEY)


def test_our_close_then_theirs(make: Callable[..., WebSocketStream]) -> None:
    client = make(True)
    assert client.send_close(1000, "done") == frame(Opcode.CLOSE, b"\x03\xe8done", KEY)
    assert client.send_close() == b""
    with pytest.raises(WebSocketClosedError):
        client.send_binary(b"x")
    with pytest.raises(WebSocketClosedError):
        client.send_ping()
    # Data may still arrive until the peer's close; pings are no longer answered.
    assert client.receive_data(frame(Opcode.BINARY, b"in flight") + frame(Opcode.PING)) == [
        b"in flight"
    ]
    client.receive_data(frame(Opcode.CLOSE, b"\x03\xe8"))
    assert client.closed and client.close_code == 1000
    assert client.data_to_send() == b""


def test_close_after_data_in_same_chunk_is_an_error(make: Callable[..., WebSocketStream]) -> None:
    client = make(True)
    assert_error(client, frame(Opcode.CLOSE) + frame(Opcode.BINARY, b"x"), CloseCode.PROTOCOL_ERROR)


def test_send_close_validation(make: Callable[..., WebSocketStream]) -> None:
    server = make(False)
    for code in (999, 1004, 1006, 1015, 2999, 5000):
        with pytest.raises(ValueError):
            server.send_close(code)
    with pytest.raises(ValueError):
        server.send_close(CloseCode.NO_STATUS_RCVD, "an empty close frame has no reason")
    with pytest.raises(ValueError):
        server.send_close(1000, "x" * 124)
    assert not server.close_sent
    assert server.send_close(CloseCode.NO_STATUS_RCVD) == frame(Opcode.CLOSE)
    fresh = make(False)
    assert fresh.send_close(4000, "x" * 123) == frame(Opcode.CLOSE, b"\x0f\xa0" + b"x" * 123)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\x03", CloseCode.PROTOCOL_ERROR),
        *(
            ((c).to_bytes(2, "big"), CloseCode.PROTOCOL_ERROR)
            for c in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)
        ),
        (b"\x03\xe8\xff\xfe", CloseCode.INVALID_DATA),
    ],
)
def test_bad_close_frames(
    make: Callable[..., WebSocketStream], payload: bytes, code: CloseCode
) -> None:
    server = make(False)
    assert_error(server, cframe(Opcode.CLOSE, payload), code)
    assert not server.closed


@pytest.mark.parametrize("code", [1000, 1003, 1007, 1014, 3000, 4999])
def test_good_close_codes(make: Callable[..., WebSocketStream], code: int) -> None:
    server = make(False)
    server.receive_data(cframe(Opcode.CLOSE, code.to_bytes(2, "big")))
    assert server.close_code == code


# --- protocol violations --------------------------------------------------------------

VIOLATIONS = {
    "unmasked from client": (False, frame(Opcode.BINARY, b"x"), CloseCode.PROTOCOL_ERROR),
    "masked from server": (True, cframe(Opcode.BINARY, b"x"), CloseCode.PROTOCOL_ERROR),
    "rsv1": (True, frame(Opcode.BINARY, b"x", rsv=0x40), CloseCode.PROTOCOL_ERROR),
    "rsv2": (True, frame(Opcode.BINARY, b"x", rsv=0x20), CloseCode.PROTOCOL_ERROR),
    "rsv3": (False, cframe(Opcode.PING, rsv=0x10), CloseCode.PROTOCOL_ERROR),
    **{
        f"opcode {op:#x}": (True, frame(op, b"x"), CloseCode.PROTOCOL_ERROR)
        for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)
    },
    "ping over 125": (True, frame(Opcode.PING, b"x" * 126), CloseCode.PROTOCOL_ERROR),
    "close over 125": (
        False,
        cframe(Opcode.CLOSE, b"\x03\xe8" + b"x" * 124),
        CloseCode.PROTOCOL_ERROR,
    ),
    "fragmented ping": (True, frame(Opcode.PING, b"x", fin=False), CloseCode.PROTOCOL_ERROR),
    "fragmented close": (False, cframe(Opcode.CLOSE, fin=False), CloseCode.PROTOCOL_ERROR),
    "lone continuation": (True, frame(Opcode.CONT, b"x"), CloseCode.PROTOCOL_ERROR),
    "binary inside fragments": (
        True,
        frame(Opcode.TEXT, b"a", fin=False) + frame(Opcode.BINARY, b"b"),
        CloseCode.PROTOCOL_ERROR,
    ),
    "64-bit length top bit": (
        True,
        b"\x82\x7f" + (2**63 + 5).to_bytes(8, "big"),
        CloseCode.PROTOCOL_ERROR,
    ),
    # Only the header: the limit is enforced before any payload is buffered.
    "oversize (header only)": (
        True,
        frame(Opcode.BINARY, length=1024 + 1),
        CloseCode.MESSAGE_TOO_BIG,
    ),
    "oversize continuation": (
        False,
        cframe(Opcode.BINARY, b"a", fin=False) + cframe(Opcode.CONT, b"b" * 1025),
        CloseCode.MESSAGE_TOO_BIG,
    ),
    "oversize 64-bit": (True, frame(Opcode.BINARY, length=2**40), CloseCode.MESSAGE_TOO_BIG),
}


@pytest.mark.parametrize("name", list(VIOLATIONS))
def test_violations(make: Callable[..., WebSocketStream], name: str) -> None:
    is_client, wire, code = VIOLATIONS[name]
    ws = make(is_client, max_frame_size=1024)
    err = assert_error(ws, wire, code)
    # The stream is failed: our close frame carries the code, and it stays failed.
    close = ws.data_to_send()
    assert close[0] == 0x88  # FIN + CLOSE
    if is_client:
        assert close[1] & 0x80 and close[2:6] == KEY
        body = bytes(b ^ KEY[i % 4] for i, b in enumerate(close[6:]))
    else:
        assert not close[1] & 0x80
        body = close[2:]
    assert close[1] & 0x7F == len(body)
    assert int.from_bytes(body[:2], "big") == code
    assert body[2:].decode() == err.reason[:123]
    assert ws.close_sent
    with pytest.raises(WebSocketError) as again:
        ws.receive_data(b"\x82\x00")
    assert again.value.code == code


def test_error_close_comes_from_send_close_too(make: Callable[..., WebSocketStream]) -> None:
    server = make(False)
    assert_error(server, frame(Opcode.BINARY, b"x"), CloseCode.PROTOCOL_ERROR)
    assert server.send_close(1002) == frame(
        Opcode.CLOSE, b"\x03\xea" + b"unmasked frame from the client"
    )
    assert server.data_to_send() == b""


def test_oversize_split_header(make: Callable[..., WebSocketStream]) -> None:
    server = make(False, max_frame_size=100)
    wire = cframe(Opcode.BINARY, length=101)
    assert server.receive_data(wire[:3]) == []
    assert_error(server, wire[3:], CloseCode.MESSAGE_TOO_BIG)


def test_frame_at_the_limit_is_fine(make: Callable[..., WebSocketStream]) -> None:
    server = make(False, max_frame_size=100)
    assert feed(server, cframe(Opcode.BINARY, b"q" * 100)) == b"q" * 100


# --- sending --------------------------------------------------------------------------


def test_send_binary_masks_only_as_client(make: Callable[..., WebSocketStream]) -> None:
    assert make(True).send_binary(b"abc") == frame(Opcode.BINARY, b"abc", KEY)
    assert make(False).send_binary(bytearray(b"abc")) == frame(Opcode.BINARY, b"abc")
    keys = iter([b"aaaa", b"bbbb"])
    client = make(True, mask_key_source=lambda n: next(keys))
    assert client.send_binary(b"x")[2:6] == b"aaaa"
    assert client.send_binary(b"x")[2:6] == b"bbbb"  # a fresh key for every frame


def test_send_binary_splits_over_the_limit(make: Callable[..., WebSocketStream]) -> None:
    payload = os.urandom(250)
    client = make(True, max_frame_size=100)
    wire = client.send_binary(memoryview(payload))
    assert wire == b"".join(frame(Opcode.BINARY, payload[i : i + 100], KEY) for i in (0, 100, 200))
    assert feed(make(False, max_frame_size=100), wire) == payload


def test_send_ping(make: Callable[..., WebSocketStream]) -> None:
    server = make(False)
    assert server.send_ping(b"hb") == frame(Opcode.PING, b"hb")
    assert server.send_ping() == frame(Opcode.PING)
    with pytest.raises(ValueError):
        server.send_ping(b"x" * 126)


def test_send_text(make: Callable[..., WebSocketStream]) -> None:
    server = make(False)
    assert server.send_text('{"id":"é"}') == frame(Opcode.TEXT, '{"id":"é"}'.encode())
    assert feed(make(False), make(True).send_text("hi")) == b"hi"
    server.send_close()
    with pytest.raises(WebSocketClosedError):
        server.send_text("late")


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        WebSocketStream(is_client=True, max_frame_size=0)
    assert WebSocketStream(is_client=False).max_frame_size == 1 << 20


# --- properties -----------------------------------------------------------------------


@given(is_client=st.booleans(), data=st.lists(st.binary(max_size=64), max_size=8))
@settings(max_examples=400, deadline=None)
def test_random_bytes_only_raise_websocket_error(
    fastpath_impl: ModuleType, is_client: bool, data: list[bytes]
) -> None:
    ws = WebSocketStream(is_client=is_client, max_frame_size=256, fastpath=fastpath_impl)
    for chunk in data:
        try:
            ws.receive_data(chunk)
        except WebSocketError:
            break
    ws.data_to_send()


@given(
    is_client=st.booleans(),
    pieces=st.lists(st.binary(min_size=2, max_size=40), max_size=6),
)
@settings(max_examples=300, deadline=None)
def test_random_frame_soup_only_raises_websocket_error(
    fastpath_impl: ModuleType, is_client: bool, pieces: list[bytes]
) -> None:
    # Random headers with plausible shapes reach deeper states than uniform noise.
    mask = None if is_client else KEY
    wire = b"".join(frame(p[0] & 0x8F, p[2:], mask, fin=bool(p[1] & 1)) for p in pieces)
    ws = WebSocketStream(is_client=is_client, fastpath=fastpath_impl)
    with contextlib.suppress(WebSocketError):
        ws.receive_data(wire)


chunks_strategy = st.lists(st.binary(max_size=3000), max_size=10)


@given(
    payloads=chunks_strategy, cuts=st.lists(st.integers(0, 40000), max_size=12), pings=st.booleans()
)
@settings(max_examples=150, deadline=None)
def test_round_trip_client_to_server(
    fastpath_impl: ModuleType, payloads: list[bytes], cuts: list[int], pings: bool
) -> None:
    client = WebSocketStream(is_client=True, max_frame_size=1000, fastpath=fastpath_impl)
    server = WebSocketStream(is_client=False, max_frame_size=1000, fastpath=fastpath_impl)
    wire = b"".join(
        client.send_binary(p) + (client.send_ping(b"%d" % i) if pings else b"")
        for i, p in enumerate(payloads)
    )
    assert feed(server, wire, sorted(c for c in cuts if c <= len(wire))) == b"".join(payloads)
    if pings and payloads:
        pong = server.data_to_send()
        client.receive_data(pong)
        assert client.last_pong == b"%d" % (len(payloads) - 1)
    close = client.send_close(1000, "end")
    server.receive_data(close)
    assert (server.close_code, server.close_reason) == (1000, "end")
    client.receive_data(server.data_to_send())
    assert client.closed and server.closed


@given(payloads=chunks_strategy, cuts=st.lists(st.integers(0, 40000), max_size=12))
@settings(max_examples=150, deadline=None)
def test_round_trip_server_to_client(
    fastpath_impl: ModuleType, payloads: list[bytes], cuts: list[int]
) -> None:
    server = WebSocketStream(is_client=False, fastpath=fastpath_impl)
    client = WebSocketStream(is_client=True, fastpath=fastpath_impl)
    wire = b"".join(server.send_binary(p) for p in payloads)
    assert feed(client, wire, sorted(c for c in cuts if c <= len(wire))) == b"".join(payloads)
