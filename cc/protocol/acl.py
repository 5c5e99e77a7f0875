"""Who may connect and which remotes they may use: chisel's ``--auth``/``--authfile``,
plus the gateway's ``--tokens`` file.

Semantics follow chisel v1.11.5 (share/settings/user.go, users.go, server.go), with
these deliberate differences:

* Regexes are matched ANCHORED (``re.fullmatch``); chisel uses ``MatchString``, which
  is unanchored, so its ``"10.0.0.1:22"`` also allows ``110.0.0.1:2222``.  ``""`` and
  ``"*"`` still allow everything, as chisel's ``if r == "" || r == "*"``.  Patterns use
  Python ``re`` syntax, which agrees with Go RE2 on the usual classes, groups,
  alternation and anchors.
* An empty user name is an error; chisel's ``--auth ":pass"`` (or ``--auth pass``)
  silently leaves authentication OFF (``if u.Name != "" { AddUser }``).
* A user defined twice (``"bob:a"`` and ``"bob:b"``, or a repeated JSON key) is an
  error; chisel keeps whichever Go's map iteration visits last.
* Passwords and tokens are compared in constant time; chisel uses ``!=``.

As in chisel, an empty list of regexes allows nothing, and no users at all means
every login is accepted with full access.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .errors import AuthError, AuthFileError

__all__ = [
    "MAX_ENTRIES",
    "MAX_FILE_SIZE",
    "MAX_PATTERN_LENGTH",
    "Permissions",
    "TokenTable",
    "UserTable",
    "parse_authfile",
    "parse_tokens_file",
    "parse_user_pass",
    "password_digest",
    "token_digest",
]

#: Largest authfile or tokens file accepted.
MAX_FILE_SIZE = 1024 * 1024
#: Most users or tokens in one file.
MAX_ENTRIES = 10_000
#: Longest single ACL regex.
MAX_PATTERN_LENGTH = 1024

_ALLOW_ALL_PATTERNS = frozenset({"", "*"})

#: Keys this process's password digests, so a digest a session keeps to recognise
#: its password on a reload is worthless outside the process (never a plain hash).
_DIGEST_KEY = secrets.token_bytes(32)


def _secret_bytes(text: str) -> bytes:
    # compare_digest refuses non-ASCII str; SSH passwords may be any UTF-8.
    return text.encode("utf-8", "surrogatepass")


def password_digest(password: str | bytes) -> bytes:
    """A keyed digest of ``password``: what a session keeps instead of the password."""
    secret = password if isinstance(password, bytes) else _secret_bytes(password)
    return hmac.new(_DIGEST_KEY, secret, hashlib.sha256).digest()


def token_digest(token: str) -> bytes:
    """A token as :class:`TokenTable` stores and finds it (SHA-256)."""
    return hashlib.sha256(_secret_bytes(token)).digest()


def parse_user_pass(text: str) -> tuple[str, str]:
    """Split ``--auth user:pass`` at the FIRST colon, as chisel's ParseAuth.

    The password may contain colons; the user may not.  Unlike chisel, which turns a
    spec without a colon or with an empty user into "no authentication", this raises.
    """
    user, sep, password = text.partition(":")
    if not sep:
        raise AuthError("credentials must look like 'user:pass' (no ':' found)")
    if not user:
        raise AuthError("credentials 'user:pass' have an empty user name")
    return user, password


@dataclass(frozen=True, slots=True)
class Permissions:
    """The remotes one principal may use, as compiled anchored regexes."""

    patterns: tuple[re.Pattern[str], ...] = ()
    allow_all: bool = False

    @classmethod
    def everything(cls) -> Permissions:
        """Full access: ``--auth`` users, and everybody when no users are configured."""
        return cls(allow_all=True)

    @classmethod
    def from_patterns(cls, patterns: Iterable[object], *, owner: str = "entry") -> Permissions:
        """Compile an authfile value; ``""``/``"*"`` allow all, an invalid regex is named."""
        compiled: list[re.Pattern[str]] = []
        allow_all = False
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise AuthFileError(f"{owner}: every address regex must be a string")
            if pattern in _ALLOW_ALL_PATTERNS:
                allow_all = True
                continue
            if len(pattern) > MAX_PATTERN_LENGTH:
                raise AuthFileError(f"{owner}: regex longer than {MAX_PATTERN_LENGTH} characters")
            try:
                compiled.append(re.compile(pattern))
            except (re.error, RecursionError, OverflowError) as exc:
                raise AuthFileError(f"{owner}: invalid address regex {pattern!r}: {exc}") from None
        return cls(patterns=tuple(compiled), allow_all=allow_all)

    def allows(self, subject: str) -> bool:
        """True when a regex matches the WHOLE subject (``Remote.acl_subject()``)."""
        return self.allow_all or any(p.fullmatch(subject) for p in self.patterns)


@dataclass(frozen=True, slots=True)
class _User:
    password: bytes
    permissions: Permissions


@dataclass(frozen=True, slots=True)
class UserTable:
    """The server's users: name -> password and permissions (chisel's UserIndex)."""

    _users: Mapping[str, _User] = field(default_factory=dict)

    @classmethod
    def single(cls, user: str, password: str) -> UserTable:
        """The one ``--auth user:pass`` user, allowed everything (chisel's UserAllowAll)."""
        if not user:
            raise AuthError("user name must not be empty")
        return cls({user: _User(_secret_bytes(password), Permissions.everything())})

    @property
    def is_empty(self) -> bool:
        """No users: chisel then accepts every login without ACL checks."""
        return not self._users

    def __len__(self) -> int:
        return len(self._users)

    def merged(self, other: UserTable) -> UserTable:
        """``self`` plus ``other``, ``other`` winning: ``--auth`` added after ``--authfile``."""
        return UserTable({**self._users, **other._users})

    def authenticate(self, user: str, password: str) -> Permissions | None:
        """The user's permissions if the password is right, else None.

        An empty table accepts anyone with full access, like chisel.  The password
        comparison is constant-time, and an unknown user still costs one comparison.
        """
        if not self._users:
            return Permissions.everything()
        entry = self._users.get(user)
        given = _secret_bytes(password)
        if entry is None:
            hmac.compare_digest(given, given)
            return None
        if hmac.compare_digest(entry.password, given):
            return entry.permissions
        return None

    def credentials(self, user: str) -> tuple[bytes, Permissions] | None:
        """``user``'s :func:`password_digest` and permissions, None if no such user.

        A reload re-checks live sessions with it: the password itself never leaves.
        """
        entry = self._users.get(user)
        if entry is None:
            return None
        return password_digest(entry.password), entry.permissions


def _load_json_object(data: bytes, what: str) -> list[tuple[str, object]]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise AuthFileError(f"{what} must be bytes, got {type(data).__name__}")
    if len(data) > MAX_FILE_SIZE:
        raise AuthFileError(f"{what} is larger than {MAX_FILE_SIZE} bytes")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise AuthFileError(f"{what} is not valid UTF-8") from None
    pairs_holder: list[list[tuple[str, object]]] = []

    def keep_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
        pairs_holder.append(pairs)
        return dict(pairs)

    try:
        obj = json.loads(text, object_pairs_hook=keep_pairs)
    except (ValueError, RecursionError) as exc:
        raise AuthFileError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise AuthFileError(f"{what} must be a JSON object")
    pairs = pairs_holder[-1]  # the outermost object is built last
    if len(pairs) > MAX_ENTRIES:
        raise AuthFileError(f"{what} has more than {MAX_ENTRIES} entries")
    return pairs


def _patterns(value: object, owner: str) -> Permissions:
    if not isinstance(value, list):
        raise AuthFileError(f"{owner}: value must be a list of address regexes")
    return Permissions.from_patterns(value, owner=owner)


def parse_authfile(data: bytes) -> UserTable:
    """Parse an ``--authfile``: ``{"user:pass": ["regex", ...], ...}``.

    Messages name the user and the bad regex but never a password.
    """
    users: dict[str, _User] = {}
    for index, (key, value) in enumerate(_load_json_object(data, "authfile"), start=1):
        try:
            user, password = parse_user_pass(key)
        except AuthError as exc:
            raise AuthFileError(f"authfile entry #{index}: {exc}") from None
        owner = f"authfile user {user!r}"
        if user in users:
            raise AuthFileError(f"{owner} is defined more than once")
        users[user] = _User(_secret_bytes(password), _patterns(value, owner))
    return UserTable(users)


@dataclass(frozen=True, slots=True)
class TokenTable:
    """Gateway tokens (sent as an HTTP header) and what each may open.

    Tokens are stored as SHA-256 digests and every lookup compares against every
    entry, so timing reveals neither a token's prefix nor its length.
    """

    _entries: Sequence[tuple[bytes, Permissions]] = ()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, token: str) -> Permissions | None:
        """The permissions of ``token``, or None; no early exit on a mismatch."""
        entry = self.entry_by_digest(token_digest(token))
        return None if entry is None else entry[1]

    def lookup_digest(self, digest: bytes) -> Permissions | None:
        """The permissions of the token whose :func:`token_digest` is ``digest``, or None."""
        entry = self.entry_by_digest(digest)
        return None if entry is None else entry[1]

    def entry(self, token: str) -> tuple[int, Permissions] | None:
        """``token``'s 1-based entry number in the file (its name in logs and the status
        page, which must never show the token) and permissions; None if unknown."""
        return self.entry_by_digest(token_digest(token))

    def entry_by_digest(self, digest: bytes) -> tuple[int, Permissions] | None:
        found: tuple[int, Permissions] | None = None
        for number, (stored, permissions) in enumerate(self._entries, start=1):
            if hmac.compare_digest(stored, digest) and found is None:
                found = (number, permissions)
        return found


def parse_tokens_file(data: bytes) -> TokenTable:
    """Parse ``--tokens FILE``: ``{"<token>": ["regex", ...], ...}``, same ACL rules.

    Messages number the entries and never echo a token.
    """
    entries: list[tuple[bytes, Permissions]] = []
    seen: set[bytes] = set()
    for index, (token, value) in enumerate(_load_json_object(data, "tokens file"), start=1):
        owner = f"tokens file entry #{index}"
        if not token:
            raise AuthFileError(f"{owner}: empty token")
        digest = token_digest(token)
        if digest in seen:
            raise AuthFileError(f"{owner}: token defined more than once")
        seen.add(digest)
        entries.append((digest, _patterns(value, owner)))
    return TokenTable(tuple(entries))
