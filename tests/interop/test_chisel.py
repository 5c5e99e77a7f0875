"""Interop with the real chisel (v1.11.5), found only through CHISEL_BIN.

Each direction is proven with a real peer: our connector and outsystemscc against a
chisel server, a chisel client against our gateway.  Every working tunnel carries a
small request/response and a SHA-256-verified random payload through a TCP echo
service.  Failures (auth, rejected config, fingerprint) must end our client quickly,
non-zero, with the peer's reason and no traceback.  Where the real peer disagrees
with PROTOCOL.md, the test follows the peer.
"""

from __future__ import annotations

import json
import re
import socket
import time
from functools import partial
from pathlib import Path

import pytest

from tests.support.chisel import (
    CONNECTED_RE,
    FINGERPRINT_RE,
    IO_TIMEOUT,
    SEED,
    SEED_FINGERPRINT,
    SEED_MD5_FINGERPRINT,
    WRONG_FINGERPRINT,
    CountingRelay,
    check_tunnel,
    parallel_roundtrips,
    small_exchange,
    socks_connect,
)
from tests.support.net import LOOPBACK, EchoServer, free_port
from tests.support.processes import CliProcess, Processes, stop_process

pytestmark = pytest.mark.interop

#: A fatal error must end our client within this many seconds, without retrying.
FATAL_EXIT_TIMEOUT = 15.0
#: Long enough for several 1 s keepalive rounds in both directions.
KEEPALIVE_SOAK = 2.5


def _reverse(port: int, target: EchoServer) -> str:
    """A reverse remote that listens on loopback only (chisel's default host is 0.0.0.0)."""
    return f"R:{LOOPBACK}:{port}:{target.host}:{target.port}"


def _forward(port: int, target: EchoServer) -> str:
    return f"{LOOPBACK}:{port}:{target.host}:{target.port}"


def _port_of(server: CliProcess) -> int:
    """The listening port from a server's ``--port``/``-p`` argument."""
    for flag in ("--port", "-p"):
        if flag in server.argv:
            return int(server.argv[server.argv.index(flag) + 1])
    raise AssertionError(f"no port in {server.argv}")


def _idle_traffic(relay: CountingRelay) -> tuple[int, int]:
    """Bytes each way while the session sits idle for a few keepalive rounds."""
    time.sleep(0.3)  # let the tail of the handshake pass
    up0, down0 = relay.counts()
    time.sleep(KEEPALIVE_SOAK)
    up1, down1 = relay.counts()
    return up1 - up0, down1 - down0


# --------------------------------------------------------------------------- 1. ours -> chisel


def test_our_client_against_chisel_server(
    chisel: str, procs: Processes, echo: EchoServer, payload: bytes
) -> None:
    server, url = procs.chisel_server(chisel, "--key", SEED, "--reverse")
    server.wait_for(rf"server: Fingerprint {re.escape(SEED_FINGERPRINT)}", stream="stderr")
    rport, fport = free_port(), free_port()
    client = procs.our_client(
        "--fingerprint",
        SEED_FINGERPRINT,
        url,
        _reverse(rport, echo),
        _forward(fport, echo),
    )
    client.wait_for(CONNECTED_RE, stream="stdout")
    server.wait_listening(rport)
    check_tunnel(rport, payload)
    check_tunnel(fport, payload)
    parallel_roundtrips(rport, payload[: 16 << 20])
    parallel_roundtrips(fport, payload[: 16 << 20])
    assert client.popen.poll() is None, client.report()
    # chisel's tunnel log names both remotes of our config.
    server.wait_for(rf"proxy#R:{LOOPBACK}:{rport}=>", stream="stderr")
    client.assert_no_traceback()


