"""Authorization: ``--auth``, the authfile, the tokens file, and anchored ACL matching."""

from __future__ import annotations

import contextlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cc.protocol import acl
from cc.protocol.acl import (
    Permissions,
    UserTable,
    parse_authfile,
    parse_tokens_file,
    parse_user_pass,
)
from cc.protocol.errors import AuthError, AuthFileError
from cc.protocol.remote import parse_remote


@pytest.mark.parametrize(
    ("text", "pair"),
    [
        ("user:pass", ("user", "pass")),
        ("user:pa:ss", ("user", "pa:ss")),  # split at the first colon, as chisel
        ("user:", ("user", "")),
        ("ü:ß", ("ü", "ß")),
    ],
)
def test_parse_user_pass_splits_at_first_colon(text: str, pair: tuple[str, str]) -> None:
    assert parse_user_pass(text) == pair


def test_parse_user_pass_without_colon_is_an_error() -> None:
    with pytest.raises(AuthError, match="no ':' found"):
        parse_user_pass("userpass")


def test_parse_user_pass_empty_user_is_an_error_not_auth_off() -> None:
    with pytest.raises(AuthError, match="empty user name"):
        parse_user_pass(":secret")


# ---------------------------------------------------------------- Permissions


def test_permissions_match_anchored_unlike_chisel() -> None:
    perms = Permissions.from_patterns(["10.0.0.1:22", r"R:0\.0\.0\.0:80\d\d"])
    assert perms.allows("10.0.0.1:22")
    assert not perms.allows("110.0.0.1:2222")  # chisel's MatchString would allow this
    assert perms.allows("R:0.0.0.0:8081")
    assert not perms.allows("R:0.0.0.0:80810")


@pytest.mark.parametrize("pattern", ["", "*"])
def test_empty_and_star_patterns_allow_everything(pattern: str) -> None:
    perms = Permissions.from_patterns([pattern])
    assert perms.allow_all
    assert perms.allows("anything:1") and perms.allows("R:0.0.0.0:1") and perms.allows("")


def test_empty_pattern_list_allows_nothing_like_chisel() -> None:
    perms = Permissions.from_patterns([])
    assert not perms.allows("127.0.0.1:22")
    assert not perms.allows("")


def test_permissions_match_remote_acl_subjects() -> None:
    perms = Permissions.from_patterns([r"R:0\.0\.0\.0:8081", "192.168.0.3:8393", "socks"])
    assert perms.allows(parse_remote("R:8081:192.168.0.3:8393").acl_subject())
    assert not perms.allows(parse_remote("R:8082:192.168.0.3:8393").acl_subject())
    assert perms.allows(parse_remote("3000:192.168.0.3:8393").acl_subject())
    assert perms.allows(parse_remote("socks").acl_subject())
    assert not perms.allows(parse_remote("R:socks").acl_subject())


def test_everything_allows_everything() -> None:
    assert Permissions.everything().allows("x:1")


def test_invalid_regex_is_named() -> None:
    with pytest.raises(AuthFileError, match=r"invalid address regex '\(unclosed'"):
        Permissions.from_patterns(["ok", "(unclosed"], owner="authfile user 'bob'")


# ---------------------------------------------------------------- UserTable


def test_authfile_authenticates_and_applies_each_users_acl() -> None:
    table = parse_authfile(
        json.dumps(
            {
                "alice:s3cret": ["R:0\\.0\\.0\\.0:808[0-9]"],
                "bob:pw:with:colons": [""],
                "carol:x": [],
            }
        ).encode()
    )
    assert not table.is_empty and len(table) == 3
    alice = table.authenticate("alice", "s3cret")
    assert alice is not None and alice.allows("R:0.0.0.0:8081")
    assert not alice.allows("R:0.0.0.0:9000")
    bob = table.authenticate("bob", "pw:with:colons")
    assert bob is not None and bob.allows("R:0.0.0.0:9000")
    carol = table.authenticate("carol", "x")
    assert carol is not None and not carol.allows("R:0.0.0.0:8081")
    assert table.authenticate("alice", "wrong") is None
    assert table.authenticate("alice", "") is None
    assert table.authenticate("mallory", "s3cret") is None


def test_non_ascii_passwords_compare() -> None:
    table = UserTable.single("ü", "pässwörd")
    assert table.authenticate("ü", "pässwörd") is not None
    assert table.authenticate("ü", "passwort") is None
    assert table.authenticate("ü", "\udcff") is None


def test_password_comparison_uses_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    table = UserTable.single("u", "p")
    assert table.authenticate("u", "p") is not None
    assert calls == [(b"p", b"p")]


def test_single_user_table_allows_everything() -> None:
    table = UserTable.single("user", "pass")
    perms = table.authenticate("user", "pass")
    assert perms is not None and perms.allow_all
    with pytest.raises(AuthError):
        UserTable.single("", "pass")


