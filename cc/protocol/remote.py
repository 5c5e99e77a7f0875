"""chisel's ``<remote>`` grammar and its JSON form, as chisel v1.11.5 share/settings/remote.go.

A remote travels twice: as CLI text the user typed and as JSON inside the ``config``
request, so both codecs live here and build the same validated, frozen ``Remote``.

The parser runs chisel's own algorithm (tokens read from back to front; the first port
seen is the remote port and the default local port, the first host seen is the remote
host, later ones fill the local side) so every form chisel documents means the same
here.  Deliberate differences, each turning a silent surprise of chisel into an error:

* chisel finds tokens with ``(\\[[^\\[\\]]+\\]|[^\\[\\]:]+):?`` and skips any character
  that does not match, so ``3000::80``, ``3000:`` and ``a]b:80`` pass; here each field
  must be non-empty, separated by exactly one ``:``, brackets balanced.
* chisel's ``isPort`` failing makes a token a host, so ``70000:80`` dials host
  ``70000`` and ``0:80`` host ``0``; here an all-digit token is a port and must be in
  1..65535.  ``+80`` (Go's Atoi accepts it) is a host error here.
* chisel's ``isHost`` is ``url.Parse("//" + s)``, which takes ``a/b``, ``user@h``
  and ``h?x``; here a host is a bracketed IPv6 literal or a name of letters, digits,
  ``-._~`` and non-ASCII letters (IDN).
* a repeated field (a third port, a third host) overwrites silently in chisel; here it
  is an error, as is a ``/udp`` suffix on a host, and a bare ``stdio`` with no port.
* ``/UDP`` is matched case-insensitively by chisel but kept upper case, which later
  fails to listen; here it is normalised to ``udp``.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .errors import RemoteError
from .hosts import canonical_host, join_host_port

__all__ = [
    "MAX_REMOTE_LENGTH",
    "Proto",
    "Remote",
    "canonical_target",
    "check_unique",
    "parse_outsystemscc_remote",
    "parse_remote",
    "split_target",
    "validate_host",
]

#: Longest remote spec we parse; real ones are < 300 characters.
MAX_REMOTE_LENGTH = 1024
_MAX_HOST_LENGTH = 255
_REVERSE_PREFIX = "R:"
_SOCKS = "socks"
_STDIO = "stdio"
_WILDCARDS = frozenset({"0.0.0.0", "[::]", "[0:0:0:0:0:0:0:0]"})

_PORT_RE = re.compile(r"([0-9]+)(?:/(tcp|udp))?", re.ASCII | re.IGNORECASE)
_PROTO_SUFFIX_RE = re.compile(r"/(tcp|udp)", re.ASCII | re.IGNORECASE)
_NAME_ASCII_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")


class Proto(enum.StrEnum):
    """Layer-4 protocol of a remote; the values are chisel's wire strings (a str enum)."""

    TCP = "tcp"
    UDP = "udp"


def validate_host(host: str) -> str:
    """Return ``host`` if it is a dialable host token, else raise RemoteError.

    Hosts keep IPv6 brackets, as chisel does, because ``host + ":" + port`` is the
    address format every peer dials and the JSON carries.
    """
    if not isinstance(host, str) or not host:
        raise RemoteError("empty host")
    if len(host) > _MAX_HOST_LENGTH:
        raise RemoteError(f"host longer than {_MAX_HOST_LENGTH} characters: {host[:40]!r}...")
    if host.startswith("["):
        inner = host[1:-1] if host.endswith("]") else ""
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise RemoteError(f"invalid IPv6 literal {host!r}") from None
        return host
    for ch in host:
        if ch in _NAME_ASCII_OK or (ord(ch) > 0x7F and ch.isprintable() and not ch.isspace()):
            continue
        raise RemoteError(f"invalid character {ch!r} in host {host!r}")
    return host


