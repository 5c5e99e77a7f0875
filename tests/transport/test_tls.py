"""TLS between connector and gateway: verification, SNI, client certificates, the CLI.

Every certificate comes from a trustme CA made for the test (``tests.support.tls.Pki``);
the gateway runs in-process with ``GatewayConfig.tls`` set to a server context whose
``sni_callback`` records each handshake, so a test can tell how many TLS handshakes
reached the gateway and which server name each carried.

The rule under test (``cc.transport.dial.TLSVerifyError``): a certificate refused by
either side, or TLS files of our own that cannot be loaded, stop the connector at
once with ``FatalError`` naming the reason; refused connections, a peer that does
not speak TLS, and a server that only hangs up after receiving our client
certificate (no alert, so it might as well be going away) are retried.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

import pytest

from cc.gateway.gateway import Gateway
from cc.transport.dial import DialError, TLSOptions, TLSVerifyError
from tests.support import peers
from tests.support.harness import Harness
from tests.support.net import EchoServer, echo_roundtrip, free_port
from tests.support.processes import CC, CliProcess, stop_process
from tests.support.streams import assert_echoes, echo_handler
from tests.support.tls import Pki, ServerTLS

__all__: list[str] = []

#: Retries a retrying connector would make: fatal errors must stop after one attempt.
RETRIES = 5


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def other_pki(tmp_path: Path) -> Pki:
    """A second, unrelated CA."""
    return Pki(tmp_path, name="other-ca")


@pytest.fixture
def cc_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="cc")
    return caplog


def https(gateway: Gateway, host: str = "127.0.0.1") -> SplitResult:
    return urlsplit(f"https://{host}:{gateway.ports[0]}/")


async def tls_tunnel(
    harness: Harness, server: ServerTLS, tls: TLSOptions, host: str = "127.0.0.1", **kw: object
) -> None:
    """Gateway with ``server``, connector with ``tls``: bytes must cross a reverse remote."""
    gateway = await harness.gateway(tls=server.context)
    service = await harness.service(echo_handler)
    exposed = free_port()
    await harness.connect(
        gateway,
        [f"R:127.0.0.1:{exposed}:127.0.0.1:{service}"],
        server=https(gateway, host),
        tls=tls,
        **kw,
    )
    await assert_echoes(exposed)


async def fatal(
    harness: Harness, server: ServerTLS, tls: TLSOptions, host: str = "127.0.0.1", **kw: object
) -> str:
    """The FatalError message of a connector that must stop without retrying."""
    gateway = await harness.gateway(tls=server.context)
    error = await harness.expect_fatal(
        gateway,
        [f"R:127.0.0.1:{free_port()}:127.0.0.1:9"],
        server=https(gateway, host),
        tls=tls,
        max_retry_count=RETRIES,
        max_retry_interval=0.1,
        **kw,
    )
    message = str(error)
    assert "gave up" not in message, "a certificate failure must not be retried"
    return message


def assert_one_clean_log_line(caplog: pytest.LogCaptureFixture, needle: str) -> None:
    """The failure is logged once, as one line, without a traceback."""
    lines = [r for r in caplog.records if r.getMessage().startswith("Connection error:")]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert needle in lines[0].getMessage()
    assert lines[0].exc_info is None
    assert "\n" not in lines[0].getMessage()


# -- working TLS ---------------------------------------------------------------


def test_tls_verify_error_is_a_dial_error() -> None:
    """Callers that only know DialError still catch it; the connector tells them apart."""
    assert issubclass(TLSVerifyError, DialError)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_verified_tls_carries_data(harness: Harness, pki: Pki, host: str) -> None:
    """--tls-ca with a certificate for the host in the URL (DNS name or IP SAN)."""
    server = pki.server(pki.issue("localhost", "127.0.0.1"))
    await tls_tunnel(harness, server, TLSOptions(ca=str(pki.ca_pem)), host)
    # one TLS handshake; a DNS name is sent as SNI, an IP address is not (RFC 6066)
    assert server.server_names == ["localhost" if host == "localhost" else None]


async def test_ca_directory_works(harness: Harness, pki: Pki, tmp_path: Path) -> None:
    """--tls-ca may name a directory of hashed CA certificates (OpenSSL capath)."""
    capath = tmp_path / "cas"
    capath.mkdir()
    (capath / f"{_openssl_subject_hash(pki.ca_pem)}.0").write_bytes(pki.ca_pem.read_bytes())
    server = pki.server(pki.issue("127.0.0.1"))
    await tls_tunnel(harness, server, TLSOptions(ca=str(capath)))


def _openssl_subject_hash(pem: Path) -> str:
    openssl = peers.require_binary("openssl", "openssl")
    out = subprocess.run(
        [openssl, "x509", "-noout", "-subject_hash", "-in", str(pem)],
        capture_output=True,
        check=True,
        timeout=30,
    )
    return out.stdout.decode().strip()


async def test_sni_option_sets_the_server_name(harness: Harness, pki: Pki) -> None:
    """--sni: the gateway sees that name, and the certificate is checked against it."""
    server = pki.server(pki.issue("gateway.example"))
    tls = TLSOptions(ca=str(pki.ca_pem), sni="gateway.example")
    await tls_tunnel(harness, server, tls, "127.0.0.1")
    assert server.server_names == ["gateway.example"]


async def test_preflight_uses_tls_and_sni_too(harness: Harness, pki: Pki) -> None:
    """outsystemscc's pre-flight GET is a second, equally verified TLS connection."""
    server = pki.server(pki.issue("gateway.example"))
    tls = TLSOptions(ca=str(pki.ca_pem), sni="gateway.example")
    await tls_tunnel(harness, server, tls, "127.0.0.1", preflight=True)
    assert server.server_names == ["gateway.example", "gateway.example"]


