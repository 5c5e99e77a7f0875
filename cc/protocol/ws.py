"""Sans-I/O WebSocket framing for an established connection (after the HTTP upgrade).

chisel carries the SSH byte stream in WebSocket binary messages and treats them as one
stream, so this layer does not reassemble messages: ``receive_data`` hands back payload
bytes as soon as they arrive (a large frame comes out in pieces), answers pings, and
records the close handshake. Everything is bounded: a frame announcing more than
``max_frame_size`` is refused from its header (close code 1009) before any payload is
buffered, only a header or one control frame (<= 139 bytes) is ever held back, and at
most one unanswered pong is queued (RFC 6455 section 5.5.3 allows answering only the
latest ping), so a peer cannot grow our memory before or after authentication.

Masking is checked strictly per RFC 6455 section 5.1: a server refuses unmasked frames
and a client refuses masked ones. Go peers (gorilla/websocket, which chisel uses) follow
the RFC in both directions, so strictness costs no interoperability.

Text frames are passed through as bytes, because chisel reads every data frame as
part of one byte stream whatever its type; but their UTF-8 is checked as it
arrives (RFC 6455 section 8.1), so a peer sending invalid text is failed at once
with close code 1007 instead of feeding garbage to the SSH layer.

The byte crunching (header parse, masking, frame encoding) is in ``cc.fastpath``; pass
``fastpath=`` to run against a specific twin (the tests run both).
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable
from enum import IntEnum
from typing import Protocol, cast

from cc import fastpath as _default_fastpath
from cc.fastpath import FIN, RSV_MASK, BytesLike
from cc.protocol.errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "MASK_KEYS",
    "MAX_CONTROL_PAYLOAD",
    "CloseCode",
    "EntropyPool",
    "FastPath",
    "Opcode",
    "WebSocketClosedError",
    "WebSocketError",
    "WebSocketStream",
]

#: Default bound on one frame's payload: chisel peers write 32 KiB SSH packets.
DEFAULT_MAX_FRAME_SIZE = 1 << 20
#: RFC 6455 section 5.5: control frame payloads are at most 125 bytes.
MAX_CONTROL_PAYLOAD = 125


class Opcode(IntEnum):
    """Frame opcodes of RFC 6455 section 5.2; others are reserved and refused."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(IntEnum):
    """Close status codes of RFC 6455 section 7.4.1 (and the IANA registry)."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005  # never on the wire: "the close frame had no payload"
    ABNORMAL_CLOSURE = 1006  # never on the wire: "the connection dropped without a close"
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never on the wire


_VALID_OPCODES = frozenset(int(op) for op in Opcode)
_CONTROL_BIT = 0x8


def _is_valid_wire_code(code: int) -> bool:
    """True for close codes a peer may put in a close frame (RFC 6455 section 7.4)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class WebSocketError(ProtocolError):
    """The peer broke RFC 6455; ``code`` is the close code to fail the connection with."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(f"{reason} (close code {int(code)})")
        self.code = code
        self.reason = reason


class WebSocketClosedError(RuntimeError):
    """We were asked to send after our close frame; RFC 6455 forbids it (section 5.5.1).

    This is our own state, not bad input, so it is not a ProtocolError.
    """


class FastPath(Protocol):
    """The subset of ``cc.fastpath`` this module uses; both twins satisfy it."""

    def apply_mask(self, data: BytesLike, mask: BytesLike) -> bytes:
        """XOR with a 4-byte key into new bytes."""
        ...

    def parse_header(
        self, buf: BytesLike, offset: int
    ) -> tuple[int, int, bool, bytes | None, int, int] | None:
        """Parse one frame header, or None when incomplete."""
        ...

    def encode_frame(
        self, opcode: int, payload: BytesLike, mask_key: BytesLike | None, fin: bool = True
    ) -> bytes:
        """Encode one whole frame."""
        ...

    def apply_mask_inplace(
        self, buf: bytearray | memoryview, mask: BytesLike, start: int = 0, end: int | None = None
    ) -> None:
        """XOR ``buf[start:end]`` with a 4-byte key in place."""
        ...

    def encode_header(
        self, opcode: int, payload_length: int, mask_key: BytesLike | None, fin: bool = True
    ) -> bytes:
        """Encode one frame header."""
        ...


def _rotate(mask: bytes, shift: int) -> bytes:
    """Rotate a mask so that ``result[0]`` applies to payload byte ``shift`` of the frame."""
    shift &= 3
    return mask[shift:] + mask[:shift] if shift else mask


class EntropyPool:
    """``os.urandom`` read 4 KiB at a time: a client's masking key per frame without a syscall.

    A client masks every frame it sends (RFC 6455 section 5.3), so each small SSH
    packet cost a ``getrandom`` call.  The keys still come from the OS's CSPRNG;
    a forked child starts with an empty pool, so no two processes share keys.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._buf = b""
        self._pos = 0
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._buf = b""
        self._pos = 0

    def __call__(self, n: int) -> bytes:
        pos = self._pos
        if pos + n > len(self._buf):
            self._buf = os.urandom(max(self._size, n))
            pos = 0
        self._pos = pos + n
        return self._buf[pos : pos + n]


