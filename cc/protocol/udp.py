"""Go ``encoding/gob`` stream codec for chisel's ``udpPacket{Src string; Payload []byte}``.

chisel carries UDP over an SSH channel by pointing a ``gob.Encoder`` and a
``gob.Decoder`` straight at the channel (``share/tunnel/udp.go``): there is no
framing of chisel's own, only gob's.  Each ``Encode`` call writes one or more
gob *messages*, each ``<uint length><int type id><body>``: first (once per
stream) the type definition, a ``wireType`` under the negated type id, then
the value under the positive id.

Gob integers are not LEB128 varints: an unsigned value below 128 is one byte;
otherwise a byte holding the negated byte count (1..8) precedes the big-endian
value.  A signed value ``i`` is sent as the unsigned ``i << 1`` (``i >= 0``) or
``(~i << 1) | 1`` (``i < 0``).  Struct fields are sent as *deltas* from the
previous field number; zero-valued fields are left out and a ``0`` delta ends
the struct.  ``[]byte`` and ``string`` are a uint byte count then the bytes.

The decoder is sans-I/O and streaming: feed it whatever the channel delivers
and it returns the complete packets.  It learns the struct's type id from the
peer's definition (Go numbers user types per process, so 65 is only typical),
matches fields by name as Go does, skips extra fields, and raises
:class:`GobError` (and nothing else) on anything malformed or oversized.

The per-datagram work is in ``cc.fastpath`` (``gob_*``; pass ``fastpath=`` to pick a
twin): values are encoded in one call, and values of a plain two-field udpPacket are
decoded in one call straight from the received bytes, the payload copied once.  Type
definitions and any other layout take the general path below, which also words the
error when the fast path refuses a message.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from cc import fastpath as _default_fastpath

from .errors import ProtocolError

__all__ = [
    "DEFAULT_TYPE_ID",
    "FIRST_USER_TYPE_ID",
    "MAX_UINT_BYTES",
    "GobDecoder",
    "GobEncoder",
    "GobError",
    "GobFastPath",
    "decode_bytes",
    "decode_int",
    "decode_uint",
    "encode_bytes",
    "encode_int",
    "encode_message",
    "encode_type_definition",
    "encode_uint",
    "encode_value",
]

Buf = bytes | bytearray | memoryview

#: Go reserves ids below 64 for its own types; user types are numbered from here up.
FIRST_USER_TYPE_ID = 64
#: The id Go gives the first user type a process encodes (chisel's only gob type).
DEFAULT_TYPE_ID = 65
#: A gob uint is at most 8 big-endian bytes after the count byte.
MAX_UINT_BYTES = 8

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_TYPE_ID_MAX = (1 << 31) - 1  # Go's typeId is an int32
_MAX_TYPES = 64  # definitions one stream may make; chisel makes one
_MAX_DEPTH = 32  # nesting bound while skipping unknown fields

# Go's predefined type ids (encoding/gob/type.go).
_T_BOOL, _T_INT, _T_UINT, _T_FLOAT, _T_BYTES, _T_STRING, _T_COMPLEX, _T_INTERFACE = range(1, 9)


class GobError(ProtocolError):
    """The gob stream is malformed, oversized or not a udpPacket stream; it cannot resync."""


class GobFastPath(Protocol):
    """The ``gob_*`` subset of ``cc.fastpath``; both twins satisfy it."""

    def gob_decode_uint(self, buf: Buf, pos: int) -> tuple[int, int]:
        """Decode one gob uint; ValueError if malformed or cut short."""
        ...

    def gob_encode_value(self, type_id: int, src: Buf, payload: Buf) -> bytes:
        """Encode one whole udpPacket value message."""
        ...

    def gob_decode_value(
        self,
        body: Buf,
        type_id: int,
        src_field: int,
        payload_field: int,
        start: int = 0,
        end: int | None = None,
    ) -> tuple[bytes, bytes]:
        """Decode a plain two-field udpPacket value; ValueError on anything else."""
        ...


# --------------------------------------------------------------------------- primitives


def encode_uint(value: int) -> bytes:
    """Encode a gob unsigned integer (not LEB128: a count byte, then big-endian)."""
    return _default_fastpath.gob_encode_uint(value)


def decode_uint(buf: Buf, pos: int) -> tuple[int, int]:
    """Decode a gob uint at ``pos``; return ``(value, next_pos)``, GobError if bad/short."""
    try:
        return _default_fastpath.gob_decode_uint(buf, pos)
    except ValueError as exc:
        raise GobError(str(exc)) from None


def encode_int(value: int) -> bytes:
    """Encode a gob signed integer: the sign goes to bit 0 so small magnitudes stay short."""
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"gob int out of range: {value}")
    return encode_uint(((~value) << 1) | 1 if value < 0 else value << 1)


def decode_int(buf: Buf, pos: int) -> tuple[int, int]:
    """Decode a gob signed integer at ``pos``; return ``(value, next_pos)``."""
    raw, pos = decode_uint(buf, pos)
    return (~(raw >> 1) if raw & 1 else raw >> 1), pos


def encode_bytes(data: Buf) -> bytes:
    """Encode a ``[]byte`` or ``string``: a uint byte count, then the bytes."""
    return encode_uint(len(data)) + bytes(data)


def decode_bytes(buf: Buf, pos: int) -> tuple[bytes, int]:
    """Decode a count-prefixed byte string; the count may not run past the message."""
    count, pos = decode_uint(buf, pos)
    end = pos + count
    if end > len(buf):
        raise GobError(f"byte string of {count} bytes runs past the end of the message")
    return bytes(buf[pos:end]), end


def encode_message(body: bytes) -> bytes:
    """Prefix a message (type id + body) with its gob uint length, as Encoder.writeMessage does."""
    return encode_uint(len(body)) + body


def encode_type_definition(type_id: int = DEFAULT_TYPE_ID, name: str = "udpPacket") -> bytes:
    """The message defining ``struct{Src string; Payload []byte}`` under ``type_id``.

    A ``wireType`` whose field 2 (``StructT``) is ``structType{CommonType{Name,
    Id}, Field: [{"Src", string}, {"Payload", []byte}]}``: byte-for-byte what Go
    sends before the first value.
    """
    if not FIRST_USER_TYPE_ID <= type_id <= _TYPE_ID_MAX:
        raise ValueError(f"type id {type_id} is not a user type id")
    common = b"\x01" + encode_bytes(name.encode()) + b"\x01" + encode_int(type_id) + b"\x00"
    fields = (
        encode_uint(2)
        + b"\x01" + encode_bytes(b"Src") + b"\x01" + encode_int(_T_STRING) + b"\x00"
        + b"\x01" + encode_bytes(b"Payload") + b"\x01" + encode_int(_T_BYTES) + b"\x00"
    )  # fmt: skip
    struct_type = b"\x01" + common + b"\x01" + fields + b"\x00"
    wire_type = b"\x03" + struct_type + b"\x00"  # delta 3: field 2, StructT
    return encode_message(encode_int(-type_id) + wire_type)


def encode_value(type_id: int, src: str, payload: Buf) -> bytes:
    """One udpPacket value message; empty fields are omitted as Go omits zero values.

    ``type_id`` must be a positive int32 (ValueError otherwise), as Go's type ids are.
    """
    if not 0 < type_id <= _TYPE_ID_MAX:
        raise ValueError(f"type id {type_id} out of range for a value")
    return _default_fastpath.gob_encode_value(type_id, _src_bytes(src), payload)


def _src_bytes(src: str) -> bytes:
    """Src as sent: UTF-8, with undecodable bytes a peer sent us passed back unchanged."""
    return src.encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- encoder


class GobEncoder:
    """One direction of a chisel UDP channel: a definition on first use, then values."""

    def __init__(
        self,
        type_id: int = DEFAULT_TYPE_ID,
        type_name: str = "udpPacket",
        *,
        fastpath: GobFastPath | None = None,
    ) -> None:
        self._type_id = type_id
        self._definition = encode_type_definition(type_id, type_name)
        self._sent_definition = False
        self._fastpath: GobFastPath = _default_fastpath if fastpath is None else fastpath

    def encode(self, src: str, payload: Buf) -> bytes:
        """Bytes to write for one datagram; the first call also carries the type definition."""
        value = self._fastpath.gob_encode_value(self._type_id, _src_bytes(src), payload)
        if self._sent_definition:
            return value
        self._sent_definition = True
        return self._definition + value


# --------------------------------------------------------------------------- decoder


class _Kind(enum.Enum):
    ARRAY = "array"
    SLICE = "slice"
    STRUCT = "struct"
    MAP = "map"
    GOB_ENCODER = "GobEncoder"


@dataclass(frozen=True, slots=True)
class _WireType:
    kind: _Kind
    name: str
    elem: int = 0
    key: int = 0
    length: int = 0
    fields: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class _Plan:
    src_field: int
    payload_field: int
    field_types: tuple[int, ...]


class _Reader:
    """Cursor over one complete message; every read is bounds-checked."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def read_uint(self) -> int:
        value, self.pos = decode_uint(self.buf, self.pos)
        return value

    def read_int(self) -> int:
        value, self.pos = decode_int(self.buf, self.pos)
        return value

    def read_bytes(self) -> bytes:
        value, self.pos = decode_bytes(self.buf, self.pos)
        return value

    def read_string(self) -> str:
        return self.read_bytes().decode("utf-8", "surrogateescape")

    def read_type_id(self) -> int:
        value = self.read_int()
        if not 0 < value <= _TYPE_ID_MAX:
            raise GobError(f"type id {value} out of range")
        return value

    def count(self, what: str) -> int:
        """An element count; each element takes at least one byte, which bounds it."""
        value = self.read_uint()
        if value > len(self.buf) - self.pos:
            raise GobError(f"{what} count {value} exceeds the message")
        return value

    def remaining(self) -> int:
        return len(self.buf) - self.pos


