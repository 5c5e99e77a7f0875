"""UDP remotes, ours to ours: many senders, the sender cap, idle expiry, bad input.

A UDP remote is one ``chisel`` channel carrying gob ``udpPacket{Src, Payload}``
values.  Reverse: the gateway listens and the connector dials the service; forward:
the connector listens and the gateway dials.  Every datagram here names its sender,
so a reply that reaches the wrong sender is caught.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import asyncssh
import pytest

from cc.protocol.acl import parse_authfile
from cc.protocol.remote import parse_outsystemscc_remote, parse_remote
from cc.protocol.udp import GobDecoder, GobEncoder
from cc.ssh import ChannelOpenError, open_chisel_channel
from cc.tunnel.udp.common import UDPSettings, format_addr
from cc.tunnel.udp.exit import UDPExit
from cc.tunnel.udp.listener import UDPListener
from tests.support.harness import MODES, STEP, Harness, wait_until

__all__: list[str] = []

# -- UDP helpers -------------------------------------------------------------------------


class Inbox(asyncio.DatagramProtocol):
    """Collects what one UDP socket receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((data, addr))

    async def next(self, timeout: float = STEP) -> bytes:
        async with asyncio.timeout(timeout):
            data, _ = await self.queue.get()
        return data

    async def nothing(self, wait: float = 0.3) -> bool:
        """True when nothing arrives within ``wait`` seconds."""
        try:
            async with asyncio.timeout(wait):
                await self.queue.get()
        except TimeoutError:
            return True
        return False


class Sender:
    """A UDP socket of its own (so its own Src) sending to one address."""

    def __init__(self, inbox: Inbox, addr: tuple[str, int]) -> None:
        self.inbox = inbox
        self.addr = addr

    @classmethod
    async def open(cls, addr: tuple[str, int], family: int = socket.AF_INET) -> Sender:
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        _, inbox = await asyncio.get_running_loop().create_datagram_endpoint(
            Inbox, local_addr=(host, 0)
        )
        return cls(inbox, addr)

    def send(self, data: bytes) -> None:
        assert self.inbox.transport is not None
        self.inbox.transport.sendto(data, self.addr)

    async def ask(self, data: bytes, timeout: float = STEP) -> bytes:
        self.send(data)
        return await self.inbox.next(timeout)

    def close(self) -> None:
        if self.inbox.transport is not None:
            self.inbox.transport.close()


def udp_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EchoService(asyncio.DatagramProtocol):
    """Answers each datagram with ``b"echo:" + data`` to whoever sent it."""

    def __init__(self) -> None:
        self.senders: set[Any] = set()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.senders.add(addr)
        assert self.transport is not None
        self.transport.sendto(b"echo:" + data, addr)


@pytest.fixture
async def echo_udp() -> AsyncIterator[tuple[int, EchoService]]:
    transport, service = await asyncio.get_running_loop().create_datagram_endpoint(
        EchoService, local_addr=("127.0.0.1", 0)
    )
    try:
        yield transport.get_extra_info("sockname")[1], service
    finally:
        transport.close()


async def udp_tunnel(
    harness: Harness, service_port: int, *, reverse: bool, udp: UDPSettings | None = None
) -> tuple[int, Any, Any]:
    """A UDP remote to the service; returns (tunnel port, gateway, running connector)."""
    port = udp_port()
    prefix = "R:" if reverse else ""
    remote = parse_remote(f"{prefix}127.0.0.1:{port}:127.0.0.1:{service_port}/udp")
    settings = udp or UDPSettings()
    gateway = await harness.gateway(udp=settings)
    running = await harness.connect(gateway, [remote], udp=settings)
    return port, gateway, running


def exits() -> list[UDPExit]:
    return list(UDPExit.live)


# -- 1. many senders, each gets its own replies ----------------------------------------------


