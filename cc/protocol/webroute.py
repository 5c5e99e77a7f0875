"""Named services on the gateway's port, wire-compatible with Remoted API Server (WebRoute).

cubiclesoft's remoted-api-server lets a server behind a firewall *register* a path
(a WebSocket upgrade carrying the server API key) and clients reach it through the
public port with the client API key over WebRoute: a ``GET`` with ``Upgrade:
webroute`` and a random ``WebRoute-ID``.  The gateway parks the client, tells the
registered server ``{"ipaddr","id","timeout"}`` in a WebSocket text frame, the server
opens a second connection with the same ID, and both legs get the same 101 and
become one raw byte pipe.

This module holds every decision of that protocol and none of its I/O: which request
is which (:func:`decide`), the exact status lines and JSON bodies remoted sends
(captured from its ``server.php`` byte for byte), the accept key, the keys
(:class:`KeyTable`: hashed, compared in constant time, with per-path permissions),
which registered server gets the next client (:class:`Directory`) and when an idle
registration is pinged or dropped (:class:`IdleProbe`).  ``cc.gateway.webroute``
does the sockets and timers.  Our own ends are here too: ``R:svc/PATH:HOST:PORT``
remotes, the requests the SDK sends and the checks of their answers, and the reader
of the gateway's notifications (I/O in ``cc.transport.webroute``,
``cc.connector.webroute`` and ``cc connect``).

Where we differ from remoted, on purpose:

* several servers may register one path; new clients are spread over them in turn
  and the clients parked for a server that drops are offered to another one
  (remoted answers the second registration 400; ``exclusive`` restores that);
* keys may be limited to paths (anchored regexes, as in the authfile), and wrong
  keys cost the source like wrong passwords;
* only a *server* key may answer a parked client (remoted links any two legs with
  the same ID, even two clients), an ID already parked is refused rather than
  overwritten, and link keys ignore the query string (remoted keys on the raw
  target, so a client URL with ``?x=1`` could never be linked);
* a requested timeout is capped at :data:`MAX_TIMEOUT` (remoted has no cap);
* at most ``max_waiting`` clients wait per path (remoted parks any number): the
  next one gets 503 with ``Retry-After`` at once (remoted has no "busy" answer;
  its SDK reports any non-101 as ``Server returned: 503 Service Unavailable``).
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, Protocol, TypeVar

from cc import __version__

from .acl import Permissions
from .errors import AuthFileError, ProtocolError, RemoteError
from .http import Request, Response, accept_key, build_request
from .remote import validate_host

__all__ = [
    "BUSY_RETRY_AFTER",
    "DEFAULT_MAX_WAITING",
    "DEFAULT_TIMEOUT",
    "ID_GUID",
    "KEEPALIVE_INTERVAL",
    "KEY_HEADER",
    "MAX_TIMEOUT",
    "Directory",
    "IdleProbe",
    "KeyTable",
    "Link",
    "Notification",
    "NotificationReader",
    "Park",
    "Parked",
    "Refuse",
    "Register",
    "Role",
    "Routes",
    "ServiceRemote",
    "WebRouteRefused",
    "banned_response",
    "busy_response",
    "check_registration",
    "check_switch",
    "decide",
    "is_service_remote",
    "is_webroute_request",
    "new_webroute_id",
    "notification",
    "parse_keys_file",
    "parse_service_remote",
    "registration_request",
    "switching_protocols",
    "webroute_accept",
    "webroute_request",
]

#: remoted's WebRoute GUID: ``Sec-WebRoute-Accept = base64(sha1(id + ID_GUID))``.
ID_GUID = "BE7204BD-47E6-49EE-9B0D-016E370644B2"
#: The API key header (any case, as every HTTP header).
KEY_HEADER = "X-Remoted-APIKey"
#: Seconds a client waits parked, and a linked pair may idle; a request may ask for more.
DEFAULT_TIMEOUT = 60
#: Longest timeout a request may ask for (remoted has none: a day is plenty).
MAX_TIMEOUT = 86400
#: Seconds of silence before a registered server is pinged; as long again to answer.
KEEPALIVE_INTERVAL = 30.0
#: Longest WebRoute-ID accepted (the SDK sends 64 characters).
MAX_ID_LENGTH = 256
#: Clients that may wait at once for one path's server (0: no cap, as remoted).  A
#: healthy server links each within a round trip, so a full queue means a stuck one.
DEFAULT_MAX_WAITING = 128
#: ``Retry-After`` (seconds) of the 503 a client gets when its path's queue is full.
BUSY_RETRY_AFTER = 5

# -- what remoted sends, byte for byte ---------------------------------------------

#: remoted's ``SetResponseNoCache()`` headers, minus its Last-Modified (the time of day).
_NO_CACHE = (
    b"Expires: Tue, 03 Jul 2001 06:00:00 GMT\r\n"
    b"Cache-Control: max-age=0, no-cache, must-revalidate, proxy-revalidate\r\n"
)
_REASONS = {
    400: b"Bad Request",
    403: b"Forbidden",
    429: b"Too Many Requests",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
}

BODY_INVALID_KEY = (
    b'{"success":false,"error":"Invalid or missing \'X-Remoted-APIKey\' header.",'
    b'"errorcode":"invalid_missing_apikey"}'
)
BODY_MISSING_DESTINATION = (
    b'{"success":false,"error":"Requested destination does not exist at this time.",'
    b'"errorcode":"missing_destination"}'
)
#: a server key sent neither a WebSocket upgrade nor a WebRoute upgrade with a parked ID
BODY_INVALID_SERVER_REQUEST = (
    b'{"success":false,"error":"Invalid request.  Expected WebSocket or WebRoute upgrade.",'
    b'"errorcode":"invalid_request"}'
)
#: a client key on a served path without a WebRoute upgrade
BODY_INVALID_CLIENT_REQUEST = (
    b'{"success":false,"error":"Invalid request.  Expected WebRoute upgrade.",'
    b'"errorcode":"invalid_request"}'
)
#: ours: a right key on a path it may not use
BODY_PATH_NOT_ALLOWED = (
    b'{"success":false,"error":"This API key may not use the requested path.",'
    b'"errorcode":"path_not_allowed"}'
)
#: ours: as many clients as --remoted-max-waiting already wait for the path's server
BODY_DESTINATION_BUSY = (
    b'{"success":false,"error":"Too many clients are waiting for the requested destination.",'
    b'"errorcode":"destination_busy"}'
)
#: ours: the source is banned for repeated wrong keys
BODY_TOO_MANY_ATTEMPTS = (
    b'{"success":false,"error":"Too many invalid API keys from your address.",'
    b'"errorcode":"too_many_attempts"}'
)

#: WebRouteServer::ProcessNewConnection: no Host, no Upgrade/Connection or no WebRoute-ID
WEBROUTE_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\n\r\n"
#: WebRouteServer::ProcessNewConnection: a WebRoute-Version other than 1
WEBROUTE_UPGRADE_REQUIRED = b"HTTP/1.1 426 Upgrade Required\r\nWebRoute-Version: 1\r\n\r\n"
#: a client still parked when its timeout is over
GATEWAY_TIMEOUT = (
    b"HTTP/1.1 504 Gateway Timeout\r\nWebRoute-Version: 1\r\nConnection: close\r\n\r\n"
)
#: WebSocketServer::ProcessNewConnection's refusals of a registration
WEBSOCKET_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"
WEBSOCKET_UPGRADE_REQUIRED = (
    b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nConnection: close\r\n\r\n"
)
WEBSOCKET_FORBIDDEN = b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n"


def json_response(status: int, body: bytes, extra: bytes = b"") -> bytes:
    """remoted's JSON answer (``SetResponseNoCache`` + JSON), closing the connection.

    remoted keeps the connection alive after an error; the gateway closes it, since
    neither the SDK nor any WebRoute client sends a second request after one.
    """
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n%s%sContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % (status, _REASONS[status], _NO_CACHE, extra, len(body))
    ) + body


def banned_response(retry_after: float) -> bytes:
    """429 for a source banned for wrong keys; ``Retry-After`` in whole seconds."""
    extra = b"Retry-After: %d\r\n" % math.ceil(retry_after)
    return json_response(429, BODY_TOO_MANY_ATTEMPTS, extra)


def busy_response(retry_after: int = BUSY_RETRY_AFTER) -> bytes:
    """503 for a client whose path already has ``max_waiting`` clients waiting."""
    return json_response(503, BODY_DESTINATION_BUSY, b"Retry-After: %d\r\n" % retry_after)


def webroute_accept(webroute_id: str) -> str:
    """``Sec-WebRoute-Accept`` for a WebRoute-ID: base64(sha1(id + GUID))."""
    digest = hashlib.sha1((webroute_id + ID_GUID).encode("utf-8", "surrogateescape")).digest()
    return base64.b64encode(digest).decode("ascii")


def switching_protocols(webroute_id: str) -> bytes:
    """The 101 both legs of a link get, at the same moment."""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: webroute\r\nConnection: Upgrade\r\n"
        b"Sec-WebRoute-Accept: %s\r\n\r\n" % webroute_accept(webroute_id).encode("ascii")
    )


def websocket_accepted(request: Request) -> bytes:
    """The 101 of a registration, header for header as remoted's WebSocketServer."""
    key = request.headers.get("Sec-WebSocket-Key") or ""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: %s\r\n\r\n" % accept_key(key).encode("ascii")
    )


