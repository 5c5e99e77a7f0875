"""SOCKS5 (RFC 1928) server handshake as bytes in, events out, the way chisel speaks it.

chisel runs armon/go-socks5 on a ``socks`` channel: no authentication inside the
tunnel (the SSH login already authenticated the peer), CONNECT only (BIND and UDP
ASSOCIATE get "command not supported"), and the reply codes below.  The parser
knows nothing of ACLs, dialing or timers: it turns the client's bytes into
``MethodsOffered`` (answer it with ``reply``), then ``ConnectRequested`` or a
``Refusal`` (send its ``reply`` when not empty, then close).  ``cc.tunnel.socks``
does the I/O around it.

A ``ConnectRequested`` names its host in the one spelling of cc.protocol.hosts, so
an ACL judges what is dialled: a DOMAINNAME that is a numeric shorthand
(``127.0.011``, read by the resolver as 127.0.0.9) is refused with reply 0x02
"not allowed by ruleset" (go-socks5 would dial it), an IPv6 literal sent as a name
is rewritten to RFC 5952 form.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

from .hosts import AmbiguousHostError, HostError, canonical_host, join_host_port

__all__ = [
    "MAX_HANDSHAKE",
    "ConnectRequested",
    "Event",
    "MethodsOffered",
    "Refusal",
    "Reply",
    "SocksServer",
    "encode_reply",
    "socks_target",
]

VERSION = 5
METHOD_NO_AUTH = 0
METHOD_NONE_ACCEPTABLE = 0xFF
CMD_CONNECT = 1
ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 1, 3, 4

#: A greeting is at most 257 bytes and a request at most 262; more is not SOCKS.
MAX_HANDSHAKE = 1024


class Reply(enum.IntEnum):
    """RFC 1928 reply codes."""

    SUCCEEDED = 0
    GENERAL_FAILURE = 1
    NOT_ALLOWED = 2
    NETWORK_UNREACHABLE = 3
    HOST_UNREACHABLE = 4
    CONNECTION_REFUSED = 5
    TTL_EXPIRED = 6
    COMMAND_NOT_SUPPORTED = 7
    ADDRESS_TYPE_NOT_SUPPORTED = 8


def socks_target(host: str, port: int) -> str:
    """``host:port`` as ACLs and remotes write it (IPv6 in brackets)."""
    return join_host_port(host, port)


def encode_reply(code: Reply, bound: tuple[str, int] | None = None) -> bytes:
    """The server's reply; ``bound`` is the outgoing socket's (ip, port) on success.

    Without one (failures) the address is 0.0.0.0:0, as go-socks5 sends.  A scoped
    IPv6 address (``fe80::1%eth0``) goes without its scope, which SOCKS cannot carry.
    """
    if bound is not None:
        ip = ipaddress.ip_address(bound[0].split("%", 1)[0])
        atyp = ATYP_IPV4 if ip.version == 4 else ATYP_IPV6
        return bytes((VERSION, code, 0, atyp)) + ip.packed + struct.pack("!H", bound[1])
    return bytes((VERSION, code, 0, ATYP_IPV4)) + bytes(6)


@dataclass(frozen=True, slots=True)
class MethodsOffered:
    """The greeting offered "no authentication": send ``reply`` and wait for the request."""

    methods: bytes
    reply: bytes


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    """A CONNECT to ``host``:``port``; ``early`` are bytes the client sent after it."""

    host: str
    port: int
    target: str
    early: bytes


@dataclass(frozen=True, slots=True)
class Refusal:
    """End the handshake: send ``reply`` when it is not empty, then close; ``reason`` to log.

    ``denied``: refused by policy (an ambiguous host), worth a warning like an ACL denial.
    """

    reply: bytes
    reason: str
    denied: bool = False


Event = MethodsOffered | ConnectRequested | Refusal


class _Incomplete(Exception):
    """More bytes are needed."""


class _Refused(Exception):
    def __init__(self, reason: str, reply: bytes = b"", *, denied: bool = False) -> None:
        super().__init__(reason)
        self.reply = reply
        self.denied = denied


class SocksServer:
    """The server side of one handshake: greeting, then one request.

    ``receive_data`` returns the events the new bytes complete (a client may send
    its greeting and request in one segment).  After ``ConnectRequested`` or a
    ``Refusal`` the parser is done and returns no more events: later bytes belong
    to the tunnel, or to nobody.  At most ``MAX_HANDSHAKE`` unparsed bytes are held.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._greeted = False
        self.done = False

    def receive_data(self, data: bytes) -> list[Event]:
        if self.done:
            return []
        self._buf += data
        if len(self._buf) > MAX_HANDSHAKE:
            return [self._finish(Refusal(b"", "handshake too long"))]
        events: list[Event] = []
        try:
            if not self._greeted:
                events.append(self._greeting())
            events.append(self._request())
        except _Incomplete:
            pass
        except _Refused as exc:
            events.append(self._finish(Refusal(exc.reply, str(exc), exc.denied)))
        return events

    def _finish(self, event: Event) -> Event:
        self.done = True
        self._buf.clear()
        return event

    def _take(self, pos: int, count: int) -> bytes:
        if len(self._buf) < pos + count:
            raise _Incomplete
        return bytes(self._buf[pos : pos + count])

    def _greeting(self) -> MethodsOffered:
        version, count = self._take(0, 2)
        if version != VERSION:
            raise _Refused(f"not SOCKS5 (version byte {version})")
        methods = self._take(2, count)
        del self._buf[: 2 + count]
        if METHOD_NO_AUTH not in methods:
            raise _Refused(
                "client offers no 'no authentication' method",
                bytes((VERSION, METHOD_NONE_ACCEPTABLE)),
            )
        self._greeted = True
        return MethodsOffered(methods, bytes((VERSION, METHOD_NO_AUTH)))

    def _request(self) -> ConnectRequested:
        version, command, _, atyp = self._take(0, 4)
        if version != VERSION:
            raise _Refused(f"not SOCKS5 (version byte {version})")
        if atyp == ATYP_IPV4:
            host, end = str(ipaddress.IPv4Address(self._take(4, 4))), 8
        elif atyp == ATYP_IPV6:
            # canonical_host: an IPv4-mapped address is ::ffff:1.2.3.4 on every Python
            host, end = canonical_host(str(ipaddress.IPv6Address(self._take(4, 16)))), 20
        elif atyp == ATYP_DOMAIN:
            (length,) = self._take(4, 1)
            host, end = _host_name(self._take(5, length)), 5 + length
        else:
            raise _Refused(
                f"address type {atyp} not supported",
                encode_reply(Reply.ADDRESS_TYPE_NOT_SUPPORTED),
            )
        (port,) = struct.unpack("!H", self._take(end, 2))
        early = bytes(self._buf[end + 2 :])
        if command != CMD_CONNECT:
            raise _Refused(
                f"command {command} not supported", encode_reply(Reply.COMMAND_NOT_SUPPORTED)
            )
        if atyp == ATYP_DOMAIN:
            host = _canonical_name(host, port)
        event = ConnectRequested(host, port, socks_target(host, port), early)
        self._finish(event)
        return event


