"""Policies: socket-gateway's compilation, first match wins, on one spelling of the path."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cc.protocol.apigw.policy import PathError, compile_policy, normalize_path

__all__: list[str] = []


def test_star_allows_everything() -> None:
    policy = compile_policy("*")
    assert policy.allows("DELETE", "/anything/at/all")


def test_plain_key_is_anchored_both_ends() -> None:
    policy = compile_policy([("/helloworld", ["GET"])])
    assert policy.allows("GET", "/helloworld")
    assert not policy.allows("GET", "/helloworld/x")
    assert not policy.allows("GET", "/x/helloworld")
    assert not policy.allows("POST", "/helloworld")


def test_caret_key_is_a_regex_searched_from_the_start() -> None:
    policy = compile_policy([("^/v1/(users|groups)", ["GET", "POST"])])
    assert policy.allows("POST", "/v1/users/7")
    assert not policy.allows("GET", "/v2/users")


def test_methods_are_case_sensitive_and_may_include_star() -> None:
    policy = compile_policy([("/a", ["GET"]), ("/b", ["GET", "*"]), ("/c", "*")])
    assert not policy.allows("get", "/a")
    assert policy.allows("PATCH", "/b")
    assert policy.allows("PROPFIND", "/c")


def test_first_match_in_file_order_decides() -> None:
    policy = compile_policy([("^/admin", ["GET"]), ("*", "*")])
    assert not policy.allows("POST", "/admin/users")  # the first match denies
    assert policy.allows("POST", "/other")
    reverse = compile_policy([("*", "*"), ("^/admin", ["GET"])])
    assert reverse.allows("POST", "/admin/users")


def test_no_match_denies() -> None:
    assert not compile_policy([("/a", "*")]).allows("GET", "/b")


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/../b", "/b"),
        ("/api/../admin", "/admin"),
        ("/api/%2e%2e/admin", "/admin"),
        ("/api/%2E./admin", "/admin"),
        ("/api/.%2e/admin", "/admin"),
        ("/../../etc", "/etc"),
        ("/a/./b/.", "/a/b/"),
        ("/a/b/..", "/a/"),
        ("//a///b", "/a/b"),
        ("/api//../admin", "/admin"),  # runs of / collapse first
        ("/a/", "/a/"),
        ("/%61dmin", "/admin"),
        ("/a%2fb".replace("2f", "20"), "/a%20b"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a;b", "/a;b"),
    ],
)
def test_normalize_path(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal


@pytest.mark.parametrize(
    "raw",
    [
        "a/b",
        "/a%2fb",
        "/a%2F..%2Fadmin",
        "/a%5cb",
        "/a\\..\\admin",
        "/a%00",
        "/a%zz",
        "/a%2",
        "/api/..;/admin",
        "/api/.;x/admin",
        "/caf\u00e9",
        "/a\tb",
        "/a#b",
    ],
)
def test_normalize_path_refuses(raw: str) -> None:
    with pytest.raises(PathError):
        normalize_path(raw)


def test_dot_segments_cannot_bypass_an_allowed_prefix() -> None:
    policy = compile_policy([("^/api/", "*")])
    for raw in ("/api/../admin", "/api/%2e%2e/admin", "/api//../admin/..", "/api/./../admin"):
        path = normalize_path(raw)
        assert not path.startswith("/api/") or ".." not in path
        assert not (policy.allows("GET", path) and "admin" in path and not path.startswith("/api/"))


_SEGMENT = st.sampled_from(["a", "b", ".", "..", "", "%2e", "%2E%2e", "%41", "x;y", "~"])


@given(st.lists(_SEGMENT, max_size=12))
def test_normal_form_is_stable_and_has_no_dot_segments(segments: list[str]) -> None:
    path = normalize_path("/" + "/".join(segments))
    assert normalize_path(path) == path
    assert path.startswith("/")
    assert "//" not in path
    parts = path.split("/")
    assert "." not in parts and ".." not in parts
    assert not re.search("%2e", path, re.IGNORECASE)
