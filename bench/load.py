"""Many concurrent tunnelled connections through one tunnel, and the memory they leave.

Issue 11, items 7 and 11: our gateway and connector (one process each) carry one
reverse remote to an echo service (``python -m bench.services echo``, its own
process); this bench opens N connections to the reverse port (at most
``--concurrency`` connecting at once), proves each end to end with one echo,
then has all N echo again at the same time, closes them all, and reads each
process's RSS: idle before the first round, the peak while the round ran (sampled
every 0.1 s), with all N open, and ``--settle`` seconds after they closed.  It
does that for ``--rounds`` rounds on the same pair of processes, so one can see
whether the after-close figure is flat across rounds or creeps.

    python -m bench.load                          # 10,000 connections, 3 rounds
    python -m bench.load --connections 2000 --rounds 5 --json load.json

The open-files soft limit of this process (and so of every child) is raised to
what N connections need, up to the hard limit.  tests/system/test_load.py runs
one round of this and asserts on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from bench import paths
from bench.peers import python_service
from bench.usage import MB, RssPeak, rss_bytes

__all__ = [
    "FD_HEADROOM",
    "SETTLE",
    "LoadRound",
    "LoadRun",
    "describe",
    "load_round",
    "main",
    "open_fds",
    "raise_nofile",
    "run_load",
    "tunnel",
]

#: Descriptors beyond the connections: listeners, logs, the event loop, libraries.
FD_HEADROOM = 512
#: Seconds from the close to the after-close RSS: the tunnel's own side of closing
#: 10,000 connections takes several seconds on a busy machine, and memory is given
#: back a second after that (cc.runtime.reclaim).
SETTLE = 15.0


@dataclass
class LoadRound:
    """One round's figures; RSS in bytes per role ("gateway", "connector")."""

    connections: int
    open_s: float
    echo_s: float
    close_s: float
    failed: int
    peak: dict[str, int]
    held: dict[str, int]
    after_close: dict[str, int]
    #: open descriptors per role once settled
    fds_after_close: dict[str, int] = field(default_factory=dict)
    #: RSS sampled once a second while settling, first sample one second after close
    settling: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class LoadRun:
    idle: dict[str, int]
    fds_idle: dict[str, int] = field(default_factory=dict)
    rounds: list[LoadRound] = field(default_factory=list)


def open_fds(roles: dict[str, int]) -> dict[str, int]:
    """Open descriptors now of each role's process."""
    return {role: psutil.Process(pid).num_fds() for role, pid in roles.items()}