async def test_skip_verify_accepts_unknown_ca_and_wrong_name(
    harness: Harness, other_pki: Pki
) -> None:
    """--tls-skip-verify: neither the issuer nor the name is checked."""
    server = other_pki.server(other_pki.issue("example.org"))
    await tls_tunnel(harness, server, TLSOptions(skip_verify=True), "localhost")
    assert server.server_names == ["localhost"]


# -- refused certificates: fatal, with the reason --------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_hostname_mismatch_is_fatal(
    harness: Harness, pki: Pki, cc_logs: pytest.LogCaptureFixture, host: str
) -> None:
    server = pki.server(pki.issue("example.org"))
    message = await fatal(harness, server, TLSOptions(ca=str(pki.ca_pem)), host)
    mismatch = "IP address mismatch" if host[0].isdigit() else "Hostname mismatch"
    assert f"{mismatch}, certificate is not valid for '{host}'" in message
    assert f"certificate of {host}:" in message  # names the gateway it tried
    assert len(server.server_names) == 1, "exactly one attempt"
    assert_one_clean_log_line(cc_logs, mismatch)


async def test_expired_certificate_is_fatal(
    harness: Harness, pki: Pki, cc_logs: pytest.LogCaptureFixture
) -> None:
    server = pki.server(pki.expired("127.0.0.1"))
    message = await fatal(harness, server, TLSOptions(ca=str(pki.ca_pem)))
    assert "certificate has expired" in message
    assert len(server.server_names) == 1
    assert_one_clean_log_line(cc_logs, "certificate has expired")


@pytest.mark.parametrize("which", ["system-store", "other-ca"])
async def test_unknown_ca_is_fatal(harness: Harness, pki: Pki, other_pki: Pki, which: str) -> None:
    """No --tls-ca (system CAs) or the wrong one: the issuer is unknown."""
    server = pki.server(pki.issue("127.0.0.1"))
    tls = TLSOptions() if which == "system-store" else TLSOptions(ca=str(other_pki.ca_pem))
    message = await fatal(harness, server, tls)
    assert "unable to get local issuer certificate" in message
    assert "--tls-ca" in message  # says what to check
    assert len(server.server_names) == 1


