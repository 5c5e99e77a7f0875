"""``python -m bench``: every selected path, the same workloads, one table and one JSON.

For each path, in a fresh work directory: start the targets (iperf3 server or the
plain-socket bulk server, and the echo service), bring the path up, then measure in
this order: RSS idle, RSS with many idle connections open (before any traffic, whose
freed buffers they would otherwise reuse), RTT latency, connection rate, the three
bulk runs (CPU and peak RSS sampled meanwhile). Meanwhile the CPU that other
programs use is recorded, since any of it skews the figures. A failing workload is
recorded and the next one runs; a path that fails to start becomes an error row.
Exit status: 0 when no path ended in error (skipped paths are fine), 1 otherwise;
with ``--gate``, 1 only on a collapse that noise cannot explain (``bench.gate``),
which is what CI enforces.  A PNG chart (``bench.chart``) goes next to the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from bench import workloads
from bench.chart import chart_path_for, write_chart
from bench.gate import judge
from bench.machine import machine_info
from bench.paths import PATHS, PathSkipped, PathSpec, Settings, Targets, Tunnel
from bench.peers import find_binary, iperf3_server, python_service
from bench.probe import read_counts
from bench.report import (
    FIGURES,
    PathResult,
    add_ratios,
    kernel_fractions,
    render_table,
    worker_scaling,
    write_json,
)
from bench.usage import (
    MB,
    ForeignLoad,
    MachineBusy,
    RssPeak,
    cpu_seconds,
    memory_bytes,
    rss_bytes,
    wait_quiet,
)

__all__ = ["main"]

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
GiB = 2**30
SETTLE = 0.5  # seconds for a path to go quiet before RSS is read

#: (full, --quick) defaults per duration option.
DEFAULTS = {
    "bulk_seconds": (5.0, 1.0),
    "rtt_count": (2000, 200),
    "conn_seconds": (3.0, 1.0),
    "idle_conns": (1000, 200),
}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the tunnel paths side by side on 127.0.0.1.",
        epilog="chisel paths need CHISEL_BIN=/path/to/chisel; they are skipped without it.",
    )
    parser.add_argument("--quick", action="store_true", help="short runs (under a minute)")
    parser.add_argument(
        "--only",
        default=",".join(PATHS),
        help=f"comma-separated paths to run (default: all of {','.join(PATHS)})",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write JSON")
    parser.add_argument(
        "--chart",
        type=Path,
        help="where to write the PNG chart (default: next to the JSON, .png; needs matplotlib)",
    )
    parser.add_argument(
        "--gate",
        action="store_true",
        help="exit 1 only on a collapse noise cannot explain (see bench/gate.py), for CI",
    )
    parser.add_argument("--bulk-seconds", type=float, help="per bulk run (iperf3: whole s)")
    parser.add_argument("--rtt-count", type=int, help="sequential 64-byte round trips")
    parser.add_argument("--conn-seconds", type=float, help="connection-rate duration")
    parser.add_argument("--idle-conns", type=int, help="idle tunnelled connections to hold")
    parser.add_argument("--streams", type=int, default=32, help="parallel bulk streams")
    parser.add_argument(
        "--bulk-tool",
        choices=["auto", "iperf3", "python"],
        default="auto",
        help="iperf3 when installed (auto), or the plain-socket source/sink",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each path, wait up to this long for other programs to go idle",
    )
    parser.add_argument(
        "--ours-server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for our gateway, repeatable (use --ours-server-arg=--x)",
    )
    parser.add_argument(
        "--ours-client-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for our connector, repeatable (use --ours-client-arg=--x)",
    )
    args = parser.parse_args(argv)
    for name, (full, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    only = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in only if p not in PATHS]
    if unknown or not only:
        parser.error(f"--only: unknown path(s) {unknown}; choose from {', '.join(PATHS)}")
    args.paths = [name for name in PATHS if name in only]
    return args


def _raise_nofile(needed: int) -> dict[str, int]:
    """Raise the soft open-files limit (inherited by every child) toward ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"soft": soft, "hard": hard}


