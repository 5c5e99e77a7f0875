"""``recheck``: what a reloaded authfile or tokens file means for a session already in."""

from __future__ import annotations

import hashlib
import json

import pytest

from cc.protocol.acl import (
    Permissions,
    TokenTable,
    UserTable,
    parse_authfile,
    parse_tokens_file,
    password_digest,
    token_digest,
)
from cc.protocol.revocation import Keep, Login, Revoke, Update, recheck

__all__: list[str] = []

EVERYTHING = Permissions.everything()
SSH_ONLY = Permissions.from_patterns([r"10\.0\.0\.1:22"])
WEB_ONLY = Permissions.from_patterns([r"R:0\.0\.0\.0:8080"])


def users(entries: dict[str, list[str]]) -> UserTable:
    return parse_authfile(json.dumps(entries).encode())


def tokens(entries: dict[str, list[str]]) -> TokenTable:
    return parse_tokens_file(json.dumps(entries).encode())


ALICE = Login("alice", password_digest("pw"))
ALICE_TOKEN = Login("", token=token_digest("tok"))


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        ({"bob:pw": [""]}, "user removed from the authfile"),
        ({"alice:other": [""]}, "password changed in the authfile"),
        ({"Alice:pw": [""]}, "user removed from the authfile"),  # names are case-sensitive
    ],
)
def test_revoked_users(table: dict[str, list[str]], reason: str) -> None:
    assert recheck(ALICE, users(table), None, (EVERYTHING, None)) == Revoke(reason)


def test_a_session_without_a_password_is_revoked_once_users_exist() -> None:
    """It logged in while nobody needed one; a login now would need the password."""
    login = Login("alice")
    assert recheck(login, users({"alice:pw": [""]}), None, (EVERYTHING, None)) == Revoke(
        "a password is now required"
    )


@pytest.mark.parametrize("table", [None, UserTable()])
def test_no_users_means_everything_as_at_login(table: UserTable | None) -> None:
    """chisel's rule for logins (no users: anyone, full access) holds for reloads too."""
    assert recheck(ALICE, table, None, (EVERYTHING, None)) == Keep()
    assert recheck(ALICE, table, None, (SSH_ONLY, None)) == Update(EVERYTHING, None)


def test_changed_acl_updates_unchanged_acl_keeps() -> None:
    held = (users({"alice:pw": [r"10\.0\.0\.1:22"]}).authenticate("alice", "pw"), None)
    assert held[0] == SSH_ONLY
    same = users({"alice:pw": [r"10\.0\.0\.1:22"], "bob:x": [""]})
    assert recheck(ALICE, same, None, (SSH_ONLY, None)) == Keep()
    narrowed = users({"alice:pw": [r"R:0\.0\.0\.0:8080"]})
    assert recheck(ALICE, narrowed, None, (SSH_ONLY, None)) == Update(WEB_ONLY, None)
    wider = users({"alice:pw": ["*"]})
    assert recheck(ALICE, wider, None, (SSH_ONLY, None)) == Update(EVERYTHING, None)


def test_tokens() -> None:
    table = tokens({"tok": [r"10\.0\.0\.1:22"], "other": [""]})
    assert recheck(ALICE_TOKEN, None, table, (EVERYTHING, SSH_ONLY)) == Keep()
    assert recheck(ALICE_TOKEN, None, table, (EVERYTHING, EVERYTHING)) == Update(
        EVERYTHING, SSH_ONLY
    )
    gone = tokens({"other": [""]})
    assert recheck(ALICE_TOKEN, None, gone, (EVERYTHING, SSH_ONLY)) == Revoke(
        "token removed from the tokens file"
    )
    assert recheck(Login(""), None, table, (EVERYTHING, None)) == Revoke("a token is now required")


def test_token_and_user_both_count() -> None:
    login = Login("alice", password_digest("pw"), token_digest("tok"))
    user_table = users({"alice:pw": [r"10\.0\.0\.1:22"]})
    assert recheck(login, user_table, tokens({"tok": [""]}), (SSH_ONLY, EVERYTHING)) == Keep()
    assert recheck(
        login, users({"bob:pw": [""]}), tokens({"tok": [""]}), (SSH_ONLY, EVERYTHING)
    ) == Revoke("user removed from the authfile")
    assert recheck(login, user_table, tokens({"x": [""]}), (SSH_ONLY, EVERYTHING)) == Revoke(
        "token removed from the tokens file"
    )


def test_digests_hide_the_secrets() -> None:
    """A session keeps a keyed digest of its password: not the password, not a plain hash."""
    digest = password_digest("pw")
    assert digest == password_digest(b"pw")
    assert digest not in (b"pw", hashlib.sha256(b"pw").digest())
    assert password_digest("pw2") != digest
    assert users({"alice:pw": [""]}).credentials("alice") == (digest, EVERYTHING)
    assert users({"alice:pw": [""]}).credentials("bob") is None
    assert tokens({"tok": [""]}).lookup_digest(token_digest("tok")) == EVERYTHING
    assert tokens({"tok": [""]}).lookup_digest(token_digest("to")) is None
