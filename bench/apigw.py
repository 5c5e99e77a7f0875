"""``python -m bench.apigw``: small GETs through the HTTP API gateway, measured with wrk.

Paths, each at 1 and 32 concurrent keep-alive connections for ``--duration``:

- ``direct``: wrk to the backend (the ceiling);
- ``ours``: wrk to ``cloud-connector server --targets --app-port``, one connector
  (``client --http-target``), both with the defaults users get (``--workers auto``,
  whatever ``CC_WORKERS`` the bench was started with: one worker per side on a
  machine with 2 CPUs or fewer; on a bigger one the gateway workers without the
  connector's session hand their client connections to the one with it);
- ``ours-1w``: the same with one worker at each end;
- ``socket-gateway``: its outer and inner layer, when ``SOCKET_GATEWAY_DIR`` names a
  built checkout (``npm ci && npm run build`` done outside this repository; run with
  Node).  Its code is never part of this repository.

Besides req/s and latency, each run gives the CPU time (user + system, psutil) each
program of the path spent per request, its worker processes included: steadier
than req/s on a shared machine.

The backend is a tiny Node ``http`` server when ``node`` is on the PATH (fast, as the
issue's figures were taken), else ``bench.services http``.  wrk comes from Debian
(``apt-get install wrk``).  Prints req/s, p50 and p99 per path and the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.peers import (
    PeerError,
    free_port,
    python_env,
    spawn,
    wait_for_log,
    wait_listening,
)

NODE_BACKEND = """
const http = require('http');
const body = 'hello from the backend\\n';
http.createServer((req, res) => {
  res.writeHead(200, {'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body)});
  res.end(body);
}).listen(Number(process.argv[2]), '127.0.0.1');
"""


def _latency_ms(text: str) -> float:
    number = float(re.findall(r"[\d.]+", text)[0])
    if text.endswith("us"):
        return number / 1000
    if text.endswith("ms"):
        return number
    return number * 1000  # s


def wrk(port: int, connections: int, duration: float, host: str) -> tuple[float, float, float, str]:
    """(req/s, p50 ms, p99 ms, errors) of small GETs with ``Host: host``."""
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--latency",
        "-H",
        f"Host: {host}",
        f"http://127.0.0.1:{port}/",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _latency_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _latency_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = []
    for pattern in (r"Socket errors:.*", r"Non-2xx or 3xx responses: \d+"):
        match = re.search(pattern, out)
        if match:
            errors.append(match.group(0))
    return rate, p50, p99, "; ".join(errors)


@contextlib.contextmanager
def backend(workdir: Path) -> Iterator[int]:
    port = free_port()
    node = shutil.which("node")
    if node:
        script = workdir / "backend.js"
        script.write_text(NODE_BACKEND)
        argv = [node, str(script), str(port)]
    else:
        argv = [sys.executable, "-m", "bench.services", "http", "--port", str(port)]
    with spawn("backend", argv, workdir, env=python_env()) as child:
        wait_listening([port], [child])
        yield port


Procs = list[tuple[str, int]]


def _cpu(procs: Procs) -> list[float]:
    import psutil

    out = []
    for _name, pid in procs:
        total = 0.0
        try:
            parent = psutil.Process(pid)
            family = [parent, *parent.children(recursive=True)]
        except psutil.Error:
            family = []
        for process in family:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        out.append(total)
    return out


@contextlib.contextmanager
def ours(
    workdir: Path, backend_port: int, workers: str | None = None
) -> Iterator[tuple[int, Procs]]:
    """Our gateway and one connector; ``workers``: CC_WORKERS for both (None: defaults)."""
    targets = workdir / "targets.yaml"
    targets.write_text(
        "targets:\n  bench.test:\n    protocol: http\n    hostname: 127.0.0.1\n"
        f"    port: {backend_port}\n"
    )
    port, app_port = free_port(), free_port()
    cc = [sys.executable, "-m", "cc.cli.main"]
    env = python_env()
    if workers:
        env["CC_WORKERS"] = workers
    else:
        env.pop("CC_WORKERS", None)  # the defaults, whatever the bench was started with
    server_argv = [*cc, "server", "--host", "127.0.0.1", "-p", str(port), "--targets"]
    server_argv += [str(targets), "--app-port", str(app_port), "--app-host", "127.0.0.1"]
    with spawn("ours-server", server_argv, workdir, env=env) as server:
        wait_listening([port, app_port], [server])
        client_argv = [*cc, "client", "--http-target", f"127.0.0.1:{backend_port}"]
        client_argv.append(f"http://127.0.0.1:{port}")
        with spawn("ours-client", client_argv, workdir, env=env) as client:
            wait_for_log(client, r"Connected")
            yield app_port, [("gateway", server.popen.pid), ("connector", client.popen.pid)]


@contextlib.contextmanager
def socket_gateway(workdir: Path, backend_port: int, sg_dir: Path) -> Iterator[tuple[int, Procs]]:
    node = shutil.which("node")
    if node is None:
        raise PeerError("node is needed to run socket-gateway")
    cli = [node, str(sg_dir / "dist" / "socket-gateway.js")]
    key, cert = workdir / "inner.key", workdir / "inner.crt"
    subprocess.run(
        [*cli, "certificates", "--private-key", str(key), "--certificate", str(cert)],
        check=True,
        capture_output=True,
        timeout=120,
        cwd=workdir,
    )
    targets = workdir / "sg-targets.yaml"
    targets.write_text(
        "targets:\n  bench.test:\n    protocol: http\n    hostname: 127.0.0.1\n"
        f"    port: {backend_port}\n"
    )
    app_port, socket_port = free_port(), free_port()
    outer_argv = [*cli, "outer-layer", "--inner-layer-certificate", str(cert), "--targets"]
    outer_argv += [str(targets), "--app-port", str(app_port), "--socket-port", str(socket_port)]
    with spawn("sg-outer", outer_argv, workdir) as outer:
        wait_listening([app_port, socket_port], [outer])
        inner_argv = [*cli, "inner-layer", "--inner-layer-private-key", str(key)]
        inner_argv += ["--outer-layer", f"ws://127.0.0.1:{socket_port}"]
        with spawn("sg-inner", inner_argv, workdir) as inner:
            wait_for_log(outer, r"Inner layer .* connected")
            yield app_port, [("outer", outer.popen.pid), ("inner", inner.popen.pid)]


def _row(name: str, c: int, figures: tuple[float, float, float, str], base: float | None) -> str:
    rate, p50, p99, errors = figures
    ratio = f"{rate / base:6.2f}x" if base else "      -"
    return f"{name:<16} c={c:<3} {rate:>9.0f} {ratio} {p50:>8.3f} {p99:>8.3f}  {errors}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.apigw", description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is missing (apt-get install wrk)", file=sys.stderr)
        return 2
    sg_env = os.environ.get("SOCKET_GATEWAY_DIR")
    results: dict[tuple[str, int], tuple[float, float, float, str]] = {}
    cpu_lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-apigw-") as tmp, backend(Path(tmp)) as port:
        workdir = Path(tmp)
        paths: list[tuple[str, contextlib.AbstractContextManager[tuple[int, Procs]] | None]] = [
            ("direct", None),
            ("ours", ours(workdir, port)),
            ("ours-1w", ours(workdir, port, "1")),
        ]
        if sg_env:
            paths.append(("socket-gateway", socket_gateway(workdir, port, Path(sg_env))))
        for name, manager in paths:
            plain: tuple[int, Procs] = (port, [])
            with manager if manager is not None else contextlib.nullcontext(plain) as started:
                target, procs = started
                wrk(target, 4, 1.0, "bench.test")  # warm-up: connections, JIT, pools
                for c in (1, 32):
                    before = _cpu(procs)
                    results[(name, c)] = figures = wrk(target, c, args.duration, "bench.test")
                    spent = [b - a for a, b in zip(before, _cpu(procs), strict=True)]
                    count = figures[0] * args.duration
                    if procs and count:
                        per = ", ".join(
                            f"{n} {t / count * 1e6:.0f}"
                            for (n, _), t in zip(procs, spent, strict=True)
                        )
                        cpu_lines.append(f"{name} c={c}: CPU us/request: {per}")
    print(f"{'path':<16} {'conc':<5} {'req/s':>9} {'vs sg':>7} {'p50 ms':>8} {'p99 ms':>8}  errors")
    for (name, c), figures in results.items():
        base = results.get(("socket-gateway", c))
        print(_row(name, c, figures, base[0] if base else None))
    for line in cpu_lines:
        print(line)
    for name in ("ours", "ours-1w"):
        for c in (1, 32):
            if (name, c) not in results:
                continue
            ours_rate = results[(name, c)][0]
            direct = results[("direct", c)][0]
            line = f"{name} c={c}: ours/direct {ours_rate / direct:.2f}"
            sg = results.get(("socket-gateway", c))
            if sg:
                line += f", ours/socket-gateway {ours_rate / sg[0]:.2f}"
            added = results[(name, c)][1] - results[("direct", c)][1]
            line += f", p50 added {added:.3f} ms"
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
