"""``--ssh-ciphers`` lists, checked without asyncssh: what is taken, what is refused."""

from __future__ import annotations

import pytest

from cc.protocol.ciphers import (
    AEAD_CIPHERS,
    DEFAULT_CIPHERS,
    SUPPORTED_CIPHERS,
    CipherListError,
    no_common_cipher,
    parse_cipher_list,
)

__all__: list[str] = []


def test_the_names_asyncssh_and_go_share_and_the_default_order() -> None:
    assert SUPPORTED_CIPHERS == (
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "chacha20-poly1305@openssh.com",
        "aes128-ctr",
        "aes192-ctr",
        "aes256-ctr",
    )
    assert set(DEFAULT_CIPHERS) <= set(SUPPORTED_CIPHERS)
    assert DEFAULT_CIPHERS[0] == "aes128-gcm@openssh.com"
    assert DEFAULT_CIPHERS[2] == "chacha20-poly1305@openssh.com"
    assert {n for n in SUPPORTED_CIPHERS if not n.endswith("-ctr")} == AEAD_CIPHERS


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("aes128-ctr", ("aes128-ctr",)),
        (
            "chacha20-poly1305@openssh.com, aes256-gcm@openssh.com",
            ("chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com"),
        ),
        (",".join(SUPPORTED_CIPHERS), SUPPORTED_CIPHERS),
        (" aes192-ctr ", ("aes192-ctr",)),
    ],
)
def test_lists_keep_their_order(text: str, names: tuple[str, ...]) -> None:
    assert parse_cipher_list(text) == names


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "no cipher given: name one or more of aes128-gcm@openssh.com, "),
        (" , ", "no cipher given"),
        ("aes128-ctr,", "empty cipher name in 'aes128-ctr,'"),
        ("aes128-ctr,,aes256-ctr", "empty cipher name"),
        ("aes128-ctr,aes128-ctr", "cipher 'aes128-ctr' is listed twice"),
        ("aes256-gcm", "unknown cipher 'aes256-gcm' (did you mean aes256-gcm@openssh.com?)"),
        ("AES128-CTR", "unknown cipher 'AES128-CTR' (did you mean aes128-ctr?)"),
        ("aes128-cbc", "the accepted ones are aes128-gcm@openssh.com, aes256-gcm@openssh.com, "),
        ("3des-cbc", "unknown cipher '3des-cbc'"),
    ],
)
def test_bad_lists_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(CipherListError) as info:
        parse_cipher_list(text)
    assert fragment in str(info.value)


def test_the_mismatch_names_both_lists_by_role() -> None:
    assert no_common_cipher(["aes256-ctr"], ["aes128-gcm@openssh.com", "aes128-ctr"]) == (
        "no SSH cipher in common: the connector offers aes256-ctr, the gateway allows "
        "aes128-gcm@openssh.com,aes128-ctr (--ssh-ciphers on both ends must share at least one)"
    )
