"""Reloaded credentials bite on live sessions (chisel keeps a revoked user's tunnels).

A connector logs in, then the gateway gets a new authfile or tokens file as its
file watchers hand it over (``Gateway.apply_credentials``): a removed user or
token, or a changed password, ends the session; a narrowed ACL closes the reverse
listeners and refuses the channels it no longer allows and leaves the rest; an
edit about somebody else changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import struct
from typing import Any

import asyncssh
import pytest

from cc.connector.connector import FatalError
from cc.gateway.ports import LocalPortRegistry
from cc.protocol.acl import TokenTable, UserTable, parse_authfile, parse_tokens_file
from cc.ssh import ChannelOpenError, open_chisel_channel
from tests.support.harness import STEP, ChannelSink, Harness, wait_until
from tests.support.net import free_port
from tests.support.streams import assert_echoes, echo_handler

__all__: list[str] = []

TOKEN, OTHER_TOKEN = "token-of-alice", "token-of-bob"


def users(entries: dict[str, list[str]]) -> UserTable:
    return parse_authfile(json.dumps(entries).encode())


def tokens(entries: dict[str, list[str]]) -> TokenTable:
    return parse_tokens_file(json.dumps(entries).encode())


def reverse_subject(port: int) -> str:
    return re.escape(f"R:127.0.0.1:{port}")


def target(port: int) -> str:
    return re.escape(f"127.0.0.1:{port}")


async def refuses(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def wait_refused(port: int) -> None:
    """The port refuses connections (uvloop closes a listening socket a tick later)."""
    async with asyncio.timeout(STEP):
        while not await refuses(port):
            await asyncio.sleep(0.01)


async def channel_to(conn: Any, port: int) -> None:
    """Open a forward channel to 127.0.0.1:``port`` and echo a few bytes through it."""
    async with asyncio.timeout(STEP):
        chan, sink = await open_chisel_channel(conn, f"127.0.0.1:{port}".encode(), ChannelSink)
        assert isinstance(sink, ChannelSink)
        chan.write(b"ping")
        chan.write_eof()
        await sink.done
    assert bytes(sink.data) == b"ping"


async def channel_refused(conn: Any, port: int) -> None:
    """A forward channel to 127.0.0.1:``port`` is refused (closed session or the ACL)."""
    with pytest.raises((ChannelOpenError, asyncssh.Error, OSError)):
        await channel_to(conn, port)


def closed_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "Closed session" in r.getMessage()]


class Alice:
    """A gateway, an echo service, and alice's connector with a reverse and a forward remote.

    ``acl`` (a list of regexes) is given the subjects of both remotes and the
    service, known only once they are made.
    """

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.reverse_port = free_port()
        self.forward_port = free_port()

    async def start(self, **gateway: Any) -> None:
        self.service = await self.harness.service(echo_handler)
        self.gateway = await self.harness.gateway(**gateway)

    async def connect(self, *extra_remotes: str, **login: Any) -> None:
        remotes = [
            f"R:127.0.0.1:{self.reverse_port}:127.0.0.1:{self.service}",
            f"127.0.0.1:{self.forward_port}:127.0.0.1:{self.service}",
            *extra_remotes,
        ]
        self.running = await self.harness.connect(self.gateway, remotes, **login)
        self.conn = self.running.connector.conn
        (self.session,) = self.gateway.sessions
        assert self.session.context is not None
        self.peer = self.session.context.peer
        await assert_echoes(self.reverse_port, 4096)
        await assert_echoes(self.forward_port, 4096)

    async def assert_revoked(self, caplog: pytest.LogCaptureFixture, reason: str) -> None:
        """The session is gone, its reverse port refuses, its channels are refused."""
        await wait_until(lambda: self.session not in self.gateway.sessions)
        await wait_refused(self.reverse_port)
        await channel_refused(self.conn, self.service)
        user = self.session.user
        assert closed_lines(caplog) == [
            f"Closed session of user '{user}' from {self.peer}: {reason}"
        ]

    async def reconnect_refused(self, match: str) -> None:
        """The connector's reconnect is refused like any login with those credentials."""
        with pytest.raises(FatalError, match=match):
            async with asyncio.timeout(STEP):
                await self.running.task


