"""One bulk stream through ours, optionally under cProfile: the loop for fast-path work.

``python -m bench.one_stream [--gib N] [--profile server|client]`` starts our gateway
and connector as separate processes on 127.0.0.1, pushes N GiB from a plain socket
into the gateway's reverse port, lets a plain socket sink read it on the connector's
side, and prints MB/s and each tunnel process's CPU seconds (with ``--profile``, the
top of that process's profile).  The full side-by-side comparison is ``python -m bench``.
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

from bench.peers import free_port, stop_process, wait_listening

__all__ = ["main"]

CHUNK = 1 << 20


def _sink(listener: socket.socket, received: list[int]) -> None:
    conn, _ = listener.accept()
    with conn:
        while data := conn.recv(CHUNK):
            received[0] += len(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.one_stream", description=__doc__)
    parser.add_argument("--gib", type=float, default=1.0, help="how much to send (GiB)")
    parser.add_argument("--profile", choices=("server", "client"), help="cProfile one side")
    args = parser.parse_args(argv)
    total = int(args.gib * (1 << 30))
    workdir = Path(tempfile.mkdtemp(prefix="cc-one-stream-"))
    gateway_port, tunnel_port = free_port(), free_port()
    listener = socket.create_server(("127.0.0.1", 0))
    sink_port = listener.getsockname()[1]
    received = [0]
    sink = threading.Thread(target=_sink, args=(listener, received), daemon=True)
    sink.start()

    def start(role: str, extra: list[str]) -> subprocess.Popen[bytes]:
        profile = ["-m", "cProfile", "-o", str(workdir / f"{role}.prof")]
        argv = [sys.executable, *(profile if args.profile == role else []), "-m", "cc.cli.main"]
        log = (workdir / f"{role}.log").open("wb")
        # one process per side: the figures (and a profile) are of the process that works
        command = [*argv, role, "--workers", "1", *extra]
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    server = start("server", ["--host", "127.0.0.1", "-p", str(gateway_port), "--reverse"])
    client = None
    try:
        wait_listening([gateway_port], [])
        remote = f"R:127.0.0.1:{tunnel_port}:127.0.0.1:{sink_port}"
        client = start("client", [f"http://127.0.0.1:{gateway_port}", remote])
        wait_listening([tunnel_port], [])
        block = b"x" * CHUNK
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", tunnel_port)) as source:
            for _ in range(total // CHUNK):
                source.sendall(block)
            source.shutdown(socket.SHUT_WR)
            sink.join(120)
        elapsed = time.perf_counter() - started
        print(
            f"moved {received[0] / 1e6:.0f} MB in {elapsed:.2f} s = "
            f"{received[0] / elapsed / 1e6:.0f} MB/s"
        )
        for name, role in (("gateway", server), ("connector", client)):
            cpu = psutil.Process(role.pid).cpu_times()
            print(f"{name}: {cpu.user + cpu.system:.2f} CPU-s")
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
