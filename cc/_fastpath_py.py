"""Pure-Python twin of ``cc._fastpath``: the same API and behaviour, no compiler needed.

It exists so that every platform (PyPy, no C compiler, ``CC_NO_EXTENSIONS=1``) gets a
working tunnel, and so the tests can hold the Cython module to a readable reference.
Keep both modules in lock step: the test suite runs every case against each of them and
checks with Hypothesis that they agree on random input.

WebSocket frame header layout (RFC 6455 section 5.2)::

    byte 0: FIN(0x80) RSV1(0x40) RSV2(0x20) RSV3(0x10) opcode(0x0F)
    byte 1: MASK(0x80) payload length (7 bits: 0-125, 126 => 16-bit, 127 => 64-bit)
    then the extended length (big endian), then the 4-byte masking key when MASK is set.

Go ``encoding/gob`` value message of chisel's ``udpPacket{Src string; Payload []byte}``
(``cc/protocol/udp.py`` has the whole codec; only the per-datagram part is here)::

    uint(length of the rest)  int(type id)  [delta Src: uint(n) bytes]
    [delta Payload: uint(n) bytes]  0

A gob uint below 128 is one byte, else a byte holding the negated byte count (1..8)
then the big-endian value; an int ``i >= 0`` is the uint ``i << 1``. Field deltas count
from field -1, so an omitted (zero-valued) field makes the next delta 2.
"""

from __future__ import annotations

import operator
import sys
from typing import Any, SupportsIndex

__all__ = [
    "FIN",
    "MAX_HEADER_SIZE",
    "MAX_SSH_PACKET",
    "RSV1",
    "RSV2",
    "RSV3",
    "RSV_MASK",
    "BytesLike",
    "ChachaPacketCipher",
    "GCMPacketCipher",
    "apply_mask",
    "apply_mask_inplace",
    "encode_frame",
    "encode_header",
    "gob_decode_uint",
    "gob_decode_value",
    "gob_encode_uint",
    "gob_encode_value",
    "parse_header",
]

#: Anything that exposes a contiguous byte buffer.
BytesLike = bytes | bytearray | memoryview

#: Largest SSH packet (length field) we decrypt; Go peers send at most 32 KiB + headers.
MAX_SSH_PACKET = 1 << 20

#: Bits of the first header byte as reported in ``parse_header(...)[0]``.
FIN = 0x80
RSV1 = 0x40
RSV2 = 0x20
RSV3 = 0x10
RSV_MASK = RSV1 | RSV2 | RSV3
#: 2 fixed bytes + 8 bytes of 64-bit length + 4 bytes of mask key.
MAX_HEADER_SIZE = 14

_SSIZE_MIN = -(1 << 63) if sys.maxsize > 2**32 else -(1 << 31)
_SSIZE_MAX = sys.maxsize
_LEN64_LIMIT = 1 << 63
_UINT64_MAX = (1 << 64) - 1
_TYPE_ID_MAX = (1 << 31) - 1  # Go's typeId is an int32
_GOB_UINT_MAX_BYTES = 8
_GOB_SMALL_UINTS = tuple(bytes((i,)) for i in range(0x80))


def _ssize(value: SupportsIndex) -> int:
    """Convert like Cython's ``Py_ssize_t`` argument does, so both twins raise alike."""
    number = operator.index(value)
    if not _SSIZE_MIN <= number <= _SSIZE_MAX:
        raise OverflowError("Python int too large to convert to C ssize_t")
    return number


def _flat(view: memoryview) -> memoryview:
    """View any C-contiguous buffer as flat unsigned bytes, as ``PyBUF_SIMPLE`` does in C."""
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _mask_bytes(mask: BytesLike) -> bytes:
    """Validate a masking key: a bytes-like object of exactly four bytes."""
    key = bytes(memoryview(mask))
    if len(key) != 4:
        raise ValueError("mask must be exactly 4 bytes")
    return key


