"""A dial that starts while the gateway drops SYNs connects as soon as it stops (item 10).

No iptables here, so the SYNs are dropped the way Linux drops them for a listener
whose accept queue is full: a listening socket with backlog 0, filled by one
connection nobody accepts.  The dial's SYN goes unanswered and the kernel retries
it, every second at first (``tcp_syn_linear_timeouts``, 4 here), then 2, 4, 8 s
apart: 1, 2, 3, 4, 5, 7, 11, 19 s after it began.  The test starts accepting half a
second after the retry at 7 s; a dial with one attempt connects on the one at 11 s,
3.5 s later, while with staggered attempts a fresh one connects within half a second.
The same through an HTTP CONNECT proxy whose own accept queue is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cc.transport.dial import DialError, connect_socket
from cc.transport.stagger import STAGGER, first_to_connect


def _linear_syn_retries() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_syn_linear_timeouts").read_text())
    except (OSError, ValueError):
        return 0  # before Linux 6.5: 1, 3, 7, 15 s


#: When the test starts accepting: 0.5 s after a SYN retry that the next one follows
#: 4 s later (the retries come at 1 .. L+1 s, then L+3, L+7).
FREED_AFTER = _linear_syn_retries() + 3.5


class FullListener:
    """A listener whose accept queue is full (SYNs dropped) until :meth:`free`."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)  # room for one connection waiting to be accepted
        self.port: int = self.sock.getsockname()[1]
        self.sock.setblocking(False)
        self.filler = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        self.accepted: list[socket.socket] = []
        self._accepting: asyncio.Task[None] | None = None

    def free(self) -> None:
        """Accept from now on (the filler first), so every SYN gets its answer."""
        self._accepting = asyncio.ensure_future(self._accept_forever())

    async def _accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self.sock)
            self.accepted.append(conn)

    def alive(self) -> int:
        """Accepted connections the dialling side has not closed (the filler excluded)."""
        count = 0
        for conn in self.accepted[1:]:
            conn.setblocking(False)
            try:
                if conn.recv(1) != b"":
                    count += 1
            except BlockingIOError:
                count += 1  # open, nothing to read
            except OSError:
                pass  # reset
        return count

    def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
        for s in (self.sock, self.filler, *self.accepted):
            s.close()


@pytest.fixture
def listener() -> Iterator[FullListener]:
    full = FullListener()
    try:
        yield full
    finally:
        full.close()


async def _dial(port: int, proxy: str | None = None, timeout: float = 20.0) -> asyncio.Transport:
    loop = asyncio.get_running_loop()
    url = urlsplit(f"http://127.0.0.1:{port}")
    transport, _ = await connect_socket(
        loop, asyncio.Protocol, url, proxy=proxy, tls=None, timeout=timeout
    )
    return transport


async def _free_later(listener: FullListener, started: float) -> float:
    await asyncio.sleep(max(0.0, started + FREED_AFTER - time.monotonic()))
    listener.free()
    return time.monotonic()


async def test_dial_connects_soon_after_syns_stop_being_dropped(listener: FullListener) -> None:
    started = time.monotonic()
    freeing = asyncio.ensure_future(_free_later(listener, started))
    transport = await _dial(listener.port)
    connected = time.monotonic()
    freed = await freeing
    try:
        late = connected - freed
        assert late < 1.0, f"connected {late:.2f} s after the SYNs got through"
        await asyncio.sleep(0.3)  # the other attempts' connections reach the listener
        assert listener.alive() == 1, "the losing attempts were not closed"
    finally:
        transport.close()


async def test_dial_stays_bounded_by_its_timeout_and_leaves_no_socket(
    listener: FullListener,
) -> None:
    before = len(os.listdir("/proc/self/fd"))
    started = time.monotonic()
    with pytest.raises(DialError, match="timed out after 2s"):
        await _dial(listener.port, timeout=2.0)
    assert time.monotonic() - started < 2.5
    await asyncio.sleep(0.1)
    assert len(os.listdir("/proc/self/fd")) == before, "an attempt's socket leaked"


