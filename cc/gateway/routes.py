"""The gateway's plain-HTTP endpoints: which path goes to which handler.

A request that is not a chisel upgrade is looked up here by its exact path.  Each
route says whether it wins over ``--backend`` (the operations endpoints do: a
web site behind the gateway must not hide them) or, like chisel's ``/health`` and
``/version``, is served only when there is no backend.  New endpoints are one
``router.add`` away; their handlers live in their own modules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cc.protocol import http

if TYPE_CHECKING:
    from cc.gateway.gateway import Gateway

__all__ = ["TEXT", "Handler", "Reply", "Request", "Route", "Router"]

TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete response; the connection is closed after it (Connection: close)."""

    status: int
    body: bytes = b""
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()
    #: HEAD: the same head, no body
    head_only: bool = False


@dataclass(frozen=True, slots=True)
class Request:
    """What a handler gets: the gateway, the parsed request and who sent it."""

    gateway: Gateway
    request: http.Request
    #: the peer's address, for logs
    peer: str
    #: the unit of blame for failed logins (cc.protocol.authguard.source_of)
    source: str


Handler = Callable[[Request], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    #: served even when --backend is set (else the backend gets the path)
    before_backend: bool = False
    methods: frozenset[str] = field(default_factory=lambda: frozenset({"GET", "HEAD"}))


class Router:
    """Exact paths to routes."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}

    def add(self, path: str, handler: Handler, *, before_backend: bool = False) -> None:
        if path in self._routes:
            raise ValueError(f"route {path} defined twice")
        self._routes[path] = Route(handler, before_backend)

    def find(self, path: str, *, backend: bool) -> Route | None:
        """The route for ``path``; None means the backend (or a 404) answers."""
        route = self._routes.get(path)
        if route is None or (backend and not route.before_backend):
            return None
        return route

    def paths(self) -> list[str]:
        return sorted(self._routes)
