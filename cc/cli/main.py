"""``cloud-connector``: one entry point, one subcommand per job."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cc import __version__
from cc.runtime.lean import defer_unused_stdlib, leave_out_unused_asyncssh

__all__ = ["main"]

USAGE = f"""\
Usage: cloud-connector <command> [options]

Commands:
  server   run the gateway (chisel server compatible)
  client   run a connector (chisel client compatible)
  connect  reach a named service (WebRoute) as stdio or a local port
  agent    one reverse tunnel configured from the environment (Armorcode-style)
  keygen   write a new host key (PEM or ck-) and print its fingerprint
  status   print the sessions connected to a gateway (its /status page, needs --admin)
  demo     start a gateway, a connector and a service on loopback; fetch through the tunnel
  version  print the version, Python's, which fast path runs and the dependencies'

Run 'cloud-connector <command> --help' for a command's options.
Version: {__version__}
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "-help", "help"):
        sys.stdout.write(USAGE)
        return 0
    command, rest = args[0], args[1:]
    leave_out_unused_asyncssh()
    defer_unused_stdlib()
    if command == "server":
        from cc.cli.server import main as run
    elif command == "client":
        from cc.cli.client import main as run
    elif command == "connect":
        from cc.cli.connect import main as run
    elif command == "agent":
        from cc.cli.agent import main as run
    elif command == "keygen":
        from cc.cli.keygen import main as run
    elif command == "status":
        from cc.cli.status import main as run
    elif command == "demo":
        from cc.cli.demo import main as run
    elif command in ("--version", "-version"):
        print(__version__)
        return 0
    elif command == "version":
        return _version()
    else:
        print(
            f"cloud-connector: unknown command {command!r} "
            "(commands: server, client, connect, agent, keygen, status, demo, version; "
            "see cloud-connector --help)",
            file=sys.stderr,
        )
        return 2
    return run(rest)


def _version() -> int:
    """The facts a bug report needs; fails (status 1) like a run would on a refused import."""
    from cc.cli.common import fail_on_refused_import

    try:
        from cc.about import version_lines
    except ImportError as exc:
        fail_on_refused_import("cloud-connector version", exc)
        raise
    print("\n".join(version_lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