async def test_preflight_verifies_too(harness: Harness, pki: Pki, other_pki: Pki) -> None:
    """A bad certificate stops the connector already at the pre-flight GET."""
    server = pki.server(pki.issue("127.0.0.1"))
    message = await fatal(harness, server, TLSOptions(ca=str(other_pki.ca_pem)), preflight=True)
    assert "unable to get local issuer certificate" in message
    assert len(server.server_names) == 1, "the WebSocket connection was never tried"


# -- mutual TLS ------------------------------------------------------------------


async def test_client_certificate_accepted(harness: Harness, pki: Pki) -> None:
    server = pki.server(pki.issue("127.0.0.1"), client_ca=pki)
    client = pki.issue("connector.example")
    tls = TLSOptions(ca=str(pki.ca_pem), cert=str(client.cert), key=str(client.key))
    await tls_tunnel(harness, server, tls)


@pytest.mark.parametrize("preflight", [False, True], ids=["websocket", "preflight"])
async def test_missing_client_certificate_is_fatal(
    harness: Harness, pki: Pki, cc_logs: pytest.LogCaptureFixture, preflight: bool
) -> None:
    """TLS 1.3 refuses a missing client certificate after the handshake; still clear."""
    server = pki.server(pki.issue("127.0.0.1"), client_ca=pki)
    message = await fatal(harness, server, TLSOptions(ca=str(pki.ca_pem)), preflight=preflight)
    assert "requires a client certificate" in message
    assert "--tls-cert" in message
    assert len(server.server_names) == 1
    assert_one_clean_log_line(cc_logs, "requires a client certificate")


async def test_missing_client_certificate_is_fatal_with_tls12(harness: Harness, pki: Pki) -> None:
    """With TLS 1.2 the refusal ends the handshake itself; the reason is the same."""
    server = pki.server(pki.issue("127.0.0.1"), client_ca=pki)
    server.context.maximum_version = ssl.TLSVersion.TLSv1_2
    message = await fatal(harness, server, TLSOptions(ca=str(pki.ca_pem)))
    assert "requires a client certificate" in message
    assert len(server.server_names) == 1


async def test_refused_client_certificate_without_alert_is_retried(
    harness: Harness, pki: Pki, other_pki: Pki, cc_logs: pytest.LogCaptureFixture
) -> None:
    """Our (asyncio) gateway refuses a certificate by closing, without a TLS alert.

    A server going away looks the same from here, so this one is retried, with a hint.
    """
    server = pki.server(pki.issue("127.0.0.1"), client_ca=pki)
    gateway = await harness.gateway(tls=server.context)
    client = other_pki.issue("connector.example")
    error = await harness.expect_fatal(
        gateway,
        [f"R:127.0.0.1:{free_port()}:127.0.0.1:9"],
        server=https(gateway),
        tls=TLSOptions(ca=str(pki.ca_pem), cert=str(client.cert), key=str(client.key)),
        max_retry_count=1,
        max_retry_interval=0.1,
    )
    assert "gave up after 1 retries" in str(error)
    errors = [r.getMessage() for r in cc_logs.records if "Connection error" in r.getMessage()]
    assert len(errors) == 2, errors
    assert all("may not accept ours (check --tls-cert" in e for e in errors), errors


@pytest.fixture
def openssl_server(tmp_path: Path, pki: Pki) -> Iterator[int]:
    """``openssl s_server`` requiring a client certificate from ``pki``: it sends TLS alerts
    when it refuses one, as Go's (chisel) and most TLS servers do."""
    openssl = peers.require_binary("openssl", "openssl")
    leaf = pki.issue("127.0.0.1")
    port = free_port()
    argv = [
        openssl,
        "s_server",
        "-accept",
        f"127.0.0.1:{port}",
        "-cert",
        str(leaf.cert),
        "-key",
        str(leaf.key),
        "-CAfile",
        str(pki.ca_pem),
        "-Verify",
        "1",
        "-verify_return_error",
    ]
    log = tmp_path / "s_server.log"
    # s_server quits at EOF on its stdin, so it gets a pipe we keep open; and it is
    # not probed with a connection (a failed handshake may end it): it logs ACCEPT.
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=out)
    try:
        peers.wait_for_log("ACCEPT", CLI_STEP, proc, log)
        yield port
    finally:
        stop_process(proc)
        if proc.stdin is not None:
            proc.stdin.close()


