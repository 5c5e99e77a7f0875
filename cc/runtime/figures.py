"""One scrape for all workers: each worker's figures travel through its control process.

With ``--workers N`` any worker may answer ``/metrics``, ``/ready`` or ``/status``
(the kernel picks which one gets the connection), yet the answer must hold every
worker's figures.  Two ways were possible:

* prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``): every
  metric becomes an mmap'd file per process.  It cannot run custom collectors, so
  the data path would have to bump prometheus objects next to ``cc.stats`` (or
  copy into them on a timer), and it has no room for the status page's rows or
  for readiness;
* the control process, which already talks to each worker over an inherited
  socket, holding the latest figures of each.

This module is the second: each worker pushes its :class:`cc.metrics.Figures`
as one JSON line every :data:`PUSH_INTERVAL` (and at once when its readiness
changes); a worker that answers a request fetches the others' latest figures from
the control process and merges them with its own fresh ones.  A dead worker's
figures leave with its socket.  Figures of the other workers are at most
PUSH_INTERVAL old; the control process never imports asyncssh or serves HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Callable
from typing import Any

from cc.log import get_logger
from cc.metrics import Figures, merge

__all__ = [
    "FIGURES_FD_ENV",
    "WORKER_COUNT_ENV",
    "FiguresBoard",
    "FiguresLink",
    "Fleet",
    "serve_worker_figures",
]

#: In a worker's environment: the inherited socket to the control process.
FIGURES_FD_ENV = "CC_FIGURES_FD"
#: In a worker's environment: how many workers the control process runs.
WORKER_COUNT_ENV = "CC_WORKER_COUNT"
#: Seconds between a worker's pushes.
PUSH_INTERVAL = 1.0
#: A fetch the control process does not answer in time: the worker answers alone.
FETCH_TIMEOUT = 2.0
#: Longest line either way (a gateway's status rows are bounded, see cc.protocol.status).
MAX_LINE = 16 << 20

log = get_logger("figures")


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class FiguresLink:
    """A worker's end: push our figures, fetch the others'."""

    def __init__(self, sock: socket.socket, expected: int) -> None:
        self._sock = sock
        self.expected = expected
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        #: one fetch at a time (answers come in order); one connect, whoever asks first
        self._lock = asyncio.Lock()
        self._connecting = asyncio.Lock()

    @classmethod
    def from_environment(cls) -> FiguresLink | None:
        fd = os.environ.get(FIGURES_FD_ENV, "")
        count = os.environ.get(WORKER_COUNT_ENV, "")
        if not (fd.isdigit() and count.isdigit()):
            return None
        return cls(socket.socket(fileno=int(fd)), int(count))

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with self._connecting:
            if self._reader is None or self._writer is None:
                self._reader, self._writer = await asyncio.open_unix_connection(
                    sock=self._sock, limit=MAX_LINE
                )
        return self._reader, self._writer

    async def push(self, figures: Figures) -> None:
        _, writer = await self._connect()
        writer.write(_line({"op": "figures", "figures": figures.as_dict()}))
        await writer.drain()

    async def fetch(self) -> list[Figures]:
        """The other workers' latest figures; OSError/TimeoutError/ValueError if none came."""
        async with self._lock:
            reader, writer = await self._connect()
            writer.write(_line({"op": "fetch"}))
            async with asyncio.timeout(FETCH_TIMEOUT):
                answer = json.loads(await reader.readline() or b"{}")
        return [Figures.from_dict(item) for item in answer.get("figures", ())]

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._sock.close()


class Fleet:
    """This process's figures, merged with its fellow workers' when it is one of them."""

    def __init__(self, own: Callable[[], Figures], link: FiguresLink | None = None) -> None:
        self.own = own
        self.link = link
        self._task: asyncio.Task[None] | None = None
        self._nudged = asyncio.Event()

    def start(self) -> None:
        if self.link is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._publish())

    def nudge(self) -> None:
        """Something the others must know soon (readiness) changed: push now."""
        self._nudged.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.link is not None:
            self.link.close()

    async def _publish(self) -> None:
        assert self.link is not None
        while True:
            try:
                await self.link.push(self.own())
            except (OSError, RuntimeError) as exc:  # the control process is gone
                log.debug("cannot push figures: %s", exc)
                return
            self._nudged.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PUSH_INTERVAL):
                    await self._nudged.wait()

    async def figures(self) -> Figures:
        """Ours, fresh, plus every other worker's latest; alone (not ready) if that fails."""
        own = self.own()
        if self.link is None:
            return own
        try:
            others = await self.link.fetch()
        except (OSError, TimeoutError, ValueError) as exc:
            log.warning("Cannot fetch the other workers' figures: %s", exc)
            others = []
        return merge(own, others, self.link.expected)


class FiguresBoard:
    """The control process's side: the latest figures of each worker."""

    def __init__(self) -> None:
        #: worker index -> (the connection that pushed them, figures)
        self.latest: dict[int, tuple[object, dict[str, Any]]] = {}


async def serve_worker_figures(sock: socket.socket, board: FiguresBoard, worker: int) -> None:
    """Take one worker's pushes and answer its fetches; its figures go when it does."""
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_LINE)
    me = object()  # a restarted worker's predecessor must not remove its figures
    try:
        while line := await reader.readline():
            try:
                message = json.loads(line)
                if message["op"] == "figures":
                    board.latest[worker] = (me, dict(message["figures"]))
                elif message["op"] == "fetch":
                    others = [f for w, (_, f) in sorted(board.latest.items()) if w != worker]
                    writer.write(_line({"figures": others}))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("worker %d sent bad figures (%s); ignored", worker + 1, exc)
    except (OSError, ValueError):  # ValueError: a line over the limit
        pass
    finally:
        if board.latest.get(worker, (None,))[0] is me:
            del board.latest[worker]
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
