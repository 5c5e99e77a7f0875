"""``cloud-connector keygen``: make a host key the gateway (or chisel) can load,
or (``--client``) a connector's key pair for the gateway's ``--authorized-keys``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cc.cli.common import EXIT_USAGE, GoArgumentParser, fail
from cc.protocol import keys

__all__ = ["main", "write_client_key", "write_key"]

PROG = "cloud-connector keygen"


def main(argv: Sequence[str] | None = None) -> int:
    p = GoArgumentParser(prog=PROG, description="Write a new ECDSA P-256 host key.")
    p.add_flag("--seed", help="derive the key from SEED as chisel's --key does")
    p.add_flag("--format", choices=("ck", "pem"), default="pem", help="ck-... inline or PEM file")
    p.add_argument(
        "--client", action="store_true", help="a connector's key pair: PATH and PATH.pub"
    )
    p.add_flag("--type", choices=tuple(CLIENT_KEY_TYPES), default="ed25519", help="with --client")
    p.add_argument("path", nargs="?", default="-", help="where to write the key; - for stdout")
    args = p.parse_args(argv)
    if args.help:
        p.print_help()
        return 0
    if args.version:
        from cc import __version__

        print(__version__)
        return 0
    if args.client:
        if args.path == "-" or args.seed:
            fail(PROG, "--client needs a PATH and takes no --seed", EXIT_USAGE)
        return write_client_key(PROG, Path(args.path), args.type)
    key = keys.seed_private_key(args.seed) if args.seed else keys.generate_private_key()
    return write_key(PROG, args.path, key, args.format)


#: --type: asyncssh's algorithm names (RSA: 3072 bits, OpenSSH's default)
CLIENT_KEY_TYPES = {"ed25519": "ssh-ed25519", "ecdsa": "ecdsa-sha2-nistp256", "rsa": "ssh-rsa"}


def write_client_key(prog: str, target: Path, kind: str) -> int:
    """Write a connector's private key (OpenSSH format, 0600) and ``PATH.pub``.

    Neither file is overwritten: the .pub line may already be in a gateway's
    authorized_keys, and the private key in a connector's --identity.
    """
    pub = target.with_name(target.name + ".pub")
    for path in (target, pub):
        if path.exists():
            fail(prog, f"{path} exists; refusing to overwrite a key", EXIT_USAGE)
    options = {"key_size": 3072} if kind == "rsa" else {}
    import asyncssh  # slow to import; only --client needs it

    key = asyncssh.generate_private_key(CLIENT_KEY_TYPES[kind], comment=target.name, **options)
    tmp = target.with_name(target.name + ".tmp")
    try:
        tmp.touch(mode=0o600)
        tmp.write_bytes(key.export_private_key("openssh"))
        tmp.replace(target)
        pub.write_bytes(key.export_public_key("openssh"))
    except OSError as exc:
        fail(prog, f"cannot write {target}: {exc.strerror or exc}")
    print(f"Fingerprint {key.get_fingerprint('sha256')}", file=sys.stderr)
    return 0


def write_key(prog: str, path: str, key: Any, fmt: str) -> int:
    """Write ``key`` (``ck`` inline or ``pem``) to ``path`` or stdout; print its fingerprint.

    An existing file is never overwritten: replacing a host key silently breaks every
    connector that pinned its fingerprint.  The file is created 0600 and renamed into
    place, so a crash never leaves half a key.
    """
    data = (keys.encode_inline(key) + "\n").encode() if fmt == "ck" else keys.encode_pem(key)
    if path == "-":
        sys.stdout.write(data.decode())
    else:
        target = Path(path)
        if target.exists():
            fail(prog, f"{target} exists; refusing to overwrite a key", EXIT_USAGE)
        tmp = target.with_name(target.name + ".tmp")
        try:
            tmp.touch(mode=0o600)
            tmp.write_bytes(data)
            tmp.replace(target)
        except OSError as exc:
            fail(prog, f"cannot write {target}: {exc.strerror or exc}")
    print(f"Fingerprint {keys.fingerprint_sha256(keys.public_key_wire(key))}", file=sys.stderr)
    return 0