#: Where masking keys come from unless a stream is given its own source.
MASK_KEYS = EntropyPool()


class WebSocketStream:
    """One side of an established WebSocket, as a pure state machine.

    Feed socket bytes to ``receive_data`` (payload bytes out), write what ``send_*`` and
    ``data_to_send`` return. After ``WebSocketError`` the stream is failed: a close frame
    with the error's code waits in ``data_to_send()``, and every later call raises again.
    """

    def __init__(
        self,
        *,
        is_client: bool,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        mask_key_source: Callable[[int], bytes] = MASK_KEYS,
        fastpath: FastPath | None = None,
    ) -> None:
        if max_frame_size < 1:
            raise ValueError("max_frame_size must be positive")
        self.is_client = is_client
        self.max_frame_size = max_frame_size
        self._mask_key_source = mask_key_source
        self._fastpath: FastPath = _default_fastpath if fastpath is None else fastpath
        #: True once the peer's close frame has arrived; later bytes are an error.
        self.closed = False
        #: True once our close frame has been produced (by ``send_close`` or as an echo).
        self.close_sent = False
        #: The peer's close code (1005 when its close frame was empty), else None.
        self.close_code: int | None = None
        self.close_reason = ""
        #: Payload of the most recent pong and how many pongs arrived (keepalive checks).
        self.last_pong: bytes | None = None
        self.pongs_received = 0
        self._buf = bytearray()  # an incomplete header or control frame, never payload
        self._remaining = 0  # payload bytes still to come of the current data frame
        self._mask: bytes | None = None  # its mask, rotated to the next byte's phase
        self._in_message = False  # a fragmented message awaits continuation frames
        #: checks the UTF-8 of the text message being received (None: binary or none)
        self._text: codecs.IncrementalDecoder | None = None
        self._pending_pong: bytes | None = None
        self._pending_close: bytes | None = None
        self._error: WebSocketError | None = None

    # --- receiving ----------------------------------------------------------------

    def receive_data(self, data: BytesLike) -> list[bytes]:
        """Consume bytes from the socket; return the data-frame payload bytes they carry.

        Payloads of binary, text and continuation frames come out in order, split at
        whatever boundaries the socket produced (empty pieces are dropped); join them to
        get the stream. Control replies are queued for ``data_to_send``.
        """
        if self._error is not None:
            raise WebSocketError(self._error.code, self._error.reason)
        if not len(data):
            return []
        try:
            if self.closed:
                raise WebSocketError(CloseCode.PROTOCOL_ERROR, "data after the close frame")
            return cast("list[bytes]", self._receive(data, False))  # no views: all bytes
        except WebSocketError as exc:
            self._fail(exc)
            raise

    def receive_views(self, data: bytearray | memoryview) -> list[BytesLike]:
        """``receive_data`` for a writable receive buffer, without copying payloads.

        The payload pieces are views of ``data`` itself (unmasked in place when the
        peer masks), so they are valid only until the caller reuses ``data``: a caller
        that keeps a piece copies it.  Only while an incomplete header from the previous
        read is held back do pieces come out as copies.
        """
        if self._error is not None:
            raise WebSocketError(self._error.code, self._error.reason)
        if not len(data):
            return []
        try:
            if self.closed:
                raise WebSocketError(CloseCode.PROTOCOL_ERROR, "data after the close frame")
            return self._receive(data, True)
        except WebSocketError as exc:
            self._fail(exc)
            raise

    def _receive(self, data: BytesLike, in_place: bool) -> list[BytesLike]:
        """Parse as many frames as ``data`` (after any held-back bytes) completes.

        ``in_place``: payload pieces are views of ``data`` (unmasked in place), not copies.
        """
        fastpath = self._fastpath
        out: list[BytesLike] = []
        buf = self._buf
        src: BytesLike
        if buf:
            buf += data
            src = buf
        else:
            src = data
        pos = 0
        # No slice of the held-back buffer may outlive this block: it is resized after
        # it (slices of the caller's ``data`` may: ``receive_views``).
        with memoryview(src) as view:
            size = view.nbytes
            while pos < size:
                if self._remaining:
                    n = min(self._remaining, size - pos)
                    mask = self._mask
                    if in_place and src is data:
                        if mask is not None:
                            fastpath.apply_mask_inplace(view, mask, pos, pos + n)
                            self._mask = _rotate(mask, n)
                        out.append(view[pos : pos + n])
                    elif mask is not None:
                        out.append(fastpath.apply_mask(view[pos : pos + n], mask))
                        self._mask = _rotate(mask, n)
                    elif n == size and type(src) is bytes:
                        out.append(src)  # the whole chunk is payload: no copy at all
                    else:
                        out.append(bytes(view[pos : pos + n]))
                    pos += n
                    self._remaining -= n
                    if self._text is not None:
                        self._check_text(out[-1])
                    continue
                try:
                    header = fastpath.parse_header(view, pos)
                except ValueError as exc:
                    raise WebSocketError(CloseCode.PROTOCOL_ERROR, str(exc)) from None
                if header is None:
                    break
                flags, opcode, _masked, mask_key, length, header_length = header
                self._check_header(flags, opcode, mask_key, length)
                start = pos + header_length
                if opcode & _CONTROL_BIT:
                    end = start + length
                    if end > size:
                        break  # wait for the whole (<= 125 byte) control frame
                    if mask_key is not None:
                        payload = fastpath.apply_mask(view[start:end], mask_key)
                    else:
                        payload = bytes(view[start:end])
                    pos = end
                    self._on_control(opcode, payload)
                    if self.closed and pos < size:
                        raise WebSocketError(CloseCode.PROTOCOL_ERROR, "data after the close frame")
                    continue
                if (opcode == Opcode.CONT) != self._in_message:
                    raise WebSocketError(
                        CloseCode.PROTOCOL_ERROR,
                        "continuation frame outside a fragmented message"
                        if opcode == Opcode.CONT
                        else "new data frame inside a fragmented message",
                    )
                self._in_message = not flags & FIN
                self._remaining = length
                self._mask = mask_key
                pos = start
                if opcode == Opcode.TEXT:
                    self._text = _utf8_decoder()
                if self._text is not None and not length:
                    self._check_text(b"")
            if src is not buf and pos < size:
                self._buf = bytearray(view[pos:])  # hold back the incomplete frame
        if src is buf and pos:
            del buf[:pos]  # O(1) in CPython: bytearray just moves its start pointer
        return out

    def _check_text(self, piece: BytesLike) -> None:
        """Validate the next piece of a text message; at its very end, that nothing dangles."""
        assert self._text is not None
        final = not self._remaining and not self._in_message
        try:
            self._text.decode(piece, final)
        except UnicodeDecodeError:
            raise WebSocketError(CloseCode.INVALID_DATA, "text frame is not valid UTF-8") from None
        if final:
            self._text = None

    def _check_header(self, flags: int, opcode: int, mask_key: bytes | None, length: int) -> None:
        """Refuse a frame from its header alone, before buffering any of its payload."""
        if flags & RSV_MASK:
            raise WebSocketError(CloseCode.PROTOCOL_ERROR, "RSV bits set without an extension")
        if opcode not in _VALID_OPCODES:
            raise WebSocketError(CloseCode.PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
        if self.is_client and mask_key is not None:
            raise WebSocketError(CloseCode.PROTOCOL_ERROR, "masked frame from the server")
        if not self.is_client and mask_key is None:
            raise WebSocketError(CloseCode.PROTOCOL_ERROR, "unmasked frame from the client")
        if opcode & _CONTROL_BIT:
            if length > MAX_CONTROL_PAYLOAD:
                raise WebSocketError(CloseCode.PROTOCOL_ERROR, "control frame over 125 bytes")
            if not flags & FIN:
                raise WebSocketError(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
        elif length > self.max_frame_size:
            raise WebSocketError(
                CloseCode.MESSAGE_TOO_BIG,
                f"frame of {length} bytes exceeds the limit of {self.max_frame_size}",
            )

    def _on_control(self, opcode: int, payload: bytes) -> None:
        """Answer a ping, record a pong, or complete the close handshake."""
        if opcode == Opcode.PING:
            if not self.close_sent:
                self._pending_pong = self._encode(Opcode.PONG, payload)
        elif opcode == Opcode.PONG:
            self.last_pong = payload
            self.pongs_received += 1
        else:
            code, reason = _parse_close(payload)
            self.closed = True
            self.close_code = code
            self.close_reason = reason
            if not self.close_sent:
                self.close_sent = True
                echo = payload[:2]  # RFC 6455 5.5.1: echo the status code (or nothing)
                self._pending_close = self._encode(Opcode.CLOSE, echo)

    def _fail(self, exc: WebSocketError) -> None:
        """Enter the failed state and queue a close frame carrying the error's code."""
        self._error = exc
        self._buf = bytearray()
        if not self.close_sent:
            self.close_sent = True
            self._pending_pong = None
            self._pending_close = self._encode(Opcode.CLOSE, _close_payload(exc.code, exc.reason))

    # --- sending ------------------------------------------------------------------

    def _encode(self, opcode: int, payload: BytesLike) -> bytes:
        """Encode one final frame, masked with a fresh key when we are the client."""
        key = self._mask_key_source(4) if self.is_client else None
        return self._fastpath.encode_frame(opcode, payload, key)

    def send_binary(self, payload: BytesLike) -> bytes:
        """Return the wire bytes of ``payload`` as one binary frame.

        A payload larger than ``max_frame_size`` becomes several complete binary frames,
        so a peer with the same limit accepts them; the stream reads the same.
        """
        if self.close_sent:
            raise WebSocketClosedError("cannot send data after the close frame")
        with memoryview(payload) as view:
            size = view.nbytes
            limit = self.max_frame_size
            if size <= limit:
                return self._encode(Opcode.BINARY, view)
            return b"".join(
                [self._encode(Opcode.BINARY, view[i : i + limit]) for i in range(0, size, limit)]
            )

    def frame_in_place(self, payload: bytearray | memoryview) -> bytes:
        """The header of one binary frame carrying ``payload``, masking it in place.

        For a sender that writes the header and the payload separately (``writelines``)
        instead of copying both into one frame: ``payload`` must be writable, since a
        client masks it here, and at most ``max_frame_size`` bytes.
        """
        if self.close_sent:
            raise WebSocketClosedError("cannot send data after the close frame")
        size = memoryview(payload).nbytes
        if size > self.max_frame_size:
            raise ValueError("payload over max_frame_size: use send_binary")
        key = self._mask_key_source(4) if self.is_client else None
        if key is not None:
            self._fastpath.apply_mask_inplace(payload, key)
        return self._fastpath.encode_header(Opcode.BINARY, size, key)

    def send_text(self, text: str) -> bytes:
        """Return the wire bytes of ``text`` as one text frame (WebRoute's notifications)."""
        if self.close_sent:
            raise WebSocketClosedError("cannot send data after the close frame")
        return self._encode(Opcode.TEXT, text.encode())

    def send_ping(self, payload: BytesLike = b"") -> bytes:
        """Return a ping frame; the peer's pong shows up in ``last_pong``/``pongs_received``."""
        if self.close_sent:
            raise WebSocketClosedError("cannot ping after the close frame")
        if memoryview(payload).nbytes > MAX_CONTROL_PAYLOAD:
            raise ValueError("ping payload over 125 bytes")
        return self._encode(Opcode.PING, payload)

    def send_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> bytes:
        """Start the close handshake; return the close frame to write.

        If a close frame was already produced, return b"" - or, when that frame (an echo
        or the one failing the connection) still waits in ``data_to_send``, return it, so a
        caller that closes after an error sends the right code without draining first.
        ``CloseCode.NO_STATUS_RCVD`` sends an empty close frame (no code, no reason).
        """
        if code == CloseCode.NO_STATUS_RCVD:
            if reason:
                raise ValueError("a close frame without a code cannot carry a reason")
            payload = b""
        else:
            if not _is_valid_wire_code(code):
                raise ValueError(f"close code {code} may not be sent")
            payload = code.to_bytes(2, "big") + reason.encode()
            if len(payload) > MAX_CONTROL_PAYLOAD:
                raise ValueError("close reason over 123 bytes of UTF-8")
        if self.close_sent:
            queued, self._pending_close = self._pending_close, None
            self._pending_pong = None
            return queued or b""
        self.close_sent = True
        self._pending_pong = None  # nothing may follow our close frame
        return self._encode(Opcode.CLOSE, payload)

    def data_to_send(self) -> bytes:
        """Drain the control frames queued by ``receive_data`` (pong, close echo)."""
        out = b""
        if self._pending_pong is not None:
            out = self._pending_pong
            self._pending_pong = None
        if self._pending_close is not None:
            out += self._pending_close
            self._pending_close = None
        return out


def _utf8_decoder() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")("strict")


def _close_payload(code: CloseCode, reason: str) -> bytes:
    """Encode a close payload, cutting the reason to fit a control frame."""
    raw = reason.encode()[: MAX_CONTROL_PAYLOAD - 2]
    return code.to_bytes(2, "big") + raw.decode(errors="ignore").encode()


def _parse_close(payload: bytes) -> tuple[int, str]:
    """Decode a received close payload into (code, reason), refusing what RFC 6455 does."""
    if not payload:
        return CloseCode.NO_STATUS_RCVD, ""
    if len(payload) == 1:
        raise WebSocketError(CloseCode.PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if not _is_valid_wire_code(code):
        raise WebSocketError(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise WebSocketError(CloseCode.INVALID_DATA, "close reason is not UTF-8") from None
    return code, reason