@dataclasses.dataclass(frozen=True)
class Tools:
    iperf3: str | None  # None: the plain-socket source/sink is used
    chisel: str | None
    ssh: str | None


class Measurer:
    """Runs the workloads through one tunnel and fills one PathResult."""

    def __init__(
        self, tunnel: Tunnel, result: PathResult, args: argparse.Namespace, tools: Tools
    ) -> None:
        self.tunnel = tunnel
        self.result = result
        self.args = args
        self.tools = tools
        self.roles = tunnel.roles

    def step(self, name: str, func: Callable[[], None]) -> None:
        """Run one workload; record its failure and go on, unless the tunnel died."""
        _log(f"[{self.result.name}] {name}")
        try:
            func()
        except Exception as exc:
            self.result.errors[name] = f"{type(exc).__name__}: {exc}"
            self.result.status = "partial"
        self.tunnel.check_alive()

    def _per_role(self, key: str, values: dict[str, float]) -> None:
        for role, value in values.items():
            self.result.figures[f"{key}_{role}"] = value

    def run(self) -> None:
        with ForeignLoad() as others:
            time.sleep(SETTLE)
            if self.roles:
                idle = memory_bytes(self.roles)
                for kind in ("rss", "pss", "uss"):
                    figures = {role: m[kind] / MB for role, m in idle.items()}
                    self._per_role(f"{kind}_idle_MB", figures)
            if self.roles:  # first: later traffic leaves freed memory the conns would reuse
                self.step("idle connections", self.idle_connections)
            self.step("latency", self.latency)
            self.step("connection rate", self.connection_rate)
            self.step("bulk", self.bulk)
        self.result.figures["other_load_cores"] = others.cores

    def _cpu_us_per(self, key: str, before: dict[str, float], count: int) -> None:
        """CPU µs each role spent per operation since ``before``: steadier than wall time."""
        if count <= 0:
            return
        after = cpu_seconds(self.roles)
        self._per_role(key, {r: 1e6 * (after[r] - before[r]) / count for r in self.roles})

    def latency(self) -> None:
        before = cpu_seconds(self.roles)
        warmup = 50  # its connection's open is in the CPU too: ~0.2 µs per round trip
        rtt = workloads.rtt_latency(self.tunnel.entry.echo, self.args.rtt_count, warmup)
        self._cpu_us_per("cpu_us_per_rtt", before, self.args.rtt_count + warmup)
        self.result.figures["rtt_p50_us"] = rtt["p50"]
        self.result.figures["rtt_p99_us"] = rtt["p99"]
        self.result.details["rtt_us"] = rtt

    def connection_rate(self) -> None:
        before = cpu_seconds(self.roles)
        rate = workloads.connection_rate(self.tunnel.entry.echo, self.args.conn_seconds)
        self._cpu_us_per("cpu_us_per_conn", before, int(rate["connections"]))
        self.result.figures["conn_per_s"] = rate["per_s"]
        self.result.details["connection_rate"] = rate

    def _bulk_once(self, reverse: bool, streams: int) -> workloads.BulkResult:
        port, seconds = self.tunnel.entry.bulk, self.args.bulk_seconds
        if self.tools.iperf3 is not None:
            return workloads.bulk_iperf3(
                self.tools.iperf3, port, seconds, reverse=reverse, streams=streams
            )
        return workloads.bulk_python(port, seconds, reverse=reverse, streams=streams)

    def bulk(self) -> None:
        runs = {"fwd": (False, 1), "rev": (True, 1), "par": (False, self.args.streams)}
        moved = 0
        cpu_start = cpu_seconds(self.roles)
        with RssPeak(self.roles) as peak:
            for name, (reverse, streams) in runs.items():
                _log(f"[{self.result.name}] bulk {name} ({streams} stream(s))")
                before = cpu_seconds(self.roles)
                try:
                    with MachineBusy() as busy:
                        res = self._bulk_once(reverse, streams)
                except Exception as exc:
                    self.result.errors[f"bulk {name}"] = f"{type(exc).__name__}: {exc}"
                    self.result.status = "partial"
                    self.tunnel.check_alive()
                    continue
                after = cpu_seconds(self.roles)
                moved += res.nbytes
                self.result.figures[f"bulk_{name}_MBps"] = res.mb_per_s
                pct = {r: 100 * (after[r] - before[r]) / res.seconds for r in self.roles}
                self.result.details[f"bulk_{name}"] = {
                    "bytes": res.nbytes,
                    "seconds": res.seconds,
                    "streams": streams,
                    "cpu_percent": pct,
                    "machine_busy_cores": busy.cores,
                    "stream_MBps": list(res.stream_MBps),
                }
                if name == "par":
                    self.result.figures["busy_par_cores"] = busy.cores
                    if len(res.stream_MBps) == streams and max(res.stream_MBps) > 0:
                        spread = min(res.stream_MBps) / max(res.stream_MBps)
                        self.result.figures["par_spread"] = spread
                if streams == 1:
                    self._per_role(f"cpu_pct_{name}", pct)
        cpu_end = cpu_seconds(self.roles)
        if self.roles and moved:
            spent = {r: cpu_end[r] - cpu_start[r] for r in self.roles}
            self._per_role("cpu_s_per_GiB", {r: s / (moved / GiB) for r, s in spent.items()})
            self._per_role("rss_load_MB", {r: v / MB for r, v in peak.peak.items()})
            self.result.details["bulk_total"] = {"bytes": moved, "cpu_seconds": spent}

    def idle_connections(self) -> None:
        count = self.args.idle_conns
        before = rss_bytes(self.roles)
        with workloads.idle_connections(self.tunnel.entry.echo, count):
            time.sleep(2 * SETTLE)
            self.tunnel.check_alive()
            held = rss_bytes(self.roles)
        time.sleep(SETTLE)
        after = rss_bytes(self.roles)
        self._per_role("rss_conns_delta_MB", {r: (held[r] - before[r]) / MB for r in self.roles})
        self.result.details["idle_connections"] = {
            "count": count,
            "rss_before_MB": {r: v / MB for r, v in before.items()},
            "rss_held_MB": {r: v / MB for r, v in held.items()},
            "rss_after_close_MB": {r: v / MB for r, v in after.items()},
        }


