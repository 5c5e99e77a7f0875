"""``parse_authorized_keys`` and ``recheck`` for key logins (sans-I/O)."""

from __future__ import annotations

import asyncssh
import pytest

from cc.protocol.acl import Permissions
from cc.protocol.authorized_keys import parse_authorized_keys
from cc.protocol.errors import AuthFileError
from cc.protocol.revocation import Keep, Login, Revoke, Update, recheck

__all__: list[str] = []

KEY = asyncssh.generate_private_key("ssh-ed25519")
OTHER = asyncssh.generate_private_key("ecdsa-sha2-nistp256")
FP = KEY.get_fingerprint("sha256")


def pub(key: asyncssh.SSHKey, options: str = "") -> str:
    return f"{options} {key.export_public_key('openssh').decode().strip()}".strip()


def test_options_bind_remotes_and_identifiers() -> None:
    table = parse_authorized_keys(
        f'cc-acl="R:127[.]0[.]0[.]1:80,10[.]0[.]0[.]1:22",cc-identifier="web1, web2" {pub(KEY)}\n'
        f"# a comment\n{pub(OTHER)}\n".encode()
    )
    entry = table.lookup(FP)
    assert entry is not None
    assert entry.permissions.allows("R:127.0.0.1:80")
    assert entry.permissions.allows("10.0.0.1:22")
    assert not entry.permissions.allows("R:127.0.0.1:81")
    assert entry.identifiers == {"web1", "web2"}
    other = table.lookup(OTHER.get_fingerprint("sha256"))
    assert other is not None and other.permissions.allow_all and other.identifiers is None


def test_empty_acl_allows_nothing() -> None:
    entry = parse_authorized_keys(pub(KEY, 'cc-acl=""')).lookup(FP)
    assert entry is not None and not entry.permissions.allows("10.0.0.1:22")


@pytest.mark.parametrize("text", ["ssh-ed25519 not-base64!!", 'cc-acl="(" ' + pub(KEY)])
def test_bad_file_is_an_auth_file_error(text: str) -> None:
    with pytest.raises(AuthFileError):
        parse_authorized_keys(text)


def test_recheck_key_login() -> None:
    login = Login("conn", key=FP)
    held = (Permissions.everything(), None)
    assert recheck(login, None, None, held, parse_authorized_keys(pub(KEY))) == Keep()
    removed = recheck(login, None, None, held, parse_authorized_keys(pub(OTHER)))
    assert removed == Revoke("key removed from the authorized keys file")
    assert isinstance(recheck(login, None, None, held, None), Revoke)
    web1 = Login("conn", key=FP, identifiers=frozenset({"web1"}))
    bound = parse_authorized_keys(pub(KEY, 'cc-identifier="web1"'))
    assert recheck(web1, None, None, held, bound) == Keep()
    rebound = parse_authorized_keys(pub(KEY, 'cc-identifier="web2"'))
    assert recheck(web1, None, None, held, rebound) == Revoke(
        "identifier no longer allowed for the key"
    )
    narrowed = recheck(login, None, None, held, parse_authorized_keys(pub(KEY, 'cc-acl="x:1"')))
    assert isinstance(narrowed, Update) and not narrowed.user.allows("y:1")
