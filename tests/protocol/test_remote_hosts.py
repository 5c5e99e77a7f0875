"""Remotes and channel targets carry one spelling per address (cc.protocol.hosts)."""

from __future__ import annotations

import json

import pytest

from cc.protocol.config import decode_config
from cc.protocol.errors import ConfigError, RemoteError
from cc.protocol.hosts import HostError
from cc.protocol.remote import Remote, canonical_target, parse_remote, split_target

__all__: list[str] = []


@pytest.mark.parametrize(
    "spec",
    ["R:8080:127.0.011:80", "3000:127.1:80", "R:127.0.0.01:8080:localhost:80", "0x7f.1:3000:a:80"],
)
def test_remote_with_an_ipv4_shorthand_is_refused(spec: str) -> None:
    with pytest.raises(RemoteError, match=r"ambiguous numeric host .*reads it as 127\.0\.0\.\d"):
        parse_remote(spec)


def test_remote_ipv6_hosts_are_made_canonical() -> None:
    remote = parse_remote("R:[0:0:0:0:0:0:0:1]:3000:[2001:DB8::0:1]:80")
    assert remote.local_host == "[::1]"
    assert remote.remote_host == "[2001:db8::1]"
    assert remote.acl_subject() == "R:[::1]:3000"


def test_remote_from_json_with_a_shorthand_is_refused() -> None:
    obj = {
        "LocalHost": "0.0.0.0",
        "LocalPort": "8081",
        "LocalProto": "tcp",
        "RemoteHost": "127.0.011",
        "RemotePort": "80",
        "RemoteProto": "tcp",
        "Socks": False,
        "Reverse": False,
        "Stdio": False,
    }
    with pytest.raises(HostError):
        Remote.from_json(obj)
    payload = json.dumps({"Version": "1.11.5", "Remotes": [obj]}).encode()
    with pytest.raises(ConfigError):
        decode_config(payload)


@pytest.mark.parametrize(
    ("target", "canonical"),
    [
        ("127.0.0.1:80", "127.0.0.1:80"),
        ("example.com:443", "example.com:443"),
        ("[0::1]:22", "[::1]:22"),
        ("[2001:db8:0:0:0:0:0:1]:53", "[2001:db8::1]:53"),
    ],
)
def test_canonical_target(target: str, canonical: str) -> None:
    assert canonical_target(target) == canonical


@pytest.mark.parametrize(
    "target",
    [
        "127.0.011:80",
        "2130706433:22",
        "0x7f.1:80",
        "[::g]:80",
        # found by fuzzing: an empty host, a NUL the resolver stops at, no IDNA form
        "[]:80",
        "127.0.0.1\x00.example.com:80",
        "a..b:80",
    ],
)
def test_channel_targets_in_shorthand_are_refused(target: str) -> None:
    with pytest.raises(ValueError):
        canonical_target(target)
    with pytest.raises(ValueError):
        split_target(target)


@pytest.mark.parametrize("target", ["[[::]]:1", "[[::1]:80", "[::1]]:80", "a]b:80", "[a[b]:80"])
def test_brackets_inside_a_target_host_are_refused(target: str) -> None:
    """Found by fuzzing (channel_target): ``[[::]]:1`` came back as host ``[::]``, which
    no longer split to itself; Go's SplitHostPort refuses such a target too."""
    with pytest.raises(ValueError, match="bad"):
        split_target(target)
