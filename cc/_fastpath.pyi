"""Type stub for the compiled ``cc._fastpath``; its twin ``cc._fastpath_py`` documents each call."""

from __future__ import annotations

from typing import Final, SupportsIndex

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

BytesLike = bytes | bytearray | memoryview

FIN: Final[int]
RSV1: Final[int]
RSV2: Final[int]
RSV3: Final[int]
RSV_MASK: Final[int]
MAX_HEADER_SIZE: Final[int]

def apply_mask(data: BytesLike, mask: BytesLike) -> bytes: ...
def apply_mask_inplace(
    buf: bytearray | memoryview, mask: BytesLike, start: int = 0, end: int | None = None
) -> None: ...
def parse_header(
    buf: BytesLike, offset: int
) -> tuple[int, int, bool, bytes | None, int, int] | None: ...
def encode_header(
    opcode: int, payload_length: int, mask_key: BytesLike | None, fin: bool = True
) -> bytes: ...
def encode_frame(
    opcode: int, payload: BytesLike, mask_key: BytesLike | None, fin: bool = True
) -> bytes: ...
def gob_encode_uint(value: SupportsIndex) -> bytes: ...
def gob_decode_uint(buf: BytesLike, pos: int) -> tuple[int, int]: ...
def gob_encode_value(type_id: int, src: BytesLike, payload: BytesLike) -> bytes: ...
def gob_decode_value(
    body: BytesLike,
    type_id: int,
    src_field: int,
    payload_field: int,
    start: int = 0,
    end: int | None = None,
) -> tuple[bytes, bytes]: ...

MAX_SSH_PACKET: Final[int]

class GCMPacketCipher:
    def __init__(self, key: BytesLike, iv: BytesLike) -> None: ...
    def encrypt(self, header: BytesLike, plaintext: BytesLike) -> bytes: ...
    def decrypt(self, header: BytesLike, ciphertext_and_tag: BytesLike) -> bytes: ...
    def seal(self, payload: BytesLike, head: BytesLike = b"") -> bytearray: ...
    def seal_in_place(self, buf: bytearray | memoryview, size: int) -> bytearray: ...
    def open_packet(self, buf: BytesLike, offset: int) -> tuple[memoryview, int] | None: ...

class ChachaPacketCipher:
    def __init__(self, key: bytes) -> None: ...
    def seal(self, payload: BytesLike, head: BytesLike, seq: int) -> memoryview: ...
    def seal_in_place(self, buf: bytearray | memoryview, size: int, seq: int) -> bytearray: ...
    def open_packet(
        self, buf: BytesLike, offset: int, seq: int
    ) -> tuple[memoryview, int] | None: ...
