"""``cloud-connector connect``: reach a named service (WebRoute) as stdio or a local port."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any, cast

from cc import __version__
from cc.cli.common import (
    EXIT_FATAL,
    EXIT_USAGE,
    GoArgumentParser,
    UsageError,
    fail,
    run_async,
)
from cc.log import get_logger, setup_logging
from cc.protocol.errors import ProtocolError
from cc.protocol.hosts import bare_host, join_host_port
from cc.transport.tls import TLSOptions
from cc.transport.webroute import ServiceURL, parse_service_url

__all__ = ["HELP", "main"]

PROG = "cloud-connector connect"
log = get_logger("connect")

HELP = f"""\
  Usage: cloud-connector connect [options] <url>

  Reaches a named service through a gateway: a "cloud-connector server"
  with --remoted-* keys, or a Remoted API Server. The service is served
  by "cloud-connector client ... R:svc/PATH:HOST:PORT" or by anything
  built on the Remoted API PHP SDK.

  <url> is the gateway and the service's path, with the client key as the
  user part, as the PHP SDK writes it:

    rwr://CLIENTKEY@gateway.example.com:8080/jira
    rwrs://CLIENTKEY@gateway.example.com/jira     (TLS)

  or http(s)://gateway/PATH with the key from --remoted-key.

  Without --listen, this program's stdin and stdout are the connection,
  for ssh:

    ssh -o ProxyCommand='cloud-connector connect rwrs://KEY@gw/ssh' host

  and it exits once both directions are done (status 0), or at once with
  status 1 and the gateway's answer if the service cannot be reached
  (403: wrong key; 502: nobody serves the path; 503: too many clients
  already wait for its server; 504: its server did not answer in time).

  Options:

    --listen, [HOST:]PORT to listen on (HOST defaults to 127.0.0.1): each
    connection accepted there is a new connection to the service. Runs
    until SIGINT/SIGTERM.

    --remoted-key, The client key, when the URL has none (env
    CC_REMOTED_CLIENT_KEY; prefer it to the command line, which every
    local user can read).

    --timeout, Seconds the gateway keeps us waiting for the service's
    server to answer (WebRoute-Timeout; the gateway waits at least 60).

    --proxy, An HTTP CONNECT or SOCKS5 proxy to reach the gateway through,
    as for cloud-connector client (env CC_PROXY).

    --tls-ca, --tls-skip-verify, --sni, As for cloud-connector client
    (env CC_TLS_CA, CC_TLS_SKIP_VERIFY, CC_SNI).

    -v, --verbose, Log each connection.

    --log-format, 'text' or 'json' (env CC_LOG_FORMAT). Logs go to stderr
    in stdio mode, to stdout with --listen.

    --help, This help text.

  Version:
    {__version__}
"""


def _parser() -> GoArgumentParser:
    p = GoArgumentParser(prog=PROG, help_text=HELP)
    p.add_flag("--listen", in_file=False)
    p.add_flag("--remoted-key", env="CC_REMOTED_CLIENT_KEY", in_file=False)
    p.add_flag("--timeout", type=int, in_file=False)
    p.add_flag("--proxy", env="CC_PROXY", in_file=False)
    p.add_flag("--tls-ca", env="CC_TLS_CA", in_file=False)
    p.add_flag(
        "--tls-skip-verify",
        action="store_true",
        env="CC_TLS_SKIP_VERIFY",
        default=False,
        in_file=False,
    )
    p.add_flag("--sni", env="CC_SNI", in_file=False)
    p.add_flag(
        "--verbose", "-v", action="store_true", env="CC_VERBOSE", default=False, in_file=False
    )
    p.add_flag(
        "--log-format", choices=("text", "json"), env="CC_LOG_FORMAT", default="text", in_file=False
    )
    p.add_argument("url", nargs="?")
    return p


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {text!r}: expected [HOST:]PORT")
    return bare_host(host or "127.0.0.1"), int(port)


class Settings:
    """What the command line asked for, checked."""

    def __init__(self, args: argparse.Namespace) -> None:
        if not args.url:
            raise UsageError("a service URL is required (see --help)")
        try:
            self.service: ServiceURL = parse_service_url(args.url)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        key = self.service.key or args.remoted_key
        if not key:
            raise UsageError(
                "no client key: put it in the URL (rwr://KEY@host/path), --remoted-key "
                "or CC_REMOTED_CLIENT_KEY"
            )
        self.key: str = key
        self.listen = _listen_address(args.listen) if args.listen else None
        if args.timeout is not None and args.timeout < 0:
            raise UsageError("--timeout must not be negative")
        self.wait: int | None = args.timeout
        self.proxy: str | None = args.proxy
        self.tls = TLSOptions(ca=args.tls_ca, skip_verify=args.tls_skip_verify, sni=args.sni)


async def _open(settings: Settings) -> tuple[asyncio.Transport, bytes]:
    from cc.transport.webroute import open_webroute

    return await open_webroute(
        settings.service, settings.key, wait=settings.wait, proxy=settings.proxy, tls=settings.tls
    )


def _failure(exc: BaseException) -> str:
    """The gateway's refusal in words an operator can act on."""
    from cc.protocol.webroute import WebRouteRefused

    if isinstance(exc, WebRouteRefused):
        hint = {
            403: "the gateway refused the client key",
            502: "nobody serves this path at the moment",
            503: "too many clients already wait for the service's server; retry later",
            504: "the service's server did not answer in time",
        }.get(exc.status)
        return f"{exc}: {hint}" if hint else str(exc)
    return str(exc)


