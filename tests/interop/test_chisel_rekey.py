"""Key re-exchange against the real chisel while data flows through our fast path.

Our connector runs in-process with a 512 KiB rekey limit, so a 16 MiB round trip
through a chisel server makes it start dozens of key exchanges with Go's
x/crypto/ssh, while our fast path seals and opens the data packets around them.
Once with AES-GCM (what Go offers first) and once with only ChaCha20-Poly1305 on
offer, so Go's chacha20-poly1305@openssh.com meets our fast twin of it.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest

from cc.connector.connector import Connector, ConnectorConfig
from cc.protocol.remote import parse_remote
from tests.support.chisel import SEED_FINGERPRINT, check_tunnel
from tests.support.ciphers import FAST_CIPHERS, cipher_id, count_key_epochs
from tests.support.net import LOOPBACK, EchoServer, free_port, wait_for_port
from tests.support.processes import Processes

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("cipher", sorted(FAST_CIPHERS), ids=cipher_id)
async def test_our_connector_rekeys_with_chisel_mid_transfer(
    chisel: str,
    procs: Processes,
    echo: EchoServer,
    small_payload: bytes,
    monkeypatch: pytest.MonkeyPatch,
    cipher: str,
) -> None:
    epochs = count_key_epochs(monkeypatch, cipher)
    _, url = procs.chisel_server(chisel, "--reverse", "--key", "someseed")
    port = free_port()
    remote = parse_remote(f"R:127.0.0.1:{port}:127.0.0.1:{echo.port}")
    connector = Connector(
        ConnectorConfig(
            server=urlsplit(url),
            remotes=[remote],
            fingerprint=SEED_FINGERPRINT,
            max_retry_count=0,
        )
    )
    running = asyncio.ensure_future(connector.run())
    try:
        async with asyncio.timeout(15):
            await connector.connected.wait()
        after_connect = len(epochs)
        # chisel never answers with our peer header: channels stay at Go's 32 KiB
        assert connector.conn.get_extra_info("cc_peer_is_ours") is False
        # chisel's server answers the config request first and binds the reverse
        # port afterwards (BindRemotes runs in its own goroutine): wait for it
        await asyncio.to_thread(wait_for_port, LOOPBACK, port, 10.0)
        await asyncio.to_thread(check_tunnel, port, small_payload)
        assert connector.connected.is_set(), "the session must survive every rekey"
        # 16 MiB each way with a 512 KiB limit on our sending side
        assert len(epochs) - after_connect >= 2 * 16
    finally:
        connector.stop()
        await asyncio.wait_for(asyncio.gather(running, return_exceptions=True), 20)
