"""``cloud-connector keygen``: make a host key the gateway (or chisel) can load."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cc.cli.common import EXIT_USAGE, GoArgumentParser, fail
from cc.protocol import keys

__all__ = ["main", "write_key"]

PROG = "cloud-connector keygen"


def main(argv: Sequence[str] | None = None) -> int:
    p = GoArgumentParser(prog=PROG, description="Write a new ECDSA P-256 host key.")
    p.add_flag("--seed", help="derive the key from SEED as chisel's --key does")
    p.add_flag("--format", choices=("ck", "pem"), default="pem", help="ck-... inline or PEM file")
    p.add_argument("path", nargs="?", default="-", help="where to write the key; - for stdout")
    args = p.parse_args(argv)
    if args.help:
        p.print_help()
        return 0
    if args.version:
        from cc import __version__

        print(__version__)
        return 0
    key = keys.seed_private_key(args.seed) if args.seed else keys.generate_private_key()
    return write_key(PROG, args.path, key, args.format)


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
