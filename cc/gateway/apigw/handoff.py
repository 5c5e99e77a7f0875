"""Gateway workers hand each other client connections of the app port.

With ``--workers N`` every worker listens on the app port (SO_REUSEPORT) but a
connector's session lives on one worker only.  A worker that takes a request for
a target none of its own connectors serves offers the client's socket (passed
with ``SCM_RIGHTS``, plus the bytes it already read) to the other workers in turn
over a Unix socket each in a private directory; the first that serves the target
takes the connection and serves it from then on (a later request on it may be
handed on again).  Nothing is copied through a second process: after the handoff
the client talks to the serving worker directly, so a hop costs one local round
trip per connection rather than per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable

from cc.log import get_logger
from cc.protocol.apigw.handoff import (
    DECLINED,
    HANDOFF_DIR_ENV,
    HEADER,
    TAKEN,
    encode_offer,
    parse_offer,
    parse_offer_header,
)
from cc.protocol.errors import ProtocolError

__all__ = ["HANDOFF_DIR_ENV", "Handoff"]

#: A peer that does not answer an offer in this time is skipped.
OFFER_TIMEOUT = 5.0

log = get_logger("server.apigw")


def socket_path(folder: str, index: int) -> str:
    return os.path.join(folder, f"w{index}")


class Handoff:
    """This worker's handoff socket and its offers to the others.

    ``serves(name)`` says whether this worker takes a connection for ``name``;
    ``adopt(sock, buffered)`` serves a taken one.
    """

    def __init__(
        self,
        folder: str,
        index: int,
        count: int,
        serves: Callable[[str], bool],
        adopt: Callable[[socket.socket, bytes], Awaitable[None]],
    ) -> None:
        self.folder = folder
        self.index = index
        self.count = count
        self._serves = serves
        self._adopt = adopt
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        #: connections given away and taken in
        self.given = 0
        self.taken = 0

    async def start(self) -> None:
        path = socket_path(self.folder, self.index)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a previous life of this worker
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(128)
        sock.setblocking(False)
        self._sock = sock
        self._task = asyncio.get_running_loop().create_task(self._accept())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for task in list(self._handlers):
            task.cancel()
        if self._sock is not None:
            self._sock.close()
            with contextlib.suppress(OSError):
                os.unlink(socket_path(self.folder, self.index))

    # -- giving ---------------------------------------------------------------------
    async def give(self, client: int, name: str, buffered: bytes) -> bool:
        """Offer the socket ``client`` (a descriptor) to the other workers in turn.

        Whether one took it: then this worker only closes its copy (no FIN is sent
        while the other holds the socket).
        """
        message = encode_offer(name, buffered)
        for step in range(1, self.count):
            peer = (self.index + step) % self.count
            try:
                async with asyncio.timeout(OFFER_TIMEOUT):
                    if await self._offer(peer, client, message):
                        self.given += 1
                        return True
            except (OSError, TimeoutError) as exc:
                log.debug("app: worker %d did not take an offer: %s", peer, exc)
        return False

    async def _offer(self, peer: int, client: int, message: bytes) -> bool:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, socket_path(self.folder, peer))
            sent = await _send_with_fd(loop, sock, message, client)
            if sent < len(message):
                await loop.sock_sendall(sock, message[sent:])
            return await loop.sock_recv(sock, 1) == TAKEN

    # -- taking ---------------------------------------------------------------------
    async def _accept(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self._sock)
            task = loop.create_task(self._take(conn))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def _take(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        fds: list[int] = []
        try:
            conn.setblocking(False)
            async with asyncio.timeout(OFFER_TIMEOUT):
                data, fds = await _recv_with_fds(loop, conn)
                while len(data) < HEADER.size:
                    data += await _recv_some(loop, conn)
                name_len, size = parse_offer_header(data)
                while len(data) < HEADER.size + name_len + size:
                    data += await _recv_some(loop, conn)
            offer = parse_offer(data)
            if len(fds) != 1 or not self._serves(offer.name):
                await loop.sock_sendall(conn, DECLINED)
                return
            client = socket.socket(fileno=fds.pop())
            try:
                await self._adopt(client, offer.buffered)
            except Exception:
                client.close()
                raise
            self.taken += 1
            await loop.sock_sendall(conn, TAKEN)
        except (OSError, TimeoutError, ProtocolError) as exc:
            log.warning("app: a bad handoff from another worker: %s", exc)
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready = loop.create_future()
    loop.add_reader(sock.fileno(), _wake, ready)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


async def _writable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready = loop.create_future()
    loop.add_writer(sock.fileno(), _wake, ready)
    try:
        await ready
    finally:
        loop.remove_writer(sock.fileno())


async def _send_with_fd(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, data: bytes, fd: int
) -> int:
    while True:
        try:
            return socket.send_fds(sock, [data], [fd])
        except BlockingIOError:
            await _writable(loop, sock)


async def _recv_with_fds(
    loop: asyncio.AbstractEventLoop, sock: socket.socket
) -> tuple[bytes, list[int]]:
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, 256 * 1024, 1)
        except BlockingIOError:
            await _readable(loop, sock)
            continue
        if not data:
            raise ConnectionError("the offering worker hung up")
        return data, fds


async def _recv_some(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    data = await loop.sock_recv(sock, 256 * 1024)
    if not data:
        raise ConnectionError("the offering worker hung up")
    return data
