"""Sessions of one multi-worker connector share reverse ports; nobody else joins them.

In-process gateway and connectors on 127.0.0.1: two sessions with the same group
secret both bind the reverse port (SO_REUSEPORT), connections keep working when
one of them ends, and a session with another secret (or none) is refused.  The
claims go over a real socket pair for gateway workers.
"""

from __future__ import annotations

import asyncio
import secrets
import socket

from cc.gateway.gateway import Gateway
from cc.gateway.ports import WorkerPortRegistry, serve_worker_claims
from cc.protocol.workers import PortClaims
from tests.support.harness import STEP, Harness, wait_until
from tests.support.net import free_port
from tests.support.streams import echo_handler, round_trip

__all__: list[str] = []


def holders(gateway: Gateway, port: int) -> int:
    return sum(session.holds_port(port) for session in gateway.sessions)


async def test_one_connectors_sessions_share_a_reverse_port(harness: Harness) -> None:
    gateway = await harness.gateway()
    service = await harness.service(echo_handler)
    port = free_port()
    remote = f"R:127.0.0.1:{port}:127.0.0.1:{service}"
    group = secrets.token_urlsafe(32)
    first = await harness.connect(gateway, [remote], worker_count=2, worker_index=0, group=group)
    second = await harness.connect(gateway, [remote], worker_count=2, worker_index=1, group=group)
    assert holders(gateway, port) == 2
    for _ in range(20):  # whichever session the kernel picks, the tunnel works
        assert await round_trip(port, b"both", half_close=False) == b"both"
    served = [c.stats.remotes[f"R:127.0.0.1:{port}=>{service}"].total for c in (first, second)]
    assert sum(served) == 20
    await first.stop()
    await wait_until(lambda: holders(gateway, port) == 1)
    for _ in range(5):
        assert await round_trip(port, b"still up", half_close=False) == b"still up"


async def test_another_secret_cannot_join_the_port(harness: Harness) -> None:
    gateway = await harness.gateway()
    service = await harness.service(echo_handler)
    port = free_port()
    remote = f"R:127.0.0.1:{port}:127.0.0.1:{service}"
    await harness.connect(
        gateway, [remote], worker_count=2, worker_index=0, group=secrets.token_urlsafe(32)
    )
    error = await harness.expect_fatal(
        gateway, [remote], worker_count=2, worker_index=0, group=secrets.token_urlsafe(32)
    )
    assert "gave up" in str(error)
    assert holders(gateway, port) == 1


async def test_an_exclusive_holder_is_not_joined_and_does_not_join(harness: Harness) -> None:
    gateway = await harness.gateway()
    service = await harness.service(echo_handler)
    port, other = free_port(), free_port()
    await harness.connect(gateway, [f"R:127.0.0.1:{port}:127.0.0.1:{service}"])
    await harness.expect_fatal(
        gateway,
        [f"R:127.0.0.1:{port}:127.0.0.1:{service}"],
        worker_count=2,
        group=secrets.token_urlsafe(32),
    )
    await harness.connect(
        gateway,
        [f"R:127.0.0.1:{other}:127.0.0.1:{service}"],
        worker_count=2,
        group=secrets.token_urlsafe(32),
    )
    await harness.expect_fatal(gateway, [f"R:127.0.0.1:{other}:127.0.0.1:{service}"])
    assert holders(gateway, port) == 1 and holders(gateway, other) == 1


async def test_a_short_group_header_is_ignored(harness: Harness) -> None:
    """A guessable secret would let anyone join: below 32 characters it is not used."""
    gateway = await harness.gateway()
    service = await harness.service(echo_handler)
    port = free_port()
    remote = f"R:127.0.0.1:{port}:127.0.0.1:{service}"
    await harness.connect(gateway, [remote], worker_count=2, group="short")
    await harness.expect_fatal(gateway, [remote], worker_count=2, worker_index=1, group="short")


async def test_worker_claims_go_through_the_control_process() -> None:
    """Two workers' registries over real socket pairs to one set of claims."""
    claims = PortClaims()
    pairs = [socket.socketpair() for _ in range(2)]
    servers = [
        asyncio.ensure_future(serve_worker_claims(ours, claims, worker))
        for worker, (ours, _theirs) in enumerate(pairs)
    ]
    first, second = (WorkerPortRegistry(theirs) for _ours, theirs in pairs)
    assert await first.claim(9001, "k", owner=1)
    assert await second.claim(9001, "k", owner=1), "same key, other worker: shared"
    assert not await second.claim(9001, "x", owner=2)
    assert await first.claim(9002, None, owner=1, identity="alice")
    assert not await second.claim(9002, None, owner=2, identity="bob")
    assert await second.holder(9002) == "alice", "who holds it, across workers"
    assert await second.holder(9003) is None
    first.release(9001, 1)
    await wait_until(lambda: claims.holders(9001) == 1)
    second.close()  # worker 2 ends: its claims go with it
    async with asyncio.timeout(STEP):
        await servers[1]
    assert claims.holders(9001) == 0
    assert await first.claim(9001, "x", owner=3)
    first.close()
    async with asyncio.timeout(STEP):
        await servers[0]
    assert claims.holders(9002) == 0


async def test_a_silent_partner_is_closed_when_its_connector_rejoins(harness: Harness) -> None:
    """A worker whose old session went silent reconnects: the stale session goes at once.

    The old session stops reading (its pings go unanswered, as after a dropped NAT
    entry); the new session of the same connector joins the port, the gateway asks
    the partner, gets no answer within the deadline and closes it, long before the
    25 s keepalive would have noticed.
    """
    gateway = await harness.gateway(keepalive_timeout=0.5)
    service = await harness.service(echo_handler)
    port = free_port()
    remote = f"R:127.0.0.1:{port}:127.0.0.1:{service}"
    group = secrets.token_urlsafe(32)
    old = await harness.connect(gateway, [remote], worker_count=2, group=group)
    old.connector.conn._transport.pause_reading()  # the old path is dead: nothing gets in
    await harness.connect(gateway, [remote], worker_count=2, group=group)
    await wait_until(lambda: holders(gateway, port) == 1, timeout=5.0)
    for _ in range(10):  # every connection reaches the live session
        assert await round_trip(port, b"fresh", half_close=False) == b"fresh"


async def test_healthy_partners_are_kept(harness: Harness) -> None:
    gateway = await harness.gateway(keepalive_timeout=0.5)
    service = await harness.service(echo_handler)
    port = free_port()
    remote = f"R:127.0.0.1:{port}:127.0.0.1:{service}"
    group = secrets.token_urlsafe(32)
    await harness.connect(gateway, [remote], worker_count=2, group=group)
    await harness.connect(gateway, [remote], worker_count=2, worker_index=1, group=group)
    await asyncio.sleep(1.0)  # past the deadline of the partner check
    assert holders(gateway, port) == 2
