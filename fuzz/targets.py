"""The fuzz targets by name: one per parser or state machine, each with its seeds.

The targets live with their family (``fuzz.wire``: bytes from sockets, ``fuzz.text``:
what users and peers write, ``fuzz.state``: decisions and state machines).  Where a
parser has a compiled twin, its target also runs the pure one and requires the same
answer, so a divergence is a crash too.  A target's seeds are its examples plus every
input that once crashed it (``tests/vectors/fuzz/<target>/``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from . import state, text, wire
from .common import MODULES, REGRESSIONS, Target, vector

__all__ = ["MODULES", "TARGETS", "Target", "regressions_for", "seeds_for"]


# --- named services (WebRoute) -----------------------------------------------------


def _webroute(data: bytes) -> None:
    """A request head through decide(), as the gateway's named services see it."""
    from cc.protocol import http
    from cc.protocol import webroute as wr

    keys = wr.KeyTable.from_keys("skey", "ckey")
    directory: wr.Directory[object, object] = wr.Directory()
    directory.register("/p", object())
    directory.park(wr.Parked("/p", "abc", object(), 60, object()))
    end = http.find_head_end(data)
    request = http.parse_request(data[:end] if end > 0 else data + b"\r\n\r\n")
    decision = wr.decide(request, keys, directory)
    if isinstance(decision, wr.Refuse):
        assert decision.data.startswith(b"HTTP/1.1 ")


def _webroute_text(data: bytes) -> None:
    """The gateway's notifications, a keys file and a service remote, from one input."""
    from cc.protocol import webroute as wr

    wr.NotificationReader().feed(data)
    with contextlib.suppress(ValueError):
        wr.parse_keys_file(data)
    wr.parse_service_remote(data.decode("utf-8", "replace"))


def _webroute_seeds() -> Iterable[bytes]:
    yield (
        b"GET /p HTTP/1.1\r\nHost: h\r\nX-Remoted-APIKey: skey\r\nConnection: Upgrade\r\n"
        b"Upgrade: webroute\r\nWebRoute-Version: 1\r\nWebRoute-ID: abc\r\n\r\n"
    )
    yield b'{"ipaddr":"1.2.3.4:5","id":"abc","timeout":60}{"id":"x"}'
    yield b'{"server_keys": {"k": ["/a.*"]}, "client_apikey": "c"}'
    yield b"R:svc/jira:[::1]:443"


def _targets() -> dict[str, Target]:
    from cc.protocol.errors import AuthFileError, ConfigError, ProtocolError
    from cc.protocol.hosts import HostError
    from cc.protocol.http import HTTPError

    found = [
        Target("ws_header", wire.ws_header, (), wire.ws_seeds),
        Target("ws_stream", wire.ws_stream, (), wire.ws_seeds),
        Target("http_request", wire.http_request, (HTTPError,), wire.http_seeds),
        Target("http_response", wire.http_response, (HTTPError,), wire.http_seeds),
        Target("handshake_client", wire.handshake_client, (), wire.handshake_client_seeds),
        Target("handshake_server", wire.handshake_server, (HTTPError,), wire.http_seeds),
        Target("handshake_roundtrip", wire.handshake_roundtrip, (), wire.handshake_roundtrip_seeds),
        Target("socks5", wire.socks5, (), wire.socks5_seeds),
        Target("gob", wire.gob, (), wire.gob_seeds),
        Target("gob_values", wire.gob_values, (), wire.gob_seeds),
        Target("ssh_gcm", wire.ssh_gcm, (), wire.ssh_seeds_gcm),
        Target("ssh_chacha", wire.ssh_chacha, (), wire.ssh_seeds_chacha),
        Target("remote", text.remote, (), text.remote_seeds),
        Target("channel_target", text.channel_target, (), text.channel_target_seeds),
        Target("hosts", text.hosts, (HostError,), text.host_seeds),
        Target("config", text.config, (ConfigError,), lambda: [vector("config_request.json")]),
        Target("authfile", text.authfile, (AuthFileError,), text.auth_seeds),
        Target("key", text.key, (ProtocolError, ValueError), lambda: [b"ck-" + b"A" * 40]),
        Target("seed", text.seed, (ValueError,), lambda: [b"\0someseed", b"\x01" * 40]),
        Target("fingerprint", text.fingerprint, (), lambda: [b"aa:bb", b"x" * 44]),
        Target("durations", text.durations, (), text.durations_seeds),
        Target("cli", text.cli, (), text.cli_seeds),
        Target("verdict", state.verdict, (), state.state_seeds),
        Target("authguard", state.authguard, (), state.state_seeds),
        Target("failure_log", state.failure_log, (), state.state_seeds),
        Target("admission", state.admission, (), state.state_seeds),
        Target("webroute_request", _webroute, (HTTPError, ProtocolError), _webroute_seeds),
        Target("webroute_text", _webroute_text, (ValueError,), _webroute_seeds),
    ]
    return {target.name: target for target in found}


TARGETS = _targets()


def regressions_for(name: str) -> list[bytes]:
    """Inputs that once crashed the target, kept as files under tests/vectors/fuzz/."""
    folder = REGRESSIONS / name
    if not folder.is_dir():
        return []
    return [path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()]


def seeds_for(name: str) -> list[bytes]:
    """The seed corpus of a target: its examples and its regression inputs."""
    return [seed for seed in TARGETS[name].seeds() if seed] + regressions_for(name)
