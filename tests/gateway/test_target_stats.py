"""The gateway's per-target figures stay bounded however many targets clients name.

Forward channels name their target (``host:port``), so the gateway's figures had
one entry per distinct target for ever (``/metrics`` showed 64, the dict kept
all).  Now the gateway and each session keep ``max_remote_stats`` by name; a target
no session uses any more and with nothing open is folded into ``other`` to make
room, and the rest are counted there too: the totals never lose a byte.
Real SSH channels to real echo services on 127.0.0.1.
"""

from __future__ import annotations

import asyncio

from cc.gateway.gateway import Gateway
from cc.ssh import open_chisel_channel
from cc.stats import OTHER, SessionStats
from tests.support.harness import STEP, ChannelSink, Harness, RunningConnector, wait_until
from tests.support.net import free_port
from tests.support.streams import echo_handler

__all__: list[str] = []

CAP = 8


async def _echo_through(running: RunningConnector, target: str, payload: bytes) -> None:
    async with asyncio.timeout(STEP):
        chan, sink = await open_chisel_channel(running.connector.conn, target.encode(), ChannelSink)
        assert isinstance(sink, ChannelSink)
        chan.write(payload)
        chan.write_eof()
        await sink.done
        chan.close()
    assert bytes(sink.data) == payload


def _sums(stats: SessionStats) -> tuple[int, int, int, int]:
    remotes = stats.remotes.values()
    return (
        sum(r.total for r in remotes),
        sum(r.bytes_in for r in remotes),
        sum(r.bytes_out for r in remotes),
        sum(r.open for r in remotes),
    )


async def _settled(gateway: Gateway) -> None:
    await wait_until(lambda: _sums(gateway.stats)[3] == 0)


async def test_many_forward_targets_keep_the_figures_bounded_and_the_totals(
    harness: Harness,
) -> None:
    gateway = await harness.gateway(max_remote_stats=CAP)
    services = [await harness.service(echo_handler) for _ in range(40)]
    sent = 0
    # one session, 20 targets: it uses them all, so past the cap they go to "other"
    first = await harness.connect(gateway, [f"{free_port()}:127.0.0.1:{services[0]}"])
    session = next(iter(gateway.sessions))
    for n, port in enumerate(services[:20]):
        payload = bytes([n]) * (1000 + n)
        await _echo_through(first, f"127.0.0.1:{port}", payload)
        sent += len(payload)
    await _settled(gateway)
    assert len(gateway.stats.remotes) <= CAP + 1, list(gateway.stats.remotes)
    assert len(session.stats.remotes) <= CAP + 1, list(session.stats.remotes)
    assert gateway.stats.remotes[OTHER].total == 20 - CAP
    assert _sums(gateway.stats) == (20, sent, sent, 0)
    assert _sums(session.stats) == (20, sent, sent, 0)
    # that session ends; the next one's targets take the names it no longer uses
    await first.stop()
    await wait_until(lambda: not gateway.sessions)
    second = await harness.connect(gateway, [f"{free_port()}:127.0.0.1:{services[0]}"])
    for n, port in enumerate(services[20:]):
        payload = bytes([n]) * (2000 + n)
        await _echo_through(second, f"127.0.0.1:{port}", payload)
        sent += len(payload)
    await _settled(gateway)
    names = set(gateway.stats.remotes)
    assert len(names) <= CAP + 1, names
    assert {f"127.0.0.1:{port}" for port in services[20 : 20 + CAP - 1]} <= names, names
    assert _sums(gateway.stats) == (40, sent, sent, 0), "nothing was lost by forgetting"


async def test_a_target_in_use_is_never_folded(harness: Harness) -> None:
    gateway = await harness.gateway(max_remote_stats=CAP)
    services = [await harness.service(echo_handler) for _ in range(3 * CAP)]
    keeper = await harness.connect(gateway, [f"{free_port()}:127.0.0.1:{services[0]}"])
    kept = f"127.0.0.1:{services[0]}"
    await _echo_through(keeper, kept, b"first")
    # other sessions come and go, each with its own targets
    for round_ in range(2):
        visitor = await harness.connect(gateway, [f"{free_port()}:127.0.0.1:{services[0]}"])
        for port in services[1 + round_ * CAP : 1 + (round_ + 1) * CAP]:
            await _echo_through(visitor, f"127.0.0.1:{port}", b"x" * 100)
        await visitor.stop()
        await wait_until(lambda: len(gateway.sessions) == 1)
    await _settled(gateway)
    assert len(gateway.stats.remotes) <= CAP + 1
    # the keeper's session still uses its target: it kept its name and its counts
    await _echo_through(keeper, kept, b"second")
    assert gateway.stats.remotes[kept].total == 2
    assert gateway.stats.remotes[kept].bytes_in == len(b"firstsecond")
    assert _sums(gateway.stats)[0] == 2 + 2 * CAP
