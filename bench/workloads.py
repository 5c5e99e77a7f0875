"""The measurements, each against one loopback port (a tunnel's entry or a target).

Bulk traffic comes from iperf3 (or ``bench.services``' plain-socket source and sink)
in separate processes; latency, connection rate and idle connections are driven from
this process with blocking sockets, against the echo service.
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from bench.peers import LOOPBACK, python_env

__all__ = [
    "BulkResult",
    "bulk_iperf3",
    "bulk_python",
    "connection_rate",
    "idle_connections",
    "rtt_latency",
]

MESSAGE = b"x" * 64
SOCKET_TIMEOUT = 10.0
BUSY_RETRY_SECONDS = 15.0
MAX_CONNECTIONS = 200_000  # bound on the connection-rate loop, far above any real rate


@dataclass(frozen=True)
class BulkResult:
    """Bytes the receiving end got, over how many seconds; each stream's MB/s too."""

    nbytes: int
    seconds: float
    stream_MBps: tuple[float, ...] = ()

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


def bulk_iperf3(
    iperf3: str, port: int, seconds: float, *, reverse: bool = False, streams: int = 1
) -> BulkResult:
    """``iperf3 -c`` against ``port`` (its server sits behind it); receiver-side bytes.

    iperf3 takes whole seconds. Its server refuses a test while it still winds down the
    previous one (through a tunnel the close arrives late), so "busy" is retried.
    """
    argv = [iperf3, "-c", LOOPBACK, "-p", str(port), "-J", "--connect-timeout", "10000"]
    argv += ["-t", str(max(1, round(seconds))), "-P", str(streams)]
    if reverse:
        argv.append("-R")
    deadline = time.monotonic() + BUSY_RETRY_SECONDS
    while True:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        try:
            report = json.loads(proc.stdout)
        except json.JSONDecodeError:
            raise RuntimeError(f"iperf3 exited {proc.returncode}: {proc.stderr[-500:]}") from None
        error = report.get("error")
        if error and "busy" in error and time.monotonic() < deadline:
            time.sleep(0.25)
            continue
        if error:
            raise RuntimeError(f"iperf3: {error}")
        received = report["end"]["sum_received"]
        rates = tuple(
            float(stream["receiver"]["bits_per_second"]) / 8e6
            for stream in report["end"].get("streams", [])
            if "receiver" in stream
        )
        return BulkResult(int(received["bytes"]), float(received["seconds"]), rates)


def bulk_python(
    port: int, seconds: float, *, reverse: bool = False, streams: int = 1
) -> BulkResult:
    """``bench.services bulk-client`` against ``port`` (a ``bulk-server`` behind it)."""
    argv = [sys.executable, "-m", "bench.services", "bulk-client", "--port", str(port)]
    argv += ["--streams", str(streams), "--seconds", str(seconds)]
    argv += ["--direction", "recv" if reverse else "send"]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 90, env=python_env()
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bulk-client exited {proc.returncode}: {proc.stderr[-500:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    rates = tuple(n / s / 1e6 for n, s in report.get("per_stream", []) if s > 0)
    return BulkResult(int(report["bytes"]), float(report["seconds"]), rates)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, port), timeout=SOCKET_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _round_trip(sock: socket.socket, message: bytes) -> None:
    sock.sendall(message)
    remaining = len(message)
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise ConnectionError("echo closed the connection")
        remaining -= len(chunk)


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def rtt_latency(port: int, count: int, warmup: int = 50) -> dict[str, float]:
    """``count`` sequential 64-byte round trips on one connection: µs percentiles."""
    samples: list[float] = []
    with _connect(port) as sock:
        for _ in range(warmup):
            _round_trip(sock, MESSAGE)
        for _ in range(count):
            start = time.perf_counter_ns()
            _round_trip(sock, MESSAGE)
            samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return {
        "p50": _percentile(samples, 0.50),
        "p99": _percentile(samples, 0.99),
        "mean": statistics.fmean(samples),
        "min": samples[0],
        "max": samples[-1],
    }


def connection_rate(port: int, seconds: float) -> dict[str, float]:
    """New connections per second, one after another: connect, one round trip, close."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline and count < MAX_CONNECTIONS:
        with _connect(port) as sock:
            _round_trip(sock, MESSAGE)
        count += 1
    elapsed = time.perf_counter() - start
    return {"per_s": count / elapsed, "connections": count, "seconds": elapsed}


@contextlib.contextmanager
def idle_connections(port: int, count: int, timeout: float = 60.0) -> Iterator[int]:
    """Open ``count`` connections (each proven end to end by one 1-byte round trip),
    keep them open while the block runs, then close them all. Yields how many opened;
    raises if fewer than ``count`` could be opened within ``timeout``."""
    socks: list[socket.socket] = []
    deadline = time.monotonic() + timeout
    try:
        try:
            for _ in range(count):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"timed out after {timeout}s")
                sock = _connect(port)
                socks.append(sock)
                _round_trip(sock, b"i")
        except OSError as exc:
            raise RuntimeError(f"opened {len(socks)} of {count} connections: {exc}") from exc
        yield len(socks)
    finally:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()
