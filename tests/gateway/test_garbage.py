"""Protocol garbage after a valid upgrade is logged with the peer (issue 11, item 8).

Before, a bad SSH version line, a huge packet length or random bytes ended the
connection without a word, even with -v: an operator had nothing to go on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct

import pytest

from tests.support.harness import Harness, upgrade_request

__all__: list[str] = []

GARBAGE = {
    "bad-version-line": b"HELLO-2.0-nope\r\n" * 3,
    "huge-packet-length": b"SSH-chisel-v3-client\r\n"
    + struct.pack(">I", 0x7FFFFFF0)
    + os.urandom(64),
    "random-payload": b"SSH-chisel-v3-client\r\n" + os.urandom(4096),
    "random-small-packet": b"SSH-chisel-v3-client\r\n" + struct.pack(">I", 28) + os.urandom(28),
}
#: WebSocket-level garbage, sent as it is (not inside a frame)
RAW = {
    "unmasked-frame": bytes([0x82, 0x05]) + b"hello",
    "reserved-opcode": bytes([0x83, 0x80]) + os.urandom(4),
}


def masked_frame(payload: bytes) -> bytes:
    """One binary WebSocket frame, masked as a client must send it."""
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    length = len(payload)
    if length < 126:
        head = bytes([0x82, 0x80 | length])
    elif length < 65536:
        head = bytes([0x82, 0x80 | 126]) + struct.pack(">H", length)
    else:
        head = bytes([0x82, 0x80 | 127]) + struct.pack(">Q", length)
    return head + key + body


@pytest.mark.parametrize("garbage", [*GARBAGE, *RAW], ids=[*GARBAGE, *RAW])
async def test_ssh_garbage_is_logged_at_warning_with_the_peer(
    harness: Harness, caplog: pytest.LogCaptureFixture, garbage: str
) -> None:
    gateway = await harness.gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.ports[0])
    writer.write(upgrade_request())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    local = writer.get_extra_info("sockname")
    with caplog.at_level(logging.WARNING):
        writer.write(RAW[garbage] if garbage in RAW else masked_frame(GARBAGE[garbage]))
        async with asyncio.timeout(10):
            while await reader.read(65536):
                pass
        await asyncio.sleep(0.1)
    writer.close()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    peer = f"127.0.0.1:{local[1]}"
    assert any(peer in line for line in lines), lines
