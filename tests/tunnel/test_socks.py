"""SOCKS5 remotes, ours to ours: curl through ``socks`` and ``R:socks``, the ACL, the protocol.

Forward (``socks``, ``5000:socks``): the connector listens, the gateway (``--socks5``)
runs the SOCKS5 server and dials after checking the user's ACL for the real target.
Reverse (``R:socks``): the gateway listens and the connector, which declared it,
runs the SOCKS5 server.  curl (``--socks5-hostname``) is the client where it can be;
a raw client checks reply codes byte by byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import shutil
import struct
import subprocess
from typing import Any

import asyncssh
import pytest

from cc.connector.connector import FatalError
from cc.protocol.acl import parse_authfile
from cc.ssh import ChannelOpenError, open_chisel_channel
from tests.support.harness import STEP, Harness, wait_until
from tests.support.net import EchoServer, free_port
from tests.support.streams import answer_after_eof

__all__: list[str] = []

CURL_TIMEOUT = 20.0


def curl_binary() -> str:
    path = shutil.which("curl")
    if path is None:
        pytest.skip("curl not installed (apt-get install curl)")
    return path


async def curl(socks_port: int, url: str) -> subprocess.CompletedProcess[bytes]:
    """curl through the SOCKS5 proxy, names resolved by the proxy; no proxy from the env."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    argv = [
        curl_binary(),
        "--silent",
        "--show-error",
        "--max-time",
        "10",
        "--socks5-hostname",
        f"127.0.0.1:{socks_port}",
        url,
    ]
    return await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, timeout=CURL_TIMEOUT, env=env, check=False
    )


async def socks_connect(
    port: int,
    host: str,
    target_port: int,
    *,
    command: int = 1,
    methods: bytes = b"\x00",
    atyp: int | None = None,
    early: bytes = b"",
) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw SOCKS5 CONNECT; returns the reply code and the open stream."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(bytes((5, len(methods))) + methods)
    choice = await reader.readexactly(2)
    if choice != b"\x05\x00":
        writer.close()
        return choice[1], reader, writer
    if atyp is None:
        parts = host.split(".")
        if len(parts) == 4 and all(p.isdigit() for p in parts):
            address = b"\x01" + bytes(int(p) for p in parts)
        else:
            address = b"\x03" + bytes((len(host),)) + host.encode()
    else:
        address = bytes((atyp,)) + b"\x00" * 4
    writer.write(bytes((5, command, 0)) + address + struct.pack("!H", target_port) + early)
    head = await reader.readexactly(4)
    assert head[0] == 5 and head[2] == 0, head
    await reader.readexactly({1: 4, 4: 16}[head[3]] + 2)
    return head[1], reader, writer


async def forward_socks(harness: Harness, **gateway: Any) -> tuple[int, Any, Any]:
    """Gateway with --socks5, connector with ``<port>:socks``; returns (port, gw, conn)."""
    port = free_port()
    auth = gateway.pop("auth", None)
    gw = await harness.gateway(socks5=True, **gateway)
    extra = {"auth": auth} if auth else {}
    running = await harness.connect(gw, [f"{port}:socks"], **extra)
    return port, gw, running


# -- 1. curl through forward and reverse SOCKS -------------------------------------------------


async def test_curl_through_forward_socks(harness: Harness, http: EchoServer) -> None:
    port, gateway, _ = await forward_socks(harness)
    for host in ("127.0.0.1", "localhost"):  # an address, and a name the gateway resolves
        result = await curl(port, f"http://{host}:{http.port}/hello")
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"GET /hello\n"
    stats = gateway.stats.remotes["socks"]
    assert (stats.total, stats.failed) == (2, 0)
    await wait_until(lambda: stats.open == 0)


async def test_curl_through_reverse_socks(harness: Harness, http: EchoServer) -> None:
    """R:<port>:socks: the gateway listens, the connector runs SOCKS and dials."""
    port = free_port()
    gateway = await harness.gateway()
    running = await harness.connect(gateway, [f"R:{port}:socks"])
    result = await curl(port, f"http://127.0.0.1:{http.port}/reverse")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"GET /reverse\n"
    assert running.stats.remotes[f"R:127.0.0.1:{port}=>socks"].total == 1


