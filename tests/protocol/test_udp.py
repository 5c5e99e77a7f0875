"""Tests for the gob codec of chisel's udpPacket (cc/protocol/udp.py)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cc.protocol.errors import ProtocolError
from cc.protocol.udp import (
    DEFAULT_TYPE_ID,
    GobDecoder,
    GobEncoder,
    GobError,
    decode_bytes,
    decode_int,
    decode_uint,
    encode_bytes,
    encode_int,
    encode_message,
    encode_type_definition,
    encode_uint,
    encode_value,
)
from tests.support.vectors import udp_gob_messages

# Captured from Go 1.19.8's encoding/gob (the toolchain chisel v1.11.5 was
# built with), one fresh gob.Encoder per line, encoding chisel's
# `type udpPacket struct { Src string; Payload []byte }`.
GO_DEFINITION = bytes.fromhex(
    "2bff81030101097564705061636b657401ff820001020103537263010c0001075061796c6f6164010a000000"
)
# ("1.2.3.4:5", nil)
GO_EMPTY_PAYLOAD = GO_DEFINITION + bytes.fromhex("0eff820109312e322e332e343a3500")
GO_EMPTY_SRC = GO_DEFINITION + bytes.fromhex("06ff8202017800")  # ("", "x")
GO_BOTH_EMPTY = GO_DEFINITION + bytes.fromhex("03ff8200")  # udpPacket{}
GO_TWO = GO_DEFINITION + bytes.fromhex(  # ("a:1", "p1") then ("b:2", "p2")
    "0cff820103613a3101027031000cff820103623a320102703200"
)
# ("h:1", 300 x 0x07): the message length (0x138) and payload count (0x12c) need 2 bytes.
GO_BIG = GO_DEFINITION + bytes.fromhex("fe0138ff820103683a3101fe012c") + b"\x07" * 300 + b"\x00"
# Same as the vector, but the process had gob-encoded another type first, so Go numbered
# udpPacket 66 (definition ff 83 = -66, value ff 84 = 66): the id is not always 65.
GO_ID_66 = bytes.fromhex(
    "2bff83030101097564705061636b657401ff840001020103537263010c0001075061796c6f6164010a000000"
    "17ff84010e3132372e302e302e313a353030300102686900"
)
# A richer udpPacket {Extra int; Payload []byte; Meta map[string]int; Src string;
# Tags []string; Inner struct{A, B int}; Arr [2]uint16; F float64; C complex128; Ok bool}
# encoded twice by Go: the definitions of the map/slice/struct/array types follow the
# outer definition, fields come in another order, and the second value (only Src set)
# still carries the zero struct and array, as Go always sends those.
GO_EXTRA_FIELDS = bytes.fromhex(
    "70ff81030101097564705061636b657401ff8200010a0105457874726101040001075061796c6f6164010a"
    "0001044d65746101ff84000103537263010c0001045461677301ff86000105496e6e657201ff8800010341"
    "727201ff8a00010146010800010143010e0001024f6b01020000001eff830401010e6d61705b737472696e"
    "675d696e7401ff8400010c0104000016ff85020101085b5d737472696e6701ff8600010c00001fff870301"
    "0105696e6e657201ff88000102010141010400010142010400000019ff89010101095b325d75696e743136"
    "01ff8a000106010400002fff82010d0102796f0101016b060103733a310102016102626301010201040001"
    "02050601fef83f01fef03f400101000eff820403743a3202000102000000"
)


UDP_FIELDS = [("Src", 6), ("Payload", 5)]
EMPTY_65 = b"\x03\xff\x82\x00"  # a value of type 65 with every field omitted


def decode_all(data: bytes, **kwargs: int) -> list[tuple[str, bytes]]:
    return GobDecoder(**kwargs).receive_data(data)


def struct_def(tid: int, fields: list[tuple[str, int]], name: str = "udpPacket") -> bytes:
    """A struct type definition message built from the primitives (for malformed cases)."""
    common = b"\x01" + encode_bytes(name.encode()) + b"\x01" + encode_int(tid) + b"\x00"
    body = encode_uint(len(fields))
    for field_name, field_tid in fields:
        body += b"\x01" + encode_bytes(field_name.encode()) + b"\x01" + encode_int(field_tid)
        body += b"\x00"
    return encode_message(encode_int(-tid) + b"\x03\x01" + common + b"\x01" + body + b"\x00\x00")


# ------------------------------------------------------------------ primitives


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "ff80"),
        (256, "fe0100"),
        ((1 << 64) - 1, "f8ffffffffffffffff"),
    ],
)
def test_uint_encoding_is_gobs_not_leb128(value: int, wire: str) -> None:
    assert encode_uint(value).hex() == wire
    assert decode_uint(bytes.fromhex(wire), 0) == (value, len(wire) // 2)


@pytest.mark.parametrize(
    ("value", "wire"),
    [(0, "00"), (-1, "01"), (1, "02"), (65, "ff82"), (-65, "ff81"), (-66, "ff83"), (6, "0c")],
)
def test_int_encoding_puts_sign_in_bit_zero(value: int, wire: str) -> None:
    assert encode_int(value).hex() == wire
    assert decode_int(bytes.fromhex(wire), 0) == (value, len(wire) // 2)


@given(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1))
def test_int_round_trip(value: int) -> None:
    wire = encode_int(value)
    assert decode_int(wire, 0) == (value, len(wire))


def test_primitive_errors() -> None:
    with pytest.raises(ValueError):
        encode_uint(-1)
    with pytest.raises(ValueError):
        encode_int(1 << 63)
    with pytest.raises(GobError, match="out of range"):
        decode_uint(b"\xf7" + b"\x00" * 9, 0)  # 9 bytes: more than a uint64
    with pytest.raises(GobError, match="truncated"):
        decode_uint(b"\xfe\x01", 0)
    with pytest.raises(GobError, match="past the end"):
        decode_bytes(b"\x05abc", 0)
    assert decode_bytes(b"\x03abc", 0) == (b"abc", 4)


# ------------------------------------------------------------------ encoder


def test_encoder_matches_go_vector() -> None:
    definition, value = udp_gob_messages()
    encoder = GobEncoder()
    assert encoder.encode("127.0.0.1:5000", b"hi") == definition + value
    # The definition goes once per stream; later calls are values only.
    assert encoder.encode("127.0.0.1:5000", b"hi") == value
    assert encode_type_definition() == definition == GO_DEFINITION


@pytest.mark.parametrize(
    ("src", "payload", "go_bytes"),
    [
        ("1.2.3.4:5", b"", GO_EMPTY_PAYLOAD),
        ("", b"x", GO_EMPTY_SRC),
        ("", b"", GO_BOTH_EMPTY),
        ("h:1", b"\x07" * 300, GO_BIG),
    ],
)
def test_encoder_matches_go_for_omitted_fields_and_long_lengths(
    src: str, payload: bytes, go_bytes: bytes
) -> None:
    assert GobEncoder().encode(src, payload) == go_bytes


def test_encoder_stream_matches_go_and_other_type_ids() -> None:
    encoder = GobEncoder()
    assert encoder.encode("a:1", b"p1") + encoder.encode("b:2", b"p2") == GO_TWO
    assert GobEncoder(type_id=66).encode("127.0.0.1:5000", b"hi") == GO_ID_66
    assert encode_value(65, "", memoryview(b"x")) == GO_EMPTY_SRC[len(GO_DEFINITION) :]
    with pytest.raises(ValueError):
        GobEncoder(type_id=5)


# ------------------------------------------------------------------ decoder: good input


def test_decoder_reads_go_vector() -> None:
    definition, value = udp_gob_messages()
    decoder = GobDecoder()
    assert decoder.receive_data(definition) == []
    assert decoder.receive_data(value) == [("127.0.0.1:5000", b"hi")]
    assert decoder.receive_data(value + value) == [("127.0.0.1:5000", b"hi")] * 2


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (GO_EMPTY_PAYLOAD, [("1.2.3.4:5", b"")]),
        (GO_EMPTY_SRC, [("", b"x")]),
        (GO_BOTH_EMPTY, [("", b"")]),
        (GO_TWO, [("a:1", b"p1"), ("b:2", b"p2")]),
        (GO_BIG, [("h:1", b"\x07" * 300)]),
        (GO_ID_66, [("127.0.0.1:5000", b"hi")]),
        (GO_EXTRA_FIELDS, [("s:1", b"yo"), ("t:2", b"")]),
    ],
    ids=["empty-payload", "empty-src", "both-empty", "two", "big", "id-66", "extra-fields"],
)
def test_decoder_reads_go_streams_split_at_every_boundary(
    data: bytes, expected: list[tuple[str, bytes]]
) -> None:
    assert decode_all(data) == expected
    for cut in range(len(data) + 1):
        decoder = GobDecoder()
        assert decoder.receive_data(data[:cut]) + decoder.receive_data(data[cut:]) == expected
    decoder = GobDecoder()
    out: list[tuple[str, bytes]] = []
    for i in range(len(data)):
        out += decoder.receive_data(data[i : i + 1])
    assert out == expected


def test_decoder_accepts_fields_in_reverse_order() -> None:
    tid = 70
    value = encode_message(
        encode_int(tid) + b"\x01" + encode_bytes(b"data") + b"\x01" + encode_bytes(b"x:1") + b"\0"
    )
    stream = struct_def(tid, [("Payload", 5), ("Src", 6)]) + value
    assert decode_all(stream) == [("x:1", b"data")]


def test_decoder_ignores_unused_definitions() -> None:
    slice_def = encode_message(
        encode_int(-80) + b"\x02\x01\x01" + encode_bytes(b"[]int") + b"\x01" + encode_int(80)
        + b"\x00\x01" + encode_int(2) + b"\x00\x00"
    )  # fmt: skip
    definition, value = GO_DEFINITION, GO_TWO[len(GO_DEFINITION) :]
    assert decode_all(slice_def + definition + value) == [("a:1", b"p1"), ("b:2", b"p2")]


def test_message_exactly_at_the_limit_is_accepted() -> None:
    value = encode_value(65, "a", b"\x00" * 100)
    size = decode_uint(value, 0)[0]
    assert decode_all(GO_DEFINITION + value, max_message_size=size) == [("a", b"\x00" * 100)]


# ------------------------------------------------------------------ decoder: bad input


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (GO_TWO[len(GO_DEFINITION) :], "before its definition"),
        (b"\x00", "empty message"),
        (b"\x80", "out of range"),
        (b"\x02\x00\x00", "invalid type id 0"),
        (encode_message(encode_int(-5) + b"\x00"), "reserved"),
        (GO_DEFINITION + GO_DEFINITION, "duplicate"),
        (encode_message(GO_DEFINITION[1:] + b"\x00"), "extra data after type definition"),
        (encode_message(encode_int(-65) + b"\x00"), "empty wireType"),
        (encode_message(encode_int(-65) + b"\x08\x00"), "out of range for wireType"),
        (GO_DEFINITION + encode_message(encode_int(65) + b"\x03\x00"), "out of range"),
        (GO_DEFINITION + encode_message(encode_int(65) + b"\x01\x09abc\x00"), "past the end"),
        (GO_DEFINITION + encode_message(encode_int(65) + b"\x01\x01a\x00\x00"), "extra data"),
        (GO_DEFINITION + encode_message(encode_int(65) + b"\x01\x01a"), "truncated"),
        (struct_def(65, [("Src", 6)]) + encode_value(65, "a", b""), "Payload"),
        (struct_def(65, [("Src", 2), ("Payload", 5)]) + encode_value(65, "", b""), "Src"),
        (struct_def(65, [*UDP_FIELDS, ("X", 8)]), None),
        (struct_def(65, [*UDP_FIELDS, ("X", 8)]) + EMPTY_65, "interface"),
        (struct_def(65, [*UDP_FIELDS, ("X", 99)]) + EMPTY_65, "undefined"),
        (
            encode_message(encode_int(-66) + b"\x02\x01\x01" + encode_bytes(b"[]int") + b"\0\0\0")
            + encode_message(encode_int(66) + b"\x00"),
            "not a udpPacket",
        ),
        (encode_message(encode_int(6) + b"\x03abc"), "before its definition"),
    ],
)
def test_decoder_rejects_malformed_streams(data: bytes, reason: str | None) -> None:
    decoder = GobDecoder()
    if reason is None:  # a definition alone is fine; the problem shows when a value uses it
        assert decoder.receive_data(data) == []
        return
    with pytest.raises(GobError, match=reason):
        decoder.receive_data(data)


def test_oversize_message_is_rejected_from_its_length_prefix_alone() -> None:
    decoder = GobDecoder(max_message_size=1000)
    with pytest.raises(GobError, match="exceeds the limit of 1000"):
        decoder.receive_data(encode_uint(1001))  # no body needed to decide
    assert GobDecoder(max_message_size=43).receive_data(GO_DEFINITION[:1]) == []  # 43: waits
    with pytest.raises(GobError, match="exceeds"):
        decode_all(GO_DEFINITION, max_message_size=42)


def test_errors_are_sticky_and_are_protocol_errors() -> None:
    decoder = GobDecoder()
    with pytest.raises(ProtocolError):
        decoder.receive_data(b"\x00")
    with pytest.raises(GobError, match="empty message"):
        decoder.receive_data(GO_DEFINITION)


def test_nesting_is_bounded() -> None:
    # type 70 struct{Src; Payload; Next *T70}: a self-referential type, nested deeply.
    definition = struct_def(70, [("Src", 6), ("Payload", 5), ("Next", 70)])
    nested = b"\x03" * 40 + b"\x00" * 41
    with pytest.raises(GobError, match="nested too deeply"):
        decode_all(definition + encode_message(encode_int(70) + nested))
    ok = b"\x03" * 5 + b"\x00" * 6
    assert decode_all(definition + encode_message(encode_int(70) + ok)) == [("", b"")]


def test_decoder_rejects_bad_max() -> None:
    with pytest.raises(ValueError):
        GobDecoder(max_message_size=0)


# ------------------------------------------------------------------ properties

srcs = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)
packets = st.lists(st.tuples(srcs, st.binary(max_size=300)), max_size=12)


@given(packets, st.lists(st.integers(min_value=1, max_value=64), max_size=50), st.data())
def test_round_trip_with_random_chunking(
    items: list[tuple[str, bytes]], sizes: list[int], data: st.DataObject
) -> None:
    encoder = GobEncoder(type_id=data.draw(st.integers(min_value=64, max_value=5000)))
    stream = b"".join(encoder.encode(src, payload) for src, payload in items)
    decoder = GobDecoder()
    out: list[tuple[str, bytes]] = []
    pos = 0
    for size in sizes:
        out += decoder.receive_data(stream[pos : pos + size])
        pos += size
    out += decoder.receive_data(stream[pos:])
    assert out == items


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_gob_error(data: bytes) -> None:
    with contextlib.suppress(GobError):
        GobDecoder().receive_data(data)


@settings(max_examples=300)
@given(st.data())
def test_mutated_streams_raise_only_gob_error(data: st.DataObject) -> None:
    base = bytearray(data.draw(st.sampled_from([GO_TWO, GO_EXTRA_FIELDS, GO_BIG, GO_EMPTY_SRC])))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(min_value=0, max_value=max(len(base) - 1, 0)))
        if op == "flip" and base:
            base[pos] = data.draw(st.integers(min_value=0, max_value=255))
        elif op == "cut":
            del base[pos : pos + data.draw(st.integers(min_value=1, max_value=8))]
        else:
            base[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    decoder = GobDecoder(max_message_size=4096)
    with contextlib.suppress(GobError):
        for i in range(0, len(base), 7):
            decoder.receive_data(bytes(base[i : i + 7]))


def test_default_type_id_is_what_go_gives_the_first_user_type() -> None:
    assert DEFAULT_TYPE_ID == 65