def _xor(data: memoryview, key: bytes) -> bytes:
    """XOR ``data`` with the repeated 4-byte ``key`` using one big-int operation.

    Big-int XOR runs at C speed inside CPython, which beats a per-byte loop by ~50x.
    """
    size = len(data)  # callers pass flat unsigned-byte views, so len == nbytes
    if not size:
        return b""
    repeated = key * (size >> 2) + key[: size & 3]
    value = int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")
    return value.to_bytes(size, "little")


def apply_mask(data: BytesLike, mask: BytesLike) -> bytes:
    """Return ``data`` XOR-ed with the 4-byte ``mask`` (RFC 6455 section 5.3) as new bytes.

    Masking is its own inverse, so this both masks and unmasks.
    """
    key = _mask_bytes(mask)
    with memoryview(data) as view:
        return _xor(_flat(view), key)


def apply_mask_inplace(
    buf: bytearray | memoryview, mask: BytesLike, start: int = 0, end: int | None = None
) -> None:
    """XOR ``buf[start:end]`` with ``mask`` in place; ``mask[0]`` applies at ``buf[start]``.

    In-place unmasking of a receive buffer saves a copy per frame. ``end=None`` means
    ``len(buf)``; indices must satisfy ``0 <= start <= end <= len(buf)`` (no negative
    indexing, so a slip is an error rather than silently masking the wrong bytes).
    """
    lo = _ssize(start)
    key = _mask_bytes(mask)
    with memoryview(buf) as view:
        if view.readonly:
            raise BufferError("Object is not writable.")
        flat = _flat(view)
        size = flat.nbytes
        hi = size if end is None else _ssize(end)
        if not 0 <= lo <= hi <= size:
            raise ValueError("need 0 <= start <= end <= len(buf)")
        if hi > lo:
            flat[lo:hi] = _xor(flat[lo:hi], key)


def parse_header(
    buf: BytesLike, offset: int
) -> tuple[int, int, bool, bytes | None, int, int] | None:
    """Parse the frame header that starts at ``buf[offset]``, without copying the payload.

    Returns ``(flags, opcode, masked, mask_key, payload_length, header_length)``:
    ``flags`` is the first byte's FIN/RSV bits (``byte0 & 0xF0``, test with ``FIN`` and
    ``RSV_MASK``), ``opcode`` is ``byte0 & 0x0F``, ``mask_key`` is the 4-byte key or None,
    and ``header_length`` counts every header byte, so the payload is
    ``buf[offset + header_length : offset + header_length + payload_length]``.
    Returns None when the header itself is not complete yet (the payload may be partial).
    Only the wire-level rule that a 64-bit length has its top bit clear is enforced here
    (ValueError); policy such as RSV bits or opcodes belongs to the caller.
    """
    pos = _ssize(offset)
    with memoryview(buf) as view:
        data = _flat(view)
        size = data.nbytes
        if not 0 <= pos <= size:
            raise ValueError("offset out of range")
        if size - pos < 2:
            return None
        first = data[pos]
        second = data[pos + 1]
        masked = bool(second & 0x80)
        length = second & 0x7F
        header_length = 2
        if length == 126:
            header_length = 4
            if size - pos < 4:
                return None
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        elif length == 127:
            header_length = 10
            if size - pos < 10:
                return None
            length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            if length >= _LEN64_LIMIT:
                raise ValueError("64-bit payload length has its most significant bit set")
        mask_key: bytes | None = None
        if masked:
            if size - pos < header_length + 4:
                return None
            mask_key = bytes(data[pos + header_length : pos + header_length + 4])
            header_length += 4
        return first & 0xF0, first & 0x0F, masked, mask_key, length, header_length


