"""Retry or stop: the connector's verdict on what the gateway answered, sans-I/O.

Network trouble retries with backoff; a refused token (HTTP 401/403), a refused
password, a host key we do not trust and a config the gateway rejects stop the
connector with a non-zero exit, because retrying them only hammers the gateway.
The exception is a busy reverse port ("Server cannot listen"): usually our own
stale session (a half-open path the gateway has not timed out yet) still holds
it, and the gateway frees it at its keepalive deadline, so that one retries.  A
port our gateway says is held by *another client* (a different user or token) is
not ours to wait for: that stops, with the gateway's message naming our remote.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "PORT_TAKEN",
    "Action",
    "Verdict",
    "auth_failure_verdict",
    "config_reply_verdict",
    "upgrade_verdict",
]

#: How our gateway says a reverse port belongs to a different user or token.
PORT_TAKEN = "taken by another client"

#: HTTP statuses of a refused WebSocket upgrade that retrying cannot change.
REFUSED_STATUSES = frozenset({401, 403})
#: The gateway banned this address for failed logins: it says when to come back.
RATE_LIMITED = 429
#: The header the gateway (ours and the Private Gateway) reads the token from.
TOKEN_HEADER = "Token"


class Action(enum.Enum):
    """What the connector does next."""

    OK = "ok"  # carry on with the session
    RETRY = "retry"  # drop this attempt, reconnect after the backoff delay
    FATAL = "fatal"  # stop, exit non-zero


@dataclass(frozen=True, slots=True)
class Verdict:
    """An :class:`Action` and the reason the log and the exit message give."""

    action: Action
    reason: str = ""


OK = Verdict(Action.OK)


def upgrade_verdict(
    status: int, reason: str, detail: str = "", retry_after: float | None = None
) -> Verdict:
    """A WebSocket upgrade answered with ``status`` instead of 101.

    401/403 mean the token was refused: the reason says so, and which header to
    check, with the gateway's own words (``detail``: ours says whether the token
    was missing or wrong).  429 means this address is banned for failed logins:
    it heals, so it retries, and the reason says why and for how long.  Anything
    else (a proxy's 502, a gateway restarting behind a load balancer) may heal.
    ``reason`` is the Go-style "websocket: bad handshake (HTTP ...)" text.
    """
    said = f": {detail}" if detail else ""
    if status in REFUSED_STATUSES:
        return Verdict(
            Action.FATAL,
            f"the gateway refused the token (HTTP {status}{said}): "
            f'check the "{TOKEN_HEADER}" header (--header "{TOKEN_HEADER}: <token>")',
        )
    if status == RATE_LIMITED:
        wait = f" for {retry_after:.0f} s" if retry_after is not None else ""
        return Verdict(
            Action.RETRY,
            f"{reason}: the gateway is rate-limiting this address after too many failed "
            f"logins (banned{wait}); will retry",
        )
    return Verdict(Action.RETRY, f"{reason}{said}")


def auth_failure_verdict(reason: str) -> Verdict:
    """SSH authentication failed either way (our password, or their host key): stop."""
    return Verdict(Action.FATAL, reason)


def config_reply_verdict(ok: bool, reply: bytes, connection_closed: bool) -> Verdict:
    """The gateway's answer to the ``config`` request (chisel: success with no payload).

    ``connection_closed``: the connection was gone when the answer came.  asyncssh
    fails pending requests when the connection drops, which is not the gateway's
    verdict, so that retries.
    """
    if not ok and not reply and connection_closed:
        return Verdict(Action.RETRY, "connection lost during the config request")
    if ok and not reply:
        return OK
    reason = reply.decode("utf-8", "replace") or "config rejected by server"
    if PORT_TAKEN in reason:
        return Verdict(Action.FATAL, reason)
    if "cannot listen" in reason.lower():
        return Verdict(Action.RETRY, reason)
    return Verdict(Action.FATAL, reason)