@pytest.mark.parametrize("reverse", MODES)
async def test_20_senders_get_their_own_replies(
    harness: Harness, echo_udp: tuple[int, EchoService], reverse: bool
) -> None:
    service_port, service = echo_udp
    port, gateway, running = await udp_tunnel(harness, service_port, reverse=reverse)
    senders = [await Sender.open(("127.0.0.1", port)) for _ in range(20)]
    try:
        async with asyncio.timeout(STEP):
            for round_ in range(3):
                for i, sender in enumerate(senders):
                    sender.send(b"sender %d round %d" % (i, round_))
                for i, sender in enumerate(senders):
                    assert await sender.inbox.next() == b"echo:sender %d round %d" % (i, round_)
    finally:
        for sender in senders:
            sender.close()
    # one socket per sender at the service, all from one channel
    assert len(service.senders) == 20
    listening = gateway.stats if reverse else running.stats
    dialing = running.stats if reverse else gateway.stats
    key = next(k for k in listening.remotes if "udp" in k)
    assert listening.remotes[key].total == 1, "one channel for every sender"
    assert listening.remotes[key].bytes_out == sum(
        len(b"sender %d round %d" % (i, r)) for i in range(20) for r in range(3)
    )
    dial_key = next(k for k in dialing.remotes if "udp" in k)
    assert dialing.remotes[dial_key].bytes_out == listening.remotes[key].bytes_in


async def test_ipv6_udp_remote(harness: Harness) -> None:
    try:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            EchoService, local_addr=("::1", 0)
        )
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        service = transport.get_extra_info("sockname")[1]
        port = udp_port("::1")
        gateway = await harness.gateway()
        await harness.connect(gateway, [f"R:[::1]:{port}:[::1]:{service}/udp"])
        sender = await Sender.open(("::1", port), socket.AF_INET6)
        try:
            assert await sender.ask(b"six") == b"echo:six"
        finally:
            sender.close()
    finally:
        transport.close()


# -- 2. the sender cap evicts the least recently used, idle senders expire ---------------------


@pytest.mark.parametrize("reverse", MODES)
async def test_cap_evicts_least_recently_used_sender(
    harness: Harness, echo_udp: tuple[int, EchoService], reverse: bool
) -> None:
    """Past the cap, new senders are still served (chisel stops answering them)."""
    service_port, _ = echo_udp
    settings = UDPSettings(max_senders=4)
    port, _, _ = await udp_tunnel(harness, service_port, reverse=reverse, udp=settings)
    senders = [await Sender.open(("127.0.0.1", port)) for _ in range(10)]
    try:
        for i, sender in enumerate(senders):
            assert await sender.ask(b"%d" % i) == b"echo:%d" % i
        (exit_,) = exits()
        assert len(exit_.table) == 4
        assert exit_.peak == 4
        assert exit_.evicted == 6
        mapped = [format_addr(s.inbox.transport.get_extra_info("sockname")) for s in senders]
        assert list(exit_.table) == mapped[-4:], "the four most recent senders are kept"
        # an evicted sender comes back: it gets a new mapping and its answers
        assert await senders[0].ask(b"back") == b"echo:back"
        assert list(exit_.table) == mapped[-3:] + mapped[:1]
    finally:
        for sender in senders:
            sender.close()


async def test_idle_senders_expire(harness: Harness, echo_udp: tuple[int, EchoService]) -> None:
    service_port, _ = echo_udp
    port, _, _ = await udp_tunnel(
        harness, service_port, reverse=True, udp=UDPSettings(idle_timeout=0.3)
    )
    sender = await Sender.open(("127.0.0.1", port))
    try:
        assert await sender.ask(b"a") == b"echo:a"
        (exit_,) = exits()
        assert len(exit_.table) == 1
        await wait_until(lambda: len(exit_.table) == 0, timeout=3)
        assert await sender.ask(b"b") == b"echo:b", "a new mapping after expiry"
    finally:
        sender.close()


# -- 3. datagram size bound ----------------------------------------------------------------------


