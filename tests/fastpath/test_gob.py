"""cc.fastpath gob_* (chisel's UDP datagrams): both twins against Go's bytes and each other."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cc import _fastpath_py, fastpath
from cc.protocol.udp import (
    GobDecoder,
    GobEncoder,
    GobError,
    decode_uint,
    encode_type_definition,
    encode_value,
)
from tests.support.vectors import udp_gob_messages

try:
    from cc import _fastpath as _compiled
except ImportError:  # not built: the twin-agreement tests skip
    _compiled = None

__all__: list[str] = []

needs_both = pytest.mark.skipif(
    "cython" not in fastpath.implementations(), reason="cc._fastpath is not built (or disabled)"
)

SRC = b"127.0.0.1:5000"
# Values captured from Go's encoding/gob (type id 65), as in tests/protocol/test_udp.py.
GO_EMPTY_PAYLOAD = bytes.fromhex("0eff820109312e322e332e343a3500")  # ("1.2.3.4:5", nil)
GO_EMPTY_SRC = bytes.fromhex("06ff8202017800")  # ("", "x")
GO_BOTH_EMPTY = bytes.fromhex("03ff8200")  # udpPacket{}
GO_BIG = bytes.fromhex("fe0138ff820103683a3101fe012c") + b"\x07" * 300 + b"\x00"  # ("h:1", ...)


def body_start(message: bytes) -> int:
    """Where a message's body starts, after its length prefix."""
    return decode_uint(message, 0)[1]


def outcome(func: Callable[..., object], *args: object) -> object:
    """The result, or the exception's type and message, so the twins compare on bad input."""
    try:
        return func(*args)
    except Exception as exc:
        return type(exc), str(exc)


# --- the selector and cc.protocol.udp's use of it ---------------------------------------

GOB_NAMES = ("gob_encode_uint", "gob_decode_uint", "gob_encode_value", "gob_decode_value")


def test_selector_exports_the_gob_functions_of_the_chosen_twin() -> None:
    chosen = fastpath.implementations()[fastpath.IMPLEMENTATION]
    for impl in fastpath.implementations().values():
        assert set(GOB_NAMES) <= set(impl.__all__)
    for name in GOB_NAMES:
        assert getattr(fastpath, name) is getattr(chosen, name)


def test_udp_maps_the_twins_value_errors() -> None:
    with pytest.raises(GobError, match="offset out of range"):
        decode_uint(b"\x05", -1)
    with pytest.raises(GobError, match="cut short"):
        decode_uint(b"\xfe\x01", 0)
    for bad in (0, -65, 2**31, 2**64):
        with pytest.raises(ValueError, match="out of range for a value"):
            encode_value(bad, "a:1", b"")


# --- the Go vector and Go's own bytes ------------------------------------------------


def test_go_vector_byte_for_byte(fastpath_impl: ModuleType) -> None:
    definition, value = udp_gob_messages()
    assert fastpath_impl.gob_encode_value(65, SRC, b"hi") == value
    start = body_start(value)
    assert fastpath_impl.gob_decode_value(value, 65, 0, 1, start) == (SRC, b"hi")
    assert fastpath_impl.gob_decode_value(value[start:], 65, 0, 1) == (SRC, b"hi")
    encoder = GobEncoder(fastpath=fastpath_impl)
    assert encoder.encode(SRC.decode(), b"hi") == definition + value
    assert GobDecoder(fastpath=fastpath_impl).receive_data(definition + value) == [
        (SRC.decode(), b"hi")
    ]


@pytest.mark.parametrize(
    ("src", "payload", "go_bytes"),
    [
        (b"1.2.3.4:5", b"", GO_EMPTY_PAYLOAD),
        (b"", b"x", GO_EMPTY_SRC),
        (b"", b"", GO_BOTH_EMPTY),
        (b"h:1", b"\x07" * 300, GO_BIG),
    ],
    ids=["empty-payload", "empty-src", "both-empty", "long-lengths"],
)
def test_go_values_omitted_fields_and_long_lengths(
    fastpath_impl: ModuleType, src: bytes, payload: bytes, go_bytes: bytes
) -> None:
    assert fastpath_impl.gob_encode_value(65, src, payload) == go_bytes
    start = body_start(go_bytes)
    assert fastpath_impl.gob_decode_value(go_bytes, 65, 0, 1, start) == (src, payload)


