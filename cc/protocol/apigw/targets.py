"""``targets.yaml``: which public host goes to which private target, and on what terms.

The format is socket-gateway's::

    targets:
      api.example.com:            # the request's Host, without port, any case
        protocol: https           # http or https (default https)
        hostname: api.internal    # required: what the connector dials
        port: 8443                # default 80 for http, 443 for https
        policy:                   # default "*"; see cc.protocol.apigw.policy
          /health: [GET]
          ^/v1/: [GET, POST]
        identifier: [dc1, dc2]    # connectors that may serve it (default: any)
        ca: internal-ca.pem       # https only: trust this CA instead of the system's
        insecure: false           # https only: true skips certificate checks

It is read with PyYAML's node composer rather than its loader, so that every
error names the key and the line, duplicate keys are refused (YAML loaders keep
the last one silently) and YAML 1.1 surprises (``port: 0o17``, ``protocol: on``)
are refused instead of converted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from ..errors import TargetsError
from ..hosts import HostError, canonical_host, join_host_port
from ..remote import split_target
from .policy import Policy, compile_policy

__all__ = ["Target", "TargetTable", "host_of", "parse_http_target", "parse_targets"]

_KEYS = frozenset({"protocol", "hostname", "port", "policy", "identifier", "ca", "insecure"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_FLOAT = "tag:yaml.org,2002:float"

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class Target:
    """One public host's target, validated."""

    #: the public host it is matched by (lower case, no port, no trailing dot)
    public: str
    protocol: str
    #: canonical host to dial (IPv6 bracketed)
    hostname: str
    port: int
    policy: Policy
    #: connectors that may serve it (None: any)
    identifiers: frozenset[str] | None = None
    #: https: a CA file to verify with instead of the system store (as written)
    ca: str | None = None
    #: https: skip certificate verification (an explicit opt-out)
    insecure: bool = False
    #: ``host:port``, the channel target the connector is asked to dial
    address: str = field(init=False, repr=False, compare=False)
    #: the Host header the target gets: ``hostname[:port]``, the port only if not default
    authority: str = field(init=False, repr=False, compare=False)
    #: the TLS server name: the hostname, unless it is an IP address (RFC 6066)
    sni: str | None = field(init=False, repr=False, compare=False)
    #: what a kept connection to it must match besides its connector: its address
    #: and TLS settings (derived once: every request looks its pool up)
    connection_key: tuple[object, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # derived once here, not per request as properties would
        host = self.hostname
        address = join_host_port(host, self.port)
        authority = host if self.port == _DEFAULT_PORTS.get(self.protocol) else address
        sni = None if host.startswith("[") or host.replace(".", "").isdigit() else host
        set_ = object.__setattr__
        set_(self, "address", address)
        set_(self, "authority", authority)
        set_(self, "sni", sni)
        set_(self, "connection_key", (address, self.tls, sni, self.ca, self.insecure))

    @property
    def tls(self) -> bool:
        return self.protocol == "https"

    def serves(self, identifiers: frozenset[str]) -> bool:
        """Whether a connector carrying ``identifiers`` may serve this target."""
        return self.identifiers is None or not self.identifiers.isdisjoint(identifiers)


def _normal_public(host: str) -> str:
    host = host.lower()
    return host[:-1] if host.endswith(".") else host


def _is_port(text: str) -> bool:
    """ASCII digits for 0-65535 (``str.isdigit`` alone also takes ``²`` and ``٣``)."""
    return text.isascii() and text.isdigit() and len(text) <= 5 and int(text) <= 65535


def host_of(value: str) -> str | None:
    """The host of a Host header value (lower case, no port), or None if it is malformed."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[: end + 1], value[end + 1 :]
        if rest and not (rest[0] == ":" and _is_port(rest[1:])):
            return None
    else:
        host, sep, port = value.partition(":")
        if sep and not _is_port(port):
            return None
        if not host or not set(host) <= _NAME_CHARS:
            return None
    return _normal_public(host)


class TargetTable:
    """Targets by public host; ``targets`` keeps file order."""

    def __init__(self, targets: tuple[Target, ...] = ()) -> None:
        self.targets = targets
        self._by_host = {t.public: t for t in targets}

    def lookup(self, host: str) -> Target | None:
        """The target for a host as :func:`host_of` returns it."""
        return self._by_host.get(host)

    def __len__(self) -> int:
        return len(self.targets)


def _error(node: yaml.Node, message: str) -> TargetsError:
    return TargetsError(f"line {node.start_mark.line + 1}: {message}")


def _pairs(node: yaml.Node, what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
    """A mapping's (key text, key node, value node) in file order; duplicates refused."""
    if not isinstance(node, yaml.MappingNode):
        raise _error(node, f"{what} must be a map")
    seen: set[str] = set()
    out = []
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            raise _error(key, f"{what}: keys must be plain text")
        text = str(key.value)
        if text in seen:
            raise _error(key, f"{what}: {text!r} appears twice")
        seen.add(text)
        out.append((text, key, value))
    return out


def _string(node: yaml.Node, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.tag != _STR or not node.value:
        raise _error(node, f"{what} must be a non-empty string")
    return str(node.value)


def _strings(node: yaml.Node, what: str) -> list[str]:
    if isinstance(node, yaml.SequenceNode):
        if not node.value:
            raise _error(node, f"{what} must not be an empty list")
        return [_string(item, what) for item in node.value]
    return [_string(node, what)]


def _port(node: yaml.Node) -> int:
    text = node.value if isinstance(node, yaml.ScalarNode) else None
    if (
        not isinstance(text, str)
        or node.tag not in (_INT, _STR)
        or not text.isascii()
        or not text.isdigit()
        or not 1 <= int(text) <= 65535
    ):
        raise _error(node, "port must be a number from 1 to 65535")
    return int(text)


def _policy(node: yaml.Node, public: str) -> Policy:
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _STR and node.value == "*":
            return Policy()
        raise _error(node, f"{public}: policy must be '*' or a map from paths to methods")
    rules: list[tuple[str, object]] = []
    for key, key_node, value in _pairs(node, f"{public}: policy"):
        methods: object
        if isinstance(value, yaml.ScalarNode) and value.tag == _STR and value.value == "*":
            methods = "*"
        elif isinstance(value, yaml.SequenceNode):
            methods = [_string(item, f"{public}: policy {key!r} methods") for item in value.value]
        else:
            raise _error(value, f"{public}: policy {key!r}: methods must be '*' or a list")
        try:
            compile_policy([(key, methods)])
        except TargetsError as exc:
            raise _error(key_node, f"{public}: {exc}") from None
        rules.append((key, methods))
    return compile_policy(rules)


def _hostname(node: yaml.Node, public: str) -> str:
    # YAML reads 127.1 as a float and 2130706433 as an int: names all the same here,
    # so that canonical_host can refuse them as numeric shorthands
    if isinstance(node, yaml.ScalarNode) and node.tag in (_INT, _FLOAT):
        node = yaml.ScalarNode(_STR, node.value, node.start_mark, node.end_mark)
    text = _string(node, f"{public}: hostname")
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        if ":" in inner:
            return canonical_host(f"[{inner}]")
        if not set(text) <= _NAME_CHARS:
            raise _error(node, f"{public}: hostname {text!r} is not a host name or address")
        return canonical_host(text.lower())
    except HostError as exc:
        raise _error(node, f"{public}: hostname: {exc}") from None


def _target(public: str, key_node: yaml.Node, node: yaml.Node) -> Target:
    fields = {key: (key_node_, value) for key, key_node_, value in _pairs(node, public)}
    for key, (field_node, _) in fields.items():
        if key not in _KEYS:
            raise _error(field_node, f"{public}: unknown key {key!r}")
    if "hostname" not in fields:
        raise _error(key_node, f"{public}: hostname is required")
    protocol = "https"
    if "protocol" in fields:
        protocol = _string(fields["protocol"][1], f"{public}: protocol")
        if protocol not in _DEFAULT_PORTS:
            raise _error(fields["protocol"][1], f"{public}: protocol must be http or https")
    hostname = _hostname(fields["hostname"][1], public)
    port = _port(fields["port"][1]) if "port" in fields else _DEFAULT_PORTS[protocol]
    policy = _policy(fields["policy"][1], public) if "policy" in fields else Policy()
    identifiers = None
    if "identifier" in fields:
        identifiers = frozenset(_strings(fields["identifier"][1], f"{public}: identifier"))
    ca = None
    if "ca" in fields:
        ca = _string(fields["ca"][1], f"{public}: ca")
    insecure = False
    if "insecure" in fields:
        value = fields["insecure"][1]
        if not isinstance(value, yaml.ScalarNode) or value.tag != _BOOL:
            raise _error(value, f"{public}: insecure must be true or false")
        insecure = str(value.value).lower() == "true"
    if protocol == "http" and (ca is not None or insecure):
        raise _error(key_node, f"{public}: ca and insecure apply to https targets only")
    if ca is not None and insecure:
        raise _error(key_node, f"{public}: ca and insecure: true contradict each other")
    return Target(public, protocol, hostname, port, policy, identifiers, ca, insecure)


def parse_targets(data: bytes | str) -> TargetTable:
    """Parse and validate a targets file; TargetsError names the line and key at fault."""
    try:
        root = yaml.compose(data, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise TargetsError(f"not valid YAML: {exc}") from None
    if root is None:
        raise TargetsError("the file is empty (it needs a 'targets' map)")
    top = {key: (key_node, value) for key, key_node, value in _pairs(root, "the file")}
    for key, (key_node, _) in top.items():
        if key != "targets":
            raise _error(key_node, f"unknown key {key!r} (the file has only 'targets')")
    if "targets" not in top:
        raise _error(root, "the file needs a 'targets' map")
    node = top["targets"][1]
    if isinstance(node, yaml.ScalarNode) and node.tag == _NULL:
        return TargetTable()
    targets: list[Target] = []
    seen: dict[str, int] = {}
    for key, key_node, value in _pairs(node, "targets"):
        public = host_of(key)
        if public is None or public != _normal_public(key):
            raise _error(key_node, f"target {key!r} must be a host name without a port")
        if public in seen:
            raise _error(key_node, f"target {key!r} repeats the host of line {seen[public]}")
        seen[public] = key_node.start_mark.line + 1
        targets.append(_target(public, key_node, value))
    return TargetTable(tuple(targets))


def parse_http_target(text: str) -> tuple[str, ...]:
    """A connector's ``--http-target HOST[:PORT]`` as the ``host:port`` it may dial.

    Without a port, both 80 and 443 (a target's defaults for http and https).  The
    spelling is canonical and lower case, as the gateway writes targets; TargetsError
    (a ValueError, for argparse) otherwise.
    """
    text = text.strip()
    bracketed = text.startswith("[") and text.endswith("]")
    has_port = not bracketed and (text.count(":") == 1 or "]:" in text)
    try:
        if has_port:
            host, port = split_target(text.lower())
            return (join_host_port(host, port),)
        inner = text[1:-1] if bracketed else text
        if not inner or (":" not in inner and not set(inner) <= _NAME_CHARS):
            raise TargetsError(f"--http-target {text!r} is not HOST[:PORT]")
        host = canonical_host(inner.lower())
    except (HostError, ValueError) as exc:
        if isinstance(exc, TargetsError):
            raise
        raise TargetsError(f"--http-target {text!r}: {exc}") from None
    return (join_host_port(host, 80), join_host_port(host, 443))
