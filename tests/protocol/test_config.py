"""The ``config`` request payload: byte-exact Go encoding and a strict, bounded decoder."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cc.protocol.config import Config, decode_config, encode_config, go_json_string
from cc.protocol.errors import ConfigError
from cc.protocol.remote import parse_remote
from tests.support.vectors import read_bytes


def test_encoding_the_decoded_vector_reproduces_its_bytes() -> None:
    payload = read_bytes("config_request.json").rstrip(b"\n")  # the file's newline is not sent
    cfg = decode_config(payload)
    assert cfg == Config("1.11.5", (parse_remote("R:8081:192.168.0.3:8393"),))
    assert encode_config(cfg) == payload


def test_encode_matches_go_marshal_for_several_remotes() -> None:
    cfg = Config("0.1.0", (parse_remote("R:socks"), parse_remote("1.1.1.1:53/udp")))
    assert encode_config(cfg) == (
        b'{"Version":"0.1.0","Remotes":['
        b'{"LocalHost":"127.0.0.1","LocalPort":"1080","LocalProto":"tcp","RemoteHost":"",'
        b'"RemotePort":"","RemoteProto":"tcp","Socks":true,"Reverse":true,"Stdio":false},'
        b'{"LocalHost":"0.0.0.0","LocalPort":"53","LocalProto":"udp","RemoteHost":"1.1.1.1",'
        b'"RemotePort":"53","RemoteProto":"udp","Socks":false,"Reverse":false,"Stdio":false}]}'
    )


def test_zero_remotes_encode_as_null_like_a_go_nil_slice() -> None:
    assert encode_config(Config("v", ())) == b'{"Version":"v","Remotes":null}'
    assert decode_config(b'{"Version":"v","Remotes":null}') == Config("v", ())
    assert decode_config(b'{"Version":"v","Remotes":[]}') == Config("v", ())


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("plain", '"plain"'),
        ('q"b\\', '"q\\"b\\\\"'),
        ("<a>&", '"\\u003ca\\u003e\\u0026"'),
        ("\n\r\t\b\f", '"\\n\\r\\t\\b\\f"'),
        ("\x00\x1f\x7f", '"\\u0000\\u001f\x7f"'),
        ("\u2028\u2029", '"\\u2028\\u2029"'),
        ("é示", '"é示"'),
        ("\ud800", '"\\ufffd"'),
    ],
)
def test_go_json_string_escapes_like_go(text: str, quoted: str) -> None:
    assert go_json_string(text) == quoted


def test_version_with_special_characters_is_still_valid_json() -> None:
    cfg = Config('1.0 <"&>', ())
    assert json.loads(encode_config(cfg))["Version"] == '1.0 <"&>'
    assert decode_config(encode_config(cfg)) == cfg


def test_nesting_up_to_the_limit_is_accepted() -> None:
    deep = b'{"a":' * 30 + b"1" + b"}" * 30  # 32 levels with the config object and Remotes
    data = b'{"Version":"x","Remotes":null,"New":[' + deep + b"]}"
    assert decode_config(data) == Config("x", ())


def test_unknown_top_level_fields_are_ignored() -> None:
    assert decode_config(b'{"Version":"x","Remotes":null,"New":{"a":1}}') == Config("x", ())


def _remote_json(**change: object) -> dict[str, object]:
    return {**parse_remote("R:8081:h:80").to_json(), **change}


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not valid UTF-8"),
        (b"[]", "must be a JSON object"),
        (b'"x"', "must be a JSON object"),
        (b'{"Remotes":null}', "'Version'"),
        (b'{"version":"x","remotes":null}', "'Version'"),  # names are case-sensitive here
        (b'{"Version":1,"Remotes":null}', "'Version'"),
        (b'{"Version":"x"}', "'Remotes'"),
        (b'{"Version":"x","Remotes":{}}', "must be a list or null"),
        (b'{"Version":"x","Version":"y","Remotes":null}', "repeats the key 'Version'"),
        (b'{"Version":"x","Remotes":[NaN]}', "non-JSON number NaN"),
        (b'{"Version":"x","Remotes":[1]}', "remote #1: remote must be a JSON object"),
        # Refused for its depth on every Python (3.11's json gave up near 1,000 levels
        # with RecursionError, 3.13's parses this), before any other check.
        (b"[" * 5000 + b"]" * 5000, "nests deeper than 32 levels"),
        (b"[" * 33 + b"]" * 33, "nests deeper than 32 levels"),
        (b'{"Version":"x","Remotes":[' + b'{"a":' * 31 + b"1" + b"}" * 31 + b"]}", "deeper"),
        (b'{"Version":"x","Remotes":[' + b"1" * 5000 + b"]}", "not valid JSON"),
    ],
)
def test_decode_config_rejects_bad_payloads(data: bytes, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        decode_config(data)


@pytest.mark.parametrize(
    ("remote", "fragment"),
    [
        (_remote_json(LocalPort="0"), "remote #1: .*out of range"),
        (_remote_json(LocalPort="65536"), "out of range"),
        (_remote_json(RemotePort=80), "'RemotePort' must be a string"),
        (_remote_json(Reverse="true"), "'Reverse' must be a boolean"),
        (_remote_json(LocalProto="udp"), "cross-protocol"),
        (_remote_json(Stdio=True), "stdio cannot be reversed"),
        ({k: v for k, v in _remote_json().items() if k != "Socks"}, "missing field 'Socks'"),
    ],
)
def test_decode_config_validates_each_remote(remote: dict[str, object], fragment: str) -> None:
    data = json.dumps({"Version": "x", "Remotes": [remote]}).encode()
    with pytest.raises(ConfigError, match=fragment):
        decode_config(data)


def test_decode_config_bounds_size() -> None:
    payload = b'{"Version":"' + b"x" * 100 + b'","Remotes":null}'
    assert decode_config(payload, max_size=len(payload)).version == "x" * 100
    with pytest.raises(ConfigError, match="more than the limit of 64"):
        decode_config(payload, max_size=64)
    with pytest.raises(ConfigError, match="limit of 65536"):
        decode_config(b" " * (64 * 1024 + 1))


def test_decode_config_bounds_remote_count() -> None:
    remotes = tuple(parse_remote(f"R:{port}:h:80") for port in range(1, 6))
    payload = encode_config(Config("x", remotes))
    assert decode_config(payload, max_remotes=5).remotes == remotes
    with pytest.raises(ConfigError, match="5 remotes, more than 4"):
        decode_config(payload, max_remotes=4)


def test_decode_config_rejects_non_bytes() -> None:
    with pytest.raises(ConfigError, match="must be bytes"):
        decode_config('{"Version":"x","Remotes":null}')  # type: ignore[arg-type]


def test_config_validates_at_construction() -> None:
    with pytest.raises(ConfigError):
        Config("x", [parse_remote("3000")])  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Config(1, ())  # type: ignore[arg-type]


# ---------------------------------------------------------------- properties

_specs = st.sampled_from(
    [
        "3000",
        "R:8081:192.168.0.3:8393",
        "R:socks",
        "1.1.1.1:53/udp",
        "stdio:h:22",
        "[::1]:3000:[::1]:80",
        "示例網站.com:80",
        "R:8082:127.0.0.1:587/udp",
    ]
)


@given(st.binary(max_size=300))
def test_decode_config_raises_only_config_error_on_bytes(data: bytes) -> None:
    with contextlib.suppress(ConfigError):
        decode_config(data)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["Version", "Remotes", "LocalHost", "LocalPort", "Socks", "x"]),
                inner,
                max_size=4,
            )
        ),
        max_leaves=12,
    )
)
def test_decode_config_raises_only_config_error_on_json(value: object) -> None:
    with contextlib.suppress(ConfigError):
        decode_config(json.dumps(value).encode())


@given(st.text(max_size=20), st.lists(_specs, max_size=5))
def test_encode_decode_round_trip(version: str, specs: list[str]) -> None:
    cfg = Config(version.encode("utf-8", "replace").decode(), tuple(map(parse_remote, specs)))
    data = encode_config(cfg)
    assert decode_config(data) == cfg
    assert json.loads(data) == {
        "Version": cfg.version,
        "Remotes": [r.to_json() for r in cfg.remotes] or None,
    }