# -- revoked: the session ends -------------------------------------------------------


async def test_removed_user_loses_the_session(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    alice = Alice(harness)
    await alice.start(users=users({"alice:pw": [""], "bob:pw": [""]}))
    await alice.connect(auth=("alice", "pw"))
    with caplog.at_level(logging.WARNING, logger="cc.server"):
        alice.gateway.apply_credentials(users({"bob:pw": [""]}), None)
        await alice.assert_revoked(caplog, "user removed from the authfile")
    await alice.reconnect_refused("authentication failed")


async def test_changed_password_loses_the_session(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    alice = Alice(harness)
    await alice.start(users=users({"alice:pw": [""]}))
    await alice.connect(auth=("alice", "pw"))
    with caplog.at_level(logging.WARNING, logger="cc.server"):
        alice.gateway.apply_credentials(users({"alice:new": [""]}), None)
        await alice.assert_revoked(caplog, "password changed in the authfile")
    await alice.reconnect_refused("authentication failed")


async def test_removed_token_loses_the_session(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    alice = Alice(harness)
    await alice.start(tokens=tokens({TOKEN: [""], OTHER_TOKEN: [""]}))
    await alice.connect(headers=[("token", TOKEN)])
    with caplog.at_level(logging.WARNING, logger="cc.server"):
        alice.gateway.apply_credentials(None, tokens({OTHER_TOKEN: [""]}))
        await alice.assert_revoked(caplog, "token removed from the tokens file")
    await alice.reconnect_refused("401")


# -- narrowed: what is no longer allowed closes, the rest stays ----------------------------


@pytest.mark.parametrize("via", ["authfile", "tokens"])
async def test_narrowed_acl_closes_only_what_it_no_longer_allows(
    harness: Harness, caplog: pytest.LogCaptureFixture, via: str
) -> None:
    alice = Alice(harness)
    kept_port = free_port()
    await alice.start()
    wide = [
        reverse_subject(alice.reverse_port),
        reverse_subject(kept_port),
        target(alice.service),
    ]
    narrow = [reverse_subject(kept_port)]
    login: dict[str, Any]
    if via == "authfile":
        alice.gateway.apply_credentials(users({"alice:pw": wide, "bob:pw": [""]}), None)
        after = (users({"alice:pw": narrow, "bob:pw": [""]}), None)
        login = {"auth": ("alice", "pw")}
    else:
        alice.gateway.apply_credentials(None, tokens({TOKEN: wide}))
        after = (None, tokens({TOKEN: narrow}))
        login = {"headers": [("token", TOKEN)]}
    await alice.connect(f"R:127.0.0.1:{kept_port}:127.0.0.1:{alice.service}", **login)
    await assert_echoes(kept_port, 4096)

    with caplog.at_level(logging.WARNING, logger="cc.server"):
        alice.gateway.apply_credentials(*after)
        await wait_refused(alice.reverse_port)
        await channel_refused(alice.conn, alice.service)  # the target is no longer allowed
    assert alice.gateway.sessions == {alice.session}, "a narrowed session stays up"
    assert not closed_lines(caplog)
    messages = [r.getMessage() for r in caplog.records]
    closed = f"R:127.0.0.1:{alice.reverse_port}"
    assert any(
        m.startswith(f"Closed {closed}=>") and f"'{closed}' is no longer allowed" in m
        for m in messages
    ), messages
    forward = f"127.0.0.1:{alice.forward_port}=>"
    assert any(m.startswith(f"Refusing channels of {forward}") for m in messages), messages
    await assert_echoes(kept_port, 64 * 1024)  # the allowed listener still works
    assert [r.local_port for r in alice.session._listener_remotes.values()] == [kept_port]
    # the closed port is free for whoever may have it now
    registry = alice.gateway.config.port_registry
    assert await registry.claim(alice.reverse_port, None, -1)
    registry.release(alice.reverse_port, -1)


async def test_narrowed_acl_binds_socks_requests(harness: Harness) -> None:
    """A SOCKS channel asks the ACL per CONNECT: the reloaded ACL, not the login's."""
    service = await harness.service(echo_handler)
    acl = users({"alice:pw": ["socks", target(service)]})
    gateway = await harness.gateway(users=acl, socks5=True)
    socks_port = free_port()
    await harness.connect(gateway, [f"127.0.0.1:{socks_port}:socks"], auth=("alice", "pw"))
    assert await socks_connect(socks_port, service) == 0
    gateway.apply_credentials(users({"alice:pw": ["socks"]}), None)
    assert await socks_connect(socks_port, service) == 2, "connection not allowed by ruleset"


async def socks_connect(port: int, target_port: int) -> int:
    """A raw SOCKS5 CONNECT to 127.0.0.1:``target_port``; the reply code."""
    async with asyncio.timeout(STEP):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"\x05\x01\x00")
            assert await reader.readexactly(2) == b"\x05\x00"
            writer.write(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + struct.pack("!H", target_port))
            head = await reader.readexactly(4)
            return head[1]
        finally:
            writer.close()


# -- someone else's edit ----------------------------------------------------------------


async def test_unrelated_edit_leaves_the_session_alone(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    alice = Alice(harness)
    await alice.start(
        users=users({"alice:pw": [""], "bob:pw": [""]}),
        tokens=tokens({TOKEN: [""], OTHER_TOKEN: [""]}),
    )
    await alice.connect(auth=("alice", "pw"), headers=[("token", TOKEN)])
    listeners = list(alice.session.listeners)
    with caplog.at_level(logging.INFO, logger="cc.server"):
        # bob's password and ACL change, carol arrives, alice's entries are rewritten alike
        alice.gateway.apply_credentials(
            users({"bob:other": ["nothing"], "carol:pw": [""], "alice:pw": ["", "*"]}),
            tokens({TOKEN: ["*"], "token-of-carol": [""]}),
        )
        await assert_echoes(alice.reverse_port, 64 * 1024)
        await assert_echoes(alice.forward_port, 64 * 1024)
        await channel_to(alice.conn, alice.service)
    assert alice.gateway.sessions == {alice.session}
    assert alice.session.listeners == listeners
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records


# -- a reload while the session's listeners are still opening ------------------------------


class HeldRegistry(LocalPortRegistry):
    """Port claims wait until ``go`` is set: the window between ACL check and bind."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()
        self.go = asyncio.Event()

    async def claim(
        self, port: int, key: str | None, owner: int, identity: str | None = None
    ) -> bool:
        self.asked.set()
        await self.go.wait()
        return await super().claim(port, key, owner, identity)


@pytest.mark.parametrize(
    ("after", "refusal"),
    [
        pytest.param({"bob:pw": [""]}, "authentication failed", id="revoked"),
        pytest.param({"alice:pw": [], "bob:pw": [""]}, "access to 'R:127.0.0.1:", id="narrowed"),
    ],
)
async def test_reload_while_listeners_open_leaves_no_listener(
    harness: Harness, after: dict[str, list[str]], refusal: str
) -> None:
    """A reverse port whose bind was under way when the ACL changed is not left open."""
    registry = HeldRegistry()
    gateway = await harness.gateway(
        users=users({"alice:pw": [""], "bob:pw": [""]}), port_registry=registry
    )
    port = free_port()
    running = harness.start(gateway, [f"R:127.0.0.1:{port}:127.0.0.1:9"], auth=("alice", "pw"))
    async with asyncio.timeout(STEP):
        await registry.asked.wait()
    gateway.apply_credentials(users(after), None)
    registry.go.set()
    with pytest.raises(FatalError, match=re.escape(refusal)):
        async with asyncio.timeout(STEP):
            await running.task
    await wait_until(lambda: not gateway.sessions)
    assert await refuses(port)
    assert registry.claims.holders(port) == 0
