"""What a reloaded authfile or tokens file means for a session that is already in.

chisel checks credentials once, at login: a user removed from the authfile keeps
its session, its reverse ports and its forward channels for as long as the
connection lasts.  Here every reload asks, for every live session, what a login
with the same credentials would get now: nothing (:class:`Revoke`), other
permissions (:class:`Update`: the session's listeners and channels follow them),
or the same (:class:`Keep`).

A session keeps digests of its password and token, never the secrets, so that a
changed password is told apart from a changed ACL.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from .acl import Permissions, TokenTable, UserTable
from .authorized_keys import ClientKeyTable

__all__ = ["Decision", "Keep", "Login", "Revoke", "Update", "recheck"]


@dataclass(frozen=True, slots=True)
class Login:
    """The credentials a session logged in with, as digests."""

    user: str
    #: ``acl.password_digest`` of its password; None: it logged in while no users were set
    password: bytes | None = None
    #: ``acl.token_digest`` of its token; None: it sent none (no tokens were required)
    token: bytes | None = None
    #: SHA-256 fingerprint of the key it logged in with; None: a password login
    key: str | None = None
    #: the HTTP API gateway identifiers it claimed (a key's cc-identifier must cover them)
    identifiers: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Revoke:
    """A login with these credentials would now be refused: end the session."""

    reason: str


@dataclass(frozen=True, slots=True)
class Update:
    """Still allowed in, with other permissions (narrower or wider) than it holds."""

    user: Permissions
    token: Permissions | None


@dataclass(frozen=True, slots=True)
class Keep:
    """Nothing changed for this session."""


Decision = Revoke | Update | Keep


def recheck(
    login: Login,
    users: UserTable | None,
    tokens: TokenTable | None,
    held: tuple[Permissions, Permissions | None],
    keys: ClientKeyTable | None = None,
) -> Decision:
    """Decide for one session holding ``held`` (user and token permissions) now.

    Same rules as a login: no users means anyone with full access (chisel), a
    token is needed only when a tokens file is set.
    """
    token: Permissions | None = None
    if tokens is not None:
        if login.token is None:
            return Revoke("a token is now required")
        token = tokens.lookup_digest(login.token)
        if token is None:
            return Revoke("token removed from the tokens file")
    user = _key_permissions(login, keys) if login.key else _user_permissions(login, users)
    if isinstance(user, Revoke):
        return user
    if (user, token) == held:
        return Keep()
    return Update(user, token)


def _user_permissions(login: Login, users: UserTable | None) -> Permissions | Revoke:
    if users is None or users.is_empty:
        return Permissions.everything()
    entry = users.credentials(login.user)
    if entry is None:
        return Revoke("user removed from the authfile")
    digest, permissions = entry
    if login.password is None:
        return Revoke("a password is now required")
    if not hmac.compare_digest(digest, login.password):
        return Revoke("password changed in the authfile")
    return permissions


def _key_permissions(login: Login, keys: ClientKeyTable | None) -> Permissions | Revoke:
    entry = keys.lookup(login.key) if keys is not None and login.key else None
    if entry is None:
        return Revoke("key removed from the authorized keys file")
    if entry.identifiers is not None and not login.identifiers <= entry.identifiers:
        return Revoke("identifier no longer allowed for the key")
    return entry.permissions