def test_our_client_workers_split_reverse_remotes_against_chisel(
    chisel: str, procs: Processes, echo: EchoServer, payload: bytes
) -> None:
    """A chisel server cannot share a port: each reverse remote goes to one session."""
    server, url = procs.chisel_server(chisel, "--key", SEED, "--reverse")
    server.wait_for(rf"server: Fingerprint {re.escape(SEED_FINGERPRINT)}", stream="stderr")
    first, second, fport = free_port(), free_port(), free_port()
    client = procs.our_client(
        "--workers",
        "2",
        "--fingerprint",
        SEED_FINGERPRINT,
        url,
        _reverse(first, echo),
        _reverse(second, echo),
        _forward(fport, echo),
    )
    for worker in (1, 2):
        client.wait_for(rf"\[worker {worker}\] client: Connected", stream="stdout")
    client.wait_for(r"2 of 3 remotes on this session \(the gateway cannot share", stream="stdout")
    for port in (first, second, fport):
        server.wait_listening(port)
        check_tunnel(port, payload[: 4 << 20])
    # two sessions at chisel, each binding one of the reverse ports
    binders = {
        server.wait_for(rf"session#(\d+): .*proxy#R:{LOOPBACK}:{port}=>", stream="stderr")[1]
        for port in (first, second)
    }
    assert len(binders) == 2, server.report()
    assert client.popen.poll() is None, client.report()
    client.assert_no_traceback()


# --------------------------------------------------------------------------- 2. outsystemscc


def test_outsystemscc_against_chisel_server(
    chisel: str, procs: Processes, echo: EchoServer, payload: bytes
) -> None:
    server, url = procs.chisel_server(chisel, "--key", SEED, "--reverse")
    rport = free_port()
    # chisel ignores the path and the ?id=&ports= query that outsystemscc appends, and
    # answers the preflight GET of /sg_123 with 404, which is not a redirect.  The
    # remote names 127.0.0.1 as its local host (R:127.0.0.1:LPORT:...) because the
    # documented R:LPORT:... form makes chisel listen on 0.0.0.0.
    client = procs.outsystemscc("--header", "token: abc", f"{url}/sg_123", _reverse(rport, echo))
    client.wait_for(
        rf"client: Connecting to ws://{LOOPBACK}:\d+/sg_123\?id=\d{{9}}&ports={rport}\n",
        stream="stdout",
    )
    client.wait_for(CONNECTED_RE, stream="stdout")
    server.wait_listening(rport)
    check_tunnel(rport, payload)
    assert client.popen.poll() is None, client.report()
    client.assert_no_traceback()


# --------------------------------------------------------------------------- 3. chisel -> ours


def test_chisel_client_against_our_server(
    chisel: str, procs: Processes, echo: EchoServer, payload: bytes
) -> None:
    server, url = procs.our_server("--key", SEED, "--reverse")
    # Same seed, same key derivation, same fingerprint as chisel prints.
    server.wait_for(rf"server: Fingerprint {re.escape(SEED_FINGERPRINT)}\n", stream="stdout")
    rport, fport = free_port(), free_port()
    client = procs.chisel_client(
        chisel,
        "--fingerprint",
        SEED_FINGERPRINT,
        "--max-retry-count",
        "0",
        url,
        _reverse(rport, echo),
        _forward(fport, echo),
    )
    client.wait_for(CONNECTED_RE, stream="stderr")
    server.wait_listening(rport)
    client.wait_listening(fport)
    check_tunnel(rport, payload)
    check_tunnel(fport, payload)
    parallel_roundtrips(rport, payload[: 16 << 20])
    parallel_roundtrips(fport, payload[: 16 << 20])
    assert client.popen.poll() is None, client.report()
    server.wait_for(r"version=v1\.11\.5", stream="stdout")
    server.assert_no_traceback()


# --------------------------------------------------------------------------- 4. auth


def test_our_client_auth_against_chisel_server(
    chisel: str, procs: Processes, echo: EchoServer, small_payload: bytes
) -> None:
    server, url = procs.chisel_server(chisel, "--key", SEED, "--auth", "user:pass")
    server.wait_for("server: User authentication enabled", stream="stderr")

    wrong = procs.our_client("--auth", "user:wrong", url, _forward(free_port(), echo))
    assert wrong.wait_exit(FATAL_EXIT_TIMEOUT) != 0, wrong.report()
    assert "authentication failed" in wrong.stderr().lower(), wrong.report()
    assert "Retrying" not in wrong.stdout(), wrong.report()
    wrong.assert_no_traceback()

    fport = free_port()
    right = procs.our_client("--auth", "user:pass", url, _forward(fport, echo))
    right.wait_for(CONNECTED_RE, stream="stdout")
    check_tunnel(fport, small_payload)
    right.assert_no_traceback()