def run_path(spec: PathSpec, workdir: Path, args: argparse.Namespace, tools: Tools) -> PathResult:
    """Bring one path up between fresh targets, measure it, tear everything down."""
    result = PathResult(spec.name, spec.label)
    workdir.mkdir()
    settings = Settings(
        workdir=workdir,
        chisel=tools.chisel,
        ours_server_args=tuple(args.ours_server_arg),
        ours_client_args=tuple(args.ours_client_arg),
    )
    if spec.needs_chisel and tools.chisel is None:
        result.status, result.error = "skipped", "CHISEL_BIN not set"
        return result
    if args.wait_quiet > 0:
        _log(f"[{spec.name}] waiting up to {args.wait_quiet} s for a quiet machine")
        result.details["others_load_before_cores"] = wait_quiet(args.wait_quiet)
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            if tools.iperf3 is not None:
                bulk_port = stack.enter_context(iperf3_server(tools.iperf3, workdir))
            else:
                bulk_port, _ = stack.enter_context(python_service("bulk-server", workdir))
            echo_port, _ = stack.enter_context(python_service("echo", workdir))
            _log(f"[{spec.name}] starting: {spec.label}")
            tunnel = stack.enter_context(spec.open(Targets(bulk_port, echo_port), settings))
            Measurer(tunnel, result, args, tools).run()
    except PathSkipped as exc:
        result.status, result.error = "skipped", str(exc)
    except Exception as exc:
        result.status, result.error = "error", f"{type(exc).__name__}: {exc}"
        result.details["traceback"] = traceback.format_exc()
    # The processes have stopped: what their fast paths did (paths run under bench.probe).
    fast_path = read_counts(workdir)
    if fast_path:
        result.details["fast_path"] = fast_path
    result.details["wall_seconds"] = round(time.monotonic() - started, 2)
    _log(f"[{spec.name}] {result.status} in {result.details['wall_seconds']} s")
    return result


