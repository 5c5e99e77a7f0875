"""Which paths and methods a target lets through, matched on one spelling of each path.

A target's ``policy`` is ``*`` or a map from path keys to methods, as socket-gateway
has it: ``*`` matches any path, a key starting with ``^`` is a regular expression
searched in the path, any other key ``/x`` is compiled to ``^/x$``.  Keys are tried in
file order and the first that matches decides; its value is ``*`` or a list of methods
(case-sensitive) that may include ``*``.  No matching key: denied.

The policy is an allow-list, so the danger is a path that matches an allowed key
but means another path to the target (``/api/../admin`` against ``^/api/``).  So
the path is put in one spelling *before* matching, and that spelling is what the
target receives (:func:`normalize_path`): nothing the target normalises afterwards
can lead it elsewhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ProtocolError, TargetsError

__all__ = ["ANY", "PathError", "Policy", "Rule", "compile_policy", "normalize_path"]

#: The wildcard, as a path key, a method list or a whole policy.
ANY = "*"

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
#: Characters refused anywhere in a path: controls, space, backslash (Windows servers
#: and some frameworks read it as ``/``), ``#`` (never sent by a client) and non-ASCII.
_BAD_CHARS = frozenset(chr(c) for c in range(0x21)) | {"\x7f", "\\", "#"}
#: Encoded characters refused: ``/`` and ``\\`` (a target that decodes them before
#: routing sees other segments than we matched) and NUL.
_BAD_ENCODED = frozenset({"2F", "5C", "00"})
_METHOD_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


class PathError(ProtocolError):
    """A request path with no safe spelling; the client gets 400."""


def _decode_unreserved(path: str) -> str:
    """Decode ``%XX`` of unreserved characters, upper-case the others (RFC 3986 6.2.2)."""
    out: list[str] = []
    i = 0
    while True:
        j = path.find("%", i)
        if j < 0:
            out.append(path[i:])
            return "".join(out)
        out.append(path[i:j])
        code = path[j + 1 : j + 3]
        if len(code) != 2 or not set(code) <= _HEX:
            raise PathError(f"bad percent-encoding {path[j : j + 3]!r}")
        code = code.upper()
        if code in _BAD_ENCODED:
            raise PathError(f"encoded %{code} is not accepted in paths")
        char = chr(int(code, 16))
        out.append(char if char in _UNRESERVED else "%" + code)
        i = j + 3


def normalize_path(path: str) -> str:
    """``path`` (no query) in its one spelling, or PathError.

    Percent-encoded unreserved characters are decoded (``%2e`` is ``.``), dot
    segments removed (RFC 3986 5.2.4, never above the root), runs of ``/``
    collapsed; a segment ``..;x`` or ``.;x`` (which Tomcat-like servers read as a
    dot segment) and encoded ``/``, ``\\`` or NUL are refused.
    """
    if not path.startswith("/"):
        raise PathError("the path must start with '/'")
    if not path.isascii() or any(ch in _BAD_CHARS for ch in path):
        raise PathError("the path has a character that is not accepted")
    if "%" in path:
        path = _decode_unreserved(path)
    if "/." not in path and "//" not in path:
        return path
    segments = path.split("/")[1:]
    last = len(segments) - 1
    out: list[str] = []
    for index, segment in enumerate(segments):
        if segment in (".", ".."):
            if segment == ".." and out:
                out.pop()
            if index == last:
                out.append("")
            continue
        if segment == "" and index != last:
            continue
        if segment.startswith(("..;", ".;")):
            raise PathError(f"dot segment with parameters {segment[:40]!r}")
        out.append(segment)
    return "/" + "/".join(out)


@dataclass(frozen=True, slots=True)
class Rule:
    """One policy key: its text, the compiled pattern (None: ``*``), its methods (None: any)."""

    key: str
    pattern: re.Pattern[str] | None
    methods: frozenset[str] | None

    def matches(self, path: str) -> bool:
        return self.pattern is None or self.pattern.search(path) is not None


@dataclass(frozen=True, slots=True)
class Policy:
    """A compiled policy; ``rules`` None is ``*`` (everything passes)."""

    rules: tuple[Rule, ...] | None = None

    def allows(self, method: str, path: str) -> bool:
        """Whether the first rule matching ``path`` (normalised, no query) allows ``method``."""
        if self.rules is None:
            return True
        for rule in self.rules:
            if rule.matches(path):
                return rule.methods is None or method in rule.methods
        return False


def _compile_key(key: str) -> re.Pattern[str] | None:
    if key == ANY:
        return None
    text = key if key.startswith("^") else f"^{key}$"
    try:
        return re.compile(text)
    except re.error as exc:
        raise TargetsError(f"policy key {key!r} is not a valid regular expression: {exc}") from None


def compile_methods(value: object, key: str) -> frozenset[str] | None:
    """A policy value: ``*`` or a list of methods (None: any method)."""
    if value == ANY:
        return None
    if not isinstance(value, list | tuple) or not value:
        raise TargetsError(f"policy {key!r}: methods must be '*' or a non-empty list")
    methods: set[str] = set()
    for method in value:
        if not isinstance(method, str) or not method or not set(method) <= _METHOD_CHARS:
            raise TargetsError(f"policy {key!r}: {method!r} is not a method")
        if method == ANY:
            return None
        methods.add(method)
    return frozenset(methods)


def compile_policy(value: object) -> Policy:
    """``*`` or a list of (key, methods) pairs in file order; TargetsError names the key."""
    if value == ANY or value is None:
        return Policy()
    if not isinstance(value, list | tuple):
        raise TargetsError("policy must be '*' or a map from paths to methods")
    rules = []
    for key, methods in value:
        if not isinstance(key, str) or not key:
            raise TargetsError(f"policy key {key!r} must be a non-empty string")
        if key != ANY and not key.startswith(("^", "/")):
            raise TargetsError(f"policy key {key!r} must be '*', start with '/' or '^'")
        rules.append(Rule(key, _compile_key(key), compile_methods(methods, key)))
    return Policy(tuple(rules))
