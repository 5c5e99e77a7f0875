"""Who may connect and what they may open: tokens, users, authfile ACLs, fingerprints.

The lead's rule for the connector: network errors retry; a refused token (HTTP
401/403), a fingerprint mismatch, a wrong password and a rejected config stop with
FatalError (a non-zero exit) on the first attempt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from pathlib import Path

import asyncssh
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cc.connector.connector import Connector, FatalError
from cc.gateway.gateway import Gateway
from cc.log import get_logger
from cc.protocol import keys
from cc.protocol.acl import UserTable, parse_authfile, parse_tokens_file
from cc.protocol.remote import Remote, parse_remote
from cc.runtime.filewatch import FileWatcher
from cc.ssh import ChannelOpenError, open_chisel_channel
from tests.support.harness import (
    STEP,
    ChannelSink,
    Harness,
    free_port,
    http_exchange,
    split_response,
    upgrade_request,
    wait_until,
)

__all__: list[str] = []

TOKEN = "s3cr3t-token"


def reverse_remote(port: int | None = None) -> Remote:
    """``R:127.0.0.1:<port>:127.0.0.1:9``: a reverse remote on a free gateway port."""
    port = port or free_port()
    return parse_remote(f"R:127.0.0.1:{port}:127.0.0.1:9")


def subject(remote: Remote) -> str:
    return remote.acl_subject()


# -- 5. tokens (an HTTP header, checked before the WebSocket exists) ----------------


async def token_gateway(harness: Harness, *patterns: str) -> Gateway:
    tokens = parse_tokens_file(json.dumps({TOKEN: list(patterns or [""])}).encode())
    return await harness.gateway(tokens=tokens)


@pytest.mark.parametrize(
    "header", [pytest.param((), id="missing"), pytest.param(("token: nope",), id="wrong")]
)
async def test_bad_token_gets_401_before_any_websocket(
    harness: Harness, header: tuple[str, ...]
) -> None:
    gateway = await token_gateway(harness)
    raw = await http_exchange(gateway.ports[0], upgrade_request("/", *header))
    status, headers, _ = split_response(raw)
    assert status == 401
    assert b"101" not in raw.split(b"\r\n", 1)[0]
    assert "sec-websocket-accept" not in headers and "upgrade" not in headers
    assert raw.count(b"HTTP/1.1") == 1, "nothing follows the 401"
    assert not gateway.sessions, "no SSH session may exist for an unauthenticated peer"


async def test_right_token_upgrades(harness: Harness) -> None:
    gateway = await token_gateway(harness)
    head = await http_exchange(
        gateway.ports[0], upgrade_request("/", f"token: {TOKEN}"), until_eof=False
    )
    status, headers, _ = split_response(head)
    assert status == 101
    assert headers["sec-websocket-protocol"] == "chisel-v3"


async def test_right_token_connects(harness: Harness) -> None:
    gateway = await token_gateway(harness)
    running = await harness.connect(gateway, [reverse_remote()], headers=[("token", TOKEN)])
    assert running.connector.connected.is_set()
    assert len(gateway.sessions) == 1


@pytest.mark.parametrize("token", [None, "nope"])
async def test_connector_refused_token_is_fatal_not_retried(
    harness: Harness, token: str | None
) -> None:
    gateway = await token_gateway(harness)
    headers = [("token", token)] if token else []
    config = harness.connector_config(
        gateway, [reverse_remote()], headers=headers, max_retry_count=5
    )
    connector = Connector(config)
    with pytest.raises(FatalError, match="401"):
        async with asyncio.timeout(STEP):
            await connector.run()
    assert connector.stats.reconnects == 0, "a refused token must not be retried"


async def test_connector_retries_other_handshake_failures(harness: Harness) -> None:
    """A 503 from something in front of the gateway is transient: retried, then given up."""
    answered = 0

    async def unavailable(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        await reader.readuntil(b"\r\n\r\n")
        answered += 1
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    port = await harness.service(unavailable)
    error = await harness.expect_fatal(
        f"http://127.0.0.1:{port}/", [reverse_remote()], max_retry_count=2
    )
    assert "gave up after 2 retries" in str(error)
    assert answered == 3, "one attempt and two retries"


async def test_token_acl_limits_remotes(harness: Harness) -> None:
    allowed, denied = reverse_remote(), reverse_remote()
    gateway = await token_gateway(harness, re.escape(subject(allowed)))
    error = await harness.expect_fatal(
        gateway, [allowed, denied], headers=[("token", TOKEN)], max_retry_count=5
    )
    assert f"access to '{subject(denied)}' denied" in str(error)
    await wait_until(lambda: not gateway.sessions)  # the connector hung up
    await harness.connect(gateway, [allowed], headers=[("token", TOKEN)])


# -- 6. users ---------------------------------------------------------------------


async def test_user_right_password_connects(harness: Harness) -> None:
    gateway = await harness.gateway(users=UserTable.single("alice", "pa:ss"))
    running = await harness.connect(gateway, [reverse_remote()], auth=("alice", "pa:ss"))
    session = next(iter(gateway.sessions))
    assert session.user == "alice"
    assert running.connector.connected.is_set()


@pytest.mark.parametrize("auth", [("alice", "wrong"), ("mallory", "pa:ss"), ("", "")])
async def test_user_bad_credentials_are_fatal(harness: Harness, auth: tuple[str, str]) -> None:
    gateway = await harness.gateway(users=UserTable.single("alice", "pa:ss"))
    error = await harness.expect_fatal(gateway, [reverse_remote()], auth=auth, max_retry_count=5)
    assert "authentication failed" in str(error)


async def test_authfile_acl_denies_remote_with_reason(harness: Harness) -> None:
    allowed, denied = reverse_remote(), reverse_remote()
    users = parse_authfile(json.dumps({"bob:pw": [re.escape(subject(allowed))]}).encode())
    gateway = await harness.gateway(users=users)
    error = await harness.expect_fatal(gateway, [denied], auth=("bob", "pw"), max_retry_count=5)
    assert f"access to '{subject(denied)}' denied" in str(error)
    await harness.connect(gateway, [allowed], auth=("bob", "pw"))


async def test_authfile_acl_is_anchored(harness: Harness) -> None:
    """A regex that matches a part of the subject (enough for chisel) is not enough here."""
    remote = reverse_remote()
    partial = re.escape(subject(remote))[:-1]  # drops the port's last digit
    assert re.search(partial, subject(remote)), "premise: chisel's unanchored match allows it"
    users = parse_authfile(json.dumps({"bob:pw": [partial]}).encode())
    gateway = await harness.gateway(users=users)
    error = await harness.expect_fatal(gateway, [remote], auth=("bob", "pw"))
    assert f"access to '{subject(remote)}' denied" in str(error)


async def test_user_and_token_acls_must_both_allow(harness: Harness) -> None:
    remote = reverse_remote()
    users = parse_authfile(json.dumps({"bob:pw": [re.escape(subject(remote))]}).encode())
    tokens = parse_tokens_file(json.dumps({TOKEN: [r"R:10\.0\.0\.1:\d+"]}).encode())
    gateway = await harness.gateway(users=users, tokens=tokens)
    error = await harness.expect_fatal(
        gateway, [remote], auth=("bob", "pw"), headers=[("token", TOKEN)]
    )
    assert f"access to '{subject(remote)}' denied" in str(error)


# -- 7. authfile reload -------------------------------------------------------------


def write_atomically(path: Path, data: bytes) -> None:
    """What deployers and editors do: write a temporary file, rename it over the path."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


