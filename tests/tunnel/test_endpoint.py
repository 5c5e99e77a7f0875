"""The tunnel endpoint both ends share: channel targets, and failures counted once per end.

Forward (connector listens, gateway dials) and reverse (gateway listens,
connector dials) run the same endpoint code on opposite ends; a target that
refuses must be counted as one failed connection on each end and reset the
client's socket (a FIN would pass for an empty answer), whichever way the tunnel points.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from cc.ssh import OPEN_ADMINISTRATIVELY_PROHIBITED, OPEN_CONNECT_FAILED, ChannelOpenError
from cc.tunnel.endpoint import ChannelTarget
from tests.support.harness import STEP, Harness, wait_until
from tests.support.net import free_port
from tests.tunnel.inprocess import LOOPS, run_on

__all__: list[str] = []


@pytest.mark.parametrize(
    ("text", "host", "port", "udp", "address"),
    [
        ("127.0.0.1:80", "127.0.0.1", 80, False, "127.0.0.1:80"),
        ("example.com:53/udp", "example.com", 53, True, "example.com:53"),
        ("[::1]:8080", "::1", 8080, False, "[::1]:8080"),
    ],
)
def test_channel_target_splits_host_port_and_udp(
    text: str, host: str, port: int, udp: bool, address: str
) -> None:
    target = ChannelTarget.parse(text)
    assert (target.host, target.port, target.udp, target.address) == (host, port, udp, address)
    assert not target.socks
    assert target.text == text


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("[0:0:0:0:0:0:0:1]:22", "[::1]:22"), ("[2001:DB8::0:1]:53/udp", "[2001:db8::1]:53/udp")],
)
def test_channel_target_is_canonical(text: str, canonical: str) -> None:
    """ACLs, declared remotes and stats see the spelling that is dialled."""
    assert ChannelTarget.parse(text).text == canonical


@pytest.mark.parametrize(
    ("text", "meaning"), [("127.0.011:80", "127.0.0.9"), ("0x7f.1:22/udp", "127.0.0.1")]
)
def test_channel_target_in_shorthand_is_prohibited(text: str, meaning: str) -> None:
    with pytest.raises(ChannelOpenError) as info:
        ChannelTarget.parse(text)
    assert info.value.code == OPEN_ADMINISTRATIVELY_PROHIBITED
    assert f"reads it as {meaning};" in info.value.reason


def test_channel_target_socks() -> None:
    target = ChannelTarget.parse("socks")
    assert target.socks
    assert not target.udp


@pytest.mark.parametrize("text", ["", "nohost", "127.0.0.1:notaport", "127.0.0.1:99999/udp"])
def test_channel_target_refuses_what_is_not_host_port(text: str) -> None:
    with pytest.raises(ChannelOpenError) as info:
        ChannelTarget.parse(text)
    assert info.value.code == OPEN_CONNECT_FAILED


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_a_refusing_target_is_one_failure_on_each_end(loop_name: str, reverse: bool) -> None:
    """Counted on both ends, and the dialing end notes why (``last_error``)."""

    async def test(harness: Harness) -> None:
        # A bound socket that never listens refuses connections (a free port could let
        # the kernel connect the dial to itself).
        with socket.socket() as refusing:
            refusing.bind(("127.0.0.1", 0))
            target_port = refusing.getsockname()[1]
            gateway = await harness.gateway()
            port = free_port()
            remote = f"{'R:' if reverse else ''}127.0.0.1:{port}:127.0.0.1:{target_port}"
            running = await harness.connect(gateway, [remote])
            async with asyncio.timeout(STEP):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                with pytest.raises(ConnectionResetError):
                    await reader.read()
                writer.close()
            name = f"{'R:' if reverse else ''}127.0.0.1:{port}=>{target_port}"
            accepting = (gateway.stats if reverse else running.stats).remotes[name]
            dialing_stats = running.stats if reverse else gateway.stats
            dialing = dialing_stats.remotes[name if reverse else f"127.0.0.1:{target_port}"]
            await wait_until(lambda: accepting.failed == 1 and dialing.failed == 1)
            await wait_until(lambda: accepting.open == 0 and dialing.open == 0)
            assert (accepting.total, dialing.total) == (1, 1)
            # the dialing end keeps the reason for its status (the gateway's page shows it)
            dialer = running.connector if reverse else next(iter(gateway.sessions))
            assert f" dial 127.0.0.1:{target_port} failed: " in dialer.endpoint.last_error

    run_on(loop_name, test)
