"""Idle sockets must not lock a connector out (issue 11, weak spot 5).

Measured before the fix: with the gateway at 1,024 descriptors, 1,500 idle
half-open sockets locked a real connector out for 43 s and the gateway logged
nothing while its accepts failed.  Here the gateway is the real CLI with that
descriptor limit, the idle sockets come from 47 loopback addresses
(127.0.0.2-48, 32 each, the per-source cap), and the connector from 127.0.0.1
must be connected within 2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from cc.connector.config import ConnectorConfig
from cc.connector.connector import Connector
from cc.protocol.remote import parse_remote
from tests.support.net import LOOPBACK, free_port
from tests.support.processes import CC, CliProcess

__all__: list[str] = []

IDLE_SOCKETS = 1500


def descriptor_limit(limit: int) -> Callable[[], None]:
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


@pytest.fixture
def enough_descriptors() -> Iterator[None]:
    """This test process holds the attacker's sockets: raise its own soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < IDLE_SOCKETS + 500:
        pytest.skip(f"the hard descriptor limit ({hard}) is below {IDLE_SOCKETS + 500}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, IDLE_SOCKETS + 500), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def gateway(tmp_path: Path, limit: int, *flags: str) -> Iterator[tuple[CliProcess, int]]:
    port = free_port()
    argv = [*CC, "server", "--reverse", "--host", LOOPBACK, "--port", str(port), *flags]
    with CliProcess(
        "gateway", argv, cwd=tmp_path, logdir=tmp_path, preexec_fn=descriptor_limit(limit)
    ) as proc:
        proc.wait_listening(port, 15)
        yield proc, port


def open_idle(port: int, count: int, per_source: int = 32) -> list[socket.socket]:
    """``count`` connections that never send a byte, ``per_source`` per loopback address."""
    held = []
    for n in range(count):
        source = f"127.0.0.{2 + n // per_source}"
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind((source, 0))
        with contextlib.suppress(BlockingIOError):
            sock.connect((LOOPBACK, port))
        held.append(sock)
    return held


def time_to_connect(port: int) -> float:
    """Seconds until an in-process connector from 127.0.0.1 is connected (10 s at most)."""

    async def run() -> float:
        config = ConnectorConfig(
            server=urlsplit(f"http://{LOOPBACK}:{port}"),
            remotes=[parse_remote(f"R:127.0.0.1:{free_port()}:127.0.0.1:9")],
            max_retry_count=20,
            max_retry_interval=0.2,
            connect_timeout=5.0,
            drain_timeout=0.5,
        )
        connector = Connector(config)
        started = time.monotonic()
        task = asyncio.ensure_future(connector.run())
        try:
            async with asyncio.timeout(10):
                await connector.connected.wait()
            return time.monotonic() - started
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    return asyncio.run(run())


def closed_count(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the gateway has closed (EOF or reset)."""
    closed = 0
    for sock in socks:
        try:
            if sock.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


@pytest.mark.timeout(120)
def test_connector_gets_in_past_1500_idle_sockets(tmp_path: Path, enough_descriptors: None) -> None:
    with gateway(tmp_path, 1024) as (proc, port):
        held = open_idle(port, IDLE_SOCKETS)
        try:
            time.sleep(2.0)  # the gateway has accepted (and evicted) what it will
            fds = psutil.Process(proc.pid).num_fds()
            took = time_to_connect(port)
            print(
                f"\nconnector in after {took:.2f}s past {IDLE_SOCKETS} idle sockets; "
                f"gateway held {fds} descriptors of 1024"
            )
            assert took < 2.0, proc.report()
            assert fds < 1024
            assert "Out of file descriptors" not in proc.stderr() + proc.stdout()
        finally:
            for sock in held:
                sock.close()
        proc.assert_no_traceback()


@pytest.mark.timeout(120)
def test_out_of_descriptors_resets_and_logs_instead_of_stalling(
    tmp_path: Path, enough_descriptors: None
) -> None:
    """Caps lifted and 64 descriptors: accepts run out.  The gateway says so once,
    resets what it cannot serve (nothing waits in the backlog), and serves again
    as soon as descriptors are free."""
    flags = ("--max-unauthenticated", "0", "--max-unauthenticated-per-source", "0")
    with gateway(tmp_path, 64, *flags) as (proc, port):
        held = open_idle(port, 200, per_source=200)
        try:
            proc.wait_for_text("Out of file descriptors", timeout=10)
            time.sleep(1.0)
            reset = closed_count(held)
            print(f"\n{reset} of 200 idle connections reset for want of descriptors")
            assert reset > 100
        finally:
            for sock in held:
                sock.close()
        took = time_to_connect(port)
        assert took < 2.0, proc.report()
        assert (proc.stderr() + proc.stdout()).count("Out of file descriptors: resetting") == 1
        proc.assert_no_traceback()


def _serve_http(port: int) -> http.server.ThreadingHTTPServer:
    """A tiny keep-alive HTTP backend in a thread (the target behind the connector)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"ok\n")

        def log_message(self, *args: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            pass  # kept connections the gateway resets when it stops

    server = Server((LOOPBACK, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _slow_heads(port: int, count: int, per_source: int) -> list[socket.socket]:
    """``count`` clients that begin a request head and never finish it."""
    held = []
    for n in range(count):
        sock = socket.create_connection(
            (LOOPBACK, port), timeout=5, source_address=(f"127.0.0.{2 + n // per_source}", 0)
        )
        sock.sendall(b"GET / HTTP/1.1\r\n")
        sock.setblocking(False)
        held.append(sock)
    return held


def _get(port: int) -> bytes:
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
        return sock.recv(100).split(b"\r\n")[0]


@pytest.mark.timeout(120)
def test_slow_app_clients_leave_room_for_connectors_and_other_clients(
    tmp_path: Path, enough_descriptors: None
) -> None:
    """The HTTP API gateway's app port at 256 descriptors: 600 never-ending heads.

    Before the app port had caps, 183 of them took every descriptor: a real
    request was reset and a second connector could not log in.
    """
    backend_port, app_port = free_port(), free_port()
    backend = _serve_http(backend_port)
    (tmp_path / "targets.yaml").write_text(
        f"targets:\n  api.test:\n    protocol: http\n    hostname: {LOOPBACK}\n"
        f"    port: {backend_port}\n"
    )
    app = ("--targets", "targets.yaml", "--app-port", str(app_port), "--app-host", LOOPBACK)
    try:
        with gateway(tmp_path, 256, *app) as (proc, port):
            proc.wait_listening(app_port, 15)
            connector_argv = [*CC, "client", "--http-target", f"{LOOPBACK}:{backend_port}"]
            connector_argv.append(f"http://{LOOPBACK}:{port}")
            with CliProcess("connector", connector_argv, cwd=tmp_path, logdir=tmp_path) as conn:
                conn.wait_for_text("Connected", timeout=15)
                assert _get(app_port) == b"HTTP/1.1 200 OK"
                held = _slow_heads(app_port, 600, per_source=100)
                try:
                    time.sleep(1.0)
                    fds = psutil.Process(proc.pid).num_fds()
                    assert _get(app_port) == b"HTTP/1.1 200 OK", proc.report()
                    took = time_to_connect(port)
                    open_slow = len(held) - closed_count(held)
                    print(
                        f"\n600 slow heads: {open_slow} still open, the gateway held {fds} "
                        f"descriptors of 256; a request answered, a connector in after "
                        f"{took:.2f}s"
                    )
                    assert took < 2.0, proc.report()
                    assert fds < 256 and open_slow <= 128
                finally:
                    for sock in held:
                        sock.close()
                log = proc.stderr() + proc.stdout()
                assert "closed the oldest one waiting for a request" in log
                assert "Out of file descriptors" not in log
            proc.assert_no_traceback()
    finally:
        backend.shutdown()
        backend.server_close()
