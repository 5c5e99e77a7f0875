"""The real Remoted API Server PHP SDK against our gateway (issue 13 A).

cubiclesoft/remoted-api-server is found through ``REMOTED_API_SERVER_DIR`` (a
checkout, run by Debian's ``php-cli``); the tests skip, naming the variable, when
it is unset.  Each test copies the checkout to its tmp_path and writes the
``config.dat`` its scripts read (keys, host, port), so the checkout is never
changed.  The SDK's own pair, ``tests/test_server.php`` (registers /test/path/ over
a WebSocket and answers HTTP through WebRoute) and ``tests/test_client.php``
(reaches it through WebRoute), must print "It works!" through our gateway.  Our own
ends (``client R:svc/...`` and ``connect``) are checked against the SDK's pair and
against remoted's own ``server.php``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.net import LOOPBACK, free_port
from tests.support.processes import CC, START_TIMEOUT, CliProcess, Processes, clean_env

__all__: list[str] = []

SERVER_KEY = "testserverkey0123456789abcdef"
CLIENT_KEY = "testclientkey0123456789abcdef"
IT_WORKS = 'string(38) "{"success":true,"message":"It works!"}"'


class Remoted:
    """A private copy of the remoted-api-server checkout, configured for one port."""

    def __init__(self, root: Path, php: str, port: int) -> None:
        self.root = root
        self.php = php
        self.port = port
        config = {
            "server_apikey": SERVER_KEY,
            "client_apikey": CLIENT_KEY,
            "host": LOOPBACK,
            "port": port,
            "serviceuser": "",
        }
        (root / "config.dat").write_text(json.dumps(config))

    @property
    def config(self) -> Path:
        return self.root / "config.dat"

    def start(self, procs: Processes, script: str) -> CliProcess:
        """A long-running PHP script (tests/test_server.php, server.php) in the copy."""
        return procs.start(Path(script).stem, [self.php, script], cwd=self.root)

    def run(self, script: str, timeout: float = START_TIMEOUT) -> str:
        """A PHP script to completion; its stdout (the SDK's scripts exit 0 either way)."""
        done = subprocess.run(
            [self.php, script],
            cwd=self.root,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")


@pytest.fixture
def remoted(tmp_path: Path) -> Remoted:
    source = os.environ.get("REMOTED_API_SERVER_DIR", "")
    if not source:
        pytest.skip(
            "REMOTED_API_SERVER_DIR is not set: point it at a cubiclesoft/remoted-api-server "
            "checkout (run with php-cli) to run"
        )
    php = shutil.which("php")
    if php is None:
        pytest.skip("php is not installed (Debian: php-cli)")
    root = tmp_path / "remoted"
    shutil.copytree(source, root, ignore=shutil.ignore_patterns("config.dat", "*.notify.*"))
    return Remoted(root, php, free_port())


@pytest.mark.parametrize("keys", ["flags", "config.dat"])
def test_sdk_test_pair_passes_through_our_gateway(
    procs: Processes, remoted: Remoted, keys: str
) -> None:
    if keys == "flags":
        options = ["--remoted-server-key", SERVER_KEY, "--remoted-client-key", CLIENT_KEY]
    else:  # remoted's own config file is a keys file
        options = ["--remoted-keys", str(remoted.config)]
    server, _ = procs.our_server(*options, port=remoted.port)
    php_server = remoted.start(procs, "tests/test_server.php")
    php_server.wait_for(r"Ready\.")
    server.wait_for(r"Named service /test/path/ registered by 127\.0\.0\.1:\d+")
    for run in range(5):
        output = remoted.run("tests/test_client.php")
        assert IT_WORKS in output, f"run {run}:\n{output}\n{procs.report()}"
    php_server.wait_for_text("Sending client 5:  'It works!'")
    server.assert_no_traceback()


def test_sdk_client_without_a_server_gets_502(procs: Processes, remoted: Remoted) -> None:
    procs.our_server(
        "--remoted-server-key", SERVER_KEY, "--remoted-client-key", CLIENT_KEY, port=remoted.port
    )
    output = remoted.run("tests/test_client.php")
    assert "Server returned:  502 Bad Gateway" in output, output
    assert IT_WORKS not in output


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    """What ``sock`` sends up to and including ``marker`` (its timeout bounds the wait)."""
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        assert chunk, f"EOF before {marker!r}: {data!r}"
        data += chunk
    return data


def test_sdk_client_on_a_full_queue_reads_503(procs: Processes, remoted: Remoted) -> None:
    """--remoted-max-waiting: the SDK reports our busy answer as it reports any refusal."""
    procs.our_server(
        "--remoted-server-key", SERVER_KEY, "--remoted-client-key", CLIENT_KEY,
        "--remoted-max-waiting", "1", port=remoted.port,
    )  # fmt: skip
    heads = [
        f"GET /test/path/ HTTP/1.1\r\nHost: gw\r\nX-Remoted-APIKey: {SERVER_KEY}\r\n"
        "Connection: Upgrade\r\nUpgrade: websocket\r\nOrigin: http://gw\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        f"GET /test/path/ HTTP/1.1\r\nHost: gw\r\nX-Remoted-APIKey: {CLIENT_KEY}\r\n"
        "Connection: Upgrade\r\nUpgrade: webroute\r\nWebRoute-Version: 1\r\n"
        "WebRoute-ID: first\r\n\r\n",
    ]
    silent_server, waiting = (
        socket.create_connection((LOOPBACK, remoted.port), timeout=START_TIMEOUT) for _ in heads
    )
    silent_server.sendall(heads[0].encode())
    assert _read_until(silent_server, b"\r\n\r\n").startswith(b"HTTP/1.1 101 ")
    waiting.sendall(heads[1].encode())
    assert _read_until(silent_server, b'"id":"first"'), "one client waits: the queue is full"
    output = remoted.run("tests/test_client.php")
    assert "Server returned:  503 Service Unavailable" in output, output
    assert IT_WORKS not in output
    waiting.close()
    silent_server.close()


# -- our own ends with the PHP SDK, and with remoted's own server --------------------------

IT_WORKS_BODY = b'{"success":true,"message":"It works!"}'


@pytest.fixture
def it_works_http() -> Iterator[int]:
    """An HTTP service answering every GET as test_server.php does; its port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(IT_WORKS_BODY)))
            self.end_headers()
            self.wfile.write(IT_WORKS_BODY)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def our_service(procs: Processes, remoted: Remoted, port: int) -> CliProcess:
    """``client R:svc/test/path/:127.0.0.1:PORT``: the path the SDK's test client asks for."""
    proc = procs.start(
        "svc-client",
        [*CC, "client", f"http://{LOOPBACK}:{remoted.port}", f"R:svc/test/path/:{LOOPBACK}:{port}"],
        env=clean_env(CC_REMOTED_SERVER_KEY=SERVER_KEY),
    )
    proc.wait_for(r"registered /test/path/ at ")
    return proc


def our_connect(remoted: Remoted) -> bytes:
    """``connect`` as stdio, sending test_client.php's request; what came back.

    stdin stays open until the answer has come, as under ssh: remoted (and the PHP
    SDK's server) close both legs when one side sends EOF, so a client that
    half-closes after its request never gets the answer there.
    """
    request = b"GET /v1/some/api HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    proc = subprocess.Popen(
        [*CC, "connect", f"rwr://{CLIENT_KEY}@{LOOPBACK}:{remoted.port}/test/path/"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(request)
        proc.stdin.flush()
        answer = proc.stdout.read()  # until the service closes (Connection: close)
        proc.stdin.close()
        assert proc.wait(timeout=START_TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return answer


@pytest.mark.parametrize("gateway", ["ours", "remoted server.php"])
def test_sdk_client_reaches_our_service(
    procs: Processes, remoted: Remoted, it_works_http: int, gateway: str
) -> None:
    if gateway == "ours":
        procs.our_server("--remoted-keys", str(remoted.config), port=remoted.port)
    else:
        php = remoted.start(procs, "server.php")
        php.wait_for(r"Ready\.")
    our_service(procs, remoted, it_works_http)
    for run in range(3):
        output = remoted.run("tests/test_client.php")
        assert IT_WORKS in output, f"run {run}:\n{output}\n{procs.report()}"


@pytest.mark.parametrize("gateway", ["ours", "remoted server.php"])
def test_our_connect_reaches_our_service(
    procs: Processes, remoted: Remoted, it_works_http: int, gateway: str
) -> None:
    if gateway == "ours":
        procs.our_server("--remoted-keys", str(remoted.config), port=remoted.port)
    else:
        php = remoted.start(procs, "server.php")
        php.wait_for(r"Ready\.")
    our_service(procs, remoted, it_works_http)
    answer = our_connect(remoted)
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n") and answer.endswith(IT_WORKS_BODY), answer


def test_our_connect_reaches_the_sdk_server(procs: Processes, remoted: Remoted) -> None:
    procs.our_server("--remoted-keys", str(remoted.config), port=remoted.port)
    php_server = remoted.start(procs, "tests/test_server.php")
    php_server.wait_for(r"Ready\.")
    answer = our_connect(remoted)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    assert answer.endswith(IT_WORKS_BODY), answer