def _machine(tools: Tools) -> dict[str, object]:
    try:
        return machine_info(tools.chisel, tools.iperf3, tools.ssh)
    except Exception as exc:  # facts are nice to have; never lose the figures for them
        return {"error": f"{type(exc).__name__}: {exc}"}


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so every finally block stops its processes


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    chisel = os.environ.get("CHISEL_BIN") or None
    iperf3 = find_binary("iperf3") if args.bulk_tool != "python" else None
    if args.bulk_tool == "iperf3" and iperf3 is None:
        print("bench: --bulk-tool iperf3 but iperf3 is not installed", file=sys.stderr)
        return 2
    tools = Tools(iperf3=iperf3, chisel=chisel, ssh=find_binary("ssh"))
    notes: list[str] = []
    if chisel is None:
        notes.append("CHISEL_BIN unset: chisel paths skipped, no ratios to chisel")
    if iperf3 is None:
        notes.append("bulk traffic from bench.services (plain sockets), not iperf3")
    nofile = _raise_nofile(4 * args.idle_conns + 1024)
    started = datetime.datetime.now(datetime.UTC)
    clock = time.monotonic()
    results: list[PathResult] = []
    with tempfile.TemporaryDirectory(prefix="cc-bench-") as tmp:
        for name in args.paths:
            results.append(run_path(PATHS[name], Path(tmp) / name, args, tools))
    add_ratios(results)
    table = render_table(results, parallel_streams=args.streams, idle_conns=args.idle_conns)
    document: dict[str, object] = {
        "schema": "cloud-connector-bench/1",
        "started_at": started.isoformat(timespec="seconds"),
        "duration_seconds": round(time.monotonic() - clock, 1),
        "command": ["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)],
        "settings": {
            "quick": args.quick,
            "paths": args.paths,
            "bulk_seconds": args.bulk_seconds,
            "bulk_tool": "iperf3" if iperf3 else "python",
            "parallel_streams": args.streams,
            "rtt_count": args.rtt_count,
            "rtt_bytes": len(workloads.MESSAGE),
            "conn_seconds": args.conn_seconds,
            "idle_conns": args.idle_conns,
            "ours_server_args": args.ours_server_arg,
            "ours_client_args": args.ours_client_arg,
            "rlimit_nofile": nofile,
            "units": "MB = 10**6 bytes; GiB = 2**30 bytes; ratios = value / chisel's value",
        },
        "machine": _machine(tools),
        "notes": notes,
        "figures": [dataclasses.asdict(f) for f in FIGURES],
        "paths": {r.name: r.to_json() for r in results},
        "worker_scaling": worker_scaling(results),
        "kernel_fractions": kernel_fractions(results),
        "table": table,
    }
    print(table)
    for note in notes:
        print(f"note: {note}")
    try:
        write_json(args.json, document)
    except OSError as exc:
        print(f"bench: cannot write {args.json}: {exc}", file=sys.stderr)
        return 2
    print(f"JSON: {args.json}")
    chart = args.chart or chart_path_for(args.json)
    try:
        print(f"chart: {write_chart(document, chart)}")
    except ImportError:
        print("note: no chart: matplotlib is not installed (pip install '.[bench]')")
    except Exception as exc:  # a chart is for reading; never lose the run for it
        print(f"note: no chart: {type(exc).__name__}: {exc}")
    verdict = judge(document)
    for line in verdict.lines():
        print(f"gate: {line}")
    if args.gate:
        return 0 if verdict.ok else 1
    return 1 if any(r.status == "error" for r in results) else 0
