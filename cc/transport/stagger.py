"""Overlapping connection attempts, so that a dial does not wait out the SYN backoff.

A TCP connect whose SYNs go unanswered (a blackhole, a full accept queue) retries them
1, 3, 7, 15 and 31 s after it began, so a path that comes back mid-dial is noticed only
at the next of those: the connector came back 2-4 s after a 30 s blackhole lifted
(issue 11, item 10).  As in Happy Eyeballs (RFC 8305), when an attempt has not
connected within ``stagger`` seconds another starts, on the next address; the first
attempt to connect wins and the others are closed.  A fresh attempt sends its first SYN
at once, so there is one every ``stagger`` seconds while the path is down.  The first
attempt always stays (a slow path still completes it); of the later ones the newest
``max_in_flight - 1`` do.  An attempt that fails (refused, unreachable, a proxy's
refusal) starts the next address at once; once every address has been tried and one
has failed, the path answers, so no more attempts start: the last error is raised when
those in flight have failed too.  The caller bounds the whole (the connect timeout).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

__all__ = ["MAX_IN_FLIGHT", "STAGGER", "connect_tcp", "first_to_connect"]

#: Seconds between attempts while none has connected (RFC 8305 suggests 0.25 s; more
#: here, as a connector rarely has several addresses and each attempt costs a SYN).
STAGGER = 0.5
#: Attempts in flight at most: the first one and the newest.
MAX_IN_FLIGHT = 3

Attempt = Callable[[int], Awaitable[socket.socket]]


async def first_to_connect(
    attempt: Attempt,
    addresses: int = 1,
    *,
    stagger: float = STAGGER,
    max_in_flight: int = MAX_IN_FLIGHT,
) -> socket.socket:
    """The socket of the first of ``attempt(0)``, ``attempt(1)``, ... to connect.

    ``attempt(n)`` connects to address ``n % addresses`` and closes its socket if it
    fails or is cancelled.  Raises the last attempt's OSError when all have failed.
    """
    if max_in_flight < 2:
        raise ValueError("max_in_flight must be at least 2 (the first and a fresh one)")
    in_flight: list[asyncio.Task[socket.socket]] = []
    started = 0

    def start() -> None:
        nonlocal started
        if len(in_flight) >= max_in_flight:
            oldest_fresh = in_flight.pop(1)  # the first one stays
            oldest_fresh.cancel()
            oldest_fresh.add_done_callback(_close_result)
        in_flight.append(asyncio.ensure_future(attempt(started)))
        started += 1

    last_error: OSError | None = None
    start()
    try:
        while True:
            done, _ = await asyncio.wait(
                in_flight, timeout=stagger, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                if last_error is None or started < addresses:
                    start()
                continue
            for task in done:
                in_flight.remove(task)
            winners = [t for t in done if not t.cancelled() and t.exception() is None]
            if winners:
                for other in winners[1:]:
                    _close_result(other)
                return winners[0].result()
            for task in done:
                exc = None if task.cancelled() else task.exception()
                if exc is not None and not isinstance(exc, OSError):
                    raise exc
                last_error = exc or last_error
            if started < addresses:
                start()  # the next address without waiting
            elif not in_flight:
                raise last_error or OSError("every connection attempt was cancelled")
    finally:
        for task in in_flight:
            task.cancel()
            task.add_done_callback(_close_result)


def _close_result(task: asyncio.Future[socket.socket]) -> None:
    """Close the socket a losing attempt connected anyway."""
    if not task.cancelled() and task.exception() is None:
        task.result().close()


async def connect_tcp(
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    *,
    stagger: float = STAGGER,
    max_in_flight: int = MAX_IN_FLIGHT,
) -> socket.socket:
    """A connected non-blocking TCP socket to ``host:port`` (see the module docstring)."""
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"no address for {host}")

    async def attempt(n: int) -> socket.socket:
        family, kind, proto, _, address = infos[n % len(infos)]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return sock

    return await first_to_connect(attempt, len(infos), stagger=stagger, max_in_flight=max_in_flight)
