# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: embedsignature=True, initializedcheck=False
"""Compiled hot loops of the data path (WebSocket framing, gob UDP datagrams).

The tunnel moves every byte through a WebSocket mask and a frame header, and every UDP
datagram through a gob value message, so these loops decide its throughput. Each
function has a twin with identical behaviour in ``cc/_fastpath_py.py``; ``cc.fastpath``
picks one. Buffers are taken through the buffer protocol (``PyBUF_SIMPLE``), so bytes,
bytearray and memoryview all work without copies. See the twin's module docstring for
the frame header and gob value layouts.
"""

from cpython.buffer cimport (
    PyBUF_SIMPLE,
    PyBUF_WRITABLE,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from cpython.number cimport PyNumber_Index
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy, memset

__all__ = [
    "FIN",
    "MAX_SSH_PACKET",
    "GCMPacketCipher",
    "ChachaPacketCipher",
    "MAX_HEADER_SIZE",
    "RSV1",
    "RSV2",
    "RSV3",
    "RSV_MASK",
    "BytesLike",
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

BytesLike = bytes | bytearray | memoryview

FIN = 0x80
RSV1 = 0x40
RSV2 = 0x20
RSV3 = 0x10
RSV_MASK = RSV1 | RSV2 | RSV3
cdef enum:
    _MAX_HEADER = 14  # 2 fixed bytes + 8 bytes of 64-bit length + 4 bytes of mask key
MAX_HEADER_SIZE = _MAX_HEADER


# --- masking ------------------------------------------------------------------------

cdef inline void _xor_mask(
    unsigned char* out, const unsigned char* src, Py_ssize_t n, const unsigned char* key
) noexcept nogil:
    """out[i] = src[i] ^ key[i % 4]; out may equal src (in place).

    The key is widened to 64 bits and applied 8 bytes per round through memcpy, which
    compilers turn into plain unaligned loads/stores (and, at -O3, SIMD), so neither
    buffer needs any particular alignment. Both directions run at tens of GB/s, far
    beyond the tunnel's needs, so the loop stays this simple.
    """
    cdef uint32_t k32
    cdef uint64_t k64, w0
    cdef Py_ssize_t i = 0
    memcpy(&k32, key, 4)
    # The key bytes are in memory order; duplicating the 32-bit word keeps them in
    # memory order on both little- and big-endian machines.
    k64 = (<uint64_t>k32 << 32) | <uint64_t>k32
    while n - i >= 8:
        memcpy(&w0, src + i, 8)
        w0 ^= k64
        memcpy(out + i, &w0, 8)
        i += 8
    # i is a multiple of 8 here, so the key phase of byte i is i & 3.
    while i < n:
        out[i] = src[i] ^ key[i & 3]
        i += 1


cdef int _read_key(object mask, unsigned char* key) except -1:
    """Copy a 4-byte masking key out of any bytes-like object, or raise ValueError."""
    cdef Py_buffer view
    PyObject_GetBuffer(mask, &view, PyBUF_SIMPLE)
    try:
        if view.len != 4:
            raise ValueError("mask must be exactly 4 bytes")
        memcpy(key, view.buf, 4)
    finally:
        PyBuffer_Release(&view)
    return 0


def apply_mask(object data, object mask):
    """Return ``data`` XOR-ed with the 4-byte ``mask`` (RFC 6455 section 5.3) as new bytes.

    Masking is its own inverse, so this both masks and unmasks.
    """
    cdef unsigned char key[4]
    cdef Py_buffer view
    cdef bytes out
    _read_key(mask, key)
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        out = PyBytes_FromStringAndSize(NULL, view.len)
        _xor_mask(
            <unsigned char*>PyBytes_AS_STRING(out),
            <const unsigned char*>view.buf,
            view.len,
            key,
        )
        return out
    finally:
        PyBuffer_Release(&view)


def apply_mask_inplace(object buf, object mask, Py_ssize_t start=0, object end=None):
    """XOR ``buf[start:end]`` with ``mask`` in place; ``mask[0]`` applies at ``buf[start]``.

    In-place unmasking of a receive buffer saves a copy per frame. ``end=None`` means
    ``len(buf)``; indices must satisfy ``0 <= start <= end <= len(buf)``.
    """
    cdef unsigned char key[4]
    cdef Py_buffer view
    cdef Py_ssize_t stop
    _read_key(mask, key)
    PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
    try:
        stop = view.len if end is None else <Py_ssize_t>end
        if not (0 <= start <= stop <= view.len):
            raise ValueError("need 0 <= start <= end <= len(buf)")
        _xor_mask(
            <unsigned char*>view.buf + start,
            <const unsigned char*>view.buf + start,
            stop - start,
            key,
        )
    finally:
        PyBuffer_Release(&view)


# --- frame headers ------------------------------------------------------------------

def parse_header(object buf, Py_ssize_t offset):
    """Parse the frame header that starts at ``buf[offset]``, without copying the payload.

    Returns ``(flags, opcode, masked, mask_key, payload_length, header_length)`` or None
    when the header is not complete yet; see ``cc._fastpath_py.parse_header``.
    """
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef Py_ssize_t avail
    cdef unsigned char first, second
    cdef uint64_t length
    cdef Py_ssize_t hlen = 2
    cdef int k
    cdef object key = None
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if not (0 <= offset <= view.len):
            raise ValueError("offset out of range")
        avail = view.len - offset
        if avail < 2:
            return None
        p = <const unsigned char*>view.buf + offset
        first = p[0]
        second = p[1]
        length = second & 0x7F
        if length == 126:
            hlen = 4
            if avail < 4:
                return None
            length = (<uint64_t>p[2] << 8) | p[3]
        elif length == 127:
            hlen = 10
            if avail < 10:
                return None
            length = 0
            for k in range(2, 10):
                length = (length << 8) | p[k]
            if length >> 63:
                raise ValueError("64-bit payload length has its most significant bit set")
        if second & 0x80:
            if avail < hlen + 4:
                return None
            key = PyBytes_FromStringAndSize(<const char*>p + hlen, 4)
            hlen += 4
        return (first & 0xF0, first & 0x0F, (second & 0x80) != 0, key, length, hlen)
    finally:
        PyBuffer_Release(&view)


cdef Py_ssize_t _header_into(
    unsigned char* out, Py_ssize_t opcode, Py_ssize_t length, const unsigned char* key, bint fin
) except -1:
    """Write a header into ``out`` (at least 14 bytes); return its length."""
    cdef Py_ssize_t hlen
    cdef unsigned char mask_bit = 0x80 if key != NULL else 0
    cdef int k
    if not (0 <= opcode <= 0x0F):
        raise ValueError("opcode must be in 0..15")
    if length < 0:
        raise ValueError("payload_length must not be negative")
    out[0] = <unsigned char>((0x80 if fin else 0) | opcode)
    if length < 126:
        out[1] = mask_bit | <unsigned char>length
        hlen = 2
    elif length < 0x10000:
        out[1] = mask_bit | 126
        out[2] = <unsigned char>(length >> 8)
        out[3] = <unsigned char>length
        hlen = 4
    else:
        out[1] = mask_bit | 127
        for k in range(8):
            out[2 + k] = <unsigned char>((<uint64_t>length) >> (56 - 8 * k))
        hlen = 10
    if key != NULL:
        memcpy(out + hlen, key, 4)
        hlen += 4
    return hlen


def encode_header(
    Py_ssize_t opcode, Py_ssize_t payload_length, object mask_key, bint fin=True
):
    """Return the header bytes of a frame, using the shortest length encoding (RFC 6455)."""
    cdef unsigned char head[_MAX_HEADER]
    cdef unsigned char key[4]
    cdef Py_ssize_t hlen
    if mask_key is None:
        hlen = _header_into(head, opcode, payload_length, NULL, fin)
    else:
        _read_key(mask_key, key)
        hlen = _header_into(head, opcode, payload_length, key, fin)
    return PyBytes_FromStringAndSize(<const char*>head, hlen)


def encode_frame(Py_ssize_t opcode, object payload, object mask_key, bint fin=True):
    """Return a whole frame: header plus payload, masked with ``mask_key`` when given.

    The payload is written into the output exactly once, masked on the fly.
    """
    cdef unsigned char head[_MAX_HEADER]
    cdef unsigned char key[4]
    cdef const unsigned char* keyp = NULL
    cdef Py_buffer view
    cdef Py_ssize_t hlen
    cdef bytes out
    cdef unsigned char* dst
    if mask_key is not None:
        _read_key(mask_key, key)
        keyp = key
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        hlen = _header_into(head, opcode, view.len, keyp, fin)
        out = PyBytes_FromStringAndSize(NULL, hlen + view.len)
        dst = <unsigned char*>PyBytes_AS_STRING(out)
        memcpy(dst, head, hlen)
        if keyp != NULL:
            _xor_mask(dst + hlen, <const unsigned char*>view.buf, view.len, keyp)
        else:
            memcpy(dst + hlen, view.buf, view.len)
        return out
    finally:
        PyBuffer_Release(&view)


# --- gob (chisel's UDP channels) ----------------------------------------------------

cdef enum:
    _GOB_UINT_MAX_BYTES = 8
    _GOB_UINT_MAX_SIZE = 9  # the count byte + 8 value bytes
    _TYPE_ID_MAX = 0x7FFFFFFF  # Go's typeId is an int32

_UINT64_MAX = (1 << 64) - 1


cdef inline Py_ssize_t _gob_uint_size(uint64_t value) noexcept nogil:
    """Bytes a gob uint takes on the wire: 1 below 128, else 1 + its byte count."""
    cdef Py_ssize_t n = 1
    if value < 0x80:
        return 1
    while value:
        n += 1
        value >>= 8
    return n


cdef inline Py_ssize_t _put_gob_uint(unsigned char* out, uint64_t value) noexcept nogil:
    """Write a gob uint at ``out`` (room for 9 bytes); return the bytes written."""
    cdef Py_ssize_t n = _gob_uint_size(value)
    cdef Py_ssize_t k
    if n == 1:
        out[0] = <unsigned char>value
        return 1
    out[0] = <unsigned char>(257 - n)  # 256 - (n - 1) value bytes
    for k in range(n - 1, 0, -1):
        out[k] = <unsigned char>value
        value >>= 8
    return n


cdef int _read_gob_uint(
    const unsigned char* data, Py_ssize_t* pos, Py_ssize_t end, uint64_t* out
) except -1:
    """Decode the gob uint at ``data[pos[0]]`` that must end by ``end``; advance ``pos``."""
    cdef Py_ssize_t i = pos[0]
    cdef Py_ssize_t count, k
    cdef uint64_t value = 0
    cdef unsigned char first
    if i >= end:
        raise ValueError("truncated message: unsigned integer expected")
    first = data[i]
    if first < 0x80:
        out[0] = first
        pos[0] = i + 1
        return 0
    count = 256 - first
    if count > _GOB_UINT_MAX_BYTES:
        raise ValueError(f"unsigned integer with {count} bytes is out of range")
    if count > end - i - 1:
        raise ValueError("truncated message: unsigned integer cut short")
    for k in range(1, count + 1):
        value = (value << 8) | data[i + k]
    out[0] = value
    pos[0] = i + 1 + count
    return 0


cdef uint64_t _value_type_id(object type_id) except 0:
    """A value message's type id, a positive int32 as Go's ``typeId``; returned raw.

    Taken as a Python int, not a ``Py_ssize_t`` argument, so that any int outside
    1 .. 2**31 - 1 is the same ValueError on 32- and 64-bit builds and in the twin
    (a C conversion raised OverflowError for 2**31 on i386 but 2**63 on amd64).
    """
    cdef object number = PyNumber_Index(type_id)
    if not 0 < number <= _TYPE_ID_MAX:
        raise ValueError(f"type id {number} out of range for a value")
    return (<uint64_t>number) << 1


def gob_encode_uint(object value):
    """Encode a gob unsigned integer: not LEB128, but a negated count byte then big-endian.

    Values outside ``0 .. 2**64 - 1`` are a ValueError (Go's uint is 64 bits).
    """
    cdef unsigned char out[_GOB_UINT_MAX_SIZE]
    cdef object number = PyNumber_Index(value)
    cdef Py_ssize_t n
    if not 0 <= number <= _UINT64_MAX:
        raise ValueError(f"gob uint out of range: {number}")
    n = _put_gob_uint(out, <uint64_t>number)
    return PyBytes_FromStringAndSize(<const char*>out, n)


def gob_decode_uint(object buf, Py_ssize_t pos):
    """Decode the gob uint at ``buf[pos]``; return ``(value, next_pos)``.

    ValueError when ``pos`` is negative, the bytes end first, or the count byte claims
    more than 8 bytes. Like Go, a non-minimal encoding is accepted.
    """
    cdef Py_buffer view
    cdef uint64_t value
    if pos < 0:
        raise ValueError("offset out of range")
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        _read_gob_uint(<const unsigned char*>view.buf, &pos, view.len, &value)
        return value, pos
    finally:
        PyBuffer_Release(&view)


def gob_encode_value(object type_id, object src, object payload):
    """Return one complete udpPacket value message (length prefix included).

    Empty ``src`` or ``payload`` is left out, as Go omits zero-valued fields; the
    payload is written into the output exactly once.
    """
    cdef Py_buffer src_view
    cdef Py_buffer payload_view
    cdef Py_ssize_t size, pos
    cdef uint64_t tid_raw
    cdef unsigned char delta = 1
    cdef bytes out
    cdef unsigned char* dst
    tid_raw = _value_type_id(type_id)
    PyObject_GetBuffer(src, &src_view, PyBUF_SIMPLE)
    try:
        PyObject_GetBuffer(payload, &payload_view, PyBUF_SIMPLE)
        try:
            size = _gob_uint_size(tid_raw) + 1  # type id ... end-of-struct 0
            if src_view.len:
                size += 1 + _gob_uint_size(<uint64_t>src_view.len) + src_view.len
            if payload_view.len:
                size += 1 + _gob_uint_size(<uint64_t>payload_view.len) + payload_view.len
            out = PyBytes_FromStringAndSize(NULL, _gob_uint_size(<uint64_t>size) + size)
            dst = <unsigned char*>PyBytes_AS_STRING(out)
            pos = _put_gob_uint(dst, <uint64_t>size)
            pos += _put_gob_uint(dst + pos, tid_raw)
            if src_view.len:
                dst[pos] = 1
                pos += 1 + _put_gob_uint(dst + pos + 1, <uint64_t>src_view.len)
                memcpy(dst + pos, src_view.buf, src_view.len)
                pos += src_view.len
            else:
                delta = 2
            if payload_view.len:
                dst[pos] = delta
                pos += 1 + _put_gob_uint(dst + pos + 1, <uint64_t>payload_view.len)
                memcpy(dst + pos, payload_view.buf, payload_view.len)
                pos += payload_view.len
            dst[pos] = 0
            return out
        finally:
            PyBuffer_Release(&payload_view)
    finally:
        PyBuffer_Release(&src_view)


def gob_decode_value(
    object body,
    object type_id,
    Py_ssize_t src_field,
    Py_ssize_t payload_field,
    Py_ssize_t start=0,
    object end=None,
):
    """Decode ``body[start:end]``, a value message without its length prefix, as udpPacket.

    Returns ``(src, payload)``, or raises ValueError on anything but the plain two-field
    layout; see ``cc._fastpath_py.gob_decode_value``.
    """
    cdef Py_buffer view
    cdef const unsigned char* data
    cdef Py_ssize_t stop, pos, field = -1
    cdef Py_ssize_t last_field
    cdef uint64_t raw, delta, count
    cdef uint64_t tid_raw
    cdef object src = b""
    cdef object payload = b""
    cdef object value
    tid_raw = _value_type_id(type_id)
    if src_field < 0 or payload_field < 0 or src_field == payload_field:
        raise ValueError("need two distinct, non-negative field numbers")
    last_field = src_field if src_field > payload_field else payload_field
    PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
    try:
        stop = view.len if end is None else <Py_ssize_t>end
        if not (0 <= start <= stop <= view.len):
            raise ValueError("need 0 <= start <= end <= len(body)")
        data = <const unsigned char*>view.buf
        pos = start
        _read_gob_uint(data, &pos, stop, &raw)
        if raw != tid_raw:
            raise ValueError(f"not a value of type id {tid_raw >> 1}")
        while True:
            _read_gob_uint(data, &pos, stop, &delta)
            if delta == 0:
                break
            if delta > <uint64_t>(last_field - field):
                raise ValueError("unexpected field in udpPacket value")
            field += <Py_ssize_t>delta
            if field != src_field and field != payload_field:
                raise ValueError("unexpected field in udpPacket value")
            _read_gob_uint(data, &pos, stop, &count)
            if count > <uint64_t>(stop - pos):
                raise ValueError(f"byte string of {count} bytes runs past the end of the message")
            value = PyBytes_FromStringAndSize(<const char*>data + pos, <Py_ssize_t>count)
            pos += <Py_ssize_t>count
            if field == src_field:
                src = value
            else:
                payload = value
        if pos != stop:
            raise ValueError("extra data after udpPacket value")
        return src, payload
    finally:
        PyBuffer_Release(&view)


# -- SSH packet crypto: aes128-gcm@openssh.com / aes256-gcm@openssh.com (RFC 5647) --------

def _invalid_tag():
    from cryptography.exceptions import InvalidTag
    return InvalidTag

MAX_SSH_PACKET = 1 << 20
cdef enum:
    _GCM_TAG = 16


cdef bytearray _padded_plaintext(payload, head, Py_ssize_t prefix):
    """``prefix`` zero bytes, then the SSH plaintext: padding length, head, payload,
    zero padding to a multiple of 16 (at least 4 bytes, as Go's x/crypto pads)."""
    cdef Py_buffer pview
    cdef Py_buffer hview
    cdef Py_ssize_t size, padlen, total
    cdef unsigned char* p
    PyObject_GetBuffer(payload, &pview, PyBUF_SIMPLE)
    try:
        PyObject_GetBuffer(head, &hview, PyBUF_SIMPLE)
        try:
            size = hview.len + pview.len
            padlen = (16 - (1 + size) % 16) % 16
            if padlen < 4:
                padlen += 16
            total = 1 + size + padlen
            plain = PyByteArray_FromStringAndSize(NULL, prefix + total)
            p = <unsigned char*>PyByteArray_AS_STRING(plain)
            memset(p, 0, prefix)
            p[prefix] = <unsigned char>padlen
            memcpy(p + prefix + 1, hview.buf, hview.len)
            memcpy(p + prefix + 1 + hview.len, pview.buf, pview.len)
            memset(p + prefix + 1 + size, 0, padlen)
        finally:
            PyBuffer_Release(&hview)
    finally:
        PyBuffer_Release(&pview)
    return plain


cdef Py_ssize_t _pad_in_place(buf, Py_ssize_t size) except -1:
    """Pad the message at ``buf[1:1 + size]`` in place; the plaintext's length (see the twin)."""
    cdef Py_buffer view
    cdef Py_ssize_t padlen, total
    cdef unsigned char* p
    if size < 0:
        raise ValueError("size must not be negative")
    PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
    try:
        padlen = (16 - (1 + size) % 16) % 16
        if padlen < 4:
            padlen += 16
        total = 1 + size + padlen
        if view.len < total:
            raise ValueError(f"buffer of {view.len} bytes has no room for {total}")
        p = <unsigned char*>view.buf
        p[0] = <unsigned char>padlen
        memset(p + 1 + size, 0, padlen)
    finally:
        PyBuffer_Release(&view)
    return total


cdef class GCMPacketCipher:
    """AES-GCM as SSH uses it, with one AEAD context for the whole key epoch (see the twin)."""

    cdef object _aead
    cdef bytes _fixed
    cdef uint64_t _counter

    def __init__(self, key, iv):
        if len(iv) != 12:
            raise ValueError("AES-GCM needs a 12-byte IV")
        # Imported here: a --workers control process never runs SSH (see the twin).
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        self._aead = AESGCM(bytes(key))
        self._fixed = bytes(iv[:4])
        self._counter = int.from_bytes(iv[4:12], "big")

    cdef bytes _next_nonce(self):
        cdef unsigned char nonce[12]
        cdef uint64_t c = self._counter
        cdef int i
        memcpy(nonce, PyBytes_AS_STRING(self._fixed), 4)
        for i in range(8):
            nonce[11 - i] = <unsigned char>(c & 0xFF)
            c >>= 8
        self._counter += 1
        return PyBytes_FromStringAndSize(<char*>nonce, 12)

    def encrypt(self, header, plaintext):
        """Ciphertext followed by the tag; ``header`` (the length field) is authenticated."""
        return self._aead.encrypt(self._next_nonce(), plaintext, header)

    def decrypt(self, header, ciphertext_and_tag):
        """The plaintext; ValueError if the tag does not verify (the nonce still advances)."""
        try:
            return self._aead.decrypt(self._next_nonce(), ciphertext_and_tag, header)
        except _invalid_tag():
            raise ValueError("SSH packet authentication failed") from None

    def seal(self, payload, head=b""):
        """One wire packet for ``head + payload`` (zero padding, RFC 4253 length rule)."""
        cdef Py_ssize_t total
        cdef unsigned char* o
        plain = _padded_plaintext(payload, head, 0)
        total = len(plain)
        out = PyByteArray_FromStringAndSize(NULL, 4 + total + _GCM_TAG)
        o = <unsigned char*>PyByteArray_AS_STRING(out)
        o[0] = <unsigned char>((total >> 24) & 0xFF)
        o[1] = <unsigned char>((total >> 16) & 0xFF)
        o[2] = <unsigned char>((total >> 8) & 0xFF)
        o[3] = <unsigned char>(total & 0xFF)
        self._aead.encrypt_into(self._next_nonce(), plain, out[:4], memoryview(out)[4:])
        return out

    def seal_in_place(self, buf, Py_ssize_t size):
        """``seal`` of the message already at ``buf[1:1 + size]``, padded in place (see the twin)."""
        cdef Py_ssize_t total = _pad_in_place(buf, size)
        cdef unsigned char* o
        out = PyByteArray_FromStringAndSize(NULL, 4 + total + _GCM_TAG)
        o = <unsigned char*>PyByteArray_AS_STRING(out)
        o[0] = <unsigned char>((total >> 24) & 0xFF)
        o[1] = <unsigned char>((total >> 16) & 0xFF)
        o[2] = <unsigned char>((total >> 8) & 0xFF)
        o[3] = <unsigned char>(total & 0xFF)
        view = memoryview(buf)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        self._aead.encrypt_into(self._next_nonce(), view[:total], out[:4], memoryview(out)[4:])
        return out

    def open_packet(self, buf, Py_ssize_t offset):
        """Decrypt the packet at ``buf[offset:]``: (payload view, consumed), None if incomplete."""
        cdef Py_buffer view
        cdef const unsigned char* p
        cdef Py_ssize_t length, end, padlen
        if offset < 0:
            raise ValueError("negative offset")
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
        try:
            if view.len - offset < 4:
                return None
            p = <const unsigned char*>view.buf + offset
            length = (<Py_ssize_t>p[0] << 24) | (<Py_ssize_t>p[1] << 16) | (<Py_ssize_t>p[2] << 8) | p[3]
            if length < 16 or length % 16 or length > MAX_SSH_PACKET:
                raise ValueError(f"bad SSH packet length {length}")
            end = offset + 4 + length + _GCM_TAG
            if view.len < end:
                return None
        finally:
            PyBuffer_Release(&view)
        mv = memoryview(buf)
        # A new buffer of its own, not zeroed first (decrypt's bytes are): the payload
        # view handed out may outlive the call.
        plain = PyByteArray_FromStringAndSize(NULL, length)
        nonce = self._next_nonce()
        try:
            self._aead.decrypt_into(nonce, mv[offset + 4:end], mv[offset:offset + 4], plain)
        except _invalid_tag():
            raise ValueError("SSH packet authentication failed") from None
        padlen = plain[0]
        if padlen < 4 or padlen >= length:
            raise ValueError(f"bad SSH padding length {padlen}")
        return memoryview(plain)[1:length - padlen], end - offset


# -- SSH packet crypto: chacha20-poly1305@openssh.com (see the twin) ---------------------

cdef enum:
    _CHACHA_TAG = 16
    _POLY_KEY_SPAN = 64

cdef bytes _ZERO_64 = bytes(64)


cdef object _Cipher = None
cdef object _ChaCha20 = None
cdef object _Poly1305 = None
cdef object _InvalidSignature = None


cdef _load_chacha():
    global _Cipher, _ChaCha20, _Poly1305, _InvalidSignature
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.ciphers import Cipher
    from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20
    from cryptography.hazmat.primitives.poly1305 import Poly1305
    _Cipher, _ChaCha20, _Poly1305, _InvalidSignature = Cipher, ChaCha20, Poly1305, InvalidSignature


cdef object _chacha20(bytes key, int counter, bytes nonce):
    return _Cipher(_ChaCha20(key, counter.to_bytes(8, "little") + nonce), mode=None).encryptor()


cdef class ChachaPacketCipher:
    """OpenSSH's ChaCha20-Poly1305 with one ChaCha20 pass per sealed packet (see the twin)."""

    cdef bytes _main_key
    cdef bytes _length_key

    def __init__(self, key):
        if len(key) != 64:
            raise ValueError("chacha20-poly1305 needs a 64-byte key")
        if _Cipher is None:
            _load_chacha()
        self._main_key = bytes(key[:32])
        self._length_key = bytes(key[32:])

    def seal(self, payload, head, seq):
        """One wire packet for ``head + payload``: encrypted length, ciphertext, tag."""
        cdef Py_ssize_t total
        plain = _padded_plaintext(payload, head, _POLY_KEY_SPAN)
        total = len(plain) - _POLY_KEY_SPAN
        nonce = (seq & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")
        out = PyByteArray_FromStringAndSize(NULL, _POLY_KEY_SPAN + total + _CHACHA_TAG)
        _chacha20(self._main_key, 0, nonce).update_into(plain, out)
        poly_key = bytes(out[:32])
        out[_POLY_KEY_SPAN - 4 : _POLY_KEY_SPAN] = _chacha20(self._length_key, 0, nonce).update(
            total.to_bytes(4, "big")
        )
        view = memoryview(out)
        out[_POLY_KEY_SPAN + total :] = _Poly1305.generate_tag(
            poly_key, view[_POLY_KEY_SPAN - 4 : _POLY_KEY_SPAN + total]
        )
        return view[_POLY_KEY_SPAN - 4 :]

    def seal_in_place(self, buf, Py_ssize_t size, seq):
        """``seal`` of the message already at ``buf[1:1 + size]``, padded in place (see the twin)."""
        cdef Py_ssize_t total = _pad_in_place(buf, size)
        nonce = (seq & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")
        out = PyByteArray_FromStringAndSize(NULL, 4 + total + _CHACHA_TAG)
        stream = _chacha20(self._main_key, 0, nonce)
        poly_key = stream.update(_ZERO_64)[:32]
        view = memoryview(buf)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        stream.update_into(view[:total], memoryview(out)[4 : 4 + total])
        out[:4] = _chacha20(self._length_key, 0, nonce).update(total.to_bytes(4, "big"))
        out[4 + total :] = _Poly1305.generate_tag(poly_key, memoryview(out)[: 4 + total])
        return out

    def open_packet(self, buf, Py_ssize_t offset, seq):
        """Decrypt the packet at ``buf[offset:]``: (payload, bytes consumed), None if incomplete."""
        cdef Py_ssize_t length, body_end, end
        cdef int padlen
        view = memoryview(buf)
        if len(view) - offset < 4:
            return None
        nonce = (seq & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")
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