def _fields(r: _Reader, count: int, what: str) -> Iterator[int]:
    """Walk a struct's field deltas, yielding field numbers, until the 0 terminator."""
    field = -1
    while True:
        delta = r.read_uint()
        if delta == 0:
            return
        field += delta
        if field >= count:
            raise GobError(f"field number {field} out of range for {what}")
        yield field


def _read_common(r: _Reader) -> str:
    name = ""
    for field in _fields(r, 2, "CommonType"):
        if field == 0:
            name = r.read_string()
        else:
            r.read_int()  # CommonType.Id: Go does not check it against the message's id either
    return name


def _read_field_type(r: _Reader) -> tuple[str, int]:
    name, tid = "", 0
    for field in _fields(r, 2, "fieldType"):
        if field == 0:
            name = r.read_string()
        else:
            tid = r.read_type_id()
    return name, tid


def _read_wire_type(r: _Reader) -> _WireType:
    """Decode Go's ``wireType`` union (exactly one member set)."""
    result: _WireType | None = None
    for member in _fields(r, 7, "wireType"):
        if result is not None:
            raise GobError("wireType defines more than one kind")
        name, elem, key, length = "", 0, 0, 0
        fields: list[tuple[str, int]] = []
        if member == 0:  # ArrayT: {CommonType; Elem typeId; Len int}
            kind = _Kind.ARRAY
            for field in _fields(r, 3, "arrayType"):
                if field == 0:
                    name = _read_common(r)
                elif field == 1:
                    elem = r.read_type_id()
                else:
                    length = r.read_int()
        elif member == 1:  # SliceT: {CommonType; Elem typeId}
            kind = _Kind.SLICE
            for field in _fields(r, 2, "sliceType"):
                if field == 0:
                    name = _read_common(r)
                else:
                    elem = r.read_type_id()
        elif member == 2:  # StructT: {CommonType; Field []fieldType}
            kind = _Kind.STRUCT
            for field in _fields(r, 2, "structType"):
                if field == 0:
                    name = _read_common(r)
                else:
                    fields = [_read_field_type(r) for _ in range(r.count("struct field"))]
        elif member == 3:  # MapT: {CommonType; Key typeId; Elem typeId}
            kind = _Kind.MAP
            for field in _fields(r, 3, "mapType"):
                if field == 0:
                    name = _read_common(r)
                elif field == 1:
                    key = r.read_type_id()
                else:
                    elem = r.read_type_id()
        else:  # GobEncoderT / BinaryMarshalerT / TextMarshalerT: {CommonType}
            kind = _Kind.GOB_ENCODER
            for _ in _fields(r, 1, "gobEncoderType"):
                name = _read_common(r)
        if length < 0:
            raise GobError(f"array type {name!r} has negative length {length}")
        result = _WireType(kind, name, elem, key, length, tuple(fields))
    if result is None:
        raise GobError("empty wireType in type definition")
    return result


