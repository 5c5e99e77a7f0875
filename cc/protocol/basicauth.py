"""HTTP Basic authentication (RFC 7617) for the gateway's admin pages, sans-I/O.

The gateway keeps only SHA-256 digests of the ``--admin`` user and password and
compares digests with ``hmac.compare_digest``, both of them every time, so the
answer takes as long whatever is wrong and however long the guess is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from cc.protocol.acl import parse_user_pass
from cc.protocol.errors import AuthError

__all__ = ["REALM", "AdminCredentials", "basic_header", "challenge", "parse_basic"]

REALM = "cloud-connector"


def parse_basic(value: str | None) -> tuple[str, str] | None:
    """``Authorization: Basic <base64(user:pass)>`` -> (user, pass); None if absent or bad."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def basic_header(user: str, password: str) -> str:
    """The ``Authorization`` value a client sends for ``user:password``."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def challenge() -> list[tuple[str, str]]:
    """The header of a 401 that makes browsers ask for the credentials."""
    return [("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')]


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class AdminCredentials:
    """``--admin user:pass``, kept as digests."""

    user_digest: bytes
    password_digest: bytes

    @classmethod
    def parse(cls, text: str) -> AdminCredentials:
        """``user:pass`` (split at the first colon); AuthError if malformed or empty."""
        user, password = parse_user_pass(text)
        if not password:
            raise AuthError("--admin needs a password ('user:pass')")
        return cls(_digest(user), _digest(password))

    def check(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries these credentials."""
        given = parse_basic(authorization) or ("", "")
        user_ok = hmac.compare_digest(_digest(given[0]), self.user_digest)
        password_ok = hmac.compare_digest(_digest(given[1]), self.password_digest)
        return user_ok & password_ok
