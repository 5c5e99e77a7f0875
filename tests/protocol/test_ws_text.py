"""Text frames: passed through like binary ones (chisel reads any data frame as stream
bytes), but invalid UTF-8 fails the connection at once with close code 1007."""

from __future__ import annotations

from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cc.protocol.ws import CloseCode, Opcode, WebSocketError, WebSocketStream
from tests.protocol.test_ws import cframe

__all__: list[str] = []


def server(fastpath_impl: ModuleType) -> WebSocketStream:
    return WebSocketStream(is_client=False, fastpath=fastpath_impl)


def feed_bytewise(ws: WebSocketStream, wire: bytes) -> bytes:
    return b"".join(b"".join(ws.receive_data(wire[i : i + 1])) for i in range(len(wire)))


def test_valid_text_passes_through(fastpath_impl: ModuleType) -> None:
    text = "grüße, 世界 🚀".encode()
    ws = server(fastpath_impl)
    assert b"".join(ws.receive_data(cframe(Opcode.TEXT, text))) == text


def test_valid_text_split_inside_a_character_passes(fastpath_impl: ModuleType) -> None:
    text = "€€€ 🚀🚀".encode()
    wire = cframe(Opcode.TEXT, text[:2], fin=False) + cframe(Opcode.CONT, text[2:])
    assert feed_bytewise(server(fastpath_impl), wire) == text


@pytest.mark.parametrize(
    "bad",
    [b"\xff", b"ok \xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"],
    ids=["ff", "bad-continuation", "surrogate", "over-max", "overlong"],
)
def test_invalid_text_fails_at_once_with_1007(fastpath_impl: ModuleType, bad: bytes) -> None:
    ws = server(fastpath_impl)
    with pytest.raises(WebSocketError) as info:
        ws.receive_data(cframe(Opcode.TEXT, bad))
    assert info.value.code == CloseCode.INVALID_DATA
    close = ws.data_to_send()
    assert close[2:4] == (1007).to_bytes(2, "big"), "the close frame carries 1007"


def test_a_character_cut_off_by_the_end_of_the_message_fails(fastpath_impl: ModuleType) -> None:
    ws = server(fastpath_impl)
    ws.receive_data(cframe(Opcode.TEXT, b"ok \xe2\x82", fin=False))  # 2 of 3 bytes: wait
    with pytest.raises(WebSocketError) as info:
        ws.receive_data(cframe(Opcode.CONT, b""))  # the message ends mid-character
    assert info.value.code == CloseCode.INVALID_DATA


def test_binary_frames_are_never_checked(fastpath_impl: ModuleType) -> None:
    ws = server(fastpath_impl)
    assert b"".join(ws.receive_data(cframe(Opcode.BINARY, b"\xff\xfe"))) == b"\xff\xfe"
    text = "après".encode()
    assert b"".join(ws.receive_data(cframe(Opcode.TEXT, text))) == text


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=8))
def test_text_verdict_matches_python_decoding(payload: bytes, pieces: int) -> None:
    from cc import _fastpath_py

    wire = cframe(Opcode.TEXT, payload)
    ws = WebSocketStream(is_client=False, fastpath=_fastpath_py)
    try:
        payload.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    step = max(1, len(wire) // pieces)
    try:
        got = b"".join(
            b"".join(ws.receive_data(wire[i : i + step])) for i in range(0, len(wire), step)
        )
    except WebSocketError as exc:
        assert not valid and exc.code == CloseCode.INVALID_DATA
    else:
        assert valid and got == payload