def notification(ipaddr: str, webroute_id: str, timeout: int) -> str:
    """The text frame a registered server gets for a parked client (PHP's json_encode)."""
    return json.dumps(
        {"ipaddr": ipaddr, "id": webroute_id, "timeout": timeout}, separators=(",", ":")
    )


# -- keys ------------------------------------------------------------------------------


class Role(Enum):
    """What a key lets its holder do."""

    CLIENT = "client"  # reach registered paths over WebRoute
    SERVER = "server"  # register paths (WebSocket) and answer parked clients (WebRoute)


@dataclass(frozen=True, slots=True)
class Grant:
    """A key that matched: its role, the paths it may use, and a name for logs."""

    role: Role
    paths: Permissions
    name: str


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True)
class KeyTable:
    """API keys as SHA-256 digests, each with a role and the paths it may use.

    Every lookup compares the digest with every entry (no early exit), so timing
    tells neither which key nor how much of one matched.  Client keys are tried
    before server keys, as remoted does, so a key in both roles acts as a client.
    ``exclusive``: one server per path, as remoted (a second registration gets 400).
    """

    entries: tuple[tuple[bytes, Grant], ...] = ()
    exclusive: bool = False

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def from_keys(
        cls, server_key: str | None, client_key: str | None, *, exclusive: bool = False
    ) -> KeyTable:
        """``--remoted-server-key`` / ``--remoted-client-key``: all paths, like remoted."""
        entries = []
        if client_key:
            grant = Grant(Role.CLIENT, Permissions.everything(), "client key")
            entries.append((_digest(client_key), grant))
        if server_key:
            grant = Grant(Role.SERVER, Permissions.everything(), "server key")
            entries.append((_digest(server_key), grant))
        return cls(tuple(entries), exclusive)

    def merged(self, other: KeyTable) -> KeyTable:
        """Both tables' keys (``other`` after ``self``); exclusive if either says so."""
        return KeyTable(self.entries + other.entries, self.exclusive or other.exclusive)

    def lookup(self, key: str) -> Grant | None:
        digest = _digest(key)
        found: Grant | None = None
        for role in (Role.CLIENT, Role.SERVER):
            for stored, grant in self.entries:
                if hmac.compare_digest(stored, digest) and grant.role is role and found is None:
                    found = grant
        return found