def test_empty_table_accepts_anyone_with_full_access_like_chisel() -> None:
    table = UserTable()
    assert table.is_empty
    perms = table.authenticate("anyone", "anything")
    assert perms is not None and perms.allows("R:0.0.0.0:1")


def test_merged_lets_auth_flag_user_override_authfile_user() -> None:
    from_file = parse_authfile(b'{"bob:old": ["nothing"], "eve:e": [""]}')
    merged = from_file.merged(UserTable.single("bob", "new"))
    assert merged.authenticate("bob", "old") is None
    bob = merged.authenticate("bob", "new")
    assert bob is not None and bob.allow_all
    assert merged.authenticate("eve", "e") is not None


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"{", "not valid JSON"),
        (b"\xff", "not valid UTF-8"),
        (b"[]", "must be a JSON object"),
        (b'{"bob:pw": "x"}', "user 'bob': value must be a list"),
        (b'{"bob:pw": [1]}', "user 'bob': every address regex must be a string"),
        (b'{"bob:pw": ["a", "[z-a]"]}', "user 'bob': invalid address regex '\\[z-a\\]'"),
        (b'{"bobpw": [""]}', "entry #1: .*no ':' found"),
        (b'{":pw": [""]}', "entry #1: .*empty user name"),
        (b'{"bob:a": [""], "bob:b": [""]}', "user 'bob' is defined more than once"),
        (b'{"bob:a": [""], "bob:a": [""]}', "user 'bob' is defined more than once"),
        (b'{"bob:a": ["' + b"x" * 2000 + b'"]}', "regex longer than"),
    ],
)
def test_parse_authfile_errors_are_clear(data: bytes, fragment: str) -> None:
    with pytest.raises(AuthFileError, match=fragment):
        parse_authfile(data)


def test_authfile_errors_never_echo_passwords() -> None:
    with pytest.raises(AuthFileError) as info:
        parse_authfile(b'{"bob:hunter2": ["(bad"]}')
    assert "hunter2" not in str(info.value)


def test_authfile_size_and_entry_bounds() -> None:
    with pytest.raises(AuthFileError, match="larger than"):
        parse_authfile(b" " * (acl.MAX_FILE_SIZE + 1))
    many = {f"u{i}:p": [""] for i in range(acl.MAX_ENTRIES + 1)}
    with pytest.raises(AuthFileError, match="more than 10000 entries"):
        parse_authfile(json.dumps(many).encode())


def test_nested_objects_do_not_confuse_the_entry_list() -> None:
    with pytest.raises(AuthFileError, match="value must be a list"):
        parse_authfile(b'{"bob:a": {"x:y": []}}')


# ---------------------------------------------------------------- tokens


def test_tokens_file_lookup() -> None:
    table = parse_tokens_file(
        json.dumps({"tok-a": [r"R:0\.0\.0\.0:8081"], "tok-b": ["*"]}).encode()
    )
    assert len(table) == 2
    a = table.lookup("tok-a")
    assert a is not None and a.allows("R:0.0.0.0:8081") and not a.allows("R:0.0.0.0:8082")
    b = table.lookup("tok-b")
    assert b is not None and b.allow_all
    assert table.lookup("tok-") is None
    assert table.lookup("tok-aa") is None
    assert table.lookup("") is None


def test_token_lookup_compares_every_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    table = parse_tokens_file(b'{"first": [""], "second": [""], "third": [""]}')
    calls: list[int] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append(len(a))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert table.lookup("first") is not None
    assert calls == [32, 32, 32]  # fixed-length digests, no early exit


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b'{"": [""]}', "entry #1: empty token"),
        (b'{"t": [""], "t": [""]}', "entry #2: token defined more than once"),
        (b'{"t": "x"}', "value must be a list"),
        (b'{"t": ["(x"]}', "invalid address regex"),
        (b"null", "must be a JSON object"),
    ],
)
def test_parse_tokens_file_errors(data: bytes, fragment: str) -> None:
    with pytest.raises(AuthFileError, match=fragment):
        parse_tokens_file(data)


def test_tokens_errors_never_echo_tokens() -> None:
    with pytest.raises(AuthFileError) as info:
        parse_tokens_file(b'{"supersecrettoken": ["(x"]}')
    assert "supersecrettoken" not in str(info.value)


# ---------------------------------------------------------------- properties


@given(st.binary(max_size=200))
def test_parse_authfile_raises_only_authfile_error_on_bytes(data: bytes) -> None:
    with contextlib.suppress(AuthFileError):
        parse_authfile(data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=10), _json | st.lists(st.text(max_size=8)), max_size=4))
def test_parsers_raise_only_authfile_error_on_json(value: dict[str, object]) -> None:
    data = json.dumps(value).encode()
    for parser in (parse_authfile, parse_tokens_file):
        with contextlib.suppress(AuthFileError):
            parser(data)