class GobDecoder:
    """Streaming decoder: bytes in, ``(src, payload)`` tuples out.

    Errors are sticky: after a :class:`GobError` the stream has lost sync, so
    every later call raises it again and the caller should close the channel.
    Packets completed in the same call before the error are dropped with it,
    which UDP tolerates.
    """

    def __init__(
        self, max_message_size: int = 64 * 1024, *, fastpath: GobFastPath | None = None
    ) -> None:
        if max_message_size < 1:
            raise ValueError("max_message_size must be positive")
        self._max = max_message_size
        self._fastpath: GobFastPath = _default_fastpath if fastpath is None else fastpath
        self._buf = bytearray()  # an incomplete message, kept between calls
        self._types: dict[int, _WireType] = {}
        self._plans: dict[int, _Plan] = {}
        #: (type id, Src field, Payload field) of the last plain udpPacket value seen.
        self._fast: tuple[int, int, int] | None = None
        self._error: GobError | None = None

    def receive_data(self, data: Buf) -> list[tuple[str, bytes]]:
        """Feed bytes from the channel; return every packet they complete, in order."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        source: bytes | bytearray
        if not buf and isinstance(data, bytes | bytearray):
            source = data  # decode in place: nothing is copied in
        else:
            buf += data
            source = buf
        packets: list[tuple[str, bytes]] = []
        pos = 0
        try:
            while (span := self._frame(source, pos)) is not None:
                start, pos = span
                packet = self._message(source, start, pos)
                if packet is not None:
                    packets.append(packet)
        except GobError as exc:
            self._error = exc
            buf.clear()
            raise
        if source is buf:
            del buf[:pos]
        elif pos < len(source):
            buf += memoryview(source)[pos:]
        return packets

    def _frame(self, buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
        """Find the message at ``buf[pos]``: ``(body start, end)``, or None until complete.

        The size is checked as soon as the length prefix is in, before any body arrives.
        """
        avail = len(buf) - pos
        if avail <= 0:
            return None
        first = buf[pos]
        prefix = 1 if first < 0x80 else 257 - first
        if prefix - 1 > MAX_UINT_BYTES:
            raise GobError(f"message length with {prefix - 1} bytes is out of range")
        if avail < prefix:
            return None
        size, start = self._fastpath.gob_decode_uint(buf, pos)  # complete and in range: cannot fail
        if size == 0:
            raise GobError("empty message")
        if size > self._max:
            raise GobError(f"message of {size} bytes exceeds the limit of {self._max}")
        end = start + size
        return (start, end) if end <= len(buf) else None

    def _message(self, buf: bytes | bytearray, start: int, end: int) -> tuple[str, bytes] | None:
        """Decode the message ``buf[start:end]``: the fast path first, else the general one."""
        if self._fast is not None:
            tid, src_field, payload_field = self._fast
            try:
                src, payload = self._fastpath.gob_decode_value(
                    buf, tid, src_field, payload_field, start, end
                )
            except ValueError:
                pass  # a definition, another type or layout, or garbage: the general path words it
            else:
                return src.decode("utf-8", "surrogateescape"), payload
        return self._handle(bytes(buf[start:end]))

    def _handle(self, message: bytes) -> tuple[str, bytes] | None:
        r = _Reader(message)
        tid = r.read_int()
        if tid < 0:
            self._define(-tid, r)
            return None
        if tid == 0 or tid > _TYPE_ID_MAX:
            raise GobError(f"value with invalid type id {tid}")
        plan = self._plan(tid)
        if len(plan.field_types) == 2:  # Src and Payload only: the fast path's layout
            self._fast = (tid, plan.src_field, plan.payload_field)
        return self._decode_value(plan, r)

    def _define(self, tid: int, r: _Reader) -> None:
        if not FIRST_USER_TYPE_ID <= tid <= _TYPE_ID_MAX:
            raise GobError(f"definition of reserved or invalid type id {tid}")
        if tid in self._types:
            raise GobError(f"duplicate definition of type id {tid}")
        if len(self._types) >= _MAX_TYPES:
            raise GobError(f"more than {_MAX_TYPES} type definitions")
        wire = _read_wire_type(r)
        if r.remaining():
            raise GobError("extra data after type definition")
        self._types[tid] = wire

    def _plan(self, tid: int) -> _Plan:
        """Match the peer's struct to udpPacket by field name, as Go's decoder does."""
        plan = self._plans.get(tid)
        if plan is not None:
            return plan
        wire = self._types.get(tid)
        if wire is None:
            raise GobError(f"value of type id {tid} arrived before its definition")
        if wire.kind is not _Kind.STRUCT:
            raise GobError(f"type id {tid} is a {wire.kind.value}, not a udpPacket struct")
        names = [name for name, _ in wire.fields]
        wanted = {"Src": _T_STRING, "Payload": _T_BYTES}
        index: dict[str, int] = {}
        for field_name, want in wanted.items():
            if names.count(field_name) != 1:
                raise GobError(f"struct {wire.name!r} needs exactly one {field_name} field")
            index[field_name] = names.index(field_name)
            got = wire.fields[index[field_name]][1]
            if got != want:
                raise GobError(f"struct {wire.name!r} field {field_name} has type id {got}")
        for _, field_tid in wire.fields:
            self._check_skippable(field_tid, set())
        plan = _Plan(index["Src"], index["Payload"], tuple(t for _, t in wire.fields))
        self._plans[tid] = plan
        return plan

    def _check_skippable(self, tid: int, seen: set[int]) -> None:
        """Reject field types we could not skip before any value depends on them."""
        if tid in seen or _T_BOOL <= tid <= _T_COMPLEX:
            return
        if tid == _T_INTERFACE:
            raise GobError("interface-typed fields are not supported")
        wire = self._types.get(tid)
        if wire is None:
            raise GobError(f"field of undefined type id {tid}")
        seen.add(tid)
        if wire.kind in (_Kind.ARRAY, _Kind.SLICE):
            self._check_skippable(wire.elem, seen)
        elif wire.kind is _Kind.MAP:
            self._check_skippable(wire.key, seen)
            self._check_skippable(wire.elem, seen)
        elif wire.kind is _Kind.STRUCT:
            for _, field_tid in wire.fields:
                self._check_skippable(field_tid, seen)

    def _decode_value(self, plan: _Plan, r: _Reader) -> tuple[str, bytes]:
        src, payload = "", b""
        for field in _fields(r, len(plan.field_types), "udpPacket"):
            if field == plan.src_field:
                src = r.read_string()
            elif field == plan.payload_field:
                payload = r.read_bytes()
            else:
                self._skip(plan.field_types[field], r, 0)
        if r.remaining():
            raise GobError("extra data after udpPacket value")
        return src, payload

    def _skip(self, tid: int, r: _Reader, depth: int) -> None:
        """Consume one encoded value of type ``tid`` that udpPacket has no use for."""
        if depth > _MAX_DEPTH:
            raise GobError("value nested too deeply")
        if tid in (_T_BOOL, _T_INT, _T_UINT, _T_FLOAT):
            r.read_uint()
        elif tid in (_T_BYTES, _T_STRING):
            r.read_bytes()
        elif tid == _T_COMPLEX:
            r.read_uint()
            r.read_uint()
        else:
            wire = self._types.get(tid)
            if wire is None:
                raise GobError(f"cannot skip a value of type id {tid}")
            if wire.kind is _Kind.GOB_ENCODER:
                r.read_bytes()
            elif wire.kind is _Kind.STRUCT:
                for field in _fields(r, len(wire.fields), wire.name or "struct"):
                    self._skip(wire.fields[field][1], r, depth + 1)
            elif wire.kind is _Kind.MAP:
                for _ in range(r.count("map entry")):
                    self._skip(wire.key, r, depth + 1)
                    self._skip(wire.elem, r, depth + 1)
            else:
                count = r.count("element")
                if wire.kind is _Kind.ARRAY and count != wire.length:
                    raise GobError(f"array of length {wire.length} sent with {count} elements")
                for _ in range(count):
                    self._skip(wire.elem, r, depth + 1)