def _key_entries(value: object, role: Role, where: str) -> list[tuple[bytes, Grant]]:
    if not isinstance(value, dict):
        raise AuthFileError(f"{where} must be an object of key -> [path regex, ...]")
    entries = []
    for index, (key, paths) in enumerate(value.items(), start=1):
        owner = f"{where} entry #{index}"
        if not isinstance(key, str) or not key:
            raise AuthFileError(f"{owner}: empty key")
        if not isinstance(paths, list):
            raise AuthFileError(f"{owner}: value must be a list of path regexes")
        grant = Grant(role, Permissions.from_patterns(paths, owner=owner), f"{role.value} {owner}")
        entries.append((_digest(key), grant))
    return entries


def parse_keys_file(data: bytes) -> KeyTable:
    """``--remoted-keys FILE``: remoted's own ``config.dat``, or ours with per-path keys.

    remoted's ``{"server_apikey": "...", "client_apikey": "...", ...}`` gives both keys
    every path (its other fields are ignored).  Ours::

        {"server_keys": {"<key>": ["/api/.*"]}, "client_keys": {"<key>": ["*"]},
         "exclusive": false}

    where each key's regexes must match the WHOLE request path (``""``/``"*"``: any).
    Messages number the entries and never echo a key.
    """
    try:
        obj = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise AuthFileError(f"keys file is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise AuthFileError("keys file must be a JSON object")
    exclusive = obj.get("exclusive", False)
    if not isinstance(exclusive, bool):
        raise AuthFileError("keys file: 'exclusive' must be true or false")
    entries: list[tuple[bytes, Grant]] = []
    for field_name in ("client_apikey", "server_apikey"):
        key = obj.get(field_name)
        if key is None:
            continue
        if not isinstance(key, str) or not key:
            raise AuthFileError(f"keys file: '{field_name}' must be a non-empty string")
        role = Role.CLIENT if field_name.startswith("client") else Role.SERVER
        entries.append((_digest(key), Grant(role, Permissions.everything(), field_name)))
    for field_name, role in (("client_keys", Role.CLIENT), ("server_keys", Role.SERVER)):
        if field_name in obj:
            entries += _key_entries(obj[field_name], role, f"keys file '{field_name}'")
    if not entries:
        raise AuthFileError(
            "keys file has no keys (server_apikey/client_apikey or server_keys/client_keys)"
        )
    return KeyTable(tuple(entries), exclusive)


# -- requests ------------------------------------------------------------------------


def is_webroute_request(request: Request) -> bool:
    """Whether the gateway hands a request to the named services rather than chisel/HTTP.

    ``Upgrade: webroute`` always; a WebSocket upgrade only with ``X-Remoted-APIKey``
    (chisel's upgrade never carries it).
    """
    upgrade = (request.headers.get("Upgrade") or "").lower()
    if "webroute" in upgrade:
        return True
    return "websocket" in upgrade and request.headers.get(KEY_HEADER) is not None


def _upgrades_to(request: Request, protocol: str) -> bool:
    """remoted's test: GET, "upgrade" somewhere in Connection, ``protocol`` in Upgrade."""
    return (
        request.method == "GET"
        and "upgrade" in (request.headers.get("Connection") or "").lower()
        and protocol in (request.headers.get("Upgrade") or "").lower()
    )


def requested_timeout(request: Request, default: int = DEFAULT_TIMEOUT) -> int:
    """``max(default, WebRoute-Timeout)`` as remoted computes it, capped at MAX_TIMEOUT."""
    value = (request.headers.get("WebRoute-Timeout") or "").strip()
    try:
        asked = float(value)
    except ValueError:
        return default
    if not math.isfinite(asked):
        return default
    return min(MAX_TIMEOUT, max(default, int(asked)))


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer ``data`` and close.  ``wrong_key``: a failed login to count against the source.

    ``busy``: the path's waiting queue is full (counted and logged apart: a stuck server).
    """

    data: bytes
    reason: str
    wrong_key: bool = False
    busy: bool = False


@dataclass(frozen=True, slots=True)
class Register:
    """A server registers ``path``: answer ``data`` (101) and keep its WebSocket."""

    path: str
    data: bytes
    grant: Grant


@dataclass(frozen=True, slots=True)
class Park:
    """A client for ``path``: hold it (no answer yet) and notify a registered server."""

    path: str
    webroute_id: str
    timeout: int
    grant: Grant


@dataclass(frozen=True, slots=True)
class Link:
    """A server's second connection for the parked client ``webroute_id``."""

    path: str
    webroute_id: str
    timeout: int
    grant: Grant


Decision = Refuse | Register | Park | Link


def _webroute_head_problem(request: Request) -> bytes | None:
    """WebRouteServer's own checks once the request is known to be a WebRoute upgrade."""
    webroute_id = request.headers.get("WebRoute-ID")
    if request.headers.get("Host") is None or not webroute_id or len(webroute_id) > MAX_ID_LENGTH:
        return WEBROUTE_BAD_REQUEST
    if (request.headers.get("WebRoute-Version") or "").strip() != "1":
        return WEBROUTE_UPGRADE_REQUIRED
    return None


def _websocket_head_problem(request: Request) -> bytes | None:
    """WebSocketServer's checks of a registration (Origin required, as remoted)."""
    headers = request.headers
    if headers.get("Host") is None or not headers.get("Sec-WebSocket-Key"):
        return WEBSOCKET_BAD_REQUEST
    if (headers.get("Sec-WebSocket-Version") or "").strip() != "13":
        return WEBSOCKET_UPGRADE_REQUIRED
    if headers.get("Origin") is None:
        return WEBSOCKET_FORBIDDEN
    return None


class Routes(Protocol):
    """What :func:`decide` asks of the directory."""

    def servers(self, path: str) -> tuple[object, ...]: ...

    def is_parked(self, path: str, webroute_id: str) -> bool: ...

    def waiting(self, path: str) -> int: ...


def decide(
    request: Request,
    keys: KeyTable,
    directory: Routes,
    default_timeout: int = DEFAULT_TIMEOUT,
    max_waiting: int = 0,
) -> Decision:
    """What to do with one WebRoute or registration request, in remoted's order.

    Key first (403 for none or a wrong one), then, for a server key, a WebRoute
    upgrade answering a parked client or else a WebSocket registration (400 when it
    is neither); for a client key, a served path (502 otherwise), a WebRoute upgrade
    (400), its head (raw 400/426), room in the path's queue (503 when ``max_waiting``
    clients already wait; 0: no cap), and then the client is parked.
    """
    key = request.headers.get(KEY_HEADER)
    grant = keys.lookup(key) if key else None
    if grant is None:
        why = "wrong X-Remoted-APIKey" if key else "no X-Remoted-APIKey"
        return Refuse(json_response(403, BODY_INVALID_KEY), why, wrong_key=True)
    path = request.path
    if not grant.paths.allows(path):
        return Refuse(json_response(403, BODY_PATH_NOT_ALLOWED), f"{grant.name} may not use {path}")
    timeout = requested_timeout(request, default_timeout)
    if grant.role is Role.SERVER:
        webroute_id = request.headers.get("WebRoute-ID") or ""
        if _upgrades_to(request, "webroute") and directory.is_parked(path, webroute_id):
            problem = _webroute_head_problem(request)
            if problem is not None:
                return Refuse(problem, "bad WebRoute head")
            return Link(path, webroute_id, timeout, grant)
        if _upgrades_to(request, "websocket"):
            if keys.exclusive and directory.servers(path):
                return Refuse(
                    json_response(400, BODY_INVALID_SERVER_REQUEST), f"{path} already served"
                )
            problem = _websocket_head_problem(request)
            if problem is not None:
                return Refuse(problem, "bad WebSocket head")
            return Register(path, websocket_accepted(request), grant)
        why = "unknown WebRoute-ID" if _upgrades_to(request, "webroute") else "no upgrade"
        return Refuse(json_response(400, BODY_INVALID_SERVER_REQUEST), why)
    if not directory.servers(path):
        return Refuse(json_response(502, BODY_MISSING_DESTINATION), f"nobody serves {path}")
    if not _upgrades_to(request, "webroute"):
        return Refuse(json_response(400, BODY_INVALID_CLIENT_REQUEST), "no WebRoute upgrade")
    problem = _webroute_head_problem(request)
    if problem is not None:
        return Refuse(problem, "bad WebRoute head")
    webroute_id = request.headers.get("WebRoute-ID") or ""
    if directory.is_parked(path, webroute_id):
        return Refuse(WEBROUTE_BAD_REQUEST, "WebRoute-ID already waiting")
    if max_waiting and directory.waiting(path) >= max_waiting:
        return Refuse(busy_response(), f"{max_waiting} clients already wait for {path}", busy=True)
    return Park(path, webroute_id, timeout, grant)


# -- who serves what -----------------------------------------------------------------

S = TypeVar("S")
C = TypeVar("C")


@dataclass(eq=False, slots=True)
class Parked(Generic[S, C]):
    """A client waiting for a server's second connection."""

    path: str
    webroute_id: str
    client: C
    timeout: int
    #: the server whose WebSocket was told about it
    offered_to: S


@dataclass(slots=True)
class _Path(Generic[S]):
    servers: list[S] = field(default_factory=list)
    turn: int = 0


class Directory(Generic[S, C]):
    """Registered servers per path and parked clients per (path, WebRoute-ID).

    ``S`` and ``C`` are whatever the I/O layer uses for a registration and a parked
    client; this class only keeps and picks them.
    """

    def __init__(self) -> None:
        self._paths: dict[str, _Path[S]] = {}
        self._parked: dict[tuple[str, str], Parked[S, C]] = {}
        #: parked clients per path (bounded by ``decide``'s ``max_waiting``)
        self._waiting: dict[str, int] = {}

    def servers(self, path: str) -> tuple[S, ...]:
        entry = self._paths.get(path)
        return tuple(entry.servers) if entry else ()

    def paths(self) -> list[str]:
        return sorted(self._paths)

    def register(self, path: str, server: S) -> None:
        self._paths.setdefault(path, _Path()).servers.append(server)

    def pick(self, path: str, avoid: Iterable[S] = ()) -> S | None:
        """The next server of ``path`` in turn (round robin), skipping ``avoid`` if it can."""
        entry = self._paths.get(path)
        if entry is None or not entry.servers:
            return None
        skip = set(map(id, avoid))
        for _ in range(len(entry.servers)):
            server = entry.servers[entry.turn % len(entry.servers)]
            entry.turn = (entry.turn + 1) % len(entry.servers)
            if id(server) not in skip:
                return server
        return None

    def unregister(self, path: str, server: S) -> list[Parked[S, C]]:
        """Forget ``server``; return the parked clients it was told about.

        The caller offers them to another server of the path (``pick``) or, when
        none is left, closes them as remoted does.
        """
        entry = self._paths.get(path)
        if entry is not None and server in entry.servers:
            entry.servers.remove(server)
            if not entry.servers:
                del self._paths[path]
        return [p for p in self._parked.values() if p.offered_to is server]

    def is_parked(self, path: str, webroute_id: str) -> bool:
        return bool(webroute_id) and (path, webroute_id) in self._parked

    def waiting(self, path: str) -> int:
        """Clients parked for ``path`` now."""
        return self._waiting.get(path, 0)

    def park(self, parked: Parked[S, C]) -> None:
        key = (parked.path, parked.webroute_id)
        if key not in self._parked:
            self._waiting[parked.path] = self._waiting.get(parked.path, 0) + 1
        self._parked[key] = parked

    def take(self, path: str, webroute_id: str) -> Parked[S, C] | None:
        """Remove and return the parked client (linked, gone or timed out)."""
        parked = self._parked.pop((path, webroute_id), None)
        if parked is not None:
            left = self._waiting[path] - 1
            if left:
                self._waiting[path] = left
            else:
                del self._waiting[path]
        return parked

    def parked(self) -> list[Parked[S, C]]:
        return list(self._parked.values())


class IdleProbe:
    """A registered server's liveness, as remoted's WebSocket keepalive.

    After ``interval`` seconds without a byte from the server it is pinged; if
    another ``interval`` passes in silence, it is gone and its path is removed.
    """

    PING = "ping"
    DROP = "drop"

    def __init__(self, interval: float, now: float) -> None:
        self.interval = interval
        self._last = now
        self._pinged_at: float | None = None

    def traffic(self, now: float) -> None:
        """Bytes arrived (a pong or anything else): the server is alive."""
        self._last = now
        self._pinged_at = None

    def next_check(self) -> float:
        """When :meth:`check` has something to say, unless traffic comes first."""
        if self._pinged_at is not None:
            return self._pinged_at + self.interval
        return self._last + self.interval

    def check(self, now: float) -> str | None:
        """``PING`` (send one now), ``DROP`` (the ping went unanswered), or None."""
        if now < self.next_check():
            return None
        if self._pinged_at is not None:
            return self.DROP
        self._pinged_at = now
        return self.PING


# -- our own ends: registering a service, reaching one ------------------------------------

#: How a service remote starts: ``R:svc/PATH:HOST:PORT``.
SERVICE_PREFIX = "R:svc/"
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True, slots=True)
class ServiceRemote:
    """``R:svc/PATH:HOST:PORT``: register PATH, link each of its clients to HOST:PORT."""

    path: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"R:svc{self.path}:{self.host}:{self.port}"

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