async def test_refused_fails_at_once_without_waiting_for_a_stagger() -> None:
    with socket.socket() as closed:  # bound, never listening: refuses
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(DialError, match=r"[Rr]efused"):
            await _dial(port)
    assert time.monotonic() - started < STAGGER / 2


# -- through an HTTP CONNECT proxy whose accept queue is full ---------------------------


async def _connect_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal HTTP CONNECT proxy: real bytes both ways once the target answered."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()  # the listener's filler
        return
    host, _, port = head.split()[1].decode().rpartition(":")
    up_reader, up_writer = await asyncio.open_connection(host, int(port))
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


async def test_through_a_proxy_the_dial_to_it_is_staggered_too(listener: FullListener) -> None:
    """The proxy's own accept queue is full for a while: the dial gets through soon after."""

    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    loop = asyncio.get_running_loop()
    target = await asyncio.start_server(hello, "127.0.0.1", 0)
    target_port = target.sockets[0].getsockname()[1]
    listener.filler.close()  # the proxy reads its EOF once it accepts it

    async def proxy_later() -> tuple[asyncio.Server, float]:
        await asyncio.sleep(FREED_AFTER)
        return await asyncio.start_server(_connect_proxy, sock=listener.sock), time.monotonic()

    opening = asyncio.ensure_future(proxy_later())
    got: asyncio.Future[bytes] = loop.create_future()

    class Reader(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            if not got.done():
                got.set_result(data)

    url = urlsplit(f"http://127.0.0.1:{target_port}")
    proxy = f"http://127.0.0.1:{listener.port}"
    transport, _ = await connect_socket(loop, Reader, url, proxy=proxy, tls=None, timeout=20)
    connected = time.monotonic()
    server, freed = await opening
    try:
        assert await asyncio.wait_for(got, 5) == b"hello"
        late = connected - freed
        assert late < 1.0, f"connected {late:.2f} s after the proxy's queue had room"
    finally:
        transport.close()
        server.close()
        target.close()


async def test_first_to_connect_keeps_the_first_attempt_and_the_newest() -> None:
    """Attempts that never connect: the first stays, then the newest; at most three."""
    live: set[int] = set()
    started: list[int] = []

    async def attempt(n: int) -> socket.socket:
        started.append(n)
        live.add(n)
        try:
            if n == 5:
                await asyncio.sleep(0.01)
                a, b = socket.socketpair()
                b.close()
                return a
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")
        finally:
            live.discard(n)

    sock = await first_to_connect(attempt, stagger=0.02, max_in_flight=3)
    sock.close()
    assert started == [0, 1, 2, 3, 4, 5]
    await asyncio.sleep(0)  # the cancelled attempts run their cleanup
    await asyncio.sleep(0)
    assert live == set()


async def test_first_to_connect_moves_past_a_refusing_address_at_once() -> None:
    """Two addresses refuse, the third connects: no stagger is waited for."""
    started: list[int] = []

    async def attempt(n: int) -> socket.socket:
        started.append(n)
        await asyncio.sleep(0)
        if n < 2:
            raise ConnectionRefusedError(111, "refused")
        a, b = socket.socketpair()
        b.close()
        return a

    began = time.monotonic()
    sock = await first_to_connect(attempt, addresses=3, stagger=5.0)
    sock.close()
    assert started == [0, 1, 2]
    assert time.monotonic() - began < 1.0
    with pytest.raises(ConnectionRefusedError):
        await first_to_connect(attempt, addresses=1, stagger=5.0)


async def test_first_to_connect_stops_staggering_once_the_path_answers() -> None:
    """An answer that is a refusal, slower than the stagger: one more attempt at most,
    then that error, not a new attempt every stagger until the connect timeout."""
    started: list[int] = []

    async def attempt(n: int) -> socket.socket:
        started.append(n)
        await asyncio.sleep(0.15)
        raise ConnectionRefusedError(111, "refused")

    began = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        await first_to_connect(attempt, stagger=0.1)
    assert started == [0, 1]
    assert time.monotonic() - began < 0.5