def test_chisel_client_against_our_authfile(
    chisel: str,
    procs: Processes,
    echo: EchoServer,
    small_payload: bytes,
    tmp_path: Path,
) -> None:
    rport, fport, denied_port = free_port(), free_port(), free_port()
    users = {
        "alice:secret": [
            rf"^R:127\.0\.0\.1:{rport}$",
            rf"^127\.0\.0\.1:{echo.port}$",
        ]
    }
    authfile = tmp_path / "users.json"
    authfile.write_text(json.dumps(users))
    server, url = procs.our_server("--key", SEED, "--reverse", "--authfile", str(authfile))

    allowed = procs.chisel_client(
        chisel,
        "--auth",
        "alice:secret",
        "--max-retry-count",
        "0",
        url,
        _reverse(rport, echo),
        _forward(fport, echo),
    )
    allowed.wait_for(CONNECTED_RE, stream="stderr")
    server.wait_listening(rport)
    allowed.wait_listening(fport)
    check_tunnel(rport, small_payload)
    check_tunnel(fport, small_payload)

    # A reverse remote on a port the ACL does not list: the config is refused and
    # chisel prints our reason (it would retry, so --max-retry-count 0 ends it).
    denied = procs.chisel_client(
        chisel,
        "--auth",
        "alice:secret",
        "--max-retry-count",
        "0",
        url,
        _reverse(denied_port, echo),
    )
    denied.wait_exit()
    assert re.search(
        rf"Connection error: .*access to 'R:127\.0\.0\.1:{denied_port}' denied", denied.stderr()
    ), denied.report()
    assert "Connected (Latency" not in denied.stderr(), denied.report()

    # A forward remote to a target the ACL does not list.
    denied_fwd = procs.chisel_client(
        chisel,
        "--auth",
        "alice:secret",
        "--max-retry-count",
        "0",
        url,
        f"{LOOPBACK}:{free_port()}:{LOOPBACK}:{denied_port}",
    )
    denied_fwd.wait_exit()
    assert re.search(rf"access to '127\.0\.0\.1:{denied_port}' denied", denied_fwd.stderr()), (
        denied_fwd.report()
    )

    # A wrong password: chisel reports an authentication failure.
    bad_pass = procs.chisel_client(
        chisel, "--auth", "alice:nope", "--max-retry-count", "0", url, _reverse(rport, echo)
    )
    bad_pass.wait_exit()
    assert "Authentication failed" in bad_pass.stderr(), bad_pass.report()

    # The allowed session is unaffected by the refused ones.
    assert allowed.popen.poll() is None, allowed.report()
    check_tunnel(rport, small_payload[: 1 << 20])
    server.assert_no_traceback()


# --------------------------------------------------------------------------- 5. rejected config


def test_our_client_reports_chisel_config_rejection(
    chisel: str, procs: Processes, echo: EchoServer
) -> None:
    _, url = procs.chisel_server(chisel, "--key", SEED)  # no --reverse
    client = procs.our_client(url, _reverse(free_port(), echo))
    started = time.monotonic()
    assert client.wait_exit(FATAL_EXIT_TIMEOUT) != 0, client.report()
    # chisel 1.11.5 spells it "forwaring"; accept the corrected spelling too.
    assert re.search(r"Reverse port forward?ing not enabled", client.stderr()), client.report()
    assert "Connected (Latency" not in client.stdout(), client.report()
    assert "Retrying" not in client.stdout(), client.report()
    assert time.monotonic() - started < FATAL_EXIT_TIMEOUT
    client.assert_no_traceback()


