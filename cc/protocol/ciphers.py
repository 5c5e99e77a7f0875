"""SSH cipher names: which both ends of a chisel session can speak, and in what order.

``--ssh-ciphers`` lets a site pin the ciphers its policy allows.  Only names that
asyncssh (our end) and Go's x/crypto/ssh (chisel's end) both implement are taken,
so a pinned list never names something the peer cannot even parse.  The default is
the order the connector has always offered: AES-GCM first (AES-NI, and what Go
offers first), chacha20-poly1305 third (fast without AES instructions), AES-CTR
last (no fast path: asyncssh's own code and an HMAC seal those packets).

Pure and without asyncssh, so that the command line checks a list at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

__all__ = [
    "AEAD_CIPHERS",
    "DEFAULT_CIPHERS",
    "SUPPORTED_CIPHERS",
    "CipherListError",
    "no_common_cipher",
    "parse_cipher_list",
]

#: Every name ``--ssh-ciphers`` takes.  Go's x/crypto/ssh offers aes128-gcm,
#: chacha20-poly1305 and the three AES-CTR by default; aes256-gcm came last (2024),
#: so a chisel built against an older x/crypto has no cipher in common with a list
#: that names only it.
SUPPORTED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)

#: What we offer without ``--ssh-ciphers``, most preferred first (unchanged since 0.1).
DEFAULT_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)

#: The ciphers whose packets the fast path seals and opens (cc.ssh.ciphers).
AEAD_CIPHERS = frozenset(SUPPORTED_CIPHERS[:3])


#: What a typo is compared with: each name, and each without its ``@openssh.com``.
_SPELLINGS = {name: name for name in SUPPORTED_CIPHERS} | {
    name.partition("@")[0]: name for name in SUPPORTED_CIPHERS
}


class CipherListError(ValueError):
    """A ``--ssh-ciphers`` value that names nothing, or something we cannot speak."""


def parse_cipher_list(text: str) -> tuple[str, ...]:
    """``"aes128-gcm@openssh.com, aes128-ctr"`` -> the names, in preference order.

    Spaces around names are allowed; empty items, duplicates and unknown names are
    errors that list the accepted names (a typo must not silently drop a cipher).
    """
    names = [name.strip() for name in text.split(",")]
    accepted = ", ".join(SUPPORTED_CIPHERS)
    if not any(names):
        raise CipherListError(f"no cipher given: name one or more of {accepted}")
    for name in names:
        if not name:
            raise CipherListError(f"empty cipher name in {text!r} (a stray comma?)")
        if name not in SUPPORTED_CIPHERS:
            near = difflib.get_close_matches(name.lower(), _SPELLINGS, n=1)
            hint = f" (did you mean {_SPELLINGS[near[0]]}?)" if near else ""
            raise CipherListError(
                f"unknown cipher {name!r}{hint}: the accepted ones are {accepted}"
            )
    if len(set(names)) < len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise CipherListError(f"cipher {twice!r} is listed twice")
    return tuple(names)


def no_common_cipher(connector: Sequence[str], gateway: Sequence[str]) -> str:
    """Why a key exchange failed, in words that read the same at either end.

    Both ends log it, and the end that fails first also sends it to the other in
    its disconnect message, so it names the sides by role, not "we" and "they".
    """
    return (
        f"no SSH cipher in common: the connector offers {','.join(connector) or '<none>'}, "
        f"the gateway allows {','.join(gateway) or '<none>'} (--ssh-ciphers on both ends must "
        "share at least one)"
    )
