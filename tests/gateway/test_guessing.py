"""Password and token guessing costs the guesser (issue 11, bug 2).

Before: one SSH connection tried 1,000 passwords in 0.3 s, four made 80,000 guesses
in 20 s, and every failure wrote a log line.  The attacker here connects from
127.0.0.2, the legitimate connector from 127.0.0.1; both are real sockets and
real SSH (see tests.support.guesser).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import pytest

from cc.connector.connector import FatalError
from cc.protocol.acl import UserTable, parse_tokens_file
from cc.protocol.authguard import GuardPolicy
from tests.support.guesser import Refused, guess_passwords, open_websocket_from
from tests.support.harness import Harness, wait_until
from tests.support.net import free_port

__all__: list[str] = []

ATTACKER = "127.0.0.2"
USERS = UserTable.single("alice", "right-password")


def some_remote() -> str:
    return f"R:127.0.0.1:{free_port()}:127.0.0.1:9"


def wrong_passwords() -> itertools.count[str]:
    return (f"guess-{n}" for n in itertools.count())  # type: ignore[return-value]


async def raw_upgrade_from(source: str, port: int, *headers: str) -> tuple[int, dict[str, str]]:
    """Send a chisel-v3 upgrade from ``source``; the status and headers of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    lines = [
        "GET / HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: chisel-v3",
        *headers,
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    try:
        async with asyncio.timeout(15):
            head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    status_line, *fields = head.decode().split("\r\n")
    parsed = dict(f.split(": ", 1) for f in fields if ": " in f)
    return int(status_line.split()[1]), parsed


async def test_one_connection_gets_max_auth_tries_then_is_closed(harness: Harness) -> None:
    gateway = await harness.gateway(users=USERS, max_auth_tries=3)
    result = await guess_passwords(ATTACKER, gateway.ports[0], "alice", wrong_passwords())
    assert result.accepted is None
    assert result.tries == 3, result
    assert "Too many authentication failures" in result.ended


async def test_failures_after_the_free_ones_are_answered_late(harness: Harness) -> None:
    policy = GuardPolicy(free_failures=3, base_delay=0.3, max_delay=0.6, ban_after=100)
    gateway = await harness.gateway(users=USERS, guard=policy, max_auth_tries=3)
    first = await guess_passwords(ATTACKER, gateway.ports[0], "alice", wrong_passwords())
    assert max(first.answer_times) < 0.25, first.answer_times
    second = await guess_passwords(ATTACKER, gateway.ports[0], "alice", wrong_passwords())
    assert second.tries == 3
    # failures 4, 5, 6 of this source: 0.3, 0.6, 0.6 s
    assert second.answer_times[0] >= 0.28, second.answer_times
    assert second.answer_times[1] >= 0.55, second.answer_times


async def test_guessing_is_slow_and_a_real_connector_still_gets_in(harness: Harness) -> None:
    """Four connections guessing for 3 s with the default policy; the connector from
    another address connects meanwhile, and the guesses stay in the tens, not the
    thousands of the report."""
    gateway = await harness.gateway(users=USERS)
    port = gateway.ports[0]
    tries = 0
    stop = time.monotonic() + 3.0

    async def attacker() -> None:
        nonlocal tries
        while time.monotonic() < stop:
            try:
                result = await guess_passwords(ATTACKER, port, "alice", wrong_passwords())
            except Refused:
                await asyncio.sleep(0.05)
                continue
            tries += result.tries
            assert result.accepted is None

    attack = asyncio.gather(*(attacker() for _ in range(4)))
    await asyncio.sleep(1.0)
    started = time.monotonic()
    await harness.connect(gateway, [some_remote()], auth=("alice", "right-password"))
    took = time.monotonic() - started
    await attack
    assert took < 2.0, f"the real connector needed {took:.2f}s"
    assert tries < 40, f"{tries} guesses in 3 s"


async def test_a_banned_source_gets_429_even_with_the_right_password(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    policy = GuardPolicy(free_failures=10, ban_after=5, ban_time=60.0)
    gateway = await harness.gateway(users=USERS, guard=policy, max_auth_tries=3)
    port = gateway.ports[0]
    with caplog.at_level(logging.WARNING, logger="cc.server.auth"):
        for _ in range(2):
            await guess_passwords(ATTACKER, port, "alice", wrong_passwords())
    assert any(
        f"Banned {ATTACKER} for 60 s after 5 failed logins" in r.getMessage()
        for r in caplog.records
    )
    status, headers = await raw_upgrade_from(ATTACKER, port)
    assert status == 429
    assert 55 <= int(headers["Retry-After"]) <= 60
    # the ban holds on a connection that was upgraded before it: no password works
    with pytest.raises(Refused) as refused:
        await guess_passwords(ATTACKER, port, "alice", iter(["right-password"]))
    assert refused.value.status == 429
    # another address is not punished for the attacker's failures
    await harness.connect(gateway, [some_remote()], auth=("alice", "right-password"))


async def test_a_connector_that_meets_429_retries_rather_than_giving_up(
    harness: Harness,
) -> None:
    """429 is temporary: the connector keeps retrying (here until its retry limit),
    where 401 would stop it at once."""
    policy = GuardPolicy(free_failures=10, ban_after=3, ban_time=60.0)
    gateway = await harness.gateway(users=USERS, guard=policy)
    for _ in range(3):
        await harness.expect_fatal(gateway, [some_remote()], auth=("alice", "wrong"))
    await wait_until(lambda: gateway.banned_for("127.0.0.1") > 0)
    with pytest.raises(FatalError, match="gave up after 2 retries"):
        running = harness.start(gateway, [some_remote()], auth=("alice", "right-password"))
        async with asyncio.timeout(10):
            await running.task


async def test_wrong_tokens_cost_like_wrong_passwords(harness: Harness) -> None:
    tokens = parse_tokens_file(b'{"the-token": [""]}')
    policy = GuardPolicy(free_failures=2, base_delay=0.3, max_delay=0.3, ban_after=5)
    gateway = await harness.gateway(tokens=tokens, guard=policy)
    port = gateway.ports[0]
    times = []
    for _ in range(4):
        started = time.monotonic()
        status, _ = await raw_upgrade_from(ATTACKER, port, "Token: wrong")
        times.append(time.monotonic() - started)
        assert status == 401
    assert max(times[:2]) < 0.25, times
    assert min(times[2:]) >= 0.28, times
    await raw_upgrade_from(ATTACKER, port, "Token: wrong")  # the fifth: banned
    status, headers = await raw_upgrade_from(ATTACKER, port, "Token: the-token")
    assert status == 429 and "Retry-After" in headers
    wst = await open_websocket_from("127.0.0.1", port, headers=[("Token", "the-token")])
    wst.abort()


async def test_failures_are_logged_once_then_summarised(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Thirty failures write two lines: the first failure, then one summary."""
    policy = GuardPolicy(free_failures=1000, ban_after=1000)
    gateway = await harness.gateway(
        users=USERS, guard=policy, max_auth_tries=10, log_summary_interval=0.5
    )
    with caplog.at_level(logging.WARNING, logger="cc.server.auth"):
        for _ in range(3):
            await guess_passwords(ATTACKER, gateway.ports[0], "alice", wrong_passwords())

        def summary() -> list[str]:
            return [
                r.getMessage() for r in caplog.records if "failed logins from" in r.getMessage()
            ]

        await wait_until(lambda: any("in the last" in line for line in summary()), timeout=5)
    failures = [r for r in caplog.records if "Login failed" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert f"from {ATTACKER}:" in failures[0].getMessage()
    assert any(f"29 failed logins from {ATTACKER} in the last" in line for line in summary())