async def _stdio(settings: Settings) -> int:
    """One connection: stdin/stdout through it until both directions are done."""
    from cc.transport.errors import DialError
    from cc.tunnel.stdio import StdioBridge

    try:
        transport, early = await _open(settings)
    except (DialError, ProtocolError, OSError) as exc:
        fail(PROG, f"{settings.service}: {_failure(exc)}", EXIT_FATAL)
    log.debug("Connected to %s", settings.service)

    async def opener(factory: Any) -> None:
        session = factory()
        session.connection_made(transport)
        transport.set_protocol(cast(asyncio.Protocol, session))
        if early:
            session.data_received(early)
        transport.resume_reading()

    bridge = StdioBridge(0, 1)
    await bridge.run(opener)
    return 0


async def _serve(settings: Settings) -> int:
    """A local port: every accepted connection gets its own WebRoute connection."""
    from cc.runtime.process import install_signals
    from cc.stats import SessionStats
    from cc.transport.errors import DialError
    from cc.tunnel.relay import Holding, splice

    assert settings.listen is not None
    stats = SessionStats(state="listening")
    remote = stats.remote(str(settings.service))
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()

    async def link(local: asyncio.Transport, peer: str) -> None:
        try:
            leg, early = await _open(settings)
        except (DialError, ProtocolError, OSError) as exc:
            remote.failed += 1
            log.warning("%s: %s", peer, _failure(exc))
            local.close()
            return
        log.debug("%s: connected to %s", peer, settings.service)
        splice(local, leg, to_inner=early, stats=remote)

    class Accepted(Holding):
        """What the local client sends waits (kept) until the service answers."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            local = cast(asyncio.Transport, transport)
            peername = local.get_extra_info("peername")
            peer = join_host_port(str(peername[0]), int(peername[1])) if peername else "?"
            task = loop.create_task(link(local, peer))
            pending.add(task)
            task.add_done_callback(pending.discard)

    host, port = settings.listen
    try:
        server = await loop.create_server(Accepted, host, port)
    except OSError as exc:
        fail(PROG, f"cannot listen on {join_host_port(host, port)}: {exc.strerror or exc}")
    log.info("Listening on %s for %s", join_host_port(host, port), settings.service)
    stopped = asyncio.Event()
    install_signals(loop, component="connect", stop=lambda _: stopped.set(), stats=stats)
    await stopped.wait()
    server.close()
    for task in pending:
        task.cancel()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.help:
        p.print_help()
        return 0
    try:
        settings = Settings(args)
    except UsageError as exc:
        fail(PROG, str(exc), EXIT_USAGE)
    # stdio: stdout is the connection, so logs must not touch it.
    setup_logging(args.verbose, args.log_format, None if settings.listen else sys.stderr)
    if settings.listen is None:
        return run_async(PROG, lambda: _stdio(settings))
    return run_async(PROG, lambda: _serve(settings))
