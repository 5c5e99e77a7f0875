"""Named services end to end (issue 13 B): ``client R:svc/...`` and ``connect`` as programs.

Our gateway with remoted keys, a connector that registers a path for a service on
loopback, and ``cloud-connector connect`` reaching it through the gateway: as
stdin/stdout (what OpenSSH's ProxyCommand needs, with sshd as the service), as a
local listening port, and refused with the gateway's reason.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support import peers
from tests.support.net import LOOPBACK, EchoServer, blob, echo_roundtrip, free_port
from tests.support.processes import CC, CliProcess, Processes, clean_env

__all__: list[str] = []

SERVER_KEY = "svc-server-key-0123456789"
CLIENT_KEY = "svc-client-key-0123456789"
RUN_TIMEOUT = 60.0


@pytest.fixture
def gateway(procs: Processes) -> str:
    """Our gateway with named services on a free port; its http:// URL."""
    _, url = procs.our_server(
        "--remoted-server-key", SERVER_KEY, "--remoted-client-key", CLIENT_KEY
    )
    return url


def serve(procs: Processes, gateway: str, path: str, port: int) -> CliProcess:
    """``client URL R:svc/PATH:127.0.0.1:PORT``, the key from the environment."""
    proc = procs.start(
        "svc-client",
        [*CC, "client", gateway, f"R:svc{path}:127.0.0.1:{port}"],
        env=clean_env(CC_REMOTED_SERVER_KEY=SERVER_KEY),
    )
    proc.wait_for(rf"registered {path} at ")
    return proc


def service_url(gateway: str, path: str, key: str = CLIENT_KEY) -> str:
    return gateway.replace("http://", f"rwr://{key}@") + path


def connect(*args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*CC, "connect", *args],
        input=data,
        capture_output=True,
        env=clean_env(),
        timeout=RUN_TIMEOUT,
        check=False,
    )


def test_connect_stdio_through_a_named_service(
    procs: Processes, gateway: str, echo: EchoServer
) -> None:
    serve(procs, gateway, "/echo", echo.port)
    payload = blob(4 << 20, seed=13)
    result = connect(service_url(gateway, "/echo"), data=payload)
    assert result.returncode == 0, result.stderr.decode(errors="replace") + procs.report()
    assert result.stdout == payload, "every byte back, then EOF both ways"


def test_connect_listen_gives_each_connection_its_own_leg(
    procs: Processes, gateway: str, echo: EchoServer
) -> None:
    serve(procs, gateway, "/echo", echo.port)
    port = free_port()
    listener = procs.start(
        "connect", [*CC, "connect", "--listen", str(port), service_url(gateway, "/echo")]
    )
    listener.wait_listening(port)
    for n in range(3):
        payload = blob(256 * 1024, seed=n)
        assert echo_roundtrip(port, payload) == payload
    listener.assert_no_traceback()


@pytest.mark.parametrize(
    ("path", "key", "message"),
    [
        ("/nobody", CLIENT_KEY, "502 Bad Gateway (missing_destination): nobody serves this path"),
        ("/echo", "wrong-key", "403 Forbidden (invalid_missing_apikey): the gateway refused"),
    ],
)
def test_connect_says_why_it_cannot_reach(
    procs: Processes, gateway: str, path: str, key: str, message: str
) -> None:
    result = connect(service_url(gateway, path, key))
    assert result.returncode == 1
    assert result.stdout == b""
    stderr = result.stderr.decode()
    assert message in stderr, stderr
    assert key not in stderr, "the key is never printed"


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    """What ``sock`` sends up to and including ``marker`` (its timeout bounds the wait)."""
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        assert chunk, f"EOF before {marker!r}: {data!r}"
        data += chunk
    return data


def _raw(port: int, head: str) -> socket.socket:
    """A connection to the gateway that sent ``head``; the answer is the caller's to read."""
    sock = socket.create_connection((LOOPBACK, port), timeout=RUN_TIMEOUT)
    sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
    return sock


def test_connect_says_the_service_is_busy(procs: Processes) -> None:
    """--remoted-max-waiting 1: a server that never answers, one client waiting, connect -> 503."""
    port = free_port()
    procs.our_server(
        "--remoted-server-key", SERVER_KEY, "--remoted-client-key", CLIENT_KEY,
        "--remoted-max-waiting", "1", port=port,
    )  # fmt: skip
    silent_server = _raw(
        port,
        f"GET /stuck HTTP/1.1\nHost: gw\nX-Remoted-APIKey: {SERVER_KEY}\n"
        "Connection: Upgrade\nUpgrade: websocket\nOrigin: http://gw\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n",
    )
    assert _read_until(silent_server, b"\r\n\r\n").startswith(b"HTTP/1.1 101 ")
    waiting = _raw(
        port,
        f"GET /stuck HTTP/1.1\nHost: gw\nX-Remoted-APIKey: {CLIENT_KEY}\n"
        "Connection: Upgrade\nUpgrade: webroute\nWebRoute-Version: 1\nWebRoute-ID: first\n",
    )
    assert _read_until(silent_server, b'"id":"first"'), "the first client waits"
    result = connect(service_url(f"http://{LOOPBACK}:{port}", "/stuck"))
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert "503 Service Unavailable (destination_busy): too many clients already wait" in stderr, (
        stderr
    )
    waiting.close()
    silent_server.close()


def test_wrong_server_key_stops_the_client(procs: Processes, gateway: str) -> None:
    proc = procs.start(
        "svc-client",
        [*CC, "client", "--remoted-key", "wrong", gateway, "R:svc/x:127.0.0.1:9"],
    )
    assert proc.wait_exit() == 1
    assert "the gateway refused the server key (403 Forbidden" in proc.stderr()


@pytest.mark.interop
def test_ssh_proxycommand_through_a_named_service(
    procs: Processes, gateway: str, tmp_path: Path
) -> None:
    with peers.sshd(tmp_path) as sshd:
        serve(procs, gateway, "/ssh", sshd.port)
        proxy = shlex.join([*CC, "connect", service_url(gateway, "/ssh")])
        argv = sshd.ssh_argv("-o", f"ProxyCommand={proxy}", command=["echo", "hello"])
        result = subprocess.run(
            argv, capture_output=True, env=clean_env(), timeout=RUN_TIMEOUT, check=False
        )
        assert result.returncode == 0, (result.stderr.decode(errors="replace"), sshd.log())
        assert result.stdout == b"hello\n"


def test_keys_file_is_reloaded(procs: Processes, tmp_path: Path) -> None:
    """A key added to --remoted-keys works without a restart; remoted's config.dat form."""
    keys = tmp_path / "remoted.json"
    keys.write_text(json.dumps({"server_apikey": SERVER_KEY, "client_apikey": "old-key"}))
    server, url = procs.our_server("--remoted-keys", str(keys))
    refused = connect(service_url(url, "/x", CLIENT_KEY))
    assert b"403 Forbidden" in refused.stderr
    keys.write_text(
        json.dumps({"server_keys": {SERVER_KEY: ["*"]}, "client_keys": {CLIENT_KEY: ["/x"]}})
    )
    server.wait_for(r"Reloaded .*remoted\.json")
    accepted = connect(service_url(url, "/x", CLIENT_KEY))
    assert b"502 Bad Gateway (missing_destination)" in accepted.stderr, "the key is known now"
