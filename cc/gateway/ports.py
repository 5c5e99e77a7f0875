"""The gateway's reverse-port claims, in one process or across its workers.

Before a session binds a reverse port it claims it (see ``PortClaims``).  A lone
gateway keeps the claims itself.  Gateway workers ask their control process over
an inherited socket, one JSON line each way, because two sessions of one
connector may land on different workers and must still share the port, while a
session of anyone else must not join it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Hashable
from typing import Protocol

from cc.log import get_logger
from cc.protocol.workers import PortClaims

__all__ = [
    "REGISTRY_FD_ENV",
    "LocalPortRegistry",
    "PortRegistry",
    "WorkerPortRegistry",
    "registry_from_environment",
    "serve_worker_claims",
]

#: In a gateway worker's environment: the inherited socket to the control process.
REGISTRY_FD_ENV = "CC_PORT_REGISTRY_FD"
#: A claim the control process does not answer in time is refused.
CLAIM_TIMEOUT = 5.0
_MAX_LINE = 4096

log = get_logger("server.ports")


class PortRegistry(Protocol):
    async def claim(
        self, port: int, key: str | None, owner: int, identity: str | None = None
    ) -> bool: ...

    async def holder(self, port: int) -> str | None: ...

    def release(self, port: int, owner: int) -> None: ...


class LocalPortRegistry:
    """A gateway without workers: the claims live here."""

    def __init__(self) -> None:
        self.claims = PortClaims()

    async def claim(
        self, port: int, key: str | None, owner: int, identity: str | None = None
    ) -> bool:
        return self.claims.claim(port, key, owner, identity)

    async def holder(self, port: int) -> str | None:
        """The client identity holding ``port`` (see ``workers.client_identity``)."""
        return self.claims.identity(port)

    def release(self, port: int, owner: int) -> None:
        self.claims.release(port, owner)


class WorkerPortRegistry:
    """A gateway worker: claims go to the control process, one at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_unix_connection(
                sock=self._sock, limit=_MAX_LINE
            )
        return self._reader, self._writer

    async def claim(
        self, port: int, key: str | None, owner: int, identity: str | None = None
    ) -> bool:
        message = {"op": "claim", "port": port, "key": key, "owner": owner, "identity": identity}
        answer = await self._ask(message, f"claim port {port}")
        return answer.get("ok") is True

    async def holder(self, port: int) -> str | None:
        answer = await self._ask({"op": "holder", "port": port, "owner": 0}, f"ask about {port}")
        identity = answer.get("identity")
        return identity if isinstance(identity, str) else None

    async def _ask(self, message: dict[str, object], what: str) -> dict[str, object]:
        async with self._lock:
            try:
                reader, writer = await self._connect()
                writer.write(_line(message))
                async with asyncio.timeout(CLAIM_TIMEOUT):
                    answer = json.loads(await reader.readline() or b"{}")
            except (OSError, TimeoutError, ValueError) as exc:
                log.warning("Cannot reach the control process to %s: %s", what, exc)
                return {}
            return answer if isinstance(answer, dict) else {}

    def release(self, port: int, owner: int) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(_line({"op": "release", "port": port, "owner": owner}))

    def close(self) -> None:
        """The control process drops this worker's claims when it sees the end."""
        if self._writer is not None:
            self._writer.close()
        self._sock.close()


def _line(message: dict[str, object]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def registry_from_environment() -> PortRegistry:
    """The control process's registry in a worker; a local one otherwise."""
    fd = os.environ.get(REGISTRY_FD_ENV)
    if fd is None or not fd.isdigit():
        return LocalPortRegistry()
    return WorkerPortRegistry(socket.socket(fileno=int(fd)))


async def serve_worker_claims(sock: socket.socket, claims: PortClaims, worker: int) -> None:
    """The control process's side for one worker; its claims go when it does."""

    def ours(owner: Hashable) -> bool:
        return isinstance(owner, tuple) and owner[0] == worker

    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=_MAX_LINE)
    try:
        while line := await reader.readline():
            try:
                message = json.loads(line)
                port, owner = int(message["port"]), (worker, int(message["owner"]))
                key = message.get("key")
                identity = message.get("identity")
                if message["op"] == "claim":
                    ok = claims.claim(
                        port,
                        key if isinstance(key, str) else None,
                        owner,
                        identity if isinstance(identity, str) else None,
                    )
                    writer.write(_line({"ok": ok}))
                elif message["op"] == "holder":
                    writer.write(_line({"identity": claims.identity(port)}))
                elif message["op"] == "release":
                    claims.release(port, owner)
            except (ValueError, KeyError, TypeError) as exc:
                # Unanswered: the worker's claim times out and counts as refused.
                log.warning("worker %d sent a bad port claim (%s); ignored", worker, exc)
    except (OSError, ValueError):  # ValueError: a line over the limit
        pass
    finally:
        claims.release_owners(ours)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