@pytest.mark.parametrize("reverse", MODES)
async def test_oversize_datagram_is_dropped(
    harness: Harness, echo_udp: tuple[int, EchoService], reverse: bool
) -> None:
    service_port, service = echo_udp
    settings = UDPSettings(max_size=100)
    port, _, _ = await udp_tunnel(harness, service_port, reverse=reverse, udp=settings)
    sender = await Sender.open(("127.0.0.1", port))
    try:
        assert await sender.ask(b"x" * 95) == b"echo:" + b"x" * 95
        sender.send(b"y" * 101)  # over the limit on the way in
        assert await sender.inbox.nothing()
        sender.send(b"z" * 97)  # fits, but its echo (102 bytes) does not on the way back
        assert await sender.inbox.nothing()
        assert await sender.ask(b"small") == b"echo:small", "the channel survived"
    finally:
        sender.close()
    assert len(service.senders) == 1


# -- 4. hostile or broken input never crashes ----------------------------------------------------


class Collector(asyncssh.SSHTCPSession[bytes]):
    def __init__(self) -> None:
        self.data = bytearray()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes, datatype: Any = None) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\x05\xff\x81\x03\x01\x01", id="truncated-definition-then-junk"),
        pytest.param(b"\xf7" + b"\xff" * 8, id="huge-length"),
        pytest.param(b"\x03\xff\x82\x00", id="value-before-type"),
    ],
)
async def test_malformed_gob_closes_only_that_channel(
    harness: Harness,
    echo_udp: tuple[int, EchoService],
    caplog: pytest.LogCaptureFixture,
    garbage: bytes,
) -> None:
    service_port, _ = echo_udp
    port, gateway, running = await udp_tunnel(harness, service_port, reverse=False)
    target = f"127.0.0.1:{service_port}/udp".encode()
    with caplog.at_level(logging.ERROR, logger="cc"):
        async with asyncio.timeout(STEP):
            chan, collector = await open_chisel_channel(running.connector.conn, target, Collector)
            chan.write(garbage)
            await collector.done  # the gateway closed it
    assert any("malformed" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    # the session and the real UDP remote are unharmed
    sender = await Sender.open(("127.0.0.1", port))
    try:
        assert await sender.ask(b"still here") == b"echo:still here"
    finally:
        sender.close()
    assert len(gateway.sessions) == 1


class FakeChannel:
    """Stands in for an SSH channel under a listener: records writes and close()."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


async def fake_listener(
    caplog: pytest.LogCaptureFixture,
) -> tuple[UDPListener, list[Any], FakeChannel]:
    sessions: list[Any] = []
    chan = FakeChannel()

    async def opener(target: bytes, factory: Callable[[], Any]) -> object:
        session = factory()
        session.connection_made(chan)
        sessions.append(session)
        return chan, session

    remote = parse_remote(f"127.0.0.1:{udp_port()}:127.0.0.1:9/udp")
    listener = UDPListener(remote, opener, UDPSettings(), None, logging.getLogger("cc.test.udp"))
    await listener.start()
    return listener, sessions, chan


async def test_listener_answers_only_recent_senders(caplog: pytest.LogCaptureFixture) -> None:
    """A peer cannot make the listener send datagrams to an address that never wrote."""
    listener, sessions, chan = await fake_listener(caplog)
    sender = await Sender.open(listener.sockname[:2])
    stranger = await Sender.open(("127.0.0.1", 9))
    try:
        sender.send(b"hi")
        await wait_until(lambda: bool(sessions) and bool(chan.written))
        ((src, payload),) = GobDecoder().receive_data(bytes(chan.written))
        assert payload == b"hi"
        stranger_src = format_addr(stranger.inbox.transport.get_extra_info("sockname"))
        encoder = GobEncoder()
        sessions[0].data_received(encoder.encode(stranger_src, b"spoofed"))
        sessions[0].data_received(encoder.encode(src, b"reply"))
        assert await sender.inbox.next() == b"reply"
        assert await stranger.inbox.nothing()
    finally:
        sender.close()
        stranger.close()
        listener.close()


async def test_listener_closes_channel_on_malformed_reply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener, sessions, chan = await fake_listener(caplog)
    sender = await Sender.open(listener.sockname[:2])
    try:
        with caplog.at_level(logging.ERROR, logger="cc"):
            sender.send(b"hi")
            await wait_until(lambda: bool(sessions))
            sessions[0].data_received(b"\x03\xff\x82\x07")  # a value of an undefined type
        assert chan.closed
        assert any("malformed" in r.getMessage() for r in caplog.records)
    finally:
        sender.close()
        listener.close()


# -- 5. who may open UDP channels ------------------------------------------------------------------


async def test_gateway_acl_applies_to_udp_targets(
    harness: Harness, echo_udp: tuple[int, EchoService]
) -> None:
    service_port, _ = echo_udp
    other = udp_port()
    users = parse_authfile(b'{"u:p": ["127\\\\.0\\\\.0\\\\.1:%d"]}' % service_port)
    gateway = await harness.gateway(users=users)
    port = udp_port()
    running = await harness.connect(
        gateway, [f"127.0.0.1:{port}:127.0.0.1:{service_port}/udp"], auth=("u", "p")
    )
    sender = await Sender.open(("127.0.0.1", port))
    try:
        assert await sender.ask(b"allowed") == b"echo:allowed"
    finally:
        sender.close()
    with pytest.raises(ChannelOpenError) as info:
        async with asyncio.timeout(STEP):
            await open_chisel_channel(
                running.connector.conn, f"127.0.0.1:{other}/udp".encode(), Collector
            )
    assert info.value.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
    error = await harness.expect_fatal(
        gateway, [f"127.0.0.1:{udp_port()}:127.0.0.1:{other}/udp"], auth=("u", "p")
    )
    assert "denied" in str(error)


async def test_connector_dials_only_its_declared_udp_target(
    harness: Harness, echo_udp: tuple[int, EchoService]
) -> None:
    service_port, _ = echo_udp
    gateway = await harness.gateway()
    await harness.connect(gateway, [f"R:127.0.0.1:{udp_port()}:127.0.0.1:{service_port}/udp"])
    (session,) = gateway.sessions
    for target in (f"127.0.0.1:{service_port + 1}/udp", f"127.0.0.1:{service_port}"):
        with pytest.raises(ChannelOpenError):
            async with asyncio.timeout(STEP):
                await open_chisel_channel(session.conn, target.encode(), Collector)
    async with asyncio.timeout(STEP):
        chan, _ = await open_chisel_channel(
            session.conn, f"127.0.0.1:{service_port}/udp".encode(), Collector
        )
    chan.close()


def test_outsystemscc_accepts_reverse_udp() -> None:
    remote = parse_outsystemscc_remote("R:8082:127.0.0.1:587/udp")
    assert remote.target() == "127.0.0.1:587/udp"
    assert replace(remote, reverse=False).acl_subject() == "127.0.0.1:587"


async def test_listener_reopens_channel_after_loss(
    harness: Harness, echo_udp: tuple[int, EchoService]
) -> None:
    """The dialing side closing the channel costs one datagram, not the remote."""
    service_port, _ = echo_udp
    port, _, _ = await udp_tunnel(harness, service_port, reverse=True)
    sender = await Sender.open(("127.0.0.1", port))
    try:
        assert await sender.ask(b"one") == b"echo:one"
        (exit_,) = exits()
        exit_.close()
        await wait_until(lambda: not exits())
        async with asyncio.timeout(STEP):
            while True:  # the first datagram may race the close; UDP may drop it
                sender.send(b"two")
                if not await sender.inbox.nothing(0.2):
                    break
        assert len(exits()) == 1
    finally:
        sender.close()
