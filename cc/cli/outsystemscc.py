"""``outsystemscc``: the OutSystems Cloud Connector CLI, as its README describes it.

Same options, defaults, help text and log lines as the Go original; only reverse
remotes (``R:<local-port>:<remote-host>:<remote-port>[/udp]``).  What we add is
what the original gets wrong: a real SIGUSR2, a non-zero exit when it gives up,
and a dead connection noticed by a keepalive deadline.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Sequence
from importlib import resources

from cc import __version__
from cc.cli.client import add_connector_flags, build_connector_config, run_connector
from cc.cli.common import EXIT_USAGE, GoArgumentParser, UsageError, fail, run_async
from cc.log import set_error_format, setup_logging
from cc.protocol.acl import parse_user_pass
from cc.protocol.errors import ProtocolError
from cc.protocol.remote import check_unique, parse_outsystemscc_remote
from cc.runtime.lean import defer_unused_stdlib, leave_out_unused_asyncssh

__all__ = ["EXTRA_HELP", "HELP", "SEED_HELP", "main"]

PROG = "outsystemscc"
_TEXTS = resources.files("cc.cli")
#: The seed's text, verbatim (tests/vectors), then a separate section for what we add.
SEED_HELP = _TEXTS.joinpath("outsystemscc_help.txt").read_text(encoding="utf-8")
EXTRA_HELP = _TEXTS.joinpath("outsystemscc_extra_help.txt").read_text(encoding="utf-8")
HELP = SEED_HELP + EXTRA_HELP
#: The OutSystems fork never pings more often than this.
MIN_KEEPALIVE = 5.0


def _parser() -> GoArgumentParser:
    p = GoArgumentParser(prog=PROG, help_text=HELP)
    add_connector_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``outsystemscc``: the Cloud Connector's command line (console script and ``-m``)."""
    leave_out_unused_asyncssh()
    defer_unused_stdlib()
    p = _parser()
    args = p.parse_args(argv)
    if args.help:
        p.print_help()
        return 0
    if args.version:
        print(__version__)
        return 0
    set_error_format(args.log_format)
    try:
        if not args.server:
            raise UsageError("a server URL is required")
        remotes = [parse_outsystemscc_remote(r) for r in args.remotes]
        if not remotes:
            raise UsageError(
                "at least one remote (R:<local-port>:<remote-host>:<remote-port>) is required"
            )
        # outsystemscc's rule: one local port per remote, whatever the protocol,
        # which also keeps the ports= query free of duplicates.
        check_unique(remotes, port_only=True)
        config = build_connector_config(args, remotes)
        # Like the Go original (config.Auth = os.Getenv("AUTH")): no --auth flag.
        if os.environ.get("AUTH"):
            config.auth = parse_user_pass(os.environ["AUTH"])
    except (UsageError, ProtocolError, ValueError) as exc:
        fail(PROG, str(exc), EXIT_USAGE)
    if 0 < config.keepalive < MIN_KEEPALIVE:
        config.keepalive = MIN_KEEPALIVE
    config.user_agent = f"CloudConnector/{__version__}"
    config.preflight = True
    connector_id = f"{random.SystemRandom().randrange(10**8, 10**9)}"
    ports = ",".join(str(r.local_port) for r in remotes)
    config.extra_query = f"id={connector_id}&ports={ports}"
    config.announce = False
    setup_logging(args.verbose, args.log_format)
    return run_async(
        PROG,
        lambda: run_connector(PROG, config, "outsystemscc.pid" if args.pid else None, args.metrics),
    )


if __name__ == "__main__":
    sys.exit(main())
