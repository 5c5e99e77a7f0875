"""One bulk stream through ours, optionally under cProfile: the loop for fast-path work.

``python -m bench.one_stream [--gib N] [--direction send|recv] [--workers N]
[--profile server|client]`` starts our gateway and connector as separate processes
on 127.0.0.1 with the defaults users get (no ``--workers`` flag: ``auto``) unless told
otherwise, and moves N GiB through a reverse remote between two plain sockets:
``send`` pushes into the gateway's reverse port and a sink behind the connector
reads; ``recv`` has the service behind the connector send and the gateway's client
read.  It prints MB/s and the CPU seconds of each side (all its processes).  With
``--profile`` that side runs one process and the top of its profile is printed.
The full side-by-side comparison is ``python -m bench``.
"""

from __future__ import annotations

import argparse
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.peers import free_port, listeners, stop_process, wait_listening
from cc.cli.workers import auto_workers

__all__ = ["main"]

CHUNK = 1 << 20
START_TIMEOUT = 30.0


def _serve(listener: socket.socket, direction: str, total: int, received: list[int]) -> None:
    """The service behind the connector: a sink (``send``) or a source (``recv``)."""
    conn, _ = listener.accept()
    with conn:
        if direction == "send":
            while data := conn.recv(CHUNK):
                received[0] += len(data)
            return
        block = b"x" * CHUNK
        for _ in range(total // CHUNK):
            conn.sendall(block)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(CHUNK):
            pass


def _cpu_seconds(pid: int) -> float:
    """User + system seconds of ``pid`` and its workers (a control process has some)."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in (root, *root.children(recursive=True)):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _wait_shared(port: int, sessions: int) -> None:
    """Until every connector session listens on the reverse port (SO_REUSEPORT)."""
    deadline = time.monotonic() + START_TIMEOUT
    while listeners()[port] < sessions:
        if time.monotonic() > deadline:
            raise SystemExit(f"port {port}: fewer than {sessions} sessions listen")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.one_stream", description=__doc__)
    parser.add_argument("--gib", type=float, default=1.0, help="how much to send (GiB)")
    parser.add_argument(
        "--direction",
        choices=("send", "recv"),
        default="send",
        help="send: client -> gateway -> connector -> service; recv: the other way",
    )
    parser.add_argument("--workers", help="--workers for both sides (default: no flag)")
    parser.add_argument("--gateway-workers", help="--workers for the gateway only")
    parser.add_argument("--connector-workers", help="--workers for the connector only")
    parser.add_argument("--profile", choices=("server", "client"), help="cProfile one side")
    args = parser.parse_args(argv)
    counts = {
        "server": args.gateway_workers or args.workers,
        "client": args.connector_workers or args.workers,
    }
    if args.profile and counts[args.profile] is None and auto_workers() > 1:
        counts[args.profile] = "1"  # a control process has nothing to profile
    processes = {r: auto_workers() if c in (None, "auto") else int(c) for r, c in counts.items()}
    if args.profile and processes[args.profile] != 1:
        parser.error("--profile needs one worker on the profiled side")
    total = int(args.gib * (1 << 30)) // CHUNK * CHUNK
    workdir = Path(tempfile.mkdtemp(prefix="cc-one-stream-"))
    gateway_port, tunnel_port = free_port(), free_port()
    listener = socket.create_server(("127.0.0.1", 0))
    service_port = listener.getsockname()[1]
    received = [0]
    service = threading.Thread(
        target=_serve, args=(listener, args.direction, total, received), daemon=True
    )
    service.start()

    def start(role: str, extra: list[str]) -> subprocess.Popen[bytes]:
        profile = ["-m", "cProfile", "-o", str(workdir / f"{role}.prof")]
        argv = [sys.executable, *(profile if args.profile == role else []), "-m", "cc.cli.main"]
        log = (workdir / f"{role}.log").open("wb")
        count = [] if counts[role] is None else ["--workers", str(counts[role])]
        command = [*argv, role, *count, *extra]
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    server = start("server", ["--host", "127.0.0.1", "-p", str(gateway_port), "--reverse"])
    client = None
    try:
        wait_listening([gateway_port], [])
        remote = f"R:127.0.0.1:{tunnel_port}:127.0.0.1:{service_port}"
        client = start("client", [f"http://127.0.0.1:{gateway_port}", remote])
        _wait_shared(tunnel_port, processes["client"])
        print(
            f"workers: gateway {counts['server'] or 'defaults'} ({processes['server']}), "
            f"connector {counts['client'] or 'defaults'} ({processes['client']}); "
            f"direction {args.direction}"
        )
        cpu_before = {
            role: _cpu_seconds(p.pid) for role, p in (("gateway", server), ("connector", client))
        }
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", tunnel_port)) as peer:
            if args.direction == "send":
                block = b"x" * CHUNK
                for _ in range(total // CHUNK):
                    peer.sendall(block)
                peer.shutdown(socket.SHUT_WR)
                service.join(120)
            else:
                while data := peer.recv(CHUNK):
                    received[0] += len(data)
        elapsed = time.perf_counter() - started
        print(
            f"moved {received[0] / 1e6:.0f} MB in {elapsed:.2f} s = "
            f"{received[0] / elapsed / 1e6:.0f} MB/s"
        )
        for name, role in (("gateway", server), ("connector", client)):
            spent = _cpu_seconds(role.pid) - cpu_before[name]
            print(f"{name}: {spent:.2f} CPU-s = {spent / (received[0] / (1 << 30)):.2f} CPU-s/GiB")
    finally:
        for child in (client, server):
            if child is not None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(20)
                except subprocess.TimeoutExpired:
                    stop_process(child)
        listener.close()
    try:
        if args.profile:
            stats = pstats.Stats(str(workdir / f"{args.profile}.prof"))
            stats.sort_stats("tottime").print_stats(25)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