def _host_name(name: bytes) -> str:
    """A DOMAINNAME as the client sent it; refused when it could confuse an ACL or a dial.

    The name is in its one spelling (cc.protocol.hosts), as remotes and channel
    targets are: ``127.1`` is refused (it would be dialled as 127.0.0.1 while the ACL
    matched the text), ``0::1`` becomes ``::1``.
    """
    try:
        host = name.decode("ascii")
    except UnicodeDecodeError:
        raise _Refused("non-ASCII host name", encode_reply(Reply.HOST_UNREACHABLE)) from None
    if not host or any(c in host for c in "\x00/\\@ []") or not host.isprintable():
        raise _Refused(f"bad host name {host[:60]!r}", encode_reply(Reply.HOST_UNREACHABLE))
    return host


def _canonical_name(host: str, port: int) -> str:
    """A DOMAINNAME in its one spelling (cc.protocol.hosts), so the ACL sees what is dialled.

    A numeric shorthand (``127.0.011``, which the resolver reads as 127.0.0.9) is
    refused with "connection not allowed by ruleset" (0x02), not dialled: the ACL
    would have judged one text while the dial went to another address, so this is
    a policy refusal, not an unreachable host.  An IPv6 literal sent as a name comes
    back in RFC 5952 form; an invalid one is an unreachable host, as a bad name is.
    """
    try:
        return canonical_host(host)
    except AmbiguousHostError as exc:
        raise _Refused(
            f"CONNECT {join_host_port(host, port)} refused: {exc}",
            encode_reply(Reply.NOT_ALLOWED),
            denied=True,
        ) from None
    except HostError as exc:
        raise _Refused(str(exc), encode_reply(Reply.HOST_UNREACHABLE)) from None