def test_chisel_client_reports_our_config_rejection(
    chisel: str, procs: Processes, echo: EchoServer
) -> None:
    """The mirror: our gateway's REQUEST_FAILURE text is what chisel's client prints."""
    server, url = procs.our_server("--key", SEED)  # no --reverse
    client = procs.chisel_client(chisel, "--max-retry-count", "0", url, _reverse(free_port(), echo))
    client.wait_exit()
    assert re.search(
        r"Connection error: server: Reverse port forward?ing not enabled", client.stderr()
    ), client.report()
    assert "Connected (Latency" not in client.stderr(), client.report()
    server.assert_no_traceback()


# --------------------------------------------------------------------------- 6. fingerprint


def test_fingerprint_mismatch_is_fatal(chisel: str, procs: Processes, echo: EchoServer) -> None:
    server, url = procs.chisel_server(chisel, "--key", SEED, "--reverse")
    client = procs.our_client("--fingerprint", WRONG_FINGERPRINT, url, _forward(free_port(), echo))
    started = time.monotonic()
    assert client.wait_exit(FATAL_EXIT_TIMEOUT) != 0, client.report()
    elapsed = time.monotonic() - started
    assert "fingerprint" in client.stderr().lower(), client.report()
    assert "Retrying" not in client.stdout(), client.report()
    assert "Connected (Latency" not in client.stdout(), client.report()
    assert elapsed < 10.0, f"took {elapsed:.1f}s to give up\n{client.report()}"
    client.assert_no_traceback()
    assert server.popen.poll() is None, server.report()


def test_legacy_md5_fingerprint_is_accepted(
    chisel: str, procs: Processes, echo: EchoServer, small_payload: bytes
) -> None:
    """chisel still takes the old ``aa:bb:..`` MD5 form (with a warning); so do we."""
    _, url = procs.chisel_server(chisel, "--key", SEED)
    fport = free_port()
    client = procs.our_client("--fingerprint", SEED_MD5_FINGERPRINT, url, _forward(fport, echo))
    client.wait_for(CONNECTED_RE, stream="stdout")
    assert "deprecated MD5 fingerprint" in client.stdout(), client.report()
    assert SEED_FINGERPRINT in client.stdout(), client.report()
    check_tunnel(fport, small_payload)


# --------------------------------------------------------------------------- keepalive, reconnect


@pytest.mark.parametrize("pinger", ["client", "server"])
def test_keepalive_with_chisel_server(
    chisel: str, procs: Processes, echo: EchoServer, small_payload: bytes, pinger: str
) -> None:
    """One side pings every second and the other must answer.

    Neither program logs pings, so a relay counts the idle session's bytes.  Our
    client's 2 s deadline must not fire, and chisel closes the session on any reply
    payload other than "pong" or empty.
    """
    server_ka, client_ka = ("0s", "1s") if pinger == "client" else ("1s", "0s")
    server, _ = procs.chisel_server(chisel, "--key", SEED, "--keepalive", server_ka)
    fport = free_port()
    with CountingRelay(_port_of(server)) as relay:
        client = procs.our_client(
            "--keepalive",
            client_ka,
            "--keepalive-timeout",
            "2s",
            f"http://{LOOPBACK}:{relay.port}",
            _forward(fport, echo),
        )
        client.wait_for(CONNECTED_RE, stream="stdout")
        up, down = _idle_traffic(relay)
        assert up > 0 and down > 0, f"idle session carried {up}B up, {down}B down"
        check_tunnel(fport, small_payload)
        # By now our 2 s deadline has passed for the first pings: nothing went stale.
        assert client.popen.poll() is None, client.report()
        for line in ("Disconnected", "Keepalive", "Retrying"):
            assert line not in client.stdout(), client.report()
    assert server.popen.poll() is None, server.report()


