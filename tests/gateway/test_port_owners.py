"""A reverse port held by another client is refused at once, and says so (issue 13 C).

The Armorcode agent's only help when its container exits is "ensure that you are not
using the same TUNNEL_PORT again for a different service".  Here a second client
(another token or another user) asking for a port that a first one holds gets a
config error naming its own remote and saying the port is taken by another client
(never whose), and the connector stops with it instead of retrying for ever.  The
same client's stale session keeps the retry-and-evict path (test_stale_sessions.py).
"""

from __future__ import annotations

import json

from cc.protocol.acl import parse_authfile, parse_tokens_file
from cc.protocol.remote import parse_remote
from tests.support.harness import Harness
from tests.support.net import LOOPBACK, free_port
from tests.support.streams import echo_handler

__all__: list[str] = []

TOKEN_A = "token-of-the-jira-agent-0123456789"
TOKEN_B = "token-of-the-wiki-agent-0123456789"


def remote(port: int, target: int) -> str:
    return f"R:{LOOPBACK}:{port}:{LOOPBACK}:{target}"


async def test_port_of_another_token_is_refused_with_our_remote(harness: Harness) -> None:
    tokens = parse_tokens_file(json.dumps({TOKEN_A: [""], TOKEN_B: [""]}).encode())
    gateway = await harness.gateway(tokens=tokens)
    service = await harness.service(echo_handler)
    port = free_port()
    await harness.connect(gateway, [remote(port, service)], headers=[("token", TOKEN_A)])
    mine = remote(port, 9)
    error = await harness.expect_fatal(
        gateway, [mine], headers=[("token", TOKEN_B)], max_retry_count=5
    )
    expected = f"server: {parse_remote(mine)}: port {port} is taken by another client"
    assert str(error) == expected, "our remote, the port, and nobody else's name"
    assert TOKEN_A not in str(error)


async def test_port_of_another_user_is_refused(harness: Harness) -> None:
    users = parse_authfile(json.dumps({"alice:pw-a": [""], "bob:pw-b": [""]}).encode())
    gateway = await harness.gateway(users=users)
    service = await harness.service(echo_handler)
    port = free_port()
    await harness.connect(gateway, [remote(port, service)], auth=("alice", "pw-a"))
    error = await harness.expect_fatal(
        gateway, [remote(port, service)], auth=("bob", "pw-b"), max_retry_count=5
    )
    assert "is taken by another client" in str(error)
    assert "alice" not in str(error)


async def test_same_client_still_retries(harness: Harness) -> None:
    """Our own live session holds the port: "cannot listen", retried, not fatal at once."""
    tokens = parse_tokens_file(json.dumps({TOKEN_A: [""]}).encode())
    gateway = await harness.gateway(tokens=tokens, keepalive_timeout=0.5)
    service = await harness.service(echo_handler)
    port = free_port()
    await harness.connect(gateway, [remote(port, service)], headers=[("token", TOKEN_A)])
    error = await harness.expect_fatal(
        gateway, [remote(port, service)], headers=[("token", TOKEN_A)], max_retry_count=1
    )
    assert "gave up after 1 retries" in str(error), "retried, then gave up"
