"""The targets a tunnel carries traffic to, each run as its own process.

``python -m bench.services echo`` echoes every byte (latency, connection rate, and it
keeps idle connections open as long as the client does). ``bulk-server`` and
``bulk-client`` are the plain-socket source and sink used when iperf3 is missing (or
with ``--bulk-tool python``). Servers print ``PORT <n>`` once they listen. Running in
their own processes keeps their CPU out of the tunnel's and the bench's accounting.
Every service exits by itself when the bench that started it is gone, or after
``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from typing import cast

__all__ = ["main"]

LOOPBACK = "127.0.0.1"
CHUNK = 256 * 1024
_COUNT = struct.Struct("!Q")
MODE_SINK = b"r"  # the server reads and discards, then reports the byte count
MODE_SOURCE = b"s"  # the server sends until the client closes


def _announce(port: int) -> None:
    print(f"PORT {port}", flush=True)


def _orphan_watch(max_seconds: float) -> None:
    """Exit when the parent is gone (we were reparented) or time is up."""
    parent = os.getppid()
    deadline = time.monotonic() + max_seconds
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.5)
    os._exit(0)


# --------------------------------------------------------------------------- echo


class _Echo(asyncio.Protocol):
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False  # close our side too


async def _serve_echo() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, LOOPBACK, 0, backlog=4096)
    _announce(int(server.sockets[0].getsockname()[1]))
    async with server:
        await server.serve_forever()


def _run_echo() -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve_echo())
    else:
        uvloop.run(_serve_echo())


# --------------------------------------------------------------------------- bulk


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("peer closed early")
        data += chunk
    return bytes(data)


def _bulk_connection(conn: socket.socket) -> None:
    """Serve one stream: send until closed, or read framed chunks and report the count.

    The sink does not rely on a half-close (chisel closes both directions when one
    ends), so the client frames its data: a length, that many bytes, ..., a zero length.
    """
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with conn:
        try:
            mode = _recv_exact(conn, 1)
            if mode == MODE_SOURCE:
                while True:
                    conn.sendall(view)
            total = 0
            while length := _COUNT.unpack(_recv_exact(conn, _COUNT.size))[0]:
                while length:
                    n = conn.recv_into(view, min(length, CHUNK))
                    if not n:
                        return
                    length -= n
                    total += n
            conn.sendall(_COUNT.pack(total))
        except (OSError, ConnectionError):
            return


def _run_bulk_server() -> None:
    with socket.create_server((LOOPBACK, 0), backlog=1024) as listener:
        _announce(int(listener.getsockname()[1]))
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=_bulk_connection, args=(conn,), daemon=True).start()


def _client_stream(
    port: int, mode: bytes, barrier: threading.Barrier, seconds: float, out: list[tuple[int, float]]
) -> None:
    """One stream: returns (bytes the receiving end saw, seconds until it saw them)."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with socket.create_connection((LOOPBACK, port), timeout=30) as sock:
        sock.sendall(mode)
        barrier.wait(timeout=30)
        start = time.perf_counter()
        deadline = start + seconds
        total = 0
        if mode == MODE_SINK:
            frame = _COUNT.pack(CHUNK) + bytes(CHUNK)
            while time.perf_counter() < deadline:
                sock.sendall(frame)
            sock.sendall(_COUNT.pack(0))  # the server drains, then reports its count
            (total,) = _COUNT.unpack(_recv_exact(sock, _COUNT.size))
        else:
            while time.perf_counter() < deadline and (n := sock.recv_into(view)):
                total += n
        out.append((total, time.perf_counter() - start))


def _run_bulk_client(port: int, streams: int, seconds: float, direction: str) -> None:
    """Print ``{"bytes", "seconds", "per_stream"}`` for ``streams`` parallel streams.

    ``per_stream`` is each stream's (bytes, seconds), so fairness can be judged.
    """
    mode = MODE_SINK if direction == "send" else MODE_SOURCE
    barrier = threading.Barrier(streams)
    results: list[tuple[int, float]] = []
    threads = [
        threading.Thread(target=_client_stream, args=(port, mode, barrier, seconds, results))
        for _ in range(streams)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    if len(results) != streams:
        raise SystemExit(f"only {len(results)} of {streams} streams finished")
    total = sum(r[0] for r in results)
    report = {"bytes": total, "seconds": max(r[1] for r in results), "per_stream": results}
    print(json.dumps(report), flush=True)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.services", description=__doc__)
    parser.add_argument("kind", choices=["echo", "bulk-server", "bulk-client"])
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--port", type=int, default=0, help="bulk-client: where to connect")
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--direction", choices=["send", "recv"], default="send")
    args = parser.parse_args(argv)
    threading.Thread(target=_orphan_watch, args=(args.max_seconds,), daemon=True).start()
    if args.kind == "echo":
        _run_echo()
    elif args.kind == "bulk-server":
        _run_bulk_server()
    else:
        _run_bulk_client(args.port, args.streams, args.seconds, args.direction)
    return 0


if __name__ == "__main__":
    sys.exit(main())
