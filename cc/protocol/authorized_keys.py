"""The gateway's ``--authorized-keys`` file: connectors that log in with a key pair.

OpenSSH's authorized_keys format, parsed by asyncssh (pure parsing, no I/O).  Two
options of our own, which asyncssh keeps as strings:

* ``cc-acl="regex,regex"``: the remotes the key may use, matched as the authfile's
  regexes (``R:host:port`` for reverse).  Without it the key has full access, as an
  ``--auth`` user; ``cc-acl=""`` allows nothing.
* ``cc-identifier="name,name"``: the only HTTP API gateway identifiers a session
  of this key may claim.  Without it any identifier may be claimed.

A key is known by its SHA-256 fingerprint, which is what a live session keeps so a
reload can tell whether its key was removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncssh

from .acl import Permissions
from .errors import AuthFileError

__all__ = ["ClientKey", "ClientKeyTable", "parse_authorized_keys"]


@dataclass(frozen=True, slots=True)
class ClientKey:
    """What one authorized key allows."""

    fingerprint: str
    permissions: Permissions
    #: identifiers it may claim; None: any
    identifiers: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class ClientKeyTable:
    """Authorized keys by fingerprint."""

    keys: Mapping[str, ClientKey]

    def lookup(self, fingerprint: str) -> ClientKey | None:
        return self.keys.get(fingerprint)

    @property
    def is_empty(self) -> bool:
        return not self.keys


def _split(values: Any) -> list[str]:
    out: list[str] = []
    for value in values:
        out.extend(part.strip() for part in str(value).split(","))
    return out


def parse_authorized_keys(data: bytes | str) -> ClientKeyTable:
    """Parse an authorized_keys file; an unreadable line is an :class:`AuthFileError`."""
    try:
        text = data.decode() if isinstance(data, bytes) else data
        parsed = asyncssh.import_authorized_keys(text)
    except (ValueError, asyncssh.KeyImportError) as exc:
        raise AuthFileError(f"authorized keys: {exc}") from None
    keys: dict[str, ClientKey] = {}
    for entry in parsed._user_entries:  # asyncssh offers no public iterator
        if entry.key is None:
            continue
        fingerprint = entry.key.get_fingerprint("sha256")
        options = entry.options
        if "cc-acl" in options:
            permissions = Permissions.from_patterns(
                [p for p in _split(options["cc-acl"]) if p], owner=f"key {fingerprint}"
            )
        else:
            permissions = Permissions.everything()
        identifiers = None
        if "cc-identifier" in options:
            identifiers = frozenset(i for i in _split(options["cc-identifier"]) if i)
        keys[fingerprint] = ClientKey(fingerprint, permissions, identifiers)
    return ClientKeyTable(keys)