@pytest.mark.parametrize("pinger", ["client", "server"])
def test_keepalive_with_chisel_client(
    chisel: str, procs: Processes, echo: EchoServer, small_payload: bytes, pinger: str
) -> None:
    server_ka, client_ka = ("0s", "1s") if pinger == "client" else ("1s", "0s")
    server, _ = procs.our_server("--key", SEED, "--keepalive", server_ka)
    fport = free_port()
    with CountingRelay(_port_of(server)) as relay:
        client = procs.chisel_client(
            chisel,
            "--keepalive",
            client_ka,
            "--max-retry-count",
            "0",
            f"http://{LOOPBACK}:{relay.port}",
            _forward(fport, echo),
        )
        client.wait_for(CONNECTED_RE, stream="stderr")
        up, down = _idle_traffic(relay)
        assert up > 0 and down > 0, f"idle session carried {up}B up, {down}B down"
        client.wait_listening(fport)
        check_tunnel(fport, small_payload)
        assert client.popen.poll() is None, client.report()
        assert "Disconnected" not in client.stderr(), client.report()
        assert "keepalive" not in server.stdout().lower(), server.report()


def test_our_client_reconnects_after_chisel_restart(
    chisel: str, procs: Processes, echo: EchoServer, small_payload: bytes
) -> None:
    first, url = procs.chisel_server(chisel, "--key", SEED, "--reverse")
    port = int(url.rsplit(":", 1)[1])
    rport = free_port()
    client = procs.our_client("--fingerprint", SEED_FINGERPRINT, url, _reverse(rport, echo))
    client.wait_for(CONNECTED_RE, stream="stdout")
    first.wait_listening(rport)
    small_exchange(rport)

    stop_process(first.popen)
    client.wait_for(r"client: (Disconnected|Connection error)", stream="stdout")
    second, _ = procs.chisel_server(chisel, "--key", SEED, "--reverse", port=port)
    client.wait_for(rf"(?s){CONNECTED_RE}.*{CONNECTED_RE}", stream="stdout")
    second.wait_listening(rport)
    check_tunnel(rport, small_payload)
    client.assert_no_traceback()


# --------------------------------------------------------------------------- SOCKS, TLS

PAIRINGS = ["our-client+chisel-server", "chisel-client+our-server"]


def _start_pair(
    pairing: str, chisel: str, procs: Processes, server_opts: list[str], remotes: list[str]
) -> tuple[CliProcess, CliProcess]:
    """Server and connected client of one pairing, both on the seed key."""
    if pairing == "our-client+chisel-server":
        server, url = procs.chisel_server(chisel, "--key", SEED, *server_opts)
        client = procs.our_client("--fingerprint", SEED_FINGERPRINT, url, *remotes)
        client.wait_for(CONNECTED_RE, stream="stdout")
    else:
        server, url = procs.our_server("--key", SEED, *server_opts)
        client = procs.chisel_client(
            chisel, "--fingerprint", SEED_FINGERPRINT, "--max-retry-count", "0", url, *remotes
        )
        client.wait_for(CONNECTED_RE, stream="stderr")
    return server, client


@pytest.mark.parametrize("pairing", PAIRINGS)
def test_socks_remotes(
    chisel: str, procs: Processes, echo: EchoServer, small_payload: bytes, pairing: str
) -> None:
    """``socks`` ends at the server's SOCKS5 proxy, ``R:socks`` at the client's.

    (test_chisel_udp.py drives SOCKS with curl; this one pushes SHA-256-checked bulk.)
    """
    fport, rport = free_port(), free_port()
    remotes = [f"{LOOPBACK}:{fport}:socks", f"R:{LOOPBACK}:{rport}:socks"]
    server, client = _start_pair(pairing, chisel, procs, ["--reverse", "--socks5"], remotes)
    server.wait_listening(rport)
    client.wait_listening(fport)
    for port in (fport, rport):
        check_tunnel(port, small_payload, connect=partial(socks_connect, port, *echo.address))
    assert client.popen.poll() is None, client.report()


