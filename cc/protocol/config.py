"""The payload of the ``config`` global request: chisel's ``settings.Config`` as JSON.

The client sends it right after authentication and the server decides from it which
listeners to open, so encoding must be byte-identical to Go's ``json.Marshal`` (peers
and captures compare bytes) and decoding must treat it as hostile input: bounded in size
and count, every field's type checked.

Decoding differs from Go's lenient ``json.Unmarshal`` on purpose: field names are
matched exactly (Go matches them case-insensitively, but every Go peer marshals the
exact names, so a different spelling means a foreign or broken client), both fields and
all nine fields of each remote are required (Go fills zero values), and duplicate keys,
invalid UTF-8 and NaN/Infinity are refused (Go keeps the last key, substitutes U+FFFD).
Unknown fields are ignored, as Go does, so a newer chisel that adds one still connects.

Our own extension rides on that rule: a connector that serves the HTTP API gateway
adds ``"HTTPGateway":{"Identifiers":[...],"Targets":["host:port",...]}`` after
``Remotes`` (chisel's server ignores it; a connector without ``--identifier`` or
``--http-target`` sends chisel's bytes exactly).  Declaring it in the config, not in
a later request, makes it part of the one request the gateway accepts or refuses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import ConfigError, RemoteError
from .remote import Remote

__all__ = [
    "DEFAULT_MAX_CONFIG_SIZE",
    "DEFAULT_MAX_REMOTES",
    "MAX_CONFIG_DEPTH",
    "MAX_HTTP_ENTRIES",
    "Config",
    "HTTPOffer",
    "decode_config",
    "encode_config",
    "go_json_string",
]

#: Largest ``config`` payload accepted; a real one with 100 remotes is ~17 KB.
DEFAULT_MAX_CONFIG_SIZE = 64 * 1024
#: Most remotes accepted in one config; each may become a listener.
DEFAULT_MAX_REMOTES = 1000
#: Deepest nesting accepted; a real config has 3 levels (object, Remotes, remote).  A
#: fixed limit, so that every Python refuses the same payloads: json's own limit is the
#: interpreter's (3.11 raises RecursionError near 1,000 levels, 3.13 parses 5,000).
MAX_CONFIG_DEPTH = 32

_REMOTE_KEYS = (
    "LocalHost",
    "LocalPort",
    "LocalProto",
    "RemoteHost",
    "RemotePort",
    "RemoteProto",
    "Socks",
    "Reverse",
    "Stdio",
)
_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


#: Most identifiers, and most HTTP targets, one connector may declare.
MAX_HTTP_ENTRIES = 256
_MAX_HTTP_TEXT = 300


@dataclass(frozen=True, slots=True)
class HTTPOffer:
    """What a connector offers the HTTP API gateway: its identifiers and dialable targets.

    ``targets`` are ``host:port`` in canonical spelling (cc.protocol.hosts).
    """

    identifiers: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.identifiers or self.targets)


@dataclass(frozen=True, slots=True)
class Config:
    """chisel's handshake config: the client's version and all of its remotes."""

    version: str
    remotes: tuple[Remote, ...]
    #: our extension (empty: not sent)
    http: HTTPOffer = HTTPOffer()

    def __post_init__(self) -> None:
        if not isinstance(self.version, str):
            raise ConfigError("config version must be a string")
        if not isinstance(self.remotes, tuple) or not all(
            isinstance(r, Remote) for r in self.remotes
        ):
            raise ConfigError("config remotes must be a tuple of Remote")


def go_json_string(text: str) -> str:
    """Quote ``text`` exactly as Go's ``json.Marshal`` does (HTML-safe, Go >= 1.22).

    Go escapes ``<``, ``>``, ``&``, U+2028 and U+2029 as ``\\u00XX``/``\\u20XX``, uses short
    escapes only for ``"`` ``\\`` ``\\b`` ``\\f`` ``\\n`` ``\\r`` ``\\t``, writes other non-ASCII
    raw, and replaces invalid UTF-8 (here: lone surrogates) with ``\\ufffd``.
    """
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif code < 0x20 or ch in "<>&" or code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _go_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return go_json_string(value)
    raise TypeError(f"unexpected JSON value type {type(value).__name__}")


def encode_config(cfg: Config) -> bytes:
    """Encode ``cfg`` as the exact bytes chisel's ``EncodeConfig`` sends.

    Zero remotes encode as ``null``, as Go marshals the client's nil slice.
    """
    if cfg.remotes:
        items = []
        for remote in cfg.remotes:
            fields = remote.to_json()
            body = ",".join(f'"{key}":{_go_value(fields[key])}' for key in _REMOTE_KEYS)
            items.append("{" + body + "}")
        remotes = "[" + ",".join(items) + "]"
    else:
        remotes = "null"
    text = '{"Version":' + go_json_string(cfg.version) + ',"Remotes":' + remotes
    if cfg.http:
        identifiers = ",".join(go_json_string(i) for i in cfg.http.identifiers)
        targets = ",".join(go_json_string(t) for t in cfg.http.targets)
        text += f',"HTTPGateway":{{"Identifiers":[{identifiers}],"Targets":[{targets}]}}'
    return (text + "}").encode("utf-8")


def _reject_duplicates(pairs: Sequence[tuple[str, object]]) -> dict[str, object]:
    obj: dict[str, object] = {}
    for key, value in pairs:
        if key in obj:
            raise ConfigError(f"config repeats the key {key[:40]!r}")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> object:
    raise ConfigError(f"config contains the non-JSON number {name}")


def _nested_deeper_than(value: object, limit: int) -> bool:
    """Whether parsed JSON nests lists and objects more than ``limit`` deep (no recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > limit:
            return True
        stack.extend((child, level + 1) for child in children)
    return False


def decode_config(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_CONFIG_SIZE,
    max_remotes: int = DEFAULT_MAX_REMOTES,
) -> Config:
    """Decode and validate a ``config`` payload from an untrusted peer.

    Raises ConfigError, and nothing else, for any input that is not a well-formed
    config within ``max_size`` bytes and ``max_remotes`` remotes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ConfigError(f"config must be bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise ConfigError(f"config is {len(data)} bytes, more than the limit of {max_size}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("config is not valid UTF-8") from None
    try:
        obj = json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except RecursionError:
        raise ConfigError(f"config nests deeper than {MAX_CONFIG_DEPTH} levels") from None
    except ValueError as exc:
        raise ConfigError(f"config is not valid JSON: {exc}") from None
    if _nested_deeper_than(obj, MAX_CONFIG_DEPTH):
        raise ConfigError(f"config nests deeper than {MAX_CONFIG_DEPTH} levels")
    if not isinstance(obj, dict):
        raise ConfigError("config must be a JSON object")
    if "Version" not in obj or not isinstance(obj["Version"], str):
        raise ConfigError("config needs a string field 'Version'")
    if "Remotes" not in obj:
        raise ConfigError("config needs a field 'Remotes'")
    raw_remotes = obj["Remotes"]
    if raw_remotes is None:
        raw_remotes = []
    if not isinstance(raw_remotes, list):
        raise ConfigError("config field 'Remotes' must be a list or null")
    if len(raw_remotes) > max_remotes:
        raise ConfigError(f"config has {len(raw_remotes)} remotes, more than {max_remotes}")
    remotes = []
    for index, raw in enumerate(raw_remotes):
        try:
            remotes.append(Remote.from_json(raw))
        except RemoteError as exc:
            raise ConfigError(f"config remote #{index + 1}: {exc}") from None
    http = _decode_http(obj.get("HTTPGateway"))
    return Config(version=obj["Version"], remotes=tuple(remotes), http=http)


def _decode_http(raw: object) -> HTTPOffer:
    """The ``HTTPGateway`` extension, bounded; absent or null is an empty offer."""
    if raw is None:
        return HTTPOffer()
    if not isinstance(raw, dict):
        raise ConfigError("config field 'HTTPGateway' must be an object")
    lists = []
    for key in ("Identifiers", "Targets"):
        value = raw.get(key) or []
        if not isinstance(value, list) or len(value) > MAX_HTTP_ENTRIES:
            raise ConfigError(f"HTTPGateway.{key} must be a list of at most {MAX_HTTP_ENTRIES}")
        for item in value:
            if not isinstance(item, str) or not 0 < len(item) <= _MAX_HTTP_TEXT:
                raise ConfigError(f"HTTPGateway.{key} must hold non-empty strings")
        lists.append(tuple(value))
    return HTTPOffer(identifiers=lists[0], targets=lists[1])
