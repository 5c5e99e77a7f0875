"""TLS to the gateway: the client context from the user's files, and the reason in
words when a certificate is refused (ours or the gateway's).
"""

from __future__ import annotations

import contextlib
import os
import ssl
from dataclasses import dataclass

from cc.transport.errors import DialError

__all__ = ["TLSOptions", "TLSVerifyError", "TLSWatch"]


class TLSVerifyError(DialError):
    """A TLS certificate was refused: ours of the gateway's, or the gateway's of ours.

    Deliberately *fatal* for the connector (it stops with a non-zero exit and the
    verification reason instead of retrying): an expired or wrongly named
    certificate, an unknown CA or a missing / rejected client certificate will
    not fix itself between retries, and a connector that keeps redialling hides
    the reason in a retry loop.  The same goes for our own TLS files that cannot
    be loaded (``TLSOptions.context``).  Other TLS failures (a reset during the handshake,
    a peer that does not speak TLS) stay plain, retryable ``DialError`` s, as do
    refused connections and proxy trouble.
    """


#: Alerts by which the peer refuses the certificate *we* sent (or did not send).
_PEER_CERT_ALERTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "requires a client certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "rejected our client certificate (bad certificate)",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "rejected our client certificate (expired)",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "rejected our client certificate (revoked)",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "rejected our client certificate",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "rejected our client certificate (unsupported)",
    "TLSV1_ALERT_UNKNOWN_CA": "does not trust the CA of our client certificate",
}

#: TLS HandshakeType certificate_request (RFC 8446 section 4) and ContentType handshake.
_CERTIFICATE_REQUEST = 13
_HANDSHAKE = 22


class TLSWatch:
    """One TLS connection's story, to name the reason when it fails.

    Python's asyncio and uvloop TLS servers (our gateway among them) drop a
    connection *without a TLS alert* when they refuse a client certificate, and
    with TLS 1.3 that happens after the client's side of the handshake is done:
    the client sees only the connection closing.  So we note, through OpenSSL's
    message callback (CPython's ``SSLContext._msg_callback``; without it the
    watch just never fires), whether the server asked for a client certificate.
    Asked, none configured, closed without an answer: the server requires one,
    a fatal ``TLSVerifyError``.  Asked, one sent, closed: probably refused, but
    a server going away looks the same, so that stays a retryable hint.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self.cert_requested = False
        self.have_cert = False

    def attach(self, ctx: ssl.SSLContext, *, have_cert: bool) -> None:
        self.have_cert = have_cert
        with contextlib.suppress(AttributeError):
            ctx._msg_callback = self._message  # type: ignore[attr-defined]

    def detach(self, ctx: ssl.SSLContext) -> None:
        """After the handshake: a certificate request can only come before its end."""
        with contextlib.suppress(AttributeError):
            ctx._msg_callback = None  # type: ignore[attr-defined]

    def _message(
        self,
        _conn: object,
        direction: str,
        _version: object,
        content_type: int,
        msg_type: int,
        _data: bytes,
    ) -> None:
        if direction == "read" and content_type == _HANDSHAKE and msg_type == _CERTIFICATE_REQUEST:
            self.cert_requested = True

    def error(self, exc: ssl.SSLError) -> DialError:
        """A DialError (TLSVerifyError for certificate refusals) naming the reason in words."""
        where = self.where
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = exc.verify_message or exc.reason or str(exc)
            return TLSVerifyError(
                f"TLS: cannot verify the certificate of {where}: {reason} "
                "(check --tls-ca and --sni, or the gateway's certificate)"
            )
        alert = _PEER_CERT_ALERTS.get(exc.reason or "")
        if alert is not None:
            if not self.have_cert:  # Go's server answers a missing one with bad_certificate
                alert = _PEER_CERT_ALERTS["TLSV13_ALERT_CERTIFICATE_REQUIRED"]
            return TLSVerifyError(
                f"TLS: {where} {alert} ({exc.reason}; check --tls-cert and --tls-key)"
            )
        return self.closed() or DialError(f"TLS error with {where}: {exc.reason or exc}")

    def closed(self) -> DialError | None:
        """Why the server closed before answering, when the handshake tells; else None."""
        if not self.cert_requested:
            return None
        if not self.have_cert:
            return TLSVerifyError(
                f"TLS: {self.where} requires a client certificate (it asked for one and "
                "closed the connection without one; give --tls-cert and --tls-key)"
            )
        return DialError(
            f"TLS: {self.where} asked for a client certificate and closed the connection: "
            "it may not accept ours (check --tls-cert and --tls-key)"
        )

    def lost(self, exc: BaseException | None) -> DialError | None:
        """For ``connection_lost`` before any answer: the TLS reason, if there is one."""
        if isinstance(exc, ssl.SSLError):
            return self.error(exc)
        return self.closed()


@dataclass(frozen=True)
class TLSOptions:
    """The connector's TLS flags (``--tls-ca``, ``--tls-skip-verify``, ``--tls-cert``,
    ``--tls-key``, ``--sni``), kept as paths so a changed file is read at each dial."""

    ca: str | None = None
    skip_verify: bool = False
    cert: str | None = None
    key: str | None = None
    sni: str | None = None

    def context(self) -> ssl.SSLContext:
        """A client context: system CAs (or ``ca``), optional client certificate.

        Files that cannot be used raise TLSVerifyError (fatal for the connector):
        a mistyped ``ca`` must not quietly fall back to trusting the system CAs.
        """
        if self.ca and not os.path.exists(self.ca):
            raise TLSVerifyError(f"TLS: CA file {self.ca}: no such file or directory (--tls-ca)")
        try:
            ctx = ssl.create_default_context(
                cafile=self.ca if self.ca and os.path.isfile(self.ca) else None,
                capath=self.ca if self.ca and os.path.isdir(self.ca) else None,
            )
        except OSError as exc:  # ssl.SSLError included: not PEM
            raise TLSVerifyError(
                f"TLS: cannot load CA certificates from {self.ca} (--tls-ca): {_file_reason(exc)}"
            ) from None
        if self.skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert:
            try:
                ctx.load_cert_chain(self.cert, self.key)
            except OSError as exc:  # missing, not PEM, or a key that does not match
                raise TLSVerifyError(
                    f"TLS: cannot load the client certificate {self.cert} with key "
                    f"{self.key or self.cert} (--tls-cert, --tls-key): {_file_reason(exc)}"
                ) from None
        return ctx


def _file_reason(exc: OSError) -> str:
    return exc.strerror or getattr(exc, "reason", None) or str(exc)