@pytest.mark.parametrize("pairing", PAIRINGS)
def test_mutual_tls(
    chisel: str,
    procs: Processes,
    echo: EchoServer,
    small_payload: bytes,
    tmp_path: Path,
    pairing: str,
) -> None:
    """wss:// with a private CA and client certificates, Go TLS on one side."""
    import trustme

    ca = trustme.CA()
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    paths: dict[str, str] = {}
    for role, name in (("server", LOOPBACK), ("client", "connector.example")):
        leaf = ca.issue_cert(name)
        paths[f"{role}-key"] = str(tmp_path / f"{role}.key")
        paths[f"{role}-crt"] = str(tmp_path / f"{role}.crt")
        leaf.private_key_pem.write_to_path(paths[f"{role}-key"])
        leaf.cert_chain_pems[0].write_to_path(paths[f"{role}-crt"])
    server_tls = ["--tls-key", paths["server-key"], "--tls-cert", paths["server-crt"]]
    server_tls += ["--tls-ca", str(ca_pem)]
    client_tls = ["--tls-ca", str(ca_pem)]
    client_cert = ["--tls-cert", paths["client-crt"], "--tls-key", paths["client-key"]]
    fport = free_port()

    if pairing == "our-client+chisel-server":
        server, url = procs.chisel_server(chisel, "--key", SEED, *server_tls)
        server.wait_for(r"Listening on https://", stream="stderr")
        url = url.replace("http://", "https://")
        without = procs.our_client(*client_tls, url, _forward(free_port(), echo))
        assert without.wait_exit(FATAL_EXIT_TIMEOUT) != 0, without.report()
        assert "requires a client certificate" in without.stderr(), without.report()
        without.assert_no_traceback()
        client = procs.our_client(*client_tls, *client_cert, url, _forward(fport, echo))
        client.wait_for(CONNECTED_RE, stream="stdout")
    else:
        server, url = procs.our_server("--key", SEED, *server_tls)
        server.wait_for(r"Listening on https://", stream="stdout")
        url = url.replace("http://", "https://")
        retries = ["--max-retry-count", "0"]
        without = procs.chisel_client(
            chisel, *retries, *client_tls, url, _forward(free_port(), echo)
        )
        without.wait_exit()
        assert "Connected (Latency" not in without.stderr(), without.report()
        client = procs.chisel_client(
            chisel, *retries, *client_tls, *client_cert, url, _forward(fport, echo)
        )
        client.wait_for(CONNECTED_RE, stream="stderr")
    assert "wss://" in client.text("both"), client.report()
    client.wait_listening(fport)
    check_tunnel(fport, small_payload)


# --------------------------------------------------------------------------- 7. keys


def _chisel_fingerprint_of(
    chisel: str, procs: Processes, keyfile: str
) -> tuple[CliProcess, str, str]:
    """Start ``chisel server --keyfile`` and return it, its URL and the fingerprint it prints."""
    server, url = procs.chisel_server(chisel, "--keyfile", keyfile)
    return server, url, server.wait_for(FINGERPRINT_RE, stream="stderr").group(1)


@pytest.mark.parametrize("seeded", [False, True], ids=["random", "seeded"])
def test_chisel_keygen_loads_in_our_server(
    chisel: str,
    procs: Processes,
    echo: EchoServer,
    small_payload: bytes,
    tmp_path: Path,
    seeded: bool,
) -> None:
    keyfile = tmp_path / "chisel.key"
    seed_opts = ["--key", SEED] if seeded else []
    keygen = procs.start("chisel-keygen", [chisel, "server", "--keygen", str(keyfile), *seed_opts])
    assert keygen.wait_exit() == 0, keygen.report()
    assert keyfile.is_file(), keygen.report()

    _, _, chisel_fp = _chisel_fingerprint_of(chisel, procs, str(keyfile))
    if seeded:
        assert chisel_fp == SEED_FINGERPRINT
    # chisel 1.11.5 writes "ck-<base64 of the SEC1 DER>", not PEM; --keyfile also takes
    # that string inline.  Both forms must load here with chisel's fingerprint.
    inline = keyfile.read_text().strip()
    inline_server, _ = procs.our_server("--keyfile", inline)
    from_inline = inline_server.wait_for(FINGERPRINT_RE, stream="stdout").group(1)
    assert from_inline == chisel_fp, f"chisel says {chisel_fp}, we say {from_inline} (inline)"
    server, url = procs.our_server("--keyfile", str(keyfile))
    ours = server.wait_for(FINGERPRINT_RE, stream="stdout").group(1)
    assert ours == chisel_fp, f"chisel says {chisel_fp}, we say {ours}"

    # The key really is the one we serve: chisel's client verifies it end to end.
    fport = free_port()
    client = procs.chisel_client(
        chisel,
        "--fingerprint",
        chisel_fp,
        "--max-retry-count",
        "0",
        url,
        _forward(fport, echo),
    )
    client.wait_for(CONNECTED_RE, stream="stderr")
    client.wait_listening(fport)
    check_tunnel(fport, small_payload)


