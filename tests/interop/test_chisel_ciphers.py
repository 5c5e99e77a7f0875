"""``--ssh-ciphers`` against the real chisel: a pinned AEAD meets Go's x/crypto/ssh.

Our connector (in this process, so the negotiated cipher and the fast-path counts
are read directly) pinned to each AEAD that chisel's Go side offers, against a
chisel server; and a chisel client, offering Go's default list, against our gateway
started with ``--ssh-ciphers`` pinned to chacha20-poly1305 (its log names the
cipher, its /metrics count the packets the fast path sealed and opened).
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from urllib.parse import urlsplit

import pytest

from cc.connector.connector import Connector, ConnectorConfig
from cc.protocol.remote import parse_remote
from cc.ssh import FastPathCounts, cipher_in_use, fast_path_counts
from tests.support.chisel import CONNECTED_RE, SEED, SEED_FINGERPRINT, check_tunnel
from tests.support.net import LOOPBACK, EchoServer, free_port, wait_for_port
from tests.support.processes import Processes

pytestmark = pytest.mark.interop

CHACHA = "chacha20-poly1305@openssh.com"
#: The AEADs every x/crypto/ssh offers (aes256-gcm only in its 2024 releases on).
GO_AEADS = ("aes128-gcm@openssh.com", CHACHA)


@pytest.mark.parametrize("cipher", GO_AEADS, ids=lambda c: c.split("@")[0])
async def test_our_pinned_connector_against_a_chisel_server(
    chisel: str, procs: Processes, echo: EchoServer, small_payload: bytes, cipher: str
) -> None:
    _, url = procs.chisel_server(chisel, "--reverse", "--key", SEED)
    port = free_port()
    connector = Connector(
        ConnectorConfig(
            server=urlsplit(url),
            remotes=[parse_remote(f"R:{LOOPBACK}:{port}:{echo.host}:{echo.port}")],
            fingerprint=SEED_FINGERPRINT,
            max_retry_count=0,
            ssh_ciphers=(cipher,),
        )
    )
    running = asyncio.ensure_future(connector.run())
    try:
        async with asyncio.timeout(15):
            await connector.connected.wait()
        assert cipher_in_use(connector.conn) == (cipher, True)
        assert connector.conn.get_extra_info("recv_cipher") == cipher
        await asyncio.to_thread(wait_for_port, LOOPBACK, port, 10.0)
        before = fast_path_counts()
        await asyncio.to_thread(check_tunnel, port, small_payload)
        after = fast_path_counts()
    finally:
        connector.stop()
        await asyncio.wait_for(asyncio.gather(running, return_exceptions=True), 20)
    delta = FastPathCounts(after.sealed - before.sealed, after.opened - before.opened)
    assert delta.sealed > 0 and delta.opened > 0, delta


def _fast_path_packets(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    pattern = r'^cloud_connector_fast_path_packets_total\{direction="(\w+)"\} (\S+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.MULTILINE)}


def test_a_chisel_client_against_our_gateway_pinned_to_chacha20(
    chisel: str, procs: Processes, echo: EchoServer, small_payload: bytes
) -> None:
    server, url = procs.our_server("--key", SEED, "--reverse", "--ssh-ciphers", CHACHA)
    rport = free_port()
    client = procs.chisel_client(
        chisel,
        "--fingerprint",
        SEED_FINGERPRINT,
        "--max-retry-count",
        "0",
        url,
        f"R:{LOOPBACK}:{rport}:{echo.host}:{echo.port}",
    )
    client.wait_for(CONNECTED_RE, stream="stderr")
    # Go offers aes128-gcm first; the gateway allows only chacha20, so chacha20 it is
    server.wait_for(rf"version=v1\.11\.5 cipher={re.escape(CHACHA)} ", stream="stdout")
    server.wait_listening(rport)
    before = _fast_path_packets(url)
    check_tunnel(rport, small_payload)
    after = _fast_path_packets(url)
    assert after["send"] > before["send"] and after["receive"] > before["receive"]
    assert client.popen.poll() is None, client.report()
    server.assert_no_traceback()
