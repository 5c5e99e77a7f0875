"""``/metrics``: the gateway's Prometheus endpoint on its own HTTP port.

Public without ``--admin`` (a Prometheus inside the cluster scrapes it as is);
with ``--admin`` it asks for the same credentials as the status page, because
remote names tell an outsider which private hosts sit behind the tunnel
(Prometheus' ``basic_auth`` scrape option sends them).
"""

from __future__ import annotations

from cc.gateway.admin import refusal
from cc.gateway.routes import Reply, Request, Router
from cc.metrics import CONTENT_TYPE, exposition

__all__ = ["metrics", "register"]


async def metrics(req: Request) -> Reply:
    if req.gateway.config.admin is not None:
        refused = await refusal(req)
        if refused is not None:
            return refused
    figures = await req.gateway.fleet.figures()
    return Reply(200, exposition(figures), CONTENT_TYPE)


def register(router: Router) -> None:
    router.add("/metrics", metrics, before_backend=True)