def _header(op: int, length: int, mask_key: bytes | None, fin: bool) -> bytes:
    """Build a header from converted arguments, range-checking as the Cython twin does."""
    if not 0 <= op <= 0x0F:
        raise ValueError("opcode must be in 0..15")
    if length < 0:
        raise ValueError("payload_length must not be negative")
    first = (0x80 if fin else 0) | op
    mask_bit = 0x80 if mask_key is not None else 0
    if length < 126:
        head = bytes((first, mask_bit | length))
    elif length < 0x10000:
        head = bytes((first, mask_bit | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((first, mask_bit | 127)) + length.to_bytes(8, "big")
    return head if mask_key is None else head + mask_key


def encode_header(
    opcode: int, payload_length: int, mask_key: BytesLike | None, fin: bool = True
) -> bytes:
    """Return the header bytes of a frame, using the shortest length encoding (RFC 6455).

    Useful when the payload is written separately (scatter/gather); ``encode_frame`` is
    the single-copy path for the common case.
    """
    op = _ssize(opcode)
    length = _ssize(payload_length)
    key = None if mask_key is None else _mask_bytes(mask_key)
    return _header(op, length, key, bool(fin))


def encode_frame(
    opcode: int, payload: BytesLike, mask_key: BytesLike | None, fin: bool = True
) -> bytes:
    """Return a whole frame: header plus payload, masked with ``mask_key`` when given.

    The Cython twin writes the payload into the output exactly once (masking on the fly).
    """
    op = _ssize(opcode)
    key = None if mask_key is None else _mask_bytes(mask_key)
    with memoryview(payload) as view:
        body = _flat(view)
        head = _header(op, body.nbytes, key, bool(fin))
        if key is None:
            return head + body
        return head + _xor(body, key)


# --- gob (chisel's UDP channels) -------------------------------------------------------


def _gob_uint(value: int) -> bytes:
    """Encode a uint already known to be in ``0 .. 2**64 - 1``; lengths take the short cuts."""
    if value < 0x80:
        return _GOB_SMALL_UINTS[value]
    if value < 0x10000:
        return bytes((0xFF, value)) if value < 0x100 else bytes((0xFE, value >> 8, value & 0xFF))
    count = (value.bit_length() + 7) // 8
    return bytes((256 - count,)) + value.to_bytes(count, "big")


def _read_gob_uint(data: BytesLike, pos: int, end: int) -> tuple[int, int]:
    """Decode a gob uint at ``data[pos]`` that must end by ``end``; ValueError if it cannot."""
    if pos >= end:
        raise ValueError("truncated message: unsigned integer expected")
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = 256 - first
    if count > _GOB_UINT_MAX_BYTES:
        raise ValueError(f"unsigned integer with {count} bytes is out of range")
    stop = pos + 1 + count
    if stop > end:
        raise ValueError("truncated message: unsigned integer cut short")
    return int.from_bytes(data[pos + 1 : stop], "big"), stop


def gob_encode_uint(value: SupportsIndex) -> bytes:
    """Encode a gob unsigned integer: not LEB128, but a negated count byte then big-endian.

    Values outside ``0 .. 2**64 - 1`` are a ValueError (Go's uint is 64 bits).
    """
    number = operator.index(value)
    if not 0 <= number <= _UINT64_MAX:
        raise ValueError(f"gob uint out of range: {number}")
    return _gob_uint(number)


def gob_decode_uint(buf: BytesLike, pos: int) -> tuple[int, int]:
    """Decode the gob uint at ``buf[pos]``; return ``(value, next_pos)``.

    ValueError when ``pos`` is negative, the bytes end first, or the count byte claims
    more than 8 bytes. Like Go, a non-minimal encoding is accepted.
    """
    start = _ssize(pos)
    if start < 0:
        raise ValueError("offset out of range")
    if type(buf) is bytes or type(buf) is bytearray:  # already flat: skip the view
        return _read_gob_uint(buf, start, len(buf))
    with memoryview(buf) as view:
        data = _flat(view)
        return _read_gob_uint(data, start, data.nbytes)


def _value_type_id(type_id: SupportsIndex) -> int:
    """A value message's type id, a positive int32 as Go's ``typeId``.

    Any int outside 1 .. 2**31 - 1 is a ValueError, whatever the platform's ssize_t
    (the Cython twin takes it as an object for the same reason).
    """
    tid = operator.index(type_id)
    if not 0 < tid <= _TYPE_ID_MAX:
        raise ValueError(f"type id {tid} out of range for a value")
    return tid


def gob_encode_value(type_id: int, src: BytesLike, payload: BytesLike) -> bytes:
    """Return one complete udpPacket value message (length prefix included).

    Empty ``src`` or ``payload`` is left out, as Go omits zero-valued fields; the
    payload is copied once, straight into the output.
    """
    tid = _value_type_id(type_id)
    with memoryview(src) as src_view, memoryview(payload) as payload_view:
        src_flat = _flat(src_view)
        payload_flat = _flat(payload_view)
        src_size = src_flat.nbytes
        payload_size = payload_flat.nbytes
        head = _gob_uint(tid << 1)
        if src_size:
            head += b"\x01" + _gob_uint(src_size)
        if not payload_size:
            size = len(head) + src_size + 1
            return b"".join((_gob_uint(size), head, src_flat, b"\x00"))
        mid = (b"\x01" if src_size else b"\x02") + _gob_uint(payload_size)  # field delta
        size = len(head) + src_size + len(mid) + payload_size + 1
        return b"".join((_gob_uint(size), head, src_flat, mid, payload_flat, b"\x00"))


def gob_decode_value(
    body: BytesLike,
    type_id: int,
    src_field: int,
    payload_field: int,
    start: int = 0,
    end: int | None = None,
) -> tuple[bytes, bytes]:
    """Decode ``body[start:end]``, a value message without its length prefix, as udpPacket.

    The fast path for the per-datagram messages of a struct whose only fields are Src
    and Payload, at the field numbers the peer's type definition gave them. Returns
    ``(src, payload)`` (empty when omitted; the payload is copied once). Anything else
    is a ValueError: malformed bytes, but also another type id or any other field,
    which the caller's general decoder may still accept.
    """
    src_at = _ssize(src_field)
    payload_at = _ssize(payload_field)
    lo = _ssize(start)  # every ssize_t argument converts before any check, as in Cython
    tid = _value_type_id(type_id)
    if src_at < 0 or payload_at < 0 or src_at == payload_at:
        raise ValueError("need two distinct, non-negative field numbers")
    if type(body) is bytes:  # slicing bytes copies once, with no view to make
        return _gob_value(body, len(body), tid, src_at, payload_at, lo, end)
    with memoryview(body) as view:
        data = _flat(view)
        return _gob_value(data, data.nbytes, tid, src_at, payload_at, lo, end)


def _gob_value(
    data: bytes | memoryview,
    size: int,
    tid: int,
    src_at: int,
    payload_at: int,
    lo: int,
    end: int | None,
) -> tuple[bytes, bytes]:
    """The body of ``gob_decode_value`` over flat ``data`` of ``size`` bytes."""
    hi = size if end is None else _ssize(end)
    if not 0 <= lo <= hi <= size:
        raise ValueError("need 0 <= start <= end <= len(body)")
    raw, pos = _read_gob_uint(data, lo, hi)
    if raw != tid << 1:
        raise ValueError(f"not a value of type id {tid}")
    last_field = max(src_at, payload_at)
    src = payload = b""
    field = -1
    while True:
        delta, pos = _read_gob_uint(data, pos, hi)
        if delta == 0:
            break
        if delta > last_field - field:
            raise ValueError("unexpected field in udpPacket value")
        field += delta
        if field != src_at and field != payload_at:
            raise ValueError("unexpected field in udpPacket value")
        count, pos = _read_gob_uint(data, pos, hi)
        if count > hi - pos:
            raise ValueError(f"byte string of {count} bytes runs past the end of the message")
        value = bytes(data[pos : pos + count])  # the one copy (none more from bytes)
        pos += count
        if field == src_at:
            src = value
        else:
            payload = value
    if pos != hi:
        raise ValueError("extra data after udpPacket value")
    return src, payload


# -- SSH packet crypto: aes128-gcm@openssh.com / aes256-gcm@openssh.com (RFC 5647) --------

_GCM_TAG = 16
_MASK64 = 0xFFFFFFFFFFFFFFFF


def _invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag


def _padded_plaintext(payload: BytesLike, head: BytesLike, prefix: int) -> bytearray:
    """``prefix`` zero bytes, then the SSH plaintext: padding length, head, payload,
    zero padding to a multiple of 16 (at least 4 bytes, as Go's x/crypto pads)."""
    hsize = len(head)
    size = hsize + len(payload)
    padlen = -(1 + size) % 16
    if padlen < 4:
        padlen += 16
    plain = bytearray(prefix + 1 + size + padlen)
    plain[prefix] = padlen
    plain[prefix + 1 : prefix + 1 + hsize] = head
    plain[prefix + 1 + hsize : prefix + 1 + size] = payload
    return plain


def _pad_in_place(buf: bytearray | memoryview, size: int) -> tuple[memoryview, int]:
    """Pad the message at ``buf[1 : 1 + size]`` in place as ``_padded_plaintext`` does.

    Returns a flat view of ``buf`` and the plaintext's length (padding-length byte,
    message, zero padding).  ValueError if ``buf`` has no room for the padding.
    """
    size = _ssize(size)
    if size < 0:
        raise ValueError("size must not be negative")
    view = _flat(memoryview(buf))
    if view.readonly:
        raise BufferError("Object is not writable.")
    padlen = -(1 + size) % 16
    if padlen < 4:
        padlen += 16
    total = 1 + size + padlen
    if view.nbytes < total:
        raise ValueError(f"buffer of {view.nbytes} bytes has no room for {total}")
    view[0] = padlen
    view[1 + size : total] = bytes(padlen)
    return view, total


class GCMPacketCipher:
    """AES-GCM as SSH uses it, with one AEAD context for the whole key epoch.

    asyncssh builds a new ``AESGCM`` object for every packet; keeping one and counting
    the nonce (4 fixed bytes + a 64-bit invocation counter, RFC 5647 section 7.1) here
    is most of what the data path saves.  ``seal``/``open_packet`` work on whole wire
    packets (length, ciphertext, tag) so callers copy the payload once.
    """

    __slots__ = ("_aead", "_counter", "_fixed")

    def __init__(self, key: bytes, iv: bytes) -> None:
        if len(iv) != 12:
            raise ValueError("AES-GCM needs a 12-byte IV")
        # Imported here: a process that never runs SSH (a --workers control
        # process) should not map the cryptography library.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(bytes(key))
        self._fixed = bytes(iv[:4])
        self._counter = int.from_bytes(iv[4:12], "big")

    def _next_nonce(self) -> bytes:
        nonce = self._fixed + self._counter.to_bytes(8, "big")
        self._counter = (self._counter + 1) & _MASK64
        return nonce

    def encrypt(self, header: BytesLike, plaintext: BytesLike) -> bytes:
        """Ciphertext followed by the tag; ``header`` (the length field) is authenticated."""
        return self._aead.encrypt(self._next_nonce(), plaintext, header)

    def decrypt(self, header: BytesLike, ciphertext_and_tag: BytesLike) -> bytes:
        """The plaintext; ValueError if the tag does not verify (the nonce still advances)."""
        try:
            return self._aead.decrypt(self._next_nonce(), ciphertext_and_tag, header)
        except _invalid_tag():
            raise ValueError("SSH packet authentication failed") from None

    def seal(self, payload: BytesLike, head: BytesLike = b"") -> bytearray:
        """One wire packet for ``head + payload``: length, encrypted part, tag.

        ``head`` lets a caller put the message type in front without concatenating
        (the payload is copied once, into the plaintext).  Padding is zero bytes:
        under an AEAD its content carries no secret (x/crypto's GCM packets pad the
        same way); the length rule is RFC 4253's (4..255 bytes, a multiple of 16).
        """
        plain = _padded_plaintext(payload, head, 0)
        total = len(plain)
        out = bytearray(4 + total + _GCM_TAG)
        out[:4] = total.to_bytes(4, "big")
        self._aead.encrypt_into(self._next_nonce(), plain, out[:4], memoryview(out)[4:])
        return out

    def seal_in_place(self, buf: bytearray | memoryview, size: int) -> bytearray:
        """``seal`` of the message a caller already put at ``buf[1 : 1 + size]``.

        For data read straight into place (after its message header): byte 0 and the
        padding after the message are written here, so ``buf`` needs up to 20 bytes
        beyond it; the result is the same wire packet ``seal`` makes of that message.
        """
        view, total = _pad_in_place(buf, size)
        out = bytearray(4 + total + _GCM_TAG)
        out[:4] = total.to_bytes(4, "big")
        self._aead.encrypt_into(self._next_nonce(), view[:total], out[:4], memoryview(out)[4:])
        return out

    def open_packet(self, buf: BytesLike, offset: int) -> tuple[memoryview, int] | None:
        """Decrypt the packet at ``buf[offset:]``: (payload, bytes consumed), None if incomplete.

        The payload is a view of a new buffer of its own.  Raises ValueError for a bad
        length, bad padding or a tag that does not verify (the nonce still advances).
        """
        view = memoryview(buf)
        if len(view) - offset < 4:
            return None
        length = int.from_bytes(view[offset : offset + 4], "big")
        if length < 16 or length % 16 or length > MAX_SSH_PACKET:
            raise ValueError(f"bad SSH packet length {length}")
        end = offset + 4 + length + _GCM_TAG
        if len(view) < end:
            return None
        plain = bytearray(length)
        nonce = self._next_nonce()
        try:
            self._aead.decrypt_into(nonce, view[offset + 4 : end], view[offset : offset + 4], plain)
        except _invalid_tag():
            raise ValueError("SSH packet authentication failed") from None
        padlen = plain[0]
        if padlen < 4 or padlen >= length:
            raise ValueError(f"bad SSH padding length {padlen}")
        return memoryview(plain)[1 : length - padlen], end - offset


# -- SSH packet crypto: chacha20-poly1305@openssh.com (PROTOCOL.chacha20poly1305) ---------

_CHACHA_TAG = 16
_POLY_KEY_SPAN = 64  # ChaCha20 block 0: its first 32 bytes are the Poly1305 key
_ZERO_64 = bytes(64)


#: cryptography's classes, loaded by the first ChachaPacketCipher (not at import: see
#: GCMPacketCipher) and then read from here, as an import per packet costs microseconds.
_Cipher: Any = None
_ChaCha20: Any = None
_Poly1305: Any = None
_InvalidSignature: Any = None


def _load_chacha() -> None:
    global _Cipher, _ChaCha20, _Poly1305, _InvalidSignature
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.ciphers import Cipher
    from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20
    from cryptography.hazmat.primitives.poly1305 import Poly1305

    _Cipher, _ChaCha20, _Poly1305, _InvalidSignature = Cipher, ChaCha20, Poly1305, InvalidSignature


def _chacha20(key: bytes, counter: int, nonce: bytes) -> Any:
    """A ChaCha20 keystream at block ``counter`` for the 8-byte SSH nonce (the seq)."""
    return _Cipher(_ChaCha20(key, counter.to_bytes(8, "little") + nonce), mode=None).encryptor()


class ChachaPacketCipher:
    """OpenSSH's ChaCha20-Poly1305: one key for the length, one for the rest and the MAC.

    The nonce is the packet sequence number, so callers pass it.  ``seal`` runs one
    ChaCha20 pass over 64 zero bytes followed by the plaintext: block 0 gives the
    Poly1305 key and the ciphertext lands in place after it (asyncssh makes three
    cipher contexts and two extra copies per packet).
    """

    __slots__ = ("_length_key", "_main_key")

    def __init__(self, key: bytes) -> None:
        if len(key) != 64:
            raise ValueError("chacha20-poly1305 needs a 64-byte key")
        if _Cipher is None:
            _load_chacha()
        self._main_key = bytes(key[:32])
        self._length_key = bytes(key[32:])

    def seal(self, payload: BytesLike, head: BytesLike, seq: int) -> memoryview:
        """One wire packet for ``head + payload``: encrypted length, ciphertext, tag."""
        start = _POLY_KEY_SPAN
        plain = _padded_plaintext(payload, head, start)
        total = len(plain) - start
        nonce = (seq & _MASK64).to_bytes(8, "big")
        out = bytearray(start + total + _CHACHA_TAG)
        _chacha20(self._main_key, 0, nonce).update_into(plain, out)
        poly_key = bytes(out[:32])
        out[start - 4 : start] = _chacha20(self._length_key, 0, nonce).update(
            total.to_bytes(4, "big")
        )
        view = memoryview(out)
        out[start + total :] = _Poly1305.generate_tag(poly_key, view[start - 4 : start + total])
        return view[start - 4 :]

    def seal_in_place(self, buf: bytearray | memoryview, size: int, seq: int) -> bytearray:
        """``seal`` of the message a caller already put at ``buf[1 : 1 + size]``.

        As ``GCMPacketCipher.seal_in_place``: byte 0 and the padding are written into
        ``buf``; the result is the same wire packet ``seal`` makes of that message.
        """
        view, total = _pad_in_place(buf, size)
        nonce = (seq & _MASK64).to_bytes(8, "big")
        out = bytearray(4 + total + _CHACHA_TAG)
        stream = _chacha20(self._main_key, 0, nonce)
        poly_key = stream.update(_ZERO_64)[:32]  # block 0; the message starts at block 1
        stream.update_into(view[:total], memoryview(out)[4 : 4 + total])
        out[:4] = _chacha20(self._length_key, 0, nonce).update(total.to_bytes(4, "big"))
        out[4 + total :] = _Poly1305.generate_tag(poly_key, memoryview(out)[: 4 + total])
        return out

    def open_packet(self, buf: BytesLike, offset: int, seq: int) -> tuple[memoryview, int] | None:
        """Decrypt the packet at ``buf[offset:]``: (payload, bytes consumed), None if incomplete.

        Raises ValueError for a bad length, bad padding or a tag that does not verify.
        """
        view = memoryview(buf)
        if len(view) - offset < 4:
            return None
        nonce = (seq & _MASK64).to_bytes(8, "big")
        length = int.from_bytes(
            _chacha20(self._length_key, 0, nonce).update(view[offset : offset + 4]), "big"
        )
        if length < 8 or length % 8 or length > MAX_SSH_PACKET:
            raise ValueError(f"bad SSH packet length {length}")
        body_end = offset + 4 + length
        end = body_end + _CHACHA_TAG
        if len(view) < end:
            return None
        # One keystream: block 0 gives the Poly1305 key, blocks 1.. decrypt the body
        # (only after the tag verified).
        stream = _chacha20(self._main_key, 0, nonce)
        poly_key = stream.update(_ZERO_64)[:32]
        try:
            _Poly1305.verify_tag(poly_key, view[offset:body_end], bytes(view[body_end:end]))
        except _InvalidSignature:
            raise ValueError("SSH packet authentication failed") from None
        plain = stream.update(view[offset + 4 : body_end])
        padlen = plain[0]
        if padlen < 4 or padlen >= length:
            raise ValueError(f"bad SSH padding length {padlen}")
        return memoryview(plain)[1 : length - padlen], end - offset