# -- 2. the ACL applies to the real target ---------------------------------------------------------


async def test_acl_checks_the_real_socks_target(
    harness: Harness, http: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    """chisel lets SOCKS past the ACL; here the target must be allowed like any remote."""
    acl = b'{"u:p": ["socks", "127\\\\.0\\\\.0\\\\.1:%d"]}' % http.port
    port, _, _ = await forward_socks(harness, users=parse_authfile(acl), auth=("u", "p"))
    allowed = await curl(port, f"http://127.0.0.1:{http.port}/ok")
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout == b"GET /ok\n"
    with caplog.at_level(logging.WARNING, logger="cc.server"):
        for url in (f"http://localhost:{http.port}/", f"http://127.0.0.1:{http.port + 1}/"):
            denied = await curl(port, url)
            assert denied.returncode != 0
            assert denied.stdout == b""
    async with asyncio.timeout(STEP):
        code, _, writer = await socks_connect(port, "127.0.0.1", http.port + 1)
        writer.close()
    assert code == 2, "connection not allowed by ruleset"
    denials = [r.getMessage() for r in caplog.records if "denied" in r.getMessage()]
    assert any(f"127.0.0.1:{http.port + 1}" in m for m in denials)
    assert any(f"localhost:{http.port}" in m for m in denials)


async def test_socks_needs_socks5_on_the_gateway(harness: Harness) -> None:
    gateway = await harness.gateway()  # no socks5
    error = await harness.expect_fatal(gateway, [f"{free_port()}:socks"])
    assert isinstance(error, FatalError)
    assert "SOCKS5 is not enabled" in str(error)
    # and a hand-made socks channel (no socks remote declared) is refused too
    running = await harness.connect(gateway, [f"127.0.0.1:{free_port()}:127.0.0.1:9"])
    with pytest.raises(ChannelOpenError):
        async with asyncio.timeout(STEP):
            await open_chisel_channel(running.connector.conn, b"socks", asyncssh.SSHTCPSession)


# -- 3. the SOCKS5 protocol ------------------------------------------------------------------


async def test_socks_reply_codes(harness: Harness) -> None:
    port, _, _ = await forward_socks(harness)
    async with asyncio.timeout(STEP):
        code, _, writer = await socks_connect(port, "127.0.0.1", 1, methods=b"\x02")
        assert code == 0xFF, "only user/pass offered: no acceptable method"
        code, _, writer = await socks_connect(port, "127.0.0.1", free_port())
        writer.close()
        assert code == 5, "connection refused"
        code, _, writer = await socks_connect(port, "127.0.0.1", 80, command=2)
        writer.close()
        assert code == 7, "BIND is not supported"
        code, _, writer = await socks_connect(port, "127.0.0.1", 53, command=3)
        writer.close()
        assert code == 7, "UDP ASSOCIATE is not supported"
        code, _, writer = await socks_connect(port, "", 80, atyp=9)
        writer.close()
        assert code == 8, "address type not supported"
        code, _, writer = await socks_connect(port, "no-such-host.invalid", 80)
        writer.close()
        assert code == 4, "host unreachable"


async def test_socks_keeps_half_close_and_early_data(harness: Harness) -> None:
    """Data sent with the request arrives; our EOF reaches the service, its answer comes back."""
    service = await harness.service(answer_after_eof)
    port, _, _ = await forward_socks(harness)
    request = random.Random(7).randbytes(200_000)
    async with asyncio.timeout(STEP):
        code, reader, writer = await socks_connect(port, "127.0.0.1", service, early=request[:1000])
        assert code == 0
        writer.write(request[1000:])
        writer.write_eof()
        answer = await reader.read(-1)
        writer.close()
    assert answer == b"%d %s" % (len(request), hashlib.sha256(request).hexdigest().encode())


async def test_connector_runs_socks_only_when_declared(harness: Harness) -> None:
    """Without R:socks among its remotes, a connector refuses the gateway's socks channel."""
    gateway = await harness.gateway(socks5=True)
    await harness.connect(gateway, [f"{free_port()}:socks"])  # forward only
    (session,) = gateway.sessions
    with pytest.raises(ChannelOpenError):
        async with asyncio.timeout(STEP):
            await open_chisel_channel(session.conn, b"socks", asyncssh.SSHTCPSession)