async def test_authfile_reload(
    harness: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "users.json"
    path.write_bytes(json.dumps({"alice:one": [""]}).encode())
    gateway = await harness.gateway(users=parse_authfile(path.read_bytes()))
    # wired as cc/cli/server.py wires it
    watcher = FileWatcher(
        str(path),
        parse_authfile,
        lambda users: gateway.apply_credentials(users, gateway.config.tokens),
        get_logger("server"),
        interval=0.02,
    )
    watcher.start()
    try:
        remote = reverse_remote()
        first = await harness.connect(gateway, [remote], auth=("alice", "one"))
        await first.stop()

        before = gateway.config.users
        write_atomically(path, json.dumps({"bob:two": [""]}).encode())
        await wait_until(lambda: gateway.config.users is not before)
        await harness.connect(gateway, [reverse_remote()], auth=("bob", "two"))
        error = await harness.expect_fatal(gateway, [reverse_remote()], auth=("alice", "one"))
        assert "authentication failed" in str(error)

        good = gateway.config.users
        with caplog.at_level(logging.WARNING, logger="cc.server"):
            write_atomically(path, b'{"carol:three": [""')  # truncated JSON
            await wait_until(
                lambda: any(
                    r.name == "cc.server" and r.levelno == logging.WARNING for r in caplog.records
                )
            )
        warning = next(r for r in caplog.records if r.name == "cc.server")
        assert "keeping the last good version" in warning.getMessage()
        assert str(path) in warning.getMessage()
        assert gateway.config.users is good
        await harness.connect(gateway, [reverse_remote()], auth=("bob", "two"))
        error = await harness.expect_fatal(gateway, [reverse_remote()], auth=("carol", "three"))
        assert "authentication failed" in str(error)
    finally:
        watcher.stop()


# -- 8. fingerprint -----------------------------------------------------------------


async def test_wrong_fingerprint_is_fatal(harness: Harness) -> None:
    gateway = await harness.gateway()
    other = keys.fingerprint_sha256(keys.public_key_wire(keys.generate_private_key()))
    assert other != gateway.fingerprint
    error = await harness.expect_fatal(
        gateway, [reverse_remote()], fingerprint=other, max_retry_count=5
    )
    assert "Invalid fingerprint" in str(error)
    assert gateway.fingerprint in str(error), "the message shows the key the server has"
    assert f"expected {other} (--fingerprint), got {gateway.fingerprint}" in str(error)
    await wait_until(lambda: not gateway.sessions)  # the connector hung up


async def test_right_fingerprint_connects(harness: Harness) -> None:
    gateway = await harness.gateway()
    running = await harness.connect(gateway, [reverse_remote()], fingerprint=gateway.fingerprint)
    assert running.connector.connected.is_set()


async def test_legacy_md5_fingerprint_connects_with_warning(
    harness: Harness, host_key: ec.EllipticCurvePrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await harness.gateway()
    md5 = keys.fingerprint_md5(keys.public_key_wire(host_key))
    with caplog.at_level(logging.WARNING, logger="cc.client"):
        await harness.connect(gateway, [reverse_remote()], fingerprint=md5)
    assert any("deprecated MD5 fingerprint" in r.getMessage() for r in caplog.records)


# -- other config rejections ----------------------------------------------------------


async def test_reverse_not_enabled_is_fatal(harness: Harness) -> None:
    gateway = await harness.gateway(reverse=False)
    error = await harness.expect_fatal(gateway, [reverse_remote()], max_retry_count=5)
    assert "Reverse port forwarding not enabled on server" in str(error)


async def test_reverse_port_in_use_is_retried(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """The exception: a busy reverse port is usually our own stale session; it may pass."""
    gateway = await harness.gateway()
    busy = await harness.service(lambda reader, writer: asyncio.sleep(0))
    remote = reverse_remote(busy)
    with caplog.at_level(logging.INFO, logger="cc.client"):
        error = await harness.expect_fatal(gateway, [remote], max_retry_count=2)
    assert "gave up after 2 retries" in str(error)
    reasons = [r.getMessage() for r in caplog.records if "Connection error" in r.getMessage()]
    assert len(reasons) == 3
    assert all(f"Server cannot listen on {remote.local()}" in r for r in reasons)


# -- the ACL holds for every channel, not only for the config -------------------------


async def test_gateway_checks_acl_on_each_forward_channel(harness: Harness) -> None:
    """A client may not open channels beyond its ACL, whatever its config said (chisel does)."""
    dialled: list[int] = []

    async def service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dialled.append(1)
        writer.write(await reader.read(-1))

    allowed_port, other_port = await harness.service(service), await harness.service(service)
    allowed = f"127.0.0.1:{allowed_port}"
    users = parse_authfile(json.dumps({"bob:pw": [re.escape(allowed)]}).encode())
    gateway = await harness.gateway(users=users)
    running = await harness.connect(gateway, [f"{free_port()}:{allowed}"], auth=("bob", "pw"))
    conn = running.connector.conn
    async with asyncio.timeout(STEP):
        with pytest.raises(ChannelOpenError) as info:
            await open_chisel_channel(conn, f"127.0.0.1:{other_port}".encode(), ChannelSink)
        assert info.value.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
        assert dialled == [], "the gateway dialled a target outside the ACL"
        chan, sink = await open_chisel_channel(conn, allowed.encode(), ChannelSink)
        assert isinstance(sink, ChannelSink)
        chan.write(b"allowed")
        chan.write_eof()
        await sink.done
    assert bytes(sink.data) == b"allowed"
    assert dialled == [1]


@pytest.mark.parametrize(
    ("host", "acl"),
    [
        # the C resolver stops at the NUL: 127.0.0.1 is dialled, the ACL saw a name
        pytest.param("127.0.0.1\x00.example.com", r".*\.example\.com", id="nul"),
        # IDNA maps fullwidth digits to 127.0.0.1; the ACL allowed "names, not numbers"
        pytest.param("\uff11\uff12\uff17.\uff10.\uff10.\uff11", r"[^0-9:\[].*", id="fullwidth"),
    ],
)
async def test_a_target_the_resolver_reads_differently_is_denied(
    harness: Harness, host: str, acl: str
) -> None:
    """Found by fuzzing (fuzz/text.py ``hosts``): the text matched, another host was dialled."""
    dialled: list[int] = []

    async def service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dialled.append(1)
        writer.close()

    port = await harness.service(service)
    users = parse_authfile(json.dumps({"bob:pw": [f"{acl}:{port}"]}).encode())
    gateway = await harness.gateway(users=users)
    declared = f"{free_port()}:x.example.com:{port}"  # the config passes the ACL
    running = await harness.connect(gateway, [declared], auth=("bob", "pw"))
    conn = running.connector.conn
    async with asyncio.timeout(STEP):
        with pytest.raises(ChannelOpenError) as info:
            await open_chisel_channel(conn, f"{host}:{port}".encode(), ChannelSink)
    await asyncio.sleep(0.1)
    assert dialled == [], f"the gateway dialled 127.0.0.1 for {host!r}"
    # refused as a bad target, not by an error that takes the whole session down
    assert info.value.code == asyncssh.OPEN_CONNECT_FAILED
    assert not conn.is_closed()
