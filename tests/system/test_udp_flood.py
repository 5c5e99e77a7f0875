"""A flood of distinct UDP senders through a real tunnel keeps memory and sockets bounded.

Our gateway and client run as separate processes with ``--udp-max-senders 1000``;
10,000 senders (each its own ephemeral socket, so its own ``Src``) send one
datagram each through a forward UDP remote to an echo service, in batches that
are created, answered and closed.  The gateway is the dialing side: it holds one
connected socket per sender mapping, so its descriptor count is the size of its
sender table, sampled all through the flood.

Why the RSS bounds hold: a mapping costs a socket object, a loop reader
registration, an OrderedDict entry and its ``Src`` string, about 1-2 KiB, so a
full table of 1000 is ~2 MiB.  Once the table is full, each new sender evicts one
(closing its socket), so the last 8,000 senders must not grow the process beyond
allocator noise: we allow 4 MiB, which a leak of 512 bytes per sender would
exceed.  From the idle tunnel to the end we allow 16 MiB: the full table plus the
gob buffers, pending channel data and the interpreter's free lists.  (Measured on
a laptop-class machine: +0.9 MiB to fill the table, +0.2 MiB for the other 8,000.)
The client is the listening side: it keeps no socket per sender, only its table
of recent senders, so its descriptor count must not move at all.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time

import psutil

from tests.support.chisel import SEED, SEED_FINGERPRINT
from tests.support.net import STOP_TIMEOUT, free_port
from tests.support.processes import Processes
from tests.support.udp import udp_echo

__all__: list[str] = []

SENDERS = 10_000
WARMUP = 2_000
CAP = 1_000
BATCH = 100
#: RSS growth allowed once the table is full, and in all (see the module doc).
STEADY_GROWTH = 4 * 1024 * 1024
TOTAL_GROWTH = 16 * 1024 * 1024
#: Datagrams may be lost on a busy loopback; nearly all must come back.
MIN_ANSWERED = 0.97


class Sampler(threading.Thread):
    """Samples a process's descriptor count every few milliseconds; keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="fd-sampler", daemon=True)
        self.process = psutil.Process(pid)
        self.peak = self.process.num_fds()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.005):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.process.num_fds())

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.join(timeout=STOP_TIMEOUT)


def send_batch(port: int, first: int, count: int, deadline: float = 5.0) -> int:
    """``count`` fresh senders send one datagram each; returns how many got their own echo."""
    socks = []
    try:
        for i in range(first, first + count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            sock.sendto(b"sender %d" % i, ("127.0.0.1", port))
        waiting = {sock.fileno(): (first + n, sock) for n, sock in enumerate(socks)}
        answered = 0
        poller = select.poll()
        for fd in waiting:
            poller.register(fd, select.POLLIN)
        end = time.monotonic() + deadline
        while waiting and time.monotonic() < end:
            for fd, _ in poller.poll(100):
                index, sock = waiting.pop(fd)
                poller.unregister(fd)
                data = sock.recv(65535)
                assert data == b"sender %d" % index, f"sender {index} got {data!r}"
                answered += 1
        return answered
    finally:
        for sock in socks:
            sock.close()


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def test_10k_udp_senders_stay_within_the_cap(procs: Processes) -> None:
    cap = str(CAP)
    with udp_echo() as echo:
        server, url = procs.our_server("--key", SEED, "--udp-max-senders", cap)
        port = free_port()
        client = procs.our_client(
            "--fingerprint",
            SEED_FINGERPRINT,
            "--udp-max-senders",
            cap,
            url,
            f"127.0.0.1:{port}:127.0.0.1:{echo}/udp",
        )
        client.wait_for(r"client: Connected", stream="stdout")
        # one sender through the idle tunnel: the channel and its first mapping exist
        deadline = time.monotonic() + 20
        while send_batch(port, -1, 1, deadline=1.0) != 1:
            assert time.monotonic() < deadline, procs.report()
        pid = server.popen.pid
        idle_fds, idle_rss = psutil.Process(pid).num_fds(), rss(pid)
        answered = 0
        client_fds = psutil.Process(client.popen.pid).num_fds()
        with Sampler(pid) as sampler, Sampler(client.popen.pid) as client_sampler:
            for first in range(0, WARMUP, BATCH):
                answered += send_batch(port, first, BATCH)
            full_rss = rss(pid)
            for first in range(WARMUP, SENDERS, BATCH):
                answered += send_batch(port, first, BATCH)
            end_rss = rss(pid)
        assert answered >= MIN_ANSWERED * SENDERS, f"only {answered} of {SENDERS} answered"
        # the idle count holds one mapping already; the table never holds more than CAP
        assert sampler.peak <= idle_fds - 1 + CAP, (sampler.peak, idle_fds)
        assert sampler.peak >= idle_fds - 1 + CAP - BATCH, "the table did fill up"
        assert client_sampler.peak == client_fds, "the listening side holds no per-sender socket"
        steady, total = end_rss - full_rss, end_rss - idle_rss
        print(
            f"gateway RSS: idle {idle_rss >> 10} KiB, full table {full_rss >> 10} KiB, "
            f"end {end_rss >> 10} KiB; fds idle {idle_fds}, peak {sampler.peak}"
        )
        assert steady < STEADY_GROWTH, f"RSS grew {steady >> 10} KiB after the table was full"
        assert total < TOTAL_GROWTH, f"RSS grew {total >> 10} KiB in all"
        assert server.popen.poll() is None and client.popen.poll() is None
        server.assert_no_traceback()
        client.assert_no_traceback()
