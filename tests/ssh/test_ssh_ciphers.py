"""``--ssh-ciphers`` on the wire, ours to ours: the pinned cipher is the one used.

Each AEAD pinned on one side (the gateway's list limits, the connector's order
picks) must be negotiated by both ends, logged with the session, and sealed and
opened by the fast path.  AES-CTR has no fast path: it must still carry data
byte-exact, through asyncssh's own code.  Two lists that do not meet must say so in
the connector's log, naming both, and retry as any failed handshake does.
"""

from __future__ import annotations

import logging

import pytest

from cc.connector.connector import FatalError
from cc.protocol.ciphers import AEAD_CIPHERS, DEFAULT_CIPHERS
from cc.ssh import FastPathCounts, cipher_in_use, connection, fast_path_counts
from tests.support.harness import Harness
from tests.support.net import free_port
from tests.support.streams import assert_echoes, echo_handler

__all__: list[str] = []

SIZE = 1 << 20


def _delta(before: FastPathCounts) -> FastPathCounts:
    after = fast_path_counts()
    return FastPathCounts(after.sealed - before.sealed, after.opened - before.opened)


def _connected_fields(caplog: pytest.LogCaptureFixture) -> list[object]:
    """The ``cipher`` field of every ``session_connected`` event logged so far."""
    return [
        getattr(r, "cipher", None)
        for r in caplog.records
        if getattr(r, "event", None) == "session_connected"
    ]


def test_the_default_is_the_order_we_always_offered() -> None:
    today = (
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "chacha20-poly1305@openssh.com",
        "aes128-ctr",
        "aes256-ctr",
    )
    assert connection.ENCRYPTION_ALGS == DEFAULT_CIPHERS == today


@pytest.mark.parametrize("side", ["gateway", "connector"])
@pytest.mark.parametrize("cipher", sorted(AEAD_CIPHERS), ids=lambda c: c.split("@")[0])
async def test_a_pinned_aead_is_negotiated_and_runs_the_fast_path(
    harness: Harness, caplog: pytest.LogCaptureFixture, side: str, cipher: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="cc")
    pinned = (cipher,)
    service = await harness.service(echo_handler)
    gateway = await harness.gateway(ssh_ciphers=pinned if side == "gateway" else None)
    port = free_port()
    running = await harness.connect(
        gateway,
        [f"R:127.0.0.1:{port}:127.0.0.1:{service}"],
        ssh_ciphers=pinned if side == "connector" else None,
    )
    (session,) = gateway.sessions
    # both ends, both directions: the one cipher; and the fast path's classes hold it
    assert cipher_in_use(running.connector.conn) == (cipher, True)
    assert cipher_in_use(session.conn) == (cipher, True)
    assert running.connector.conn.get_extra_info("recv_cipher") == cipher
    assert _connected_fields(caplog) == [cipher, cipher]  # connector's, gateway's
    assert f"SSH cipher {cipher} (fast path)" in caplog.text
    before = fast_path_counts()
    await assert_echoes(port, SIZE)
    counts = _delta(before)
    assert counts.sealed > 0 and counts.opened > 0, counts


async def test_a_ctr_cipher_carries_data_through_asyncssh(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="cc")
    service = await harness.service(echo_handler)
    gateway = await harness.gateway(ssh_ciphers=("aes256-ctr", "aes192-ctr"))
    port = free_port()
    running = await harness.connect(
        gateway,
        [f"R:127.0.0.1:{port}:127.0.0.1:{service}"],
        ssh_ciphers=("aes192-ctr", "aes128-gcm@openssh.com", "aes256-ctr"),
    )
    # the connector's order decides among what the gateway allows
    assert cipher_in_use(running.connector.conn) == ("aes192-ctr", False)
    assert "SSH cipher aes192-ctr (no fast path)" in caplog.text
    before = fast_path_counts()
    await assert_echoes(port, SIZE, seed=3)
    await assert_echoes(port, 4096, seed=4)
    # not one packet went through the fast path: asyncssh sealed and opened them all
    assert _delta(before) == FastPathCounts(0, 0)


async def test_no_common_cipher_says_so_and_retries_like_a_failed_handshake(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cc")
    gateway = await harness.gateway(ssh_ciphers=("chacha20-poly1305@openssh.com", "aes128-ctr"))
    fatal = await harness.expect_fatal(
        gateway,
        [f"R:127.0.0.1:{free_port()}:127.0.0.1:9"],
        ssh_ciphers=("aes256-gcm@openssh.com", "aes256-ctr"),
        max_retry_count=2,
    )
    # not stopped on the first refusal: retried with backoff until the retries ran out
    assert isinstance(fatal, FatalError)
    assert "gave up after 2 retries" in str(fatal)
    messages = [r.getMessage() for r in caplog.records]
    errors = [m for m in messages if m.startswith("Connection error")]
    assert len(errors) == 3, errors
    assert errors[0] == (
        "Connection error: no SSH cipher in common: the connector offers "
        "aes256-gcm@openssh.com,aes256-ctr, the gateway allows "
        "chacha20-poly1305@openssh.com,aes128-ctr "
        "(--ssh-ciphers on both ends must share at least one)"
    )
    assert caplog.text.count("Retrying in") == 2
    # the gateway says the same about the session it could not set up
    refused = [r for r in caplog.records if r.name.startswith("cc.server.session")]
    assert refused and all("no SSH cipher in common" in r.getMessage() for r in refused)
    assert all(r.levelno == logging.WARNING for r in refused)
