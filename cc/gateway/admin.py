"""Who may see the admin endpoints: HTTP Basic against ``--admin``, guarded like logins.

A wrong user or password is a failed login of the source (the gateway's
AuthGuard: growing delays, then a ban that answers 429), exactly like a wrong SSH
password or token, so the status page is no side door for guessing.  A request
without credentials is only asked for them (a browser's first request never has
any) and costs nothing.
"""

from __future__ import annotations

import asyncio
import math

from cc.gateway.routes import Reply, Request
from cc.protocol.basicauth import challenge

__all__ = ["refusal"]

UNAUTHORIZED = Reply(401, b"admin credentials required\n", headers=tuple(challenge()))


async def refusal(req: Request) -> Reply | None:
    """None if ``req`` carries the ``--admin`` credentials, else the answer to send.

    Without ``--admin`` the admin endpoints do not exist (404).
    """
    gateway = req.gateway
    credentials = gateway.config.admin
    if credentials is None:
        return Reply(404, b"Not found")
    banned = gateway.banned_for(req.source)
    if banned > 0:
        gateway.stats.count_auth_failure("banned")
        return Reply(
            429,
            b"too many failed logins from your address\n",
            headers=(("Retry-After", f"{math.ceil(banned)}"),),
        )
    header = req.request.headers.get("Authorization")
    if credentials.check(header):
        gateway.auth_guard.succeeded(req.source)
        return None
    if header is None:
        return UNAUTHORIZED
    penalty = gateway.login_failed(
        req.source, f"Admin login failed (from {req.peer})", reason="admin"
    )
    if penalty.delay > 0:
        await asyncio.sleep(penalty.delay)
    return UNAUTHORIZED
