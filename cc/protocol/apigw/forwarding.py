"""The headers a request and its response carry across the gateway.

Towards the target: hop-by-hop fields (RFC 9110 7.6.1, and every field that
``Connection`` names) are dropped, ``Host`` becomes the target's, and the client is
described in ``X-Forwarded-For/-Host/-Port/-Proto`` and ``X-Real-IP``.  What a client
says about itself in those fields is believed only from a ``--trusted-proxies``
address; from anyone else they are replaced, so a client cannot pose as another.

Back to the client: hop-by-hop fields are dropped and the target's own name is
replaced by the public one where a client would follow it: ``Location`` and
``Content-Location`` URLs and ``Set-Cookie``'s ``Domain`` (socket-gateway rewrites
the name wherever it appears in any field, which mangles bodies of JSON-ish
headers and values that merely mention it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..http import Headers
from .targets import Target

__all__ = [
    "HOP_BY_HOP",
    "ClientInfo",
    "TrustedProxies",
    "request_headers",
    "response_headers",
]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
#: Fields about the client that only a trusted proxy may set.
_CLIENT_FIELDS = frozenset(
    {"x-forwarded-for", "x-forwarded-host", "x-forwarded-port", "x-forwarded-proto", "x-real-ip"}
)
_UNTRUSTED_ONLY = frozenset({"forwarded"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """``--trusted-proxies``: addresses whose X-Forwarded-* fields are believed."""

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks = tuple(networks)

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        """``CIDR,CIDR,...`` (a bare address is a /32 or /128); ValueError names the bad one."""
        networks = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"{part!r} is not an address or CIDR block") from None
        return cls(networks)

    def __contains__(self, address: str) -> bool:
        if not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who sent a request and where it arrived."""

    #: the peer's address (no port)
    peer: str
    #: the app port it connected to
    local_port: int
    #: the peer is a trusted proxy
    trusted: bool = False


#: What is dropped when ``Connection`` names nothing more (most messages): computed once.
#: Content-Length is never dropped for a Connection token: the body would then be
#: read by the target as the next request.
_DROP = HOP_BY_HOP - {"content-length"}
_DROP_UNTRUSTED = _DROP | _CLIENT_FIELDS | _UNTRUSTED_ONLY


def _connection_tokens(headers: Headers) -> set[str]:
    return {
        token.strip().lower()
        for value in headers.get_all("Connection")
        for token in value.split(",")
        if token.strip()
    }


def _dropped(headers: Headers, base: frozenset[str]) -> frozenset[str] | set[str]:
    """``base`` and what ``Connection`` names (never Content-Length)."""
    if "connection" not in headers.index:
        return base
    return (base | _connection_tokens(headers)) - {"content-length"}


def _real_ip(chain: Sequence[str], trusted: TrustedProxies) -> str:
    """The client: the rightmost address of the chain that is not a trusted proxy."""
    for address in reversed(chain):
        if address not in trusted:
            return address
    return chain[0]


def request_headers(
    headers: Headers,
    target: Target,
    client: ClientInfo,
    public_host: str,
    trusted: TrustedProxies,
    *,
    upgrade: str | None = None,
    chunked: bool = False,
) -> list[tuple[str, str]]:
    """The fields to send the target, ``Host`` first.

    ``public_host`` is the request's Host value; ``upgrade`` the protocol being
    upgraded to (then ``Connection: upgrade`` and ``Upgrade`` are kept), ``chunked``
    adds ``Transfer-Encoding: chunked`` for a body that arrived chunked.
    """
    drop = _dropped(headers, _DROP if client.trusted else _DROP_UNTRUSTED)
    out: list[tuple[str, str]] = [("Host", target.authority)]
    forwarded: dict[str, str] = {}
    for name, value in headers.items:
        lname = name.lower()
        if lname == "host" or lname in drop:
            continue
        if lname in _CLIENT_FIELDS:
            if lname == "x-forwarded-for" and lname in forwarded:
                forwarded[lname] += ", " + value
            else:
                forwarded.setdefault(lname, value)
            continue
        out.append((name, value))
    incoming = forwarded.get("x-forwarded-for")
    chain = [a.strip() for a in incoming.split(",") if a.strip()] if incoming else []
    chain.append(client.peer)
    out.append(("X-Forwarded-For", ", ".join(chain)))
    out.append(("X-Forwarded-Host", forwarded.get("x-forwarded-host", public_host)))
    out.append(("X-Forwarded-Port", forwarded.get("x-forwarded-port", str(client.local_port))))
    out.append(("X-Forwarded-Proto", forwarded.get("x-forwarded-proto", "http")))
    out.append(("X-Real-IP", _real_ip(chain, trusted) if client.trusted else client.peer))
    if chunked:
        out.append(("Transfer-Encoding", "chunked"))
    if upgrade is not None:
        out.append(("Connection", "upgrade"))
        out.append(("Upgrade", upgrade))
    return out


def _rewrite_url(value: str, target: Target, public_scheme: str, public_host: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return value
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    authority, tail = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
    if authority.lower() not in (target.authority.lower(), target.address.lower()):
        return value
    return f"{public_scheme}://{public_host}{tail}"


def _rewrite_cookie(value: str, target: Target, public_name: str) -> str:
    parts = value.split(";")
    changed = False
    for index, part in enumerate(parts[1:], start=1):
        name, sep, domain = part.partition("=")
        if not sep or name.strip().lower() != "domain":
            continue
        if domain.strip().lstrip(".").lower() != target.hostname.lower():
            continue
        changed = True
        # an IP address cannot be a cookie domain: the cookie becomes host-only
        parts[index] = (
            ""
            if public_name.startswith("[") or _is_ipv4(public_name)
            else (f" Domain={public_name}")
        )
    if not changed:
        return value
    return ";".join(p for p in parts if p != "")


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def response_headers(
    headers: Headers,
    target: Target,
    public_scheme: str,
    public_host: str,
    public_name: str,
    *,
    keep_upgrade: bool = False,
) -> list[tuple[str, str]]:
    """The target's fields for the client: hop-by-hop dropped, its own name made public.

    ``public_host`` is the request's Host value (with port), ``public_name`` the same
    without port.  Framing fields (Content-Length, Transfer-Encoding) are the
    caller's; ``keep_upgrade`` keeps ``Upgrade`` for a 101.
    """
    drop = _dropped(headers, _DROP)
    if keep_upgrade:
        drop = drop - {"upgrade"}
    out: list[tuple[str, str]] = []
    for name, value in headers.items:
        lname = name.lower()
        if lname in drop:
            continue
        if lname in ("location", "content-location"):
            value = _rewrite_url(value, target, public_scheme, public_host)
        elif lname == "set-cookie":
            value = _rewrite_cookie(value, target, public_name)
        out.append((name, value))
    return out
