"""``/``, ``/health``, ``/version`` and ``/ready``: what people, load balancers and Kubernetes ask.

``/health`` says the process answers (liveness); ``/ready`` says it should get
traffic: listening, not draining after SIGTERM, and with ``--workers`` every
worker up.  Neither needs credentials, and neither says more than that.
"""

from __future__ import annotations

from cc.gateway.routes import Reply, Request, Router

__all__ = ["health", "ready", "register", "root", "version"]


async def root(req: Request) -> Reply:
    """One line, so that "curl -k https://gateway" says what answered (was 404)."""
    return Reply(200, f"cloud-connector gateway {req.gateway.config.version}\n".encode())


async def health(req: Request) -> Reply:
    return Reply(200, b"OK\n")


async def version(req: Request) -> Reply:
    return Reply(200, req.gateway.config.version.encode())


async def ready(req: Request) -> Reply:
    gateway = req.gateway
    figures = await gateway.fleet.figures()
    if figures.ready:
        return Reply(200, b"ready\n")
    if gateway.draining:
        why = "draining"
    elif figures.workers and len(figures.workers) < figures.expected_workers:
        why = f"{len(figures.workers)} of {figures.expected_workers} workers up"
    else:
        why = gateway.stats.state
    return Reply(503, f"not ready: {why}\n".encode())


def register(router: Router) -> None:
    # chisel's two (and our /): a --backend gets them, as with chisel
    router.add("/", root)
    router.add("/health", health)
    router.add("/version", version)
    router.add("/ready", ready, before_backend=True)
