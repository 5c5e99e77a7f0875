"""A reverse tunnel across an impaired link, and the checked streams the fault tests send.

:class:`Tunnel` starts the real gateway in the link's gateway namespace and the
real connector in its connector namespace (through ``ip netns exec``, so their
PIDs are the programs' own, for psutil and SIGKILL), with one reverse remote
``R:127.0.0.1:3000:127.0.0.1:4000``: a "user" connects to 3000 inside the gateway
namespace, a "service" listens on 4000 inside the connector namespace.  The
namespaces are fresh, so fixed ports cannot collide with anything.

Streams are seeded pseudo-random bytes of any length, produced block by block, so
a receiver checks every byte against the stream as it arrives (``intact``) and
both ends keep a SHA-256; an endless stream is just a very large length.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import hashlib
import queue
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from cc.protocol import keys
from tests.support.impair import GATEWAY_ADDR, ImpairedLink
from tests.support.netns import NetNamespace
from tests.support.processes import CliProcess

__all__ = [
    "SLACK",
    "STEP",
    "Received",
    "Sent",
    "SilentTruncation",
    "Tunnel",
    "echo",
    "receive_stream",
    "send_stream",
    "stream_sha256",
]

LOCAL = "127.0.0.1"
GATEWAY_PORT, REVERSE_PORT, SERVICE_PORT = 8080, 3000, 4000
REMOTE = f"R:{LOCAL}:{REVERSE_PORT}:{LOCAL}:{SERVICE_PORT}"
#: Bound on one step: a process start, a connection, a short transfer.
STEP = 20.0
#: Scheduling slack on top of a protocol deadline (the machine is shared).
SLACK = 1.5
BLOCK = 1 << 20
CHUNK = 256 * 1024


_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the forked child


#: The gateway's host key seed, so the connector can pin its fingerprint.
GATEWAY_SEED = "fault-test-gateway"


def gateway_fingerprint(seed: str = GATEWAY_SEED) -> str:
    return keys.fingerprint_sha256(keys.public_key_wire(keys.seed_private_key(seed)))


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM if the test process dies without teardown."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class SilentTruncation(AssertionError):
    """A receiver saw a clean EOF although the stream was cut (issue 11 bug 3)."""


# ----------------------------------------------------------------------------- streams


class _Stream:
    """Stream ``seed``: block k is ``Random(f"{seed}/{k}").randbytes(BLOCK)``."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._blocks: dict[int, bytes] = {}

    def _block(self, k: int) -> bytes:
        block = self._blocks.get(k)
        if block is None:
            if len(self._blocks) > 2:
                self._blocks.clear()
            block = self._blocks[k] = random.Random(f"{self.seed}/{k}").randbytes(BLOCK)
        return block

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` (within one block: callers keep to CHUNK steps)."""
        k, start = divmod(offset, BLOCK)
        size = min(size, BLOCK - start)
        return self._block(k)[start : start + size]


def stream_sha256(seed: int, length: int) -> str:
    """SHA-256 of the first ``length`` bytes of stream ``seed``."""
    stream, digest, offset = _Stream(seed), hashlib.sha256(), 0
    while offset < length:
        data = stream.read(offset, min(CHUNK, length - offset))
        digest.update(data)
        offset += len(data)
    return digest.hexdigest()


@dataclass
class Sent:
    count: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)
    error: str | None = None


@dataclass
class Received:
    """What one end read: how much, whether it matched, and how the stream ended."""

    seed: int
    count: int = 0
    sha256: str = ""
    intact: bool = True
    #: "eof" (a clean FIN), "reset" (ECONNRESET), "timeout", or "error: ..."
    ended: str = ""


def send_stream(
    sock: socket.socket, seed: int, total: int, *, stop: threading.Event | None = None
) -> Sent:
    """Send ``total`` bytes of stream ``seed`` then half-close; errors are recorded."""
    stream, sent = _Stream(seed), Sent()
    try:
        while sent.count < total and not (stop is not None and stop.is_set()):
            data = stream.read(sent.count, min(CHUNK, total - sent.count))
            sock.sendall(data)
            sent.sha256.update(data)
            sent.count += len(data)
        if sent.count == total:
            sock.shutdown(socket.SHUT_WR)
    except OSError as exc:
        sent.error = f"{type(exc).__name__}: {exc}"
    return sent


def receive_stream(
    sock: socket.socket, seed: int, timeout: float, got: Received | None = None
) -> Received:
    """Read to the end, checking each byte against stream ``seed``; bounded by ``timeout``.

    Pass ``got`` to watch its ``count`` grow from another thread.
    """
    stream, digest = _Stream(seed), hashlib.sha256()
    got = got if got is not None else Received(seed)
    deadline = time.monotonic() + timeout
    try:
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(CHUNK)
            if not data:
                got.ended = "eof"
                break
            view = memoryview(data)
            while view:
                expected = stream.read(got.count, len(view))
                if view[: len(expected)] != expected:
                    got.intact = False
                digest.update(view[: len(expected)])
                got.count += len(expected)
                view = view[len(expected) :]
    except ConnectionResetError:
        got.ended = "reset"
    except TimeoutError:
        got.ended = "timeout"
    except OSError as exc:
        got.ended = f"error: {exc}"
    got.sha256 = digest.hexdigest()
    return got


def echo(sock: socket.socket) -> None:
    """A service that sends back everything and half-closes after the peer did."""
    with contextlib.suppress(OSError):
        sock.settimeout(STEP)
        while data := sock.recv(CHUNK):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)


# ----------------------------------------------------------------------------- the tunnel


class Tunnel:
    """Gateway and connector on either side of ``link``, and the sockets a test opens.

    ``close()`` stops the processes (by PID, SIGCONT first) and closes every socket
    and thread it made; the link itself belongs to the caller and goes after.
    """

    def __init__(self, link: ImpairedLink, workdir: Path) -> None:
        self.link = link
        self.workdir = workdir
        self.procs: list[CliProcess] = []
        self._sockets: list[socket.socket] = []
        self._accepted: queue.Queue[socket.socket] = queue.Queue()
        self._handler: Callable[[socket.socket], None] | None = None
        self._closing = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="tunnel")
        self._pools: list[concurrent.futures.ThreadPoolExecutor] = []
        self._listener = link.connector_ns.listen(LOCAL, SERVICE_PORT, backlog=1024)
        self._listener.settimeout(0.1)
        self._acceptor = threading.Thread(target=self._accept, name="service", daemon=True)
        self._acceptor.start()

    # -- processes ----------------------------------------------------------------
    def _spawn(self, ns: NetNamespace, name: str, args: Sequence[str]) -> CliProcess:
        process = CliProcess(
            name,
            ns.command([sys.executable, "-m", "cc.cli.main", *args]),
            cwd=self.workdir,
            logdir=self.workdir,
            preexec_fn=_die_with_parent,
        )
        self.procs.append(process)
        return process

    def start(
        self, *, gateway_flags: Sequence[str] = (), connector_flags: Sequence[str] = ()
    ) -> None:
        """Start both and return once the connector's session is up."""
        self.gateway = self._spawn(
            self.link.gateway_ns,
            "gateway",
            [
                *("server", "--reverse", "--host", GATEWAY_ADDR, "--port", str(GATEWAY_PORT)),
                *("--key", GATEWAY_SEED, *gateway_flags),
            ],
        )
        self.gateway.wait_for_text("Listening on", timeout=STEP)
        self.connector = self._spawn(
            self.link.connector_ns,
            "connector",
            [
                *("client", "--fingerprint", gateway_fingerprint(), *connector_flags),
                *(f"http://{GATEWAY_ADDR}:{GATEWAY_PORT}", REMOTE),
            ],
        )
        self.connector.wait_for_text("Connected (Latency", timeout=STEP)

    def congestion_control(self) -> str:
        """The TCP congestion control the session's sockets get (the namespace default)."""
        with contextlib.suppress(OSError), self.link.gateway_ns.entered():
            return Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
        return "unknown"

    # -- the service side -------------------------------------------------------
    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            handler = self._handler
            if handler is None:
                self._sockets.append(sock)
                self._accepted.put(sock)
            else:
                self._pool.submit(self._handle, handler, sock)

    @staticmethod
    def _handle(handler: Callable[[socket.socket], None], sock: socket.socket) -> None:
        with sock:
            handler(sock)

    def serve(self, handler: Callable[[socket.socket], None]) -> None:
        """From now on every connection the service accepts is handled by ``handler``."""
        self._handler = handler

    # -- the user side ------------------------------------------------------------
    def connect(self) -> socket.socket:
        """A user's connection to the reverse port, inside the gateway namespace."""
        sock = self.link.gateway_ns.connect(LOCAL, REVERSE_PORT, STEP)
        self._sockets.append(sock)
        return sock

    def open(self) -> tuple[socket.socket, socket.socket]:
        """A tunnelled connection: the user's end and the service's accepted end."""
        user = self.connect()
        try:
            service = self._accepted.get(timeout=STEP)
        except queue.Empty:
            raise AssertionError("the connection never reached the service") from None
        return user, service

    def echo_ok(self, size: int, seed: int = 0) -> bool:
        """One echo round trip of ``size`` bytes through the tunnel, checked byte for byte."""
        payload = random.Random(seed).randbytes(size)
        with self.connect() as sock:
            sender = self._pool.submit(self._send_all, sock, payload)
            received = bytearray()
            sock.settimeout(STEP)
            with contextlib.suppress(OSError):
                while data := sock.recv(CHUNK):
                    received += data
            sender.result(STEP)
        self._sockets.remove(sock)
        return bytes(received) == payload

    @staticmethod
    def _send_all(sock: socket.socket, payload: bytes) -> None:
        with contextlib.suppress(OSError):
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)

    def reverse_port_free(self) -> bool:
        return self.link.gateway_ns.port_is_free(LOCAL, REVERSE_PORT)

    @staticmethod
    def wait_until(predicate: Callable[[], bool], timeout: float) -> float | None:
        """Poll ``predicate()``; the time.monotonic() it held, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return time.monotonic()
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def threads(self) -> concurrent.futures.ThreadPoolExecutor:
        """A pool for a test's senders and receivers, shut down with the tunnel."""
        pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="stream")
        self._pools.append(pool)
        return pool

    # -- teardown -----------------------------------------------------------------
    def close(self) -> None:
        """Processes first (that ends every tunnelled connection), then sockets, threads."""
        self._closing.set()
        for process in self.procs:
            process.stop()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked on it
        self._acceptor.join(timeout=5.0)
        for pool in [*self._pools, self._pool]:
            pool.shutdown(wait=True, cancel_futures=True)
        for sock in [*self._sockets, self._listener]:
            sock.close()
        for process in self.procs:  # shown by pytest only when the test failed
            print(process.report(), file=sys.stderr)

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
