"""Helpers for the interop tests against the real chisel binary (found via CHISEL_BIN).

The binary, the seed every server here is started with and what chisel prints for
it, and the checks a tunnel must pass: a small exchange, a SHA-256-verified bulk
round trip, many at once.  The processes themselves are
:class:`tests.support.processes.CliProcess` children of the ``procs`` fixture; their
stdout and stderr are kept apart (Go's log package writes to stderr, our CLIs log to
stdout and print fatal errors on stderr), so a test can say which stream a line must
appear on.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable

import pytest

from tests.support.net import LOOPBACK, read_exactly

__all__ = [
    "CONNECTED_RE",
    "FINGERPRINT_RE",
    "SEED",
    "SEED_FINGERPRINT",
    "SEED_MD5_FINGERPRINT",
    "WRONG_FINGERPRINT",
    "CountingRelay",
    "check_tunnel",
    "chisel_binary",
    "parallel_roundtrips",
    "sha256_roundtrip",
    "small_exchange",
    "socks_connect",
]

SEED = "someseed"
#: What chisel (and, by the same derivation, our server) prints for ``--key someseed``.
SEED_FINGERPRINT = "pdeCjHNkdSw2t8djM+QABRa1g2xXLXBGebxmcfXHAic="
#: The legacy MD5 form of the same key, as chisel's client prints it.
SEED_MD5_FINGERPRINT = "e4:02:6f:96:d2:e2:65:50:93:78:60:ad:ee:f8:a2:72"
#: A well-formed SHA-256 fingerprint (44 characters) that belongs to no key here.
WRONG_FINGERPRINT = base64.b64encode(hashlib.sha256(b"no such host key").digest()).decode()

IO_TIMEOUT = 30.0
TRANSFER_TIMEOUT = 60.0

CONNECTED_RE = r"client: Connected \(Latency [^)\n]+\)"
FINGERPRINT_RE = r"server: Fingerprint (\S+)"


def chisel_binary() -> str:
    """The chisel binary named by CHISEL_BIN; skip when unset, fail when it is unusable."""
    path = os.environ.get("CHISEL_BIN", "")
    if not path:
        pytest.skip("CHISEL_BIN is not set: point it at a chisel v1.11.x binary to run")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"CHISEL_BIN={path!r} is not an executable file", pytrace=False)
    return path


Connect = Callable[[], socket.socket]


def _connector(port: int, connect: Connect | None) -> Connect:
    return connect or (lambda: socket.create_connection((LOOPBACK, port), timeout=IO_TIMEOUT))


def small_exchange(
    port: int, message: bytes = b"hello through the tunnel\n", *, connect: Connect | None = None
) -> None:
    """One short request and its echoed response over a fresh connection."""
    with _connector(port, connect)() as sock:
        sock.sendall(message)
        got = read_exactly(sock, len(message))
    assert got == message, f"port {port}: echoed {got!r}, sent {message!r}"


def sha256_roundtrip(
    port: int,
    payload: bytes,
    timeout: float = TRANSFER_TIMEOUT,
    *,
    connect: Connect | None = None,
) -> float:
    """Send ``payload`` through an echo tunnel while reading it back; compare SHA-256.

    No half-close: chisel closes both directions when one side sends EOF, so the
    reader counts bytes instead of waiting for EOF.  Returns the seconds taken.
    """
    want = hashlib.sha256(payload).hexdigest()
    got = hashlib.sha256()
    received = 0
    errors: list[BaseException] = []
    started = time.monotonic()
    deadline = started + timeout
    with _connector(port, connect)() as sock:

        def send() -> None:
            try:
                view = memoryview(payload)
                for offset in range(0, len(view), 1 << 20):
                    sock.sendall(view[offset : offset + (1 << 20)])
            except OSError as exc:
                errors.append(exc)

        sender = threading.Thread(target=send, name=f"send-{port}", daemon=True)
        sender.start()
        try:
            while received < len(payload):
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"port {port}: {received} of {len(payload)} bytes after {timeout}s"
                    )
                chunk = sock.recv(min(1 << 20, len(payload) - received))
                if not chunk:
                    break
                got.update(chunk)
                received += len(chunk)
        finally:
            sender.join(timeout=IO_TIMEOUT)
    elapsed = time.monotonic() - started
    assert not errors, f"port {port}: send failed: {errors[0]!r}"
    assert received == len(payload), f"port {port}: got {received} of {len(payload)} bytes"
    assert got.hexdigest() == want, f"port {port}: SHA-256 mismatch after {received} bytes"
    return elapsed


def check_tunnel(port: int, payload: bytes, *, connect: Connect | None = None) -> float:
    """Small request/response, then the big SHA-256-verified transfer."""
    small_exchange(port, connect=connect)
    return sha256_roundtrip(port, payload, connect=connect)


def parallel_roundtrips(port: int, payload: bytes, connections: int = 16) -> None:
    """``connections`` simultaneous transfers, each of a different slice of ``payload``.

    Distinct data per connection means that bytes delivered on the wrong channel, or
    a stalled channel window, show up as a hash mismatch or a timeout.
    """
    size = len(payload) // connections
    errors: list[BaseException] = []

    def one(index: int) -> None:
        try:
            sha256_roundtrip(port, payload[index * size : (index + 1) * size])
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=one, args=(i,), name=f"parallel-{port}-{i}", daemon=True)
        for i in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TRANSFER_TIMEOUT + IO_TIMEOUT)
    assert not any(t.is_alive() for t in threads), f"port {port}: a transfer hung"
    assert not errors, f"port {port}: {len(errors)} of {connections} failed: {errors[0]}"


class CountingRelay:
    """A TCP relay on 127.0.0.1 that counts the bytes it carries in each direction.

    Placed between a client and a server it shows that an idle session still
    carries keepalive traffic both ways, which neither program logs.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server((LOOPBACK, 0))
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.lock = threading.Lock()
        self.upstream = 0  # client -> server
        self.downstream = 0  # server -> client
        self.stopping = threading.Event()
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.upstream, self.downstream

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                server = socket.create_connection((LOOPBACK, self.target_port), timeout=IO_TIMEOUT)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.sockets += [client, server]
            self._spawn(self._pump, client, server, True)
            self._spawn(self._pump, server, client, False)

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(65536):
                with self.lock:
                    if up:
                        self.upstream += len(data)
                    else:
                        self.downstream += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> CountingRelay:
        self._spawn(self._serve)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.listener.close()
        with self.lock:
            sockets = list(self.sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(timeout=IO_TIMEOUT)
        for sock in sockets:
            sock.close()


# --------------------------------------------------------------------------- SOCKS


def socks_connect(proxy_port: int, host: str, port: int) -> socket.socket:
    """A TCP connection to ``host:port`` through the SOCKS5 proxy on ``proxy_port``."""
    from python_socks.sync import Proxy

    sock = Proxy.from_url(f"socks5://{LOOPBACK}:{proxy_port}").connect(
        host, port, timeout=IO_TIMEOUT
    )
    sock.settimeout(IO_TIMEOUT)
    return sock
