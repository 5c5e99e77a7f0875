"""How tunnelled connections end through a real chisel peer (issue 11 bug 3).

Between our own peers a channel closed without EOF means a reset.  chisel 1.11 closes
its channels with a CLOSE alone also when its side ended cleanly (Go's ssh never
sends EOF before CLOSE), so with chisel our end must take a CLOSE for a clean end (a
FIN after every byte) and reset only when the session itself is lost.  Each case
runs with our end as the client (chisel server) and as the server (chisel client).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.support.chisel import CONNECTED_RE, IO_TIMEOUT, SEED, SEED_FINGERPRINT
from tests.support.net import LOOPBACK, STOP_TIMEOUT, free_port
from tests.support.processes import CliProcess, Processes

pytestmark = pytest.mark.interop

MiB = 1 << 20
SIZE = 4 * MiB
CHUNK = bytes(64 * 1024)


@contextlib.contextmanager
def service(handler: Callable[[socket.socket], None]) -> Iterator[int]:
    """A TCP service on loopback running ``handler`` for each connection (threads)."""
    listener = socket.create_server((LOOPBACK, 0))
    listener.settimeout(0.2)
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    def handle(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(IO_TIMEOUT)
            handler(conn)

    thread = threading.Thread(target=serve, name="service", daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stopping.set()
        listener.close()
        thread.join(timeout=STOP_TIMEOUT)


def finite(conn: socket.socket) -> None:
    """SIZE bytes, then a FIN; wait for the peer's end so that our close stays a FIN."""
    conn.sendall(CHUNK * (SIZE // len(CHUNK)))
    conn.shutdown(socket.SHUT_WR)
    while conn.recv(1 << 16):
        pass


def endless(conn: socket.socket) -> None:
    while True:
        conn.sendall(CHUNK)


def read_to_end(port: int, *, until: Callable[[int], None] | None = None) -> tuple[str, int]:
    """Connect to ``port``, read to the end: ("eof" | "reset", bytes); ``until(count)``
    is called once after the first MiB."""
    count = 0
    with socket.create_connection((LOOPBACK, port), timeout=IO_TIMEOUT) as sock:
        try:
            while data := sock.recv(1 << 16):
                before, count = count, count + len(data)
                if until is not None and before < MiB <= count:
                    until(count)
        except ConnectionResetError:
            return "reset", count
    return "eof", count


def tunnel(procs: Processes, chisel: str, ours: str, target: int) -> tuple[int, CliProcess]:
    """One tunnel to ``target`` whose listening end is ours; returns its port and chisel."""
    port = free_port()
    if ours == "client":
        peer, url = procs.chisel_server(chisel, "--key", SEED)
        client = procs.our_client(
            "--fingerprint", SEED_FINGERPRINT, url, f"{LOOPBACK}:{port}:{LOOPBACK}:{target}"
        )
        client.wait_for(CONNECTED_RE, stream="stdout")
        client.wait_listening(port)
    else:
        server, url = procs.our_server("--key", SEED, "--reverse")
        peer = procs.chisel_client(
            chisel,
            "--fingerprint",
            SEED_FINGERPRINT,
            url,
            f"R:{LOOPBACK}:{port}:{LOOPBACK}:{target}",
        )
        peer.wait_for(CONNECTED_RE, stream="stderr")
        server.wait_listening(port)
    return port, peer


@pytest.mark.parametrize("ours", ["client", "server"])
def test_a_chisel_close_is_a_clean_end(chisel: str, procs: Processes, ours: str) -> None:
    """The service sends 4 MiB and ends; chisel closes the channel without EOF: our
    listener's client reads every byte, then a plain EOF."""
    with service(finite) as target:
        port, _ = tunnel(procs, chisel, ours, target)
        assert read_to_end(port) == ("eof", SIZE)


@pytest.mark.parametrize("ours", ["client", "server"])
def test_a_killed_chisel_peer_resets_our_end(chisel: str, procs: Processes, ours: str) -> None:
    """chisel is SIGKILLed mid-download: our listener's client sees a reset."""
    with service(endless) as target:
        port, peer = tunnel(procs, chisel, ours, target)
        ended, count = read_to_end(port, until=lambda _: peer.signal(signal.SIGKILL))
        assert ended == "reset", f"{ended} after {count} bytes"