def is_service_remote(text: str) -> bool:
    return text.startswith(SERVICE_PREFIX)


def parse_service_remote(text: str) -> ServiceRemote:
    """Parse ``R:svc/PATH:HOST:PORT`` (HOST may be ``[v6]``); RemoteError if malformed.

    PATH is everything between ``R:svc`` and the last ``:HOST:PORT``, so it starts
    with ``/`` and cannot itself hold a colon; it is the exact path clients ask for.
    """
    if not is_service_remote(text):
        raise RemoteError(f"not a service remote (R:svc/PATH:HOST:PORT): {text!r}")
    rest, sep, port_text = text[len(SERVICE_PREFIX) - 1 :].rpartition(":")
    if not sep or not port_text.isdigit():
        raise RemoteError(f"service remote needs :HOST:PORT at the end: {text!r}")
    if rest.endswith("]"):
        start = rest.rfind(":[")
        path, host = (rest[:start], rest[start + 1 :]) if start >= 0 else ("", "")
    else:
        path, _, host = rest.rpartition(":")
    port = int(port_text)
    if not host or not path:
        raise RemoteError(f"service remote needs R:svc/PATH:HOST:PORT: {text!r}")
    if not path.startswith("/") or len(path) > 1024:
        raise RemoteError(f"service remote needs a path starting with '/': {text!r}")
    if any(ch in path for ch in " ?#\t\r\n\0"):
        raise RemoteError(f"service path may not hold spaces, '?' or '#': {text!r}")
    if not 1 <= port <= 65535:
        raise RemoteError(f"port {port} out of range 1..65535 in {text!r}")
    return ServiceRemote(path, validate_host(host), port)


