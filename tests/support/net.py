"""Loopback ports, readiness probes, and pure-Python TCP targets run in threads.

Everything listens on 127.0.0.1 (or the given loopback address), every wait is
bounded, and every server here closes what it opened when its ``with`` ends.
Blocking helpers, for tests that drive child processes; the asyncio side of the
same jobs is in :mod:`tests.support.streams`.
"""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = [
    "IO_TIMEOUT",
    "LOOPBACK",
    "LOOPBACK6",
    "STOP_TIMEOUT",
    "EchoServer",
    "PeerStartError",
    "blob",
    "echo_back",
    "echo_roundtrip",
    "free_port",
    "http_echo_server",
    "ipv6_loopback_missing",
    "port_is_free",
    "port_refuses",
    "read_exactly",
    "read_log",
    "tcp_echo_server",
    "wait_for_port",
]

LOOPBACK = "127.0.0.1"
#: The IPv6 loopback, for the tests that need IPv6 on both ends (see ipv6_loopback_missing).
LOOPBACK6 = "::1"
#: Bound on one blocking exchange with a tunnel or a target.
IO_TIMEOUT = 10.0
#: Bound on stopping a server thread or a process.
STOP_TIMEOUT = 10.0


class PeerStartError(RuntimeError):
    """A process died or never listened; the message carries its log."""


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


#: Ports already handed out by this process: a test never gets another test's port.
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port(host: str = LOOPBACK) -> int:
    """An unused port outside the kernel's ephemeral range.

    A port from ``bind(0)`` comes from the ephemeral range, where every outgoing
    connection also takes its source port: between the probe and the real bind, a
    connection elsewhere in the suite could take it (CI failed once that way, with
    "address already in use" on a port in 32768-60999). Ports below that range are
    only ever taken by an explicit bind, and each is handed out once per process.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low, _high = _ephemeral_range()
    top = low - 1 if low > 20000 else 65535
    bottom = 20000 if low > 20000 else _high + 1
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(bottom, top)
        with _handed_out_lock:
            if port in _handed_out:
                continue
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        with socket.socket(family, socket.SOCK_DGRAM) as u:
            try:
                u.bind((host, port))
            except OSError:
                continue
        with _handed_out_lock:
            _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port found in {bottom}-{top} on {host}")


def ipv6_loopback_missing() -> str | None:
    """Why IPv6 tests cannot run here (a skip reason), or None when ``::1`` can be bound."""
    if not socket.has_ipv6:
        return "this Python was built without IPv6 (socket.has_ipv6 is False)"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK6, 0))
    except OSError as exc:
        return f"no IPv6 loopback: cannot bind [::1] ({exc.strerror or exc})"
    return None


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port (we could bind it ourselves)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def port_refuses(port: int) -> bool:
    """True when a TCP connect to 127.0.0.1:port is refused."""
    with socket.socket() as s:
        s.settimeout(2.0)
        try:
            s.connect((LOOPBACK, port))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        return False


def read_log(log_path: Path | None) -> str:
    """The tail of a process's log file, for error messages."""
    if log_path is None or not log_path.exists():
        return "<no log>"
    text = log_path.read_text(errors="replace")
    return text[-8000:] if text else "<empty log>"


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    *,
    log_path: Path | None = None,
) -> None:
    """Poll until ``host:port`` accepts, so tests never race a process's startup.

    Raises PeerStartError (with the log) if ``proc`` exits or time runs out.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    last_err: OSError | None = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise PeerStartError(
                f"{proc.args!r} exited with {proc.returncode} before listening on "
                f"{host}:{port}\n--- log ---\n{read_log(log_path)}"
            )
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect((host, port))
                return
        except OSError as exc:
            last_err = exc
        if time.monotonic() >= deadline:
            raise PeerStartError(
                f"nothing listening on {host}:{port} after {timeout}s ({last_err}); "
                f"process {getattr(proc, 'args', None)!r}\n--- log ---\n{read_log(log_path)}"
            )
        time.sleep(0.05)


# --------------------------------------------------------------------------- exchanges


def blob(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes: incompressible, reproducible from ``seed``."""
    return random.Random(seed).randbytes(size)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    """Up to ``size`` bytes from ``sock``: fewer only if the peer closed first."""
    got = bytearray()
    while len(got) < size:
        chunk = sock.recv(min(65536, size - len(got)))
        if not chunk:
            break
        got += chunk
    return bytes(got)


def echo_back(port: int, payload: bytes, timeout: float = IO_TIMEOUT) -> bytes:
    """Send ``payload`` to an echo service behind ``port``; read as many bytes back.

    No half-close: for paths that close both directions on EOF (chisel does).
    """
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(payload)
        return read_exactly(sock, len(payload))


def echo_roundtrip(port: int, payload: bytes, timeout: float = IO_TIMEOUT) -> bytes:
    """Send ``payload`` to an echo service behind ``port``, half-close, read all back.

    The sender is a thread, so a payload larger than the socket buffers cannot
    deadlock against the echo.
    """
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
        received = bytearray()
        errors: list[BaseException] = []

        def send() -> None:
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
            except OSError as exc:
                errors.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            received += chunk
        sender.join(timeout=timeout)
        if errors:
            raise errors[0]
        return bytes(received)


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class EchoServer:
    """Where a pure-Python test target listens."""

    host: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


class _TcpEcho:
    """Thread-per-connection echo server that closes every socket it opened on stop."""

    def __init__(self, host: str) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(128)
        self.listener.settimeout(0.2)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        self.threads: list[threading.Thread] = []

    def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self.lock:
                self.conns.add(conn)
            t = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def _echo(self, conn: socket.socket) -> None:
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:
            pass
        finally:
            with self.lock:
                self.conns.discard(conn)
            conn.close()

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()
        with self.lock:
            for conn in list(self.conns):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for t in self.threads:
            t.join(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def tcp_echo_server(host: str = LOOPBACK) -> Iterator[EchoServer]:
    """A byte-exact TCP echo target, so proxy/tunnel tests need no external service."""
    server = _TcpEcho(host)
    thread = threading.Thread(target=server.serve, name="tcp-echo", daemon=True)
    thread.start()
    try:
        yield EchoServer(host, int(server.listener.getsockname()[1]))
    finally:
        server.stop()
        thread.join(timeout=STOP_TIMEOUT)


class _EchoHTTPHandler(BaseHTTPRequestHandler):
    """Answers every request with its method, path and body, to check what got through."""

    protocol_version = "HTTP/1.1"

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        payload = f"{self.command} {self.path}\n".encode() + body
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _reply

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


class _HTTPServer4(ThreadingHTTPServer):
    daemon_threads = True


class _HTTPServer6(_HTTPServer4):
    address_family = socket.AF_INET6


@contextlib.contextmanager
def http_echo_server(host: str = LOOPBACK) -> Iterator[EchoServer]:
    """A plain HTTP/1.1 server whose response body is ``"METHOD PATH\\n" + request body``."""
    server_cls = _HTTPServer6 if ":" in host else _HTTPServer4
    server = server_cls((host, 0), _EchoHTTPHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    try:
        yield EchoServer(host, int(server.server_address[1]))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=STOP_TIMEOUT)
