"""Why reaching the gateway failed, as the connector tells retryable from fatal."""

from __future__ import annotations

__all__ = ["DialError", "HandshakeError", "RetryLater"]


class DialError(ConnectionError):
    """The gateway could not be reached (network, proxy, TLS): worth retrying."""


class HandshakeError(ConnectionError):
    """The gateway answered the upgrade with something other than 101.

    The message is Go's ("websocket: bad handshake") with the status added, so a
    user sees whether it was a 401 (token) or a 404 (path) without a packet capture.
    ``detail`` is the first line of the answer's text body, ``retry_after`` its
    Retry-After in seconds (see ``cc.protocol.verdict.upgrade_verdict``).
    """

    def __init__(
        self, status: int, reason: str, detail: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(f"websocket: bad handshake (HTTP {status} {reason})".replace(" )", ")"))
        self.status = status
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


class RetryLater(DialError):
    """A retryable refusal that says how long to wait (``Retry-After``, in seconds)."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
