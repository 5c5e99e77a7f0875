"""Our WebSocket stream against the `websockets` library's sans-I/O Protocol.

`websockets` is a widely used, independently written RFC 6455 implementation, so
agreeing with it in both directions (and on both fast-path twins) is a check our
own tests written from the RFC cannot give.
"""

from __future__ import annotations

from types import ModuleType

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Opcode as RefOpcode
from websockets.protocol import Protocol, Side, State

from cc.protocol.ws import WebSocketStream

payloads = st.lists(st.binary(max_size=70_000), min_size=1, max_size=4)
chunk_sizes = st.integers(min_value=1, max_value=9000)


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@settings(max_examples=40, deadline=None)
@given(messages=payloads, size=chunk_sizes)
def test_reference_server_reads_our_client_frames(
    fastpath_impl: ModuleType, messages: list[bytes], size: int
) -> None:
    ours = WebSocketStream(is_client=True, fastpath=fastpath_impl)
    ref = Protocol(Side.SERVER, state=State.OPEN, max_size=None)
    wire = b"".join(ours.send_binary(m) for m in messages)
    for chunk in _chunks(wire, size):
        ref.receive_data(chunk)
    frames = ref.events_received()
    assert all(f.opcode in (RefOpcode.BINARY, RefOpcode.CONT) for f in frames)
    assert b"".join(f.data for f in frames) == b"".join(messages)


@settings(max_examples=40, deadline=None)
@given(messages=payloads, size=chunk_sizes)
def test_our_client_reads_reference_server_frames(
    fastpath_impl: ModuleType, messages: list[bytes], size: int
) -> None:
    ref = Protocol(Side.SERVER, state=State.OPEN)
    for m in messages:
        ref.send_binary(m)
    ref.send_ping(b"are you there")
    wire = b"".join(ref.data_to_send())
    ours = WebSocketStream(is_client=True, fastpath=fastpath_impl)
    got = b"".join(b"".join(ours.receive_data(chunk)) for chunk in _chunks(wire, size))
    assert got == b"".join(messages)
    # our pong goes back and the reference accepts it as the answer to its ping
    ref.receive_data(ours.data_to_send())
    pongs = [f for f in ref.events_received() if f.opcode == RefOpcode.PONG]
    assert [p.data for p in pongs] == [b"are you there"]


@settings(max_examples=40, deadline=None)
@given(messages=payloads, size=chunk_sizes)
def test_our_server_reads_reference_client_frames(
    fastpath_impl: ModuleType, messages: list[bytes], size: int
) -> None:
    ref = Protocol(Side.CLIENT, state=State.OPEN)
    for m in messages:
        ref.send_binary(m)
    wire = b"".join(ref.data_to_send())
    ours = WebSocketStream(is_client=False, fastpath=fastpath_impl)
    got = b"".join(b"".join(ours.receive_data(chunk)) for chunk in _chunks(wire, size))
    assert got == b"".join(messages)


def test_close_handshake_with_reference(fastpath_impl: ModuleType) -> None:
    ref = Protocol(Side.CLIENT, state=State.OPEN)
    ref.send_close(1000, "bye")
    ours = WebSocketStream(is_client=False, fastpath=fastpath_impl)
    assert ours.receive_data(b"".join(ref.data_to_send())) == []
    assert ours.closed and ours.close_code == 1000 and ours.close_reason == "bye"
    ref.receive_data(ours.data_to_send())
    assert ref.state is State.CLOSING or ref.state is State.CLOSED
    assert ref.close_rcvd is not None and ref.close_rcvd.code == 1000
