"""Why reaching the gateway failed, as the connector tells retryable from fatal."""

from __future__ import annotations

__all__ = ["DialError", "HandshakeError"]


class DialError(ConnectionError):
    """The gateway could not be reached (network, proxy, TLS): worth retrying."""


class HandshakeError(ConnectionError):
    """The gateway answered the upgrade with something other than 101.

    The message is Go's ("websocket: bad handshake") with the status added, so a
    user sees whether it was a 401 (token) or a 404 (path) without a packet capture.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"websocket: bad handshake (HTTP {status} {reason})".rstrip())
        self.status = status
