"""Key-pair connectors: the gateway's ``--authorized-keys`` beside passwords.

A connector logs in with its ``--identity`` key; the key's ``cc-acl`` and
``cc-identifier`` options bind it to remotes and HTTP identifiers; an unknown key
is refused; a key removed from the reloaded file ends its live session.
"""

from __future__ import annotations

import json
import logging

import asyncssh
import pytest

from cc.protocol.acl import parse_authfile
from cc.protocol.authorized_keys import ClientKeyTable, parse_authorized_keys
from tests.gateway.test_revocation import Alice, reverse_subject, target
from tests.support.harness import Harness, wait_until
from tests.support.net import free_port
from tests.support.streams import assert_echoes, echo_handler

__all__: list[str] = []


def new_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


def identity(key: asyncssh.SSHKey) -> bytes:
    return bytes(key.export_private_key("openssh"))


def line(key: asyncssh.SSHKey, options: str = "") -> str:
    public = key.export_public_key("openssh").decode().strip()
    return f"{options} {public}".strip()


def table(*lines: str) -> ClientKeyTable:
    return parse_authorized_keys("\n".join(lines) + "\n")


def acl(*patterns: str) -> str:
    return 'cc-acl="' + ",".join(patterns) + '"'


async def test_key_gets_its_permitted_remotes_only(harness: Harness) -> None:
    key = new_key()
    alice = Alice(harness)
    await alice.start()
    allowed = [reverse_subject(alice.reverse_port), target(alice.service)]
    alice.gateway.apply_authorized_keys(table(line(key, acl(*allowed))))
    await alice.connect(identity=identity(key))  # both remotes echo
    assert alice.session.key_fingerprint == key.get_fingerprint("sha256")
    denied = free_port()
    error = await harness.expect_fatal(
        alice.gateway,
        [f"R:127.0.0.1:{denied}:127.0.0.1:{alice.service}"],
        identity=identity(key),
        max_retry_count=5,
    )
    assert f"access to 'R:127.0.0.1:{denied}' denied" in str(error)


async def test_unknown_key_is_refused(harness: Harness) -> None:
    gateway = await harness.gateway(authorized_keys=table(line(new_key())))
    error = await harness.expect_fatal(
        gateway, [f"R:127.0.0.1:{free_port()}:127.0.0.1:1"], identity=identity(new_key())
    )
    assert "authentication failed" in str(error)
    assert gateway.stats.auth_failures.get("key", 0) >= 1


async def test_removed_key_loses_the_session(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    key, other = new_key(), new_key()
    alice = Alice(harness)
    await alice.start(authorized_keys=table(line(key), line(other)))
    await alice.connect(identity=identity(key))
    with caplog.at_level(logging.WARNING, logger="cc.server"):
        alice.gateway.apply_authorized_keys(table(line(other)))
        await alice.assert_revoked(caplog, "key removed from the authorized keys file")
    await alice.reconnect_refused("authentication failed")


async def test_edit_about_another_key_keeps_the_session(harness: Harness) -> None:
    key, other = new_key(), new_key()
    alice = Alice(harness)
    await alice.start(authorized_keys=table(line(key), line(other)))
    await alice.connect(identity=identity(key))
    alice.gateway.apply_authorized_keys(table(line(key)))
    assert alice.session in alice.gateway.sessions
    await assert_echoes(alice.reverse_port, 4096)


async def test_passwords_work_beside_keys(harness: Harness) -> None:
    users = parse_authfile(json.dumps({"bob:pw": [""]}).encode())
    alice = Alice(harness)
    await alice.start(users=users, authorized_keys=table(line(new_key())))
    await alice.connect(auth=("bob", "pw"))
    assert alice.session.key_fingerprint is None
    error = await harness.expect_fatal(
        alice.gateway, [f"R:127.0.0.1:{free_port()}:127.0.0.1:1"], auth=("bob", "wrong")
    )
    assert "authentication failed" in str(error)


async def test_keys_only_gateway_refuses_any_password(harness: Harness) -> None:
    """Without users, chisel takes any password; with --authorized-keys a key is needed."""
    gateway = await harness.gateway(authorized_keys=table(line(new_key())))
    error = await harness.expect_fatal(
        gateway, [f"R:127.0.0.1:{free_port()}:127.0.0.1:1"], auth=("anyone", "anything")
    )
    assert "authentication failed" in str(error)


async def test_key_bound_to_an_identifier_claims_only_it(harness: Harness) -> None:
    key = new_key()
    gateway = await harness.gateway(authorized_keys=table(line(key, 'cc-identifier="web1"')))
    service = await harness.service(echo_handler)
    remote = [f"R:127.0.0.1:{free_port()}:127.0.0.1:{service}"]
    error = await harness.expect_fatal(
        gateway, remote, identity=identity(key), identifiers=["web2"], max_retry_count=5
    )
    assert "identifier(s) web2 denied" in str(error)
    running = await harness.connect(gateway, remote, identity=identity(key), identifiers=["web1"])
    (session,) = gateway.sessions
    assert session.http_identifiers == {"web1"}
    gateway.apply_authorized_keys(table(line(key, 'cc-identifier="web1,web3"')))
    assert session in gateway.sessions  # still covered
    gateway.apply_authorized_keys(table(line(key, 'cc-identifier="web2"')))
    await wait_until(lambda: session not in gateway.sessions)
    await running.stop()


async def test_two_keys_with_one_user_name_are_different_port_owners(harness: Harness) -> None:
    """A port held by one key is never taken as the other key's own stale session."""
    first, second = new_key(), new_key()
    gateway = await harness.gateway(authorized_keys=table(line(first), line(second)))
    service = await harness.service(echo_handler)
    for key in (first, second):
        await harness.connect(
            gateway, [f"R:127.0.0.1:{free_port()}:127.0.0.1:{service}"], identity=identity(key)
        )
    one, two = gateway.sessions
    assert one.user == two.user
    assert one.identity != two.identity