@pytest.mark.parametrize("client_cert", ["none", "unknown-ca"])
async def test_client_certificate_alerts_are_fatal(
    harness: Harness, pki: Pki, other_pki: Pki, openssl_server: int, client_cert: str
) -> None:
    """A server that says why (a TLS alert) gets the reason quoted, and no retries."""
    tls = TLSOptions(ca=str(pki.ca_pem))
    if client_cert == "unknown-ca":
        leaf = other_pki.issue("connector.example")
        tls = TLSOptions(ca=str(pki.ca_pem), cert=str(leaf.cert), key=str(leaf.key))
    error = await harness.expect_fatal(
        f"https://127.0.0.1:{openssl_server}/",
        [f"R:127.0.0.1:{free_port()}:127.0.0.1:9"],
        tls=tls,
        max_retry_count=RETRIES,
        max_retry_interval=0.1,
    )
    expected = {
        "none": "requires a client certificate (TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "unknown-ca": "does not trust the CA of our client certificate (TLSV1_ALERT_UNKNOWN_CA",
    }[client_cert]
    assert expected in str(error)
    assert f"TLS: 127.0.0.1:{openssl_server} " in str(error)


# -- our own TLS files ----------------------------------------------------------------


@pytest.mark.parametrize("which", ["missing-ca", "ca-not-pem", "missing-cert", "wrong-key"])
async def test_unusable_tls_files_are_fatal(
    harness: Harness, pki: Pki, tmp_path: Path, which: str
) -> None:
    """Stop before dialling; a missing --tls-ca must never mean "trust the system CAs"."""
    server = pki.server(pki.issue("127.0.0.1"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    one, other = pki.issue("connector.example"), pki.issue("other.example")
    tls, expected = {
        "missing-ca": (
            TLSOptions(ca=str(tmp_path / "missing.pem")),
            "missing.pem: no such file or directory (--tls-ca)",
        ),
        "ca-not-pem": (TLSOptions(ca=str(garbage)), "cannot load CA certificates from"),
        "missing-cert": (
            TLSOptions(ca=str(pki.ca_pem), cert=str(tmp_path / "no.crt"), key=str(one.key)),
            "cannot load the client certificate",
        ),
        "wrong-key": (
            TLSOptions(ca=str(pki.ca_pem), cert=str(one.cert), key=str(other.key)),
            "cannot load the client certificate",
        ),
    }[which]
    message = await fatal(harness, server, tls)
    assert expected in message
    assert server.server_names == [], "nothing was dialled"


# -- not certificate problems: retried --------------------------------------------


async def test_refused_connection_is_retried(
    harness: Harness, pki: Pki, cc_logs: pytest.LogCaptureFixture
) -> None:
    """Nothing listening: a network error, so the connector retries (here: once, then gives up)."""
    gateway = await harness.gateway(tls=pki.server(pki.issue("127.0.0.1")).context)
    url = https(gateway)
    await gateway.close()
    error = await harness.expect_fatal(
        gateway,
        [f"R:127.0.0.1:{free_port()}:127.0.0.1:9"],
        server=url,
        tls=TLSOptions(ca=str(pki.ca_pem)),
        max_retry_count=1,
        max_retry_interval=0.1,
    )
    assert "gave up after 1 retries" in str(error)
    errors = [r.getMessage() for r in cc_logs.records if "Connection error" in r.getMessage()]
    assert len(errors) == 2, errors
    assert all("Connection refused" in e for e in errors), errors


async def not_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A plain HTTP server's answer to anything, e.g. to a TLS ClientHello."""
    writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
    await writer.drain()


async def test_peer_that_does_not_speak_tls_is_retried(
    harness: Harness, cc_logs: pytest.LogCaptureFixture
) -> None:
    """https:// to something answering in plain HTTP: a TLS error, not a certificate one."""
    port = await harness.service(not_tls)
    error = await harness.expect_fatal(
        f"https://127.0.0.1:{port}/",
        [f"R:127.0.0.1:{free_port()}:127.0.0.1:9"],
        tls=TLSOptions(),
        max_retry_count=1,
        max_retry_interval=0.1,
    )
    assert "gave up after 1 retries" in str(error)
    errors = [r.getMessage() for r in cc_logs.records if "Connection error" in r.getMessage()]
    assert len(errors) == 2, errors
    expected = f"TLS error with 127.0.0.1:{port}: WRONG_VERSION_NUMBER"
    assert all(expected in e for e in errors), errors


# -- the CLI end to end --------------------------------------------------------------

CLI_STEP = 20.0


def test_cli_server_and_client_with_mutual_tls(
    tmp_path: Path, pki: Pki, other_pki: Pki, echo: EchoServer
) -> None:
    """``server --tls-cert --tls-key --tls-ca`` + ``client https://... --tls-ca --tls-cert``."""
    server_leaf = pki.issue("localhost", "127.0.0.1")
    client_leaf = pki.issue("connector.example")
    port, exposed = free_port(), free_port()
    bad_log = tmp_path / "bad"
    server_argv = [
        *CC,
        "server",
        "--host=127.0.0.1",
        f"--port={port}",
        "--reverse",
        f"--tls-cert={server_leaf.cert}",
        f"--tls-key={server_leaf.key}",
        f"--tls-ca={pki.ca_pem}",
    ]
    client_argv = [
        *CC,
        "client",
        "--max-retry-count=0",
        f"--tls-ca={pki.ca_pem}",
        f"--tls-cert={client_leaf.cert}",
        f"--tls-key={client_leaf.key}",
        f"https://localhost:{port}",
        f"R:127.0.0.1:{exposed}:127.0.0.1:{echo.port}",
    ]
    client: CliProcess | None = None
    with CliProcess("server", server_argv, cwd=tmp_path, logdir=tmp_path) as server:
        try:
            server.wait_listening(port, CLI_STEP)
            with CliProcess("client", client_argv, cwd=tmp_path, logdir=tmp_path) as client:
                client.wait_listening(exposed, CLI_STEP)
                payload = os.urandom(100_000)
                assert echo_roundtrip(exposed, payload, CLI_STEP) == payload
                assert "Connected" in client.text("both")
                assert "Listening on https://127.0.0.1" in server.text("both")

            # a client that does not trust the gateway's CA stops at once, exit 1, with the reason
            started = time.monotonic()
            bad = subprocess.run(
                [
                    *CC,
                    "client",
                    f"--tls-ca={other_pki.ca_pem}",
                    f"https://localhost:{port}",
                    f"R:127.0.0.1:{free_port()}:127.0.0.1:{echo.port}",
                ],
                capture_output=True,
                timeout=CLI_STEP,
            )
            bad_log.write_bytes(bad.stdout + bad.stderr)
            output = (bad.stdout + bad.stderr).decode()
            assert bad.returncode == 1, output
            assert time.monotonic() - started < CLI_STEP
            assert f"cannot verify the certificate of localhost:{port}" in output
            # the gateway sends its CA along (OpenSSL builds the chain from --tls-ca)
            assert "self-signed certificate in certificate chain" in output
            assert "Traceback" not in output
            assert "Retrying" not in output
        except BaseException:
            for proc in (server, client):
                if proc is not None:
                    print(proc.report(), file=sys.stderr)
            if bad_log.exists():
                print(f"--- bad client ---\n{bad_log.read_text(errors='replace')}", file=sys.stderr)
            raise
