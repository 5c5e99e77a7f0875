"""The connector's ``--metrics ADDR``: ``/metrics`` and ``/ready`` for Prometheus and probes.

Off unless asked for, and on loopback unless an interface is named: a connector
sits inside a private network, and its figures name private hosts.  ``/ready`` is
200 while the session is connected (with ``--workers``, every worker's), 503
otherwise, so a Kubernetes readiness probe shows a connector that cannot reach
its gateway.  Workers bind the address together (SO_REUSEPORT) and any of them
answers with every worker's figures (cc.runtime.figures).
"""

from __future__ import annotations

import asyncio
import contextlib

from cc.log import get_logger
from cc.metrics import CONTENT_TYPE, exposition
from cc.protocol import http
from cc.protocol.hosts import join_host_port
from cc.runtime.figures import Fleet

__all__ = ["Monitor"]

log = get_logger("client.metrics")

#: A request head larger than this, or slower than READ_TIMEOUT, is dropped.
MAX_HEAD = 8192
READ_TIMEOUT = 10.0


class Monitor:
    """A tiny HTTP server over a :class:`Fleet`'s figures."""

    def __init__(self, fleet: Fleet, host: str, port: int, *, reuse_port: bool = False) -> None:
        self.fleet = fleet
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return join_host_port(self.host, self.port)

    async def start(self) -> None:
        """Listen (OSError if the address is taken) and start pushing figures if a worker."""
        self._server = await asyncio.start_server(
            self._serve,
            self.host,
            self.port,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self.fleet.start()
        log.info("Metrics on http://%s/metrics, readiness on /ready", self.address)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()
        await self.fleet.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_HEAD:
                raise http.HTTPError("request head too large", 431)
            request = http.parse_request(head)
            status, content_type, body = await self._answer(request)
            response = http.build_response(
                status,
                [
                    ("Content-Type", content_type),
                    ("Cache-Control", "no-store"),
                    ("Connection", "close"),
                ],
                body,
            )
            if request.method == "HEAD":
                response = response[: response.index(b"\r\n\r\n") + 4]
            writer.write(response)
            await writer.drain()
        except http.HTTPError as exc:
            writer.write(http.build_response(exc.status, [("Connection", "close")], b""))
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _answer(self, request: http.Request) -> tuple[int, str, bytes]:
        text = "text/plain; charset=utf-8"
        if request.method not in ("GET", "HEAD"):
            return 405, text, b"Method not allowed\n"
        if request.path == "/metrics":
            return 200, CONTENT_TYPE, exposition(await self.fleet.figures())
        if request.path == "/ready":
            figures = await self.fleet.figures()
            if figures.ready:
                return 200, text, b"ready\n"
            return 503, text, f"not ready: {figures.stats.state}\n".encode()
        if request.path == "/health":
            return 200, text, b"OK\n"
        return 404, text, b"Not found\n"