def raise_nofile(needed: int) -> int:
    """Raise the soft open-files limit (children inherit it) toward ``needed``; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@contextlib.contextmanager
def tunnel(workdir: Path) -> Iterator[paths.Tunnel]:
    """The echo service, our gateway and our connector (one worker each), all on loopback."""
    with python_service("echo", workdir) as (echo_port, echo_child):
        targets = paths.Targets(bulk=echo_port, echo=echo_port)
        with paths.ours(targets, paths.Settings(workdir=workdir)) as running:
            yield paths.Tunnel(running.entry, running.roles, (*running.children, echo_child))


async def _open(
    port: int, index: int, gate: asyncio.Semaphore
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    message = b"%08d" % index
    async with gate:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(message)
            if await reader.readexactly(len(message)) != message:
                raise ConnectionError(f"connection {index}: wrong echo")
        except BaseException:
            writer.close()
            raise
    return reader, writer


async def _echo(index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    message = b"again %08d" % index
    writer.write(message)
    if await reader.readexactly(len(message)) != message:
        raise ConnectionError(f"connection {index}: wrong echo")


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _round(
    port: int, count: int, concurrency: int, timeout: float, when_held: Callable[[], None]
) -> dict[str, float]:
    """Open ``count`` connections, echo on all at once, call ``when_held``, close all."""
    gate = asyncio.Semaphore(concurrency)
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        opened = await asyncio.gather(
            *(_open(port, i, gate) for i in range(count)), return_exceptions=True
        )
        conns = [c for c in opened if not isinstance(c, BaseException)]
        failed = count - len(conns)
        opened_at = time.monotonic()
        echoed = await asyncio.gather(
            *(_echo(i, r, w) for i, (r, w) in enumerate(conns)), return_exceptions=True
        )
        failed += sum(isinstance(e, BaseException) for e in echoed)
        echoed_at = time.monotonic()
        when_held()
        await asyncio.gather(*(_close(w) for _, w in conns))
    return {
        "open_s": opened_at - started,
        "echo_s": echoed_at - opened_at,
        "close_s": time.monotonic() - echoed_at,
        "failed": failed,
    }


def load_round(
    running: paths.Tunnel,
    count: int,
    *,
    concurrency: int = 256,
    settle: float = SETTLE,
    timeout: float = 300.0,
) -> LoadRound:
    """One round against ``running``'s echo reverse port; RSS is read as it goes."""
    roles = running.roles
    held: dict[str, int] = {}
    with RssPeak(roles) as peak:
        round_ = _round(
            running.entry.echo, count, concurrency, timeout, lambda: held.update(rss_bytes(roles))
        )
        phases = _run_loop(round_)
        settling: dict[str, list[int]] = {role: [] for role in roles}
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            for role, value in rss_bytes(roles).items():
                settling[role].append(value)
    running.check_alive()
    return LoadRound(
        connections=count,
        open_s=phases["open_s"],
        echo_s=phases["echo_s"],
        close_s=phases["close_s"],
        failed=int(phases["failed"]),
        peak=dict(peak.peak),
        held=held,
        after_close=rss_bytes(roles),
        fds_after_close=open_fds(roles),
        settling=settling,
    )


def _run_loop(coro: Coroutine[object, object, dict[str, float]]) -> dict[str, float]:
    """Run on uvloop when it is installed (less of this process's CPU in the way)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _mb(values: dict[str, int]) -> str:
    return ", ".join(f"{role} {value / MB:.1f}" for role, value in values.items())


def describe(run: LoadRun) -> list[str]:
    """The figures as lines of text (MB = 10^6 bytes, as the main bench prints)."""
    lines = [f"idle RSS MB: {_mb(run.idle)}; open descriptors {run.fds_idle}"]
    for n, r in enumerate(run.rounds, 1):
        lines.append(
            f"round {n}: {r.connections} connections (failed {r.failed}) open {r.open_s:.1f} s, "
            f"echo on all {r.echo_s:.1f} s, close {r.close_s:.1f} s; RSS MB peak {_mb(r.peak)}; "
            f"all open {_mb(r.held)}; after close {_mb(r.after_close)}, "
            f"descriptors {r.fds_after_close}"
        )
    return lines


def run_load(
    workdir: Path, connections: int, rounds: int, *, concurrency: int = 256, settle: float = SETTLE
) -> LoadRun:
    """Start a tunnel, read its idle RSS, run ``rounds`` rounds on it."""
    raise_nofile(connections + FD_HEADROOM)
    with tunnel(workdir) as running:
        load_round(running, 10, settle=1.0)  # first-use allocations are not load
        time.sleep(1.0)
        run = LoadRun(idle=rss_bytes(running.roles), fds_idle=open_fds(running.roles))
        for _ in range(rounds):
            run.rounds.append(
                load_round(running, connections, concurrency=concurrency, settle=settle)
            )
        return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=256, help="connects in flight")
    parser.add_argument("--settle", type=float, default=SETTLE, help="seconds after close")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    limit = raise_nofile(args.connections + FD_HEADROOM)
    if limit < args.connections + FD_HEADROOM:
        print(f"open-files limit {limit} is too low for {args.connections} connections")
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        run = run_load(
            Path(tmp),
            args.connections,
            args.rounds,
            concurrency=args.concurrency,
            settle=args.settle,
        )
    for line in describe(run):
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(run), indent=2))
    return 0 if all(r.failed == 0 for r in run.rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