@pytest.mark.parametrize("fmt", ["pem", "ck"])
def test_our_keygen_loads_in_chisel(
    chisel: str,
    procs: Processes,
    echo: EchoServer,
    small_payload: bytes,
    tmp_path: Path,
    fmt: str,
) -> None:
    keyfile = tmp_path / f"ours.{fmt}"
    keygen = procs.run_ours("keygen", "keygen", "--format", fmt, str(keyfile))
    assert keygen.popen.returncode == 0, keygen.report()
    ours = re.search(r"Fingerprint (\S+)", keygen.stderr())
    assert ours, keygen.report()
    if fmt == "pem":
        assert keyfile.read_text().startswith("-----BEGIN EC PRIVATE KEY-----")
    else:
        assert keyfile.read_text().startswith("ck-")

    _, url, chisel_fp = _chisel_fingerprint_of(chisel, procs, str(keyfile))
    assert chisel_fp == ours.group(1)

    fport = free_port()
    client = procs.our_client("--fingerprint", chisel_fp, url, _forward(fport, echo))
    client.wait_for(CONNECTED_RE, stream="stdout")
    check_tunnel(fport, small_payload)


# --------------------------------------------------------------------------- 8. HTTP layer


def _http(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send one raw request; return the status line, headers and body (or first WS frame)."""
    with socket.create_connection((LOOPBACK, port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if " 101 " in lines[0]:
            # The server speaks first: one binary frame holding its SSH version line.
            while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                rest += chunk
        else:
            length = int(headers.get("content-length", "0"))
            while len(rest) < length:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                rest += chunk
        return lines[0], headers, rest


def _upgrade(protocol: str | None) -> bytes:
    proto = f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol is not None else ""
    return (
        "GET /any/path?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"{proto}\r\n"
    ).encode()


def test_http_layer_matches_chisel(chisel: str, procs: Processes) -> None:
    """A wrong subprotocol is served as plain HTTP (404), by chisel and by us alike."""
    chisel_server, chisel_url = procs.chisel_server(chisel, "--key", SEED)
    our_server, our_url = procs.our_server("--key", SEED)
    for url in (chisel_url, our_url):
        port = int(url.rsplit(":", 1)[1])
        for protocol in ("chisel-v2", "chisel-v3, other", None):
            status, _, body = _http(port, _upgrade(protocol))
            assert status.startswith("HTTP/1.1 404"), (url, protocol, status)
            assert body == b"Not found", (url, protocol, body)
        status, headers, frame = _http(port, _upgrade("chisel-v3"))
        assert status.startswith("HTTP/1.1 101"), (url, status)
        assert headers.get("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert frame[0] == 0x82, (url, frame[:4])  # FIN + binary, unmasked
        assert frame[2:].startswith(b"SSH-chisel-v3-server"), (url, frame)
        status, _, body = _http(port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status.startswith("HTTP/1.1 200") and body == b"OK\n", (url, status, body)
    chisel_server.wait_for(
        "ignored client connection using protocol 'chisel-v2', expected 'chisel-v3'",
        stream="stderr",
    )
    our_server.wait_for(
        "ignored client connection using protocol 'chisel-v2', expected 'chisel-v3'",
        stream="stdout",
    )
