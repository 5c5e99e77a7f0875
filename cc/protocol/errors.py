"""Error types of the sans-I/O core.

One base class lets the I/O layers catch "the input was bad" separately from bugs,
and each subclass names the kind of input that was bad so the CLI can say which
flag or file to fix without parsing messages.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "AuthFileError",
    "ConfigError",
    "KeyLoadError",
    "ProtocolError",
    "RemoteError",
    "TargetsError",
]


class ProtocolError(Exception):
    """Base of every error the protocol core raises on bad input."""


class RemoteError(ProtocolError, ValueError):
    """A remote spec (CLI ``<remote>`` or a JSON remote) is malformed.

    It is also a ValueError so argparse ``type=`` callbacks report it as a usage error.
    """


class ConfigError(ProtocolError):
    """The ``config`` request payload is not a valid chisel config JSON."""


class KeyLoadError(ProtocolError):
    """A host key file or inline ``ck-`` key is missing, unreadable or not EC P-256."""


class AuthError(ProtocolError, ValueError):
    """A credential spec such as ``--auth user:pass`` is malformed."""


class AuthFileError(AuthError):
    """An ``--authfile`` users file or a ``--tokens`` file is malformed."""


class TargetsError(ProtocolError, ValueError):
    """A ``--targets`` file (the HTTP API gateway's targets.yaml) is malformed."""