def new_webroute_id() -> str:
    """64 random letters and digits, as the PHP SDK's ``GenerateString(64)``."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(64))


def webroute_request(
    target: str, host: str, key: str, webroute_id: str, timeout: int | None = None
) -> bytes:
    """A WebRoute upgrade as the PHP SDK sends it (its header order), with our User-Agent."""
    headers = [
        ("Host", host),
        ("User-Agent", f"cloud-connector/{__version__}"),
        (KEY_HEADER, key),
        ("Connection", "keep-alive, Upgrade"),
        ("Pragma", "no-cache"),
        ("WebRoute-Version", "1"),
        ("WebRoute-ID", webroute_id),
    ]
    if timeout is not None:
        headers.append(("WebRoute-Timeout", str(int(timeout))))
    headers.append(("Upgrade", "webroute"))
    return build_request("GET", target, headers)


def registration_request(target: str, host: str, key: str, websocket_key: str) -> bytes:
    """A registration (WebSocket upgrade with the server key), with the Origin remoted wants."""
    return build_request(
        "GET",
        target,
        [
            ("Host", host),
            ("User-Agent", f"cloud-connector/{__version__}"),
            (KEY_HEADER, key),
            ("Connection", "keep-alive, Upgrade"),
            ("Origin", f"http://{host}"),
            ("Pragma", "no-cache"),
            ("Sec-WebSocket-Key", websocket_key),
            ("Sec-WebSocket-Version", "13"),
            ("Upgrade", "websocket"),
        ],
    )


class WebRouteRefused(ProtocolError):
    """The gateway answered something other than the expected 101.

    ``errorcode`` is remoted's JSON ``errorcode`` when the body carried one.
    """

    def __init__(self, status: int, reason: str, errorcode: str = "") -> None:
        detail = f" ({errorcode})" if errorcode else ""
        super().__init__(f"{status} {reason}{detail}")
        self.status = status
        self.reason = reason
        self.errorcode = errorcode


def _errorcode(body: bytes) -> str:
    """remoted's ``errorcode`` from a JSON body that came with the head, if any."""
    start = body.find(b"{")
    if start < 0:
        return ""
    try:
        obj = json.loads(body[start:].decode("utf-8", "replace"))
    except ValueError:
        return ""
    code = obj.get("errorcode") if isinstance(obj, dict) else None
    return code if isinstance(code, str) else ""


