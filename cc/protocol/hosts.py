"""One spelling per address, so that ACLs see what the dialer will dial.

The C resolver reads any string ``inet_aton`` accepts as an IPv4 address:
``127.0.011`` is 127.0.0.9 (octal), ``127.1`` is 127.0.0.1, ``0x7f.1`` and
``2130706433`` too.  An ACL regex is matched against the text, the dial goes to
the number, so a target in one of these shorthands can reach an address the ACL
never named (and chisel's unescaped ``.`` makes such mismatches easy).  IPv6 has
the same problem in a milder form: ``[0:0::1]`` and ``[::1]`` are one address.

The rule here, applied wherever a target or ACL subject is formed (remotes,
channel targets, SOCKS requests):

* a canonical dotted quad (``10.0.0.1``) and host names pass unchanged;
* any other string the resolver would read as an IPv4 number is refused with a
  message that names the address it stands for;
* IPv6 literals are rewritten to RFC 5952 form (unambiguous, so no refusal),
  IPv4-mapped ones as ``::ffff:1.2.3.4`` (section 5) on every Python: 3.11 writes
  ``::ffff:102:304``, 3.13 the dotted form, and an ACL must not change meaning with it;
* a host the dialler would read differently from its text is refused too: one
  with a NUL (the C resolver stops there, so ``10.0.0.5\0.example.com`` dials
  10.0.0.5 while an ACL matched the whole text), a blank or a control character,
  one whose IDNA form cannot be made (asyncio and uvloop raise UnicodeError
  instead of OSError), and a non-ASCII spelling of an address (fullwidth
  digits read 127.0.0.1 once IDNA has mapped them, as both loops do before resolving).

Sockets want hosts without brackets and people read ``[::1]:80``, so the two small
converters between those spellings (``bare_host``, ``join_host_port``) live here too.
"""

from __future__ import annotations

import ipaddress

from .errors import RemoteError

__all__ = [
    "AmbiguousHostError",
    "HostError",
    "bare_host",
    "canonical_host",
    "inet_aton_value",
    "join_host_port",
    "split_listen_address",
]

_HEX = frozenset("0123456789abcdefABCDEF")
_NUMERIC_CHARS = frozenset("0123456789abcdefABCDEFxX.")
#: Largest value of the last part for 1, 2, 3 and 4 parts (it fills the remaining bytes).
_LAST_PART_MAX = (0xFFFFFFFF, 0xFFFFFF, 0xFFFF, 0xFF)


class HostError(RemoteError):
    """A host with no accepted spelling: an invalid IPv6 literal, or a numeric shorthand."""


class AmbiguousHostError(HostError):
    """A numeric shorthand: its text and the address the resolver dials disagree."""


def _part_value(part: str) -> int | None:
    """One ``inet_aton`` part: ``0x`` hex, leading-zero octal, or decimal; None if invalid."""
    if part[:2] in ("0x", "0X"):
        digits = part[2:]
        if not digits or not all(ch in _HEX for ch in digits):
            return None
        return int(digits, 16)
    if not part.isascii() or not part.isdigit():
        return None
    if len(part) > 1 and part[0] == "0":
        if any(ch in "89" for ch in part):
            return None
        return int(part, 8)
    return int(part)


def inet_aton_value(text: str) -> int | None:
    """The 32-bit address glibc's ``inet_aton`` reads from ``text``, or None if it reads none.

    Pure Python (no socket call) so that the sans-I/O core can use it; the tests
    check it against ``socket.inet_aton`` on random strings.
    """
    if not text or not set(text) <= _NUMERIC_CHARS or not text[0].isdigit():
        return None
    parts = text.split(".")
    if len(parts) > 4 or any(not part for part in parts):
        return None
    values = [_part_value(part) for part in parts]
    if any(value is None for value in values):
        return None
    numbers = [value for value in values if value is not None]
    *head, last = numbers
    if any(value > 0xFF for value in head) or last > _LAST_PART_MAX[len(head)]:
        return None
    address = 0
    for index, value in enumerate(head):
        address |= value << (24 - 8 * index)
    return address | last


def _canonical_ipv6(inner: str, original: str) -> str:
    address, _, zone = inner.partition("%")
    try:
        parsed = ipaddress.IPv6Address(address)
    except ValueError:
        raise HostError(f"invalid IPv6 literal {original!r}") from None
    mapped = parsed.ipv4_mapped
    text = f"::ffff:{mapped}" if mapped is not None else parsed.compressed
    return f"{text}%{zone}" if zone else text


def _dialled_name(host: str) -> str:
    """The ASCII name the event loops resolve: ``str.encode("idna")``, as both loops do."""
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise HostError(
            f"invalid host name {host[:80]!r} (a label is empty, too long or not IDNA)"
        ) from None


def canonical_host(host: str) -> str:
    """``host`` in its one accepted spelling; AmbiguousHostError for IPv4 shorthands.

    Brackets are kept as given (``[::1]`` stays bracketed, a bare ``::1`` bare),
    because remotes and channel targets carry them and SOCKS hosts do not.
    """
    if not host:
        raise HostError("empty host")
    if any(ch.isspace() or not ch.isprintable() for ch in host):
        raise HostError(f"host {host[:80]!r} contains a blank or a control character")
    if host.startswith("[") and host.endswith("]"):
        return f"[{_canonical_ipv6(host[1:-1], host)}]"
    if ":" in host:
        return _canonical_ipv6(host, host)
    name = _dialled_name(host)
    if name != host and (":" in name or inet_aton_value(name) is not None):
        raise HostError(
            f"host {host!r} is the address {name} in other characters; write {name} (or a name)"
        )
    value = inet_aton_value(host)
    if value is None:
        return host
    canonical = str(ipaddress.IPv4Address(value))
    if canonical != host:
        raise AmbiguousHostError(
            f"ambiguous numeric host {host!r}: the resolver reads it as {canonical}; "
            f"write {canonical} (or a name)"
        )
    return host


def bare_host(host: str) -> str:
    """``host`` without IPv6 brackets (``[::1]`` -> ``::1``): what bind() and connect() take."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def join_host_port(host: str, port: int) -> str:
    """``host:port`` as chisel and Go's ``net.JoinHostPort`` write it: ``[::1]:80`` for IPv6."""
    host = bare_host(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_listen_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``PORT``, ``:PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` -> (bare host, port).

    Only a port means ``default_host`` (loopback: an endpoint is private until the
    operator names an interface, ``0.0.0.0:9090`` for all).  HostError if malformed.
    """
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("["):
        if not host.endswith("]"):
            raise HostError(f"{text!r}: unclosed '[' in the address")
        host = host[1:-1]
    elif ":" in host:
        raise HostError(f"{text!r}: put an IPv6 address in brackets, as [::1]:9090")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise HostError(f"{text!r}: the port must be a number from 1 to 65535")
    return host or default_host, int(port_text)