def _check_port(value: int, what: str, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RemoteError(f"{what} must be an int, got {type(value).__name__}")
    if value == 0 and allow_zero:
        return
    if not 1 <= value <= 65535:
        raise RemoteError(f"{what} {value} out of range 1..65535")


@dataclass(frozen=True, slots=True)
class Remote:
    """One tunnel endpoint pair, validated at construction.

    SOCKS remotes have no remote address: ``remote_host`` is ``""`` and ``remote_port``
    is ``0``, which the JSON form writes as chisel's empty strings.
    """

    local_host: str
    local_port: int
    local_proto: Proto
    remote_host: str
    remote_port: int
    remote_proto: Proto
    socks: bool = False
    reverse: bool = False
    stdio: bool = False

    def __post_init__(self) -> None:
        for name in ("socks", "reverse", "stdio"):
            if not isinstance(getattr(self, name), bool):
                raise RemoteError(f"{name} must be a bool")
        for name in ("local_proto", "remote_proto"):
            if not isinstance(getattr(self, name), Proto):
                raise RemoteError(f"{name} must be a Proto")
        # One spelling per address (cc.protocol.hosts), so ACL subjects name what is dialled.
        object.__setattr__(self, "local_host", canonical_host(validate_host(self.local_host)))
        _check_port(self.local_port, "local port")
        if self.socks:
            if self.remote_host or self.remote_port:
                raise RemoteError("a socks remote has no remote host or port")
            if self.remote_proto is not Proto.TCP:
                raise RemoteError("only TCP SOCKS is supported")
        else:
            object.__setattr__(self, "remote_host", canonical_host(validate_host(self.remote_host)))
            _check_port(self.remote_port, "remote port")
        if self.local_proto is not self.remote_proto:
            raise RemoteError("cross-protocol remotes are not supported yet")
        if self.stdio and self.reverse:
            raise RemoteError("stdio cannot be reversed")
        if self.local_host == "R" and not self.reverse and not self.stdio:
            # encode() would write "R:<port>:...", which reads back as a reverse remote
            raise RemoteError("local host 'R' reads as the reverse prefix 'R:'; write 'r'")

    def local(self) -> str:
        """chisel's ``Local()``: the listen address, or ``stdio``."""
        if self.stdio:
            return _STDIO
        return f"{self.local_host}:{self.local_port}"

    def remote(self) -> str:
        """chisel's ``Remote()``: ``host:port`` or ``socks``, no protocol suffix."""
        if self.socks:
            return _SOCKS
        return f"{self.remote_host}:{self.remote_port}"

    def target(self) -> str:
        """The ``chisel`` channel's extra data for this remote.

        chisel sends ``Remote()`` for TCP and ``Remote() + "/udp"`` for UDP
        (tunnel_in_proxy.go, tunnel_in_proxy_udp.go); IPv6 hosts keep their brackets.
        """
        if self.remote_proto is Proto.UDP:
            return self.remote() + "/udp"
        return self.remote()

    def acl_subject(self) -> str:
        """What the server matches the user's ACL regexes against, as chisel's ``UserAddr()``.

        Reverse: ``R:<local-host>:<local-port>``; forward: ``<remote-host>:<remote-port>``
        (no ``/udp``: chisel's ACL cannot tell TCP from UDP).  Deliberate difference: a
        forward SOCKS remote is ``socks`` here; chisel builds ``":"`` from its empty
        remote fields (``return r.RemoteHost + ":" + r.RemotePort``).
        """
        if self.reverse:
            return f"R:{self.local_host}:{self.local_port}"
        if self.socks:
            return _SOCKS
        return f"{self.remote_host}:{self.remote_port}"

    def encode(self) -> str:
        """chisel's ``Encode()``: a full spec that ``parse_remote`` reads back to ``self``."""
        remote = self.remote()
        if self.remote_proto is Proto.UDP:
            remote += "/udp"
        text = f"{self.local()}:{remote}"
        return _REVERSE_PREFIX + text if self.reverse else text

    def __str__(self) -> str:
        """chisel's ``String()``, used in log lines such as ``proxy#R:8081=>host:8393``."""
        text = _REVERSE_PREFIX if self.reverse else ""
        text += _trim_prefix(self.local(), "0.0.0.0:")
        text += "=>" + _trim_prefix(self.remote(), "127.0.0.1:")
        if self.remote_proto is Proto.UDP:
            text += "/udp"
        return text

    def to_json(self) -> dict[str, object]:
        """The remote as Go marshals chisel's ``settings.Remote`` (ports are strings)."""
        return {
            "LocalHost": self.local_host,
            "LocalPort": str(self.local_port),
            "LocalProto": self.local_proto.value,
            "RemoteHost": self.remote_host,
            "RemotePort": str(self.remote_port) if self.remote_port else "",
            "RemoteProto": self.remote_proto.value,
            "Socks": self.socks,
            "Reverse": self.reverse,
            "Stdio": self.stdio,
        }

    @classmethod
    def from_json(cls, obj: object) -> Remote:
        """Build a Remote from one element of the config's ``Remotes`` list.

        Field names must match exactly (Go's json.Marshal always writes them so); unknown
        fields are ignored for forward compatibility; every type is checked because the
        peer is untrusted until the config has been validated.  Hosts pass the same
        ``validate_host`` rule as parsed remotes, so a chisel client whose host only Go's
        lenient ``url.Parse`` takes (``a/b``, ``user@h``) is refused here.
        """
        if not isinstance(obj, Mapping):
            raise RemoteError(f"remote must be a JSON object, got {type(obj).__name__}")
        get = _JsonFields(obj)
        socks = get.boolean("Socks")
        return cls(
            local_host=get.string("LocalHost"),
            local_port=_json_port(get.string("LocalPort"), "LocalPort", allow_empty=False),
            local_proto=_json_proto(get.string("LocalProto"), "LocalProto"),
            remote_host=get.string("RemoteHost"),
            remote_port=_json_port(get.string("RemotePort"), "RemotePort", allow_empty=socks),
            remote_proto=_json_proto(get.string("RemoteProto"), "RemoteProto"),
            socks=socks,
            reverse=get.boolean("Reverse"),
            stdio=get.boolean("Stdio"),
        )


class _JsonFields:
    """Typed getters over a JSON object that name the missing or mistyped field."""

    __slots__ = ("_obj",)

    def __init__(self, obj: Mapping[object, object]) -> None:
        self._obj = obj

    def _get(self, key: str) -> object:
        if key not in self._obj:
            raise RemoteError(f"remote is missing field {key!r}")
        return self._obj[key]

    def string(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise RemoteError(f"remote field {key!r} must be a string")
        return value

    def boolean(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise RemoteError(f"remote field {key!r} must be a boolean")
        return value


def _json_port(text: str, key: str, *, allow_empty: bool) -> int:
    if text == "" and allow_empty:
        return 0
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        raise RemoteError(f"remote field {key!r} is not a port: {text[:20]!r}")
    port = int(text)
    _check_port(port, key)
    return port


def _json_proto(text: str, key: str) -> Proto:
    try:
        return Proto(text)
    except ValueError:
        raise RemoteError(
            f"remote field {key!r} must be 'tcp' or 'udp', got {text[:20]!r}"
        ) from None


def _trim_prefix(text: str, prefix: str) -> str:
    return text[len(prefix) :] if text.startswith(prefix) else text


def _tokenize(text: str) -> list[str]:
    """Split on ``:`` outside ``[...]``; every field non-empty (stricter than chisel)."""
    tokens: list[str] = []
    i, n = 0, len(text)
    while True:
        if text[i] == "[":
            end = text.find("]", i)
            if end < 0:
                raise RemoteError("unclosed '['")
            token = text[i : end + 1]
            i = end + 1
            if "[" in token[1:]:
                raise RemoteError("unbalanced brackets")
            if i < n and text[i] != ":":
                raise RemoteError(f"expected ':' after {token!r}")
        else:
            end = text.find(":", i)
            end = n if end < 0 else end
            token = text[i:end]
            i = end
            if not token:
                raise RemoteError("empty field")
            if "[" in token or "]" in token:
                raise RemoteError("unbalanced brackets")
        tokens.append(token)
        if i >= n:
            return tokens
        i += 1  # the ':' separator
        if i >= n:
            raise RemoteError("empty field after the last ':'")


def parse_remote(text: str) -> Remote:
    """Parse a chisel ``<remote>`` the way chisel's DecodeRemote does (see module doc).

    ``[<local-host>:][<local-port>:]<remote-host>:<remote-port>[/proto]`` with chisel's
    defaults: local host ``0.0.0.0`` (``127.0.0.1`` for socks), local port = remote
    port (``1080`` for socks), remote host ``127.0.0.1``, protocol ``tcp``.
    """
    if not isinstance(text, str):
        raise RemoteError(f"remote must be a string, got {type(text).__name__}")
    if len(text) > MAX_REMOTE_LENGTH:
        raise RemoteError(f"remote longer than {MAX_REMOTE_LENGTH} characters")
    original = text
    reverse = text.startswith(_REVERSE_PREFIX)
    if reverse:
        text = text[len(_REVERSE_PREFIX) :]
    if not text:
        raise RemoteError(f"invalid remote {original!r}: empty")
    try:
        return _parse_tokens(_tokenize(text), reverse)
    except RemoteError as exc:
        raise RemoteError(f"invalid remote {original!r}: {exc}") from None


def _parse_tokens(parts: list[str], reverse: bool) -> Remote:
    if len(parts) >= 5:
        raise RemoteError("too many fields (at most 4)")
    socks = stdio = False
    local_host: str | None = None
    remote_host: str | None = None
    local_port: int | None = None
    remote_port: int | None = None
    local_proto: Proto | None = None
    remote_proto: Proto | None = None
    ports_seen = 0
    # Back to front, so the remote side is filled first and provides the defaults.
    for i in range(len(parts) - 1, -1, -1):
        part = parts[i]
        if i == len(parts) - 1 and part == _SOCKS:
            socks = True
            continue
        if i == 0 and part == _STDIO:
            stdio = True
            continue
        port_match = _PORT_RE.fullmatch(part)
        if port_match is not None:
            digits, proto_text = port_match.groups()
            port = int(digits) if len(digits) <= 5 else 0
            if not 1 <= port <= 65535:
                raise RemoteError(f"port {digits[:12]} out of range 1..65535")
            if proto_text is not None:
                proto = Proto(proto_text.lower())
                if remote_port is None:
                    remote_proto = proto
                elif local_proto is None:
                    local_proto = proto
            ports_seen += 1
            if ports_seen > (1 if socks else 2):
                raise RemoteError("too many ports")
            if not socks and remote_port is None:
                remote_port = port
            local_port = port
            continue
        if _PROTO_SUFFIX_RE.fullmatch(part[-4:]):
            raise RemoteError(f"protocol suffix must follow a port, not {part!r}")
        validate_host(part)
        if not socks and remote_port is None:
            raise RemoteError("missing port (a remote needs at least a remote port)")
        if not socks and remote_host is None:
            remote_host = part
        elif local_host is None:
            local_host = part
        else:
            raise RemoteError("too many hosts")
    if stdio and (local_host is not None or ports_seen > (0 if socks else 1)):
        raise RemoteError("stdio takes no local host or port")
    if socks:
        local_host = local_host or "127.0.0.1"
        local_port = local_port or 1080
    else:
        if remote_port is None or local_port is None:
            raise RemoteError("missing port (a remote needs at least a remote port)")
        local_host = local_host or "0.0.0.0"
        remote_host = remote_host or "127.0.0.1"
    remote_proto = remote_proto or Proto.TCP
    return Remote(
        local_host=local_host,
        local_port=local_port,
        local_proto=local_proto or remote_proto,
        remote_host=remote_host or "",
        remote_port=remote_port or 0,
        remote_proto=remote_proto,
        socks=socks,
        reverse=reverse,
        stdio=stdio,
    )


def parse_outsystemscc_remote(text: str) -> Remote:
    """Parse a remote for ``outsystemscc``: reverse TCP/UDP tunnels only.

    outsystemscc itself passes any chisel remote through DecodeRemote, but the Private
    Gateway only serves reverse tunnels and outsystemscc documents only
    ``R:<local-port>:<remote-host>:<remote-port>``; refusing the rest up front gives a
    clear message instead of a late server refusal.  ``R:<local-host>:...`` is accepted
    because outsystemscc accepts it.
    """
    remote = parse_remote(text)
    if not remote.reverse:
        raise RemoteError(
            f"outsystemscc supports only reverse remotes "
            f"'R:<local-port>:<remote-host>:<remote-port>[/udp]', got {text!r}"
        )
    if remote.socks:
        raise RemoteError(f"outsystemscc does not support socks remotes: {text!r}")
    return remote


def check_unique(remotes: Iterable[Remote], *, port_only: bool = False) -> None:
    """Refuse two remotes that would listen on the same address, before connecting.

    chisel itself only refuses a second stdio remote and lets the second listener fail
    at bind time.  Here two remotes clash when they listen on the same side (reverse on
    the server, forward on the client) with the same protocol and port and the same
    host or a wildcard host.  ``port_only=True`` is outsystemscc's stricter rule
    (``return first.LocalPort == second.LocalPort``, whatever the protocol), which also
    keeps its ``ports=`` query parameter free of duplicates.
    """
    seen: list[Remote] = []
    stdio_seen = False
    for remote in remotes:
        if remote.stdio:
            if stdio_seen:
                raise RemoteError("only one stdio remote is allowed")
            stdio_seen = True
            if not port_only:
                continue
        for other in seen:
            if port_only:
                clash = other.local_port == remote.local_port
            else:
                clash = (
                    other.reverse == remote.reverse
                    and other.local_proto is remote.local_proto
                    and other.local_port == remote.local_port
                    and _hosts_overlap(other.local_host, remote.local_host)
                )
            if clash:
                raise RemoteError(
                    f"remotes {other.encode()!r} and {remote.encode()!r} "
                    f"use the same local port {remote.local_port}"
                )
        seen.append(remote)


def _hosts_overlap(a: str, b: str) -> bool:
    return a.lower() == b.lower() or a in _WILDCARDS or b in _WILDCARDS


def split_target(target: str) -> tuple[str, int]:
    """A channel target ``host:port`` or ``[v6]:port`` -> (host, port); ValueError otherwise.

    The host comes back canonical (cc.protocol.hosts): an IPv4 shorthand such as
    ``127.0.011:80`` is refused, so what is dialled is what an ACL saw.
    """
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"bad target {target!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if "[" in host or "]" in host:  # "[[::]]:1": Go's SplitHostPort refuses it too
        raise ValueError(f"bad brackets in {target!r}")
    value = int(port)
    if not 0 < value < 65536:
        raise ValueError(f"bad port in {target!r}")
    return canonical_host(host), value


def canonical_target(target: str) -> str:
    """``target`` (``host:port``) in the one spelling ACLs are matched against; ValueError."""
    host, port = split_target(target)
    return join_host_port(host, port)