def check_switch(response: Response, rest: bytes, webroute_id: str) -> None:
    """A WebRoute answer must be 101 with the right Sec-WebRoute-Accept; else raise."""
    if response.status != 101:
        raise WebRouteRefused(response.status, response.reason, _errorcode(rest))
    if response.headers.get("Sec-WebRoute-Accept") != webroute_accept(webroute_id):
        raise ProtocolError("the server's Sec-WebRoute-Accept header is missing or wrong")


def check_registration(response: Response, rest: bytes, websocket_key: str) -> None:
    """A registration answer must be 101 with the right Sec-WebSocket-Accept; else raise."""
    if response.status != 101:
        raise WebRouteRefused(response.status, response.reason, _errorcode(rest))
    if response.headers.get("Sec-WebSocket-Accept") != accept_key(websocket_key):
        raise ProtocolError("the server's Sec-WebSocket-Accept header is missing or wrong")


@dataclass(frozen=True, slots=True)
class Notification:
    """A registered server's news: the client at ``ipaddr`` waits as ``webroute_id``."""

    ipaddr: str
    webroute_id: str
    timeout: int


class NotificationReader:
    """Text frames from the gateway, as a stream, in; notifications out.

    The WebSocket layer hands out payload bytes without message boundaries; each
    message is one JSON object, so objects are read one after another.  Anything
    that is not a notification is skipped; the buffer is bounded.
    """

    MAX_BUFFER = 64 * 1024

    def __init__(self) -> None:
        self._text = ""
        self._decoder = json.JSONDecoder()
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, data: bytes) -> list[Notification]:
        self._text += self._utf8.decode(data)
        out: list[Notification] = []
        while True:
            text = self._text.lstrip()
            if not text:
                self._text = ""
                return out
            try:
                obj, end = self._decoder.raw_decode(text)
            except ValueError:
                if len(text) > self.MAX_BUFFER:
                    raise ProtocolError("unreadable notification from the gateway") from None
                self._text = text
                return out
            self._text = text[end:]
            note = _notification(obj)
            if note is not None:
                out.append(note)


def _notification(obj: object) -> Notification | None:
    if not isinstance(obj, dict):
        return None
    ipaddr, webroute_id, timeout = obj.get("ipaddr"), obj.get("id"), obj.get("timeout")
    if not isinstance(webroute_id, str) or not webroute_id or len(webroute_id) > MAX_ID_LENGTH:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        timeout = DEFAULT_TIMEOUT
    return Notification(ipaddr if isinstance(ipaddr, str) else "?", webroute_id, timeout)