def test_encode_value_takes_any_bytes_like(fastpath_impl: ModuleType) -> None:
    expected = fastpath_impl.gob_encode_value(70, b"a:1", b"data")
    assert type(expected) is bytes
    backing = bytearray(b"..data..")
    assert fastpath_impl.gob_encode_value(70, bytearray(b"a:1"), memoryview(backing)[2:6]) == (
        expected
    )
    words = memoryview(bytearray(b"dataDATA")).cast("I")  # not unsigned bytes: read flat
    assert fastpath_impl.gob_encode_value(70, b"", words)[-11:] == b"\x02\x08dataDATA\x00"


@pytest.mark.parametrize(
    ("type_id", "error"),
    [(0, ValueError), (-65, ValueError), (2**31, ValueError), ("65", TypeError)],
)
def test_encode_value_rejects_bad_type_ids(
    fastpath_impl: ModuleType, type_id: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        fastpath_impl.gob_encode_value(type_id, b"", b"")


def test_encode_value_rejects_text(fastpath_impl: ModuleType) -> None:
    with pytest.raises(TypeError):
        fastpath_impl.gob_encode_value(65, "a:1", b"")
    with pytest.raises(TypeError):
        fastpath_impl.gob_encode_value(65, b"a:1", "payload")


# --- uints ------------------------------------------------------------------------------

UINTS = [
    (0, "00"),
    (1, "01"),
    (127, "7f"),
    (128, "ff80"),
    (255, "ffff"),
    (256, "fe0100"),
    (65535, "feffff"),
    (65536, "fd010000"),
    (2**32, "fb0100000000"),
    (2**63, "f88000000000000000"),
    (2**64 - 1, "f8ffffffffffffffff"),
]


@pytest.mark.parametrize(("value", "wire"), UINTS, ids=[str(v) for v, _ in UINTS])
def test_uint_boundaries(fastpath_impl: ModuleType, value: int, wire: str) -> None:
    raw = bytes.fromhex(wire)
    assert fastpath_impl.gob_encode_uint(value) == raw
    assert fastpath_impl.gob_decode_uint(raw, 0) == (value, len(raw))
    framed = b"junk" + raw + b"tail"
    for buf in (framed, bytearray(framed), memoryview(framed)):
        assert fastpath_impl.gob_decode_uint(buf, 4) == (value, 4 + len(raw))


@pytest.mark.parametrize("value", [-1, 2**64, 2**100])
def test_uint_encode_rejects_out_of_range(fastpath_impl: ModuleType, value: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        fastpath_impl.gob_encode_uint(value)


@pytest.mark.parametrize(
    ("data", "pos", "reason"),
    [
        (b"\xf7" + b"\x01" * 9, 0, "9 bytes is out of range"),  # over-long: > uint64
        (b"\x80" + b"\x00" * 8, 0, "128 bytes is out of range"),
        (b"", 0, "unsigned integer expected"),  # truncated: nothing there
        (b"\x05", 1, "unsigned integer expected"),
        (b"\x05", 9, "unsigned integer expected"),
        (b"\xfe\x01", 0, "cut short"),  # truncated: count says 2, 1 follows
        (b"\xf8" + b"\xff" * 7, 0, "cut short"),
        (b"\x05", -1, "offset out of range"),
    ],
)
def test_uint_decode_rejects_malformed(
    fastpath_impl: ModuleType, data: bytes, pos: int, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        fastpath_impl.gob_decode_uint(data, pos)


def test_uint_decode_accepts_non_minimal_like_go(fastpath_impl: ModuleType) -> None:
    # encoding/gob does not check that the high byte is non-zero ("not worth it").
    assert fastpath_impl.gob_decode_uint(b"\xff\x05", 0) == (5, 2)
    assert fastpath_impl.gob_decode_uint(b"\xf8" + bytes(8), 0) == (0, 9)


def test_uint_type_errors(fastpath_impl: ModuleType) -> None:
    with pytest.raises(TypeError):
        fastpath_impl.gob_encode_uint(1.0)
    with pytest.raises(TypeError):
        fastpath_impl.gob_decode_uint("\x05", 0)


# --- the value fast path ----------------------------------------------------------------


def test_decode_value_reversed_layout_and_slices(fastpath_impl: ModuleType) -> None:
    # struct{Payload []byte; Src string}: field 0 is Payload, field 1 is Src.
    body = b"\xff\x8c" + b"\x01\x04data" + b"\x01\x03x:1" + b"\x00"
    assert fastpath_impl.gob_decode_value(body, 70, 1, 0) == (b"x:1", b"data")
    stream = bytearray(b"\x00\x00" + body + b"\xff")
    end = 2 + len(body)
    assert fastpath_impl.gob_decode_value(stream, 70, 1, 0, 2, end) == (b"x:1", b"data")
    view = memoryview(stream)
    assert fastpath_impl.gob_decode_value(view, 70, 1, 0, 2, end) == (b"x:1", b"data")
    payload_only = b"\xff\x8c\x01\x02hi\x00"  # Src (field 1) omitted: the zero string
    assert fastpath_impl.gob_decode_value(payload_only, 70, 1, 0) == (b"", b"hi")


def test_decode_value_returns_fresh_bytes(fastpath_impl: ModuleType) -> None:
    message = bytearray(fastpath_impl.gob_encode_value(65, SRC, b"payload"))
    src, payload = fastpath_impl.gob_decode_value(message, 65, 0, 1, body_start(message))
    message[:] = bytes(len(message))
    assert (type(src), type(payload)) == (bytes, bytes)
    assert (src, payload) == (SRC, b"payload")


VALUE_65 = b"\xff\x82\x01\x01a\x01\x01b\x00"  # ("a", "b") under type id 65


@pytest.mark.parametrize(
    ("body", "args", "reason"),
    [
        (VALUE_65, (66, 0, 1), "not a value of type id 66"),
        (b"\xff\x81" + VALUE_65[2:], (65, 0, 1), "not a value of type id 65"),  # a definition
        (b"\xff\x82\x03\x01a\x00", (65, 0, 1), "unexpected field"),  # field 2
        (b"\xff\x82\x01\x01a\x01\x01b\x01\x01c\x00", (65, 0, 1), "unexpected field"),
        (b"\xff\x82\x02\x01a\x00", (65, 0, 2), "unexpected field"),  # field 1 not in layout
        (b"\xff\x82\xf8" + b"\xff" * 8 + b"\x00", (65, 0, 1), "unexpected field"),
        (VALUE_65 + b"\x00", (65, 0, 1), "extra data"),
        (VALUE_65[:-1], (65, 0, 1), "truncated"),
        (b"\xff\x82\x01\x09abc\x00", (65, 0, 1), "runs past the end"),
        (b"\xff\x82\x01\xf8" + b"\xff" * 8, (65, 0, 1), "runs past the end"),
        (b"", (65, 0, 1), "truncated"),
        (b"\xff", (65, 0, 1), "cut short"),
        (VALUE_65, (0, 0, 1), "out of range for a value"),
        (VALUE_65, (2**31, 0, 1), "out of range for a value"),
        (VALUE_65, (65, 1, 1), "distinct"),
        (VALUE_65, (65, -1, 1), "distinct"),
        (VALUE_65, (65, 0, 1, 4, 3), "start <= end"),
        (VALUE_65, (65, 0, 1, -1), "start <= end"),
        (VALUE_65, (65, 0, 1, 0, len(VALUE_65) + 1), "start <= end"),
        (VALUE_65, (65, 0, 1, 0, -1), "start <= end"),
        (VALUE_65, (65, 0, 1, 0, len(VALUE_65) - 1), "truncated"),  # end cuts a value
    ],
)
def test_decode_value_rejects(
    fastpath_impl: ModuleType, body: bytes, args: tuple[int, ...], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        fastpath_impl.gob_decode_value(body, *args)


def test_decode_value_type_errors(fastpath_impl: ModuleType) -> None:
    with pytest.raises(TypeError):
        fastpath_impl.gob_decode_value("text", 65, 0, 1)
    with pytest.raises(TypeError):
        fastpath_impl.gob_decode_value(VALUE_65, 65, 0, 1, 0, "end")
    with pytest.raises(TypeError):
        fastpath_impl.gob_decode_value(VALUE_65, "65", 0, 1)


#: Type ids past an int32, on both sides of a 32- and a 64-bit ssize_t.
HUGE_TYPE_IDS = [2**31, 2**32, 2**63 - 1, 2**63, 2**64, -(2**31) - 1, -(2**63) - 1, -(2**64)]


@pytest.mark.parametrize("type_id", HUGE_TYPE_IDS)
def test_type_ids_past_int32_are_value_errors_on_every_platform(
    fastpath_impl: ModuleType, type_id: int
) -> None:
    """A C ``Py_ssize_t`` argument made these OverflowErrors from 2**31 on i386 but only
    from 2**63 on amd64, so the twins and the platforms disagreed; now all say ValueError."""
    with pytest.raises(ValueError, match=f"type id {type_id} out of range for a value"):
        fastpath_impl.gob_encode_value(type_id, b"a", b"b")
    with pytest.raises(ValueError, match=f"type id {type_id} out of range for a value"):
        fastpath_impl.gob_decode_value(VALUE_65, type_id, 0, 1)


# --- properties -------------------------------------------------------------------------

type_ids = st.integers(min_value=1, max_value=2**31 - 1)
small_bytes = st.binary(max_size=64)
payloads = st.binary(max_size=2000)


@given(tid=type_ids, src=small_bytes, payload=payloads)
@settings(max_examples=200, deadline=None)
def test_round_trip(fastpath_impl: ModuleType, tid: int, src: bytes, payload: bytes) -> None:
    message = fastpath_impl.gob_encode_value(tid, src, payload)
    size, start = fastpath_impl.gob_decode_uint(message, 0)
    assert start + size == len(message)
    assert fastpath_impl.gob_decode_value(message, tid, 0, 1, start) == (src, payload)


@given(tid=st.integers(min_value=64, max_value=2**31 - 1), src=small_bytes, payload=payloads)
@settings(max_examples=100, deadline=None)
def test_codec_round_trip(fastpath_impl: ModuleType, tid: int, src: bytes, payload: bytes) -> None:
    text = src.decode("utf-8", "surrogateescape")
    encoder = GobEncoder(tid, fastpath=fastpath_impl)
    stream = encoder.encode(text, payload) + encoder.encode(text, payload)
    decoder = GobDecoder(fastpath=fastpath_impl)
    assert decoder.receive_data(stream) == [(text, payload)] * 2


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_uint_round_trip(fastpath_impl: ModuleType, value: int) -> None:
    wire = fastpath_impl.gob_encode_uint(value)
    assert fastpath_impl.gob_decode_uint(wire, 0) == (value, len(wire))


@needs_both
@given(
    tid=st.integers(min_value=-2, max_value=2**31 + 1) | st.sampled_from([2**63, -(2**63) - 1]),
    src=small_bytes,
    payload=payloads,
)
def test_twins_agree_on_encode_value(tid: int, src: bytes, payload: bytes) -> None:
    assert outcome(_compiled.gob_encode_value, tid, src, payload) == outcome(
        _fastpath_py.gob_encode_value, tid, src, payload
    )


@needs_both
@given(value=st.integers(min_value=-(2**65), max_value=2**65))
def test_twins_agree_on_encode_uint(value: int) -> None:
    assert outcome(_compiled.gob_encode_uint, value) == outcome(_fastpath_py.gob_encode_uint, value)


@needs_both
@given(data=st.binary(max_size=12), pos=st.integers(min_value=-2, max_value=14))
def test_twins_agree_on_decode_uint(data: bytes, pos: int) -> None:
    assert outcome(_compiled.gob_decode_uint, data, pos) == outcome(
        _fastpath_py.gob_decode_uint, data, pos
    )


# Random bodies biased towards the value layout (type 65, deltas of 1, a 0 at the end),
# so that many decode and the rest fail late, at every kind of flaw.
value_like = st.builds(
    lambda head, fields, tail: head + b"".join(fields) + tail,
    st.sampled_from([b"\xff\x82"] * 6 + [b"\xff\x84", b"\xff\x81", b"\x82", b""]),
    st.lists(
        st.builds(
            lambda delta, count, data: delta + (count or bytes((len(data),))) + data,
            st.sampled_from([b"\x01"] * 6 + [b"\x02", b"\x03", b"\xff\x01", b"\x00"]),
            st.sampled_from([None] * 6 + [b"\x00", b"\x07", b"\xfe\x00\x01", b"\xf7"]),
            st.binary(max_size=6),
        ),
        max_size=3,
    ),
    st.sampled_from([b"\x00"] * 6 + [b"", b"\x00\x00", b"\x01"]),
)


@needs_both
@given(
    body=st.binary(max_size=40) | value_like,
    tid=st.sampled_from([65, 65, 65, 66, 0]),
    fields=st.sampled_from([(0, 1), (0, 1), (1, 0), (0, 2), (3, 1), (1, 1)]),
    start=st.sampled_from([0, 0, 0, -1, 1, 2]),
    end=st.none() | st.integers(min_value=-1, max_value=42),
)
@settings(max_examples=500)
def test_twins_agree_on_decode_value(
    body: bytes, tid: int, fields: tuple[int, int], start: int, end: int | None
) -> None:
    args = (tid, *fields, start, end)
    for buf in (body, bytearray(body)):
        assert outcome(_compiled.gob_decode_value, buf, *args) == outcome(
            _fastpath_py.gob_decode_value, buf, *args
        )


class GeneralOnly:
    """A fast path that refuses every value, so GobDecoder takes its general path."""

    def __init__(self, impl: ModuleType) -> None:
        self.gob_decode_uint = impl.gob_decode_uint
        self.gob_encode_value = impl.gob_encode_value
        self.calls = 0

    def gob_decode_value(self, *args: object) -> tuple[bytes, bytes]:
        self.calls += 1
        raise ValueError("general path only")


@given(body=value_like, chunk=st.integers(min_value=1, max_value=50))
@settings(max_examples=300)
def test_fast_and_general_decoders_agree(
    fastpath_impl: ModuleType, body: bytes, chunk: int
) -> None:
    """Whatever the fast path accepts, the general path decodes the same way."""
    first = fastpath_impl.gob_encode_value(65, b"s", b"p")  # plans type 65: fast path on
    stream = encode_type_definition(65) + first + bytes([len(body)]) + body
    results = []
    for impl in (fastpath_impl, GeneralOnly(fastpath_impl)):
        decoder = GobDecoder(fastpath=impl)  # type: ignore[arg-type]
        try:
            out = []
            for i in range(0, len(stream), chunk):
                out += decoder.receive_data(stream[i : i + chunk])
            results.append(out)
        except GobError:
            results.append(None)
    assert results[0] == results[1]


def test_decoder_takes_the_fast_path_after_the_first_value(fastpath_impl: ModuleType) -> None:
    class Counting(GeneralOnly):
        def gob_decode_value(self, *args: object) -> tuple[bytes, bytes]:
            self.calls += 1
            result: tuple[bytes, bytes] = fastpath_impl.gob_decode_value(*args)
            return result

    counting = Counting(fastpath_impl)
    encoder = GobEncoder(fastpath=fastpath_impl)
    stream = b"".join(encoder.encode(f"h:{i}", b"x" * i) for i in range(10))
    decoder = GobDecoder(fastpath=counting)  # type: ignore[arg-type]
    expected = [(f"h:{i}", b"x" * i) for i in range(10)]
    assert decoder.receive_data(stream) == expected
    assert counting.calls == 9  # the first value plans the type on the general path
    # Input of every shape, split mid-message: the leftover waits in the decoder.
    value = encoder.encode("h:1", b"x")
    for shape in (bytes, bytearray, memoryview):
        assert decoder.receive_data(shape(value[:3])) == []
        assert decoder.receive_data(shape(value[3:] + value)) == [("h:1", b"x")] * 2
