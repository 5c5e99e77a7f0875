"""``cloud-connector demo``: its options, so that ``--help`` explains instead of running it."""

from __future__ import annotations

from collections.abc import Sequence

from cc import __version__
from cc.cli.common import GoArgumentParser, fail_on_refused_import, run_async
from cc.log import setup_logging

__all__ = ["HELP", "main"]

PROG = "cloud-connector demo"

HELP = f"""\
  Usage: cloud-connector demo [-v]

  Starts, on 127.0.0.1 and free ports, a private HTTP service, a gateway
  and a connector that exposes the service through one of the gateway's
  ports; fetches a page through the tunnel, prints what happened and
  exits 0 (1 if the page did not come through). Nothing is left
  running and nothing listens beyond loopback.

  Options:

    -v, --verbose, Verbose logging: each tunnelled connection's open
    and close lines too.

    --help, This help text.

  Version:
    {__version__}
"""


def main(argv: Sequence[str] | None = None) -> int:
    p = GoArgumentParser(prog=PROG, help_text=HELP)
    p.add_flag("--verbose", "-v", action="store_true", default=False, in_file=False)
    args = p.parse_args(argv)
    if args.help:
        p.print_help()
        return 0
    if args.version:
        print(__version__)
        return 0
    try:
        from cc.demo import run_demo
    except ImportError as exc:
        fail_on_refused_import(PROG, exc)
        raise
    setup_logging(args.verbose)
    return run_async(PROG, run_demo, component="demo")
