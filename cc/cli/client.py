"""``cloud-connector client``: chisel client's options, every remote form of chisel."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import ssl
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cc import __version__
from cc.cli.common import (
    EXIT_FATAL,
    EXIT_USAGE,
    GoArgumentParser,
    UsageError,
    add_udp_flags,
    check_hostname,
    duration,
    env_default,
    env_flag,
    env_list,
    fail,
    parse_header,
    run_async,
    udp_settings,
)
from cc.cli.workers import auto_workers, supervise, worker_count, worker_index
from cc.log import redact, setup_logging
from cc.protocol.acl import parse_user_pass
from cc.protocol.errors import ProtocolError
from cc.protocol.remote import Remote, check_unique, parse_remote
from cc.transport.tls import TLSOptions
from cc.transport.urls import normalize_server_url

if TYPE_CHECKING:
    from cc.connector.config import ConnectorConfig

__all__ = ["HELP", "add_connector_flags", "build_connector_config", "main"]

PROG = "cloud-connector client"
#: After SIGINT/SIGTERM the session gets this long to close cleanly; then a pending
#: dial or pre-flight (which may wait up to its 30 s timeout) is cancelled.
STOP_GRACE = 2.0

HELP = f"""\
  Usage: cloud-connector client [options] <server> <remote> [remote] [remote] ...

  <server> is the URL of the gateway (a "cloud-connector server" or a chisel
  server). http:// and ws:// connect in the clear, https:// and wss:// over
  TLS; with no scheme, http:// is assumed. Default ports are 80 and 443.

  <remote>s are connections tunnelled through the server, each of the form

    <local-host>:<local-port>:<remote-host>:<remote-port>/<protocol>

  - local-host defaults to 0.0.0.0 (all interfaces).
  - local-port defaults to remote-port.
  - remote-port is required*.
  - remote-host defaults to 127.0.0.1 (the server's localhost).
  - protocol defaults to tcp; add /udp for UDP.

  which shares <remote-host>:<remote-port> from the server to the client
  as <local-host>:<local-port>, or, prefixed with R:, does reverse port
  forwarding: shares <remote-host>:<remote-port> from the client to the
  server's <local-host>:<local-port>. IPv6 addresses go in brackets.

    example remotes

      3000
      example.com:3000
      3000:google.com:80
      192.168.0.5:3000:google.com:80
      socks
      5000:socks
      R:2222:localhost:22
      R:socks
      R:5000:socks
      stdio:example.com:22
      1.1.1.1:53/udp
      [::1]:3000:[::1]:80

    * Except for "socks", which needs no remote host or port: it opens a
    SOCKS5 proxy on the local side (default 127.0.0.1:1080) whose
    connections leave from the server, which must run with --socks5;
    "R:socks" listens on the server and leaves from this client instead
    (the server needs --reverse). "stdio:" connects this program's
    stdin/stdout to the remote, for use as an ssh ProxyCommand.
    Two remotes on the same local address and protocol are an error.

  Options:

    --fingerprint, A fingerprint string to perform host-key validation
    against the server's public key: the base64 SHA256 form the server
    prints at start ("Fingerprint ..."), 44 characters ending in "=".
    The legacy colon-separated MD5 form is accepted with a warning.
    Without it, any server key is accepted and its fingerprint is logged
    (env CC_FINGERPRINT). A mismatch stops the client with exit status 1.

    --auth, Credentials for the server's --auth/--authfile users, in the
    form <user>:<pass>. Defaults to the environment variable AUTH. A
    refused password stops the client (no retry loop).

    --keepalive, An optional keepalive interval. Since the underlying
    transport is HTTP, proxies on the way often close idle connections.
    Give a time with a unit, for example '5s' or '2m'. Defaults to '25s'
    (set to 0s to disable; env CC_KEEPALIVE).

    --keepalive-timeout, How long a keepalive ping may go unanswered
    before the connection counts as dead and is re-established.
    Defaults to '10s' (env CC_KEEPALIVE_TIMEOUT).

    --max-retry-count, Maximum number of times to retry before exiting.
    Defaults to unlimited (-1; env CC_MAX_RETRY_COUNT). When the retries
    run out the client exits with status 1.

    --max-retry-interval, Maximum wait time before retrying after a
    disconnection. Waits start at 100ms and double (with jitter) up to
    this. Defaults to 5 minutes ('5m'; env CC_MAX_RETRY_INTERVAL).

    --proxy, An optional HTTP CONNECT or SOCKS5 proxy used to reach the
    server. Credentials can be given inside the URL; they are never
    logged. For example http://admin:password@my-server.com:8081
    or socks://admin:password@my-server.com:1080 (socks:// and
    socks5h:// let the proxy resolve names, socks5:// resolves here).
    Env CC_PROXY.

    --header, Set a custom header in the form "HeaderName: HeaderContent",
    for example --header "Token: <token>". Can be used multiple times.

    --hostname, Optionally set the 'Host' header (defaults to the host
    found in the server url; env CC_HOSTNAME).

    --sni, Override the ServerName sent in the TLS handshake (defaults
    to the host of the server url; env CC_SNI).

    --tls-ca, An optional root certificate bundle used to verify the
    server: a PEM file, or a directory of PEM files. It replaces the
    system roots (env CC_TLS_CA).

    --tls-skip-verify, Skip verification of the server's TLS certificate
    chain and host name. The SSH layer is still protected, so pin the
    server with --fingerprint when using this.

    --tls-key, A path to a PEM-encoded private key for TLS client
    authentication (mutual TLS). Requires --tls-cert (env CC_TLS_KEY).

    --tls-cert, A path to a PEM-encoded certificate matching --tls-key,
    sent to servers that require client certificates (env CC_TLS_CERT).

    --udp-max-senders, How many senders of one UDP remote keep their own
    mapping (socket) on the side that dials; beyond it the least recently
    used one is closed. Defaults to 10000 (chisel: 100, and new senders
    lose their replies; env CC_UDP_MAX_SENDERS).

    --udp-idle-timeout, A UDP sender's mapping is closed after this long
    without traffic. Defaults to '15s' ('0s': never; env
    CC_UDP_IDLE_TIMEOUT).

    --udp-max-size, Largest UDP datagram relayed, in bytes; larger ones
    are dropped. Defaults to 9012, as chisel (env CC_UDP_MAX_SIZE).

    --workers, Number of connector processes, each with its own session,
    so that tunnelled traffic spreads over the CPUs. Against a
    cloud-connector server the sessions share every TCP reverse port
    (connections are spread over them, and one session dying does not
    take the port down); against a chisel server, which cannot share a
    port, the reverse remotes are split among the sessions instead.
    Local (forward) TCP ports are shared by all workers. A control
    process restarts a worker that dies, passes signals on, and sums
    the workers' figures on SIGUSR2. Defaults to 'auto': the number of
    usable CPUs, at most 8, or 1 with a stdio remote (env CC_WORKERS).

    --pid, Write the process id to cloud-connector.pid in the current
    working directory; the file is removed on a clean exit.

    -v, --verbose, Enable verbose logging.

    --log-format, 'text' (default: "2006/01/02 15:04:05 client: ...", as
    chisel prints) or 'json' (one object per line with time, level,
    logger and msg; env CC_LOG_FORMAT). Logs go to stdout, errors that
    stop the program to stderr. With a stdio remote, logs go to stderr
    so that stdout carries only the tunnelled bytes.

    --help, This help text.

  Every option also takes Go's single-dash form (-auth) and --name=value.

  Signals:
    SIGINT/SIGTERM close the tunnel and exit with status 0;
    SIGUSR2 prints process and tunnel stats to the log;
    SIGHUP skips the current reconnect wait.

  Exit status: 0 after a signal, 1 when the client gives up or is
  refused (token, password, fingerprint), 2 for bad command-line input.

  Version:
    {__version__}
"""


def add_connector_flags(p: GoArgumentParser) -> None:
    """Options shared by ``cloud-connector client`` and ``outsystemscc``."""
    p.add_flag("--keepalive", type=duration, default=env_default("CC_KEEPALIVE", "25s"))
    p.add_flag("--max-retry-count", type=int, default=env_default("CC_MAX_RETRY_COUNT", "-1"))
    p.add_flag(
        "--max-retry-interval", type=duration, default=env_default("CC_MAX_RETRY_INTERVAL", "5m")
    )
    p.add_flag("--proxy", default=env_default("CC_PROXY"))
    p.add_flag("--header", action="append", default=env_list("CC_HEADERS"))
    p.add_flag("--hostname", default=env_default("CC_HOSTNAME"))
    p.add_flag("--pid", action="store_true", default=env_flag("CC_PID"))
    p.add_flag("--verbose", "-v", action="store_true", default=env_flag("CC_VERBOSE"))
    p.add_flag(
        "--log-format", choices=("text", "json"), default=env_default("CC_LOG_FORMAT", "text")
    )
    p.add_flag(
        "--keepalive-timeout", type=duration, default=env_default("CC_KEEPALIVE_TIMEOUT", "10s")
    )
    p.add_flag("--tls-ca", default=env_default("CC_TLS_CA"))
    p.add_flag("--tls-skip-verify", action="store_true", default=env_flag("CC_TLS_SKIP_VERIFY"))
    p.add_flag("--tls-cert", default=env_default("CC_TLS_CERT"))
    p.add_flag("--tls-key", default=env_default("CC_TLS_KEY"))
    p.add_flag("--sni", default=env_default("CC_SNI"))
    add_udp_flags(p)
    p.add_argument("server", nargs="?", default=env_default("CC_SERVER"))
    p.add_argument("remotes", nargs="*", default=(env_default("CC_REMOTES") or "").split())


def _check_tls(tls: TLSOptions) -> None:
    """Load the TLS files now, so a typo fails at start, not at the first TLS dial."""
    if tls.ca and not os.path.exists(tls.ca):
        raise UsageError(f"--tls-ca {tls.ca}: no such file or directory")
    for option, path in (("--tls-cert", tls.cert), ("--tls-key", tls.key)):
        if path and not os.path.isfile(path):
            raise UsageError(f"{option} {path}: no such file")
    ctx = ssl.create_default_context()
    if tls.ca:
        try:
            if os.path.isdir(tls.ca):
                ctx.load_verify_locations(capath=tls.ca)
            else:
                ctx.load_verify_locations(cafile=tls.ca)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--tls-ca {tls.ca}: not a PEM CA bundle ({_reason(exc)})") from None
    if tls.cert:
        try:
            ctx.load_cert_chain(tls.cert, tls.key)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"--tls-cert/--tls-key: cannot load a PEM certificate and its key ({_reason(exc)})"
            ) from None


def _reason(exc: OSError) -> str:
    """``ssl.SSLError`` carries a short library reason; plain OSErrors a strerror."""
    return str(getattr(exc, "reason", None) or exc.strerror or exc)


def build_connector_config(args: argparse.Namespace, remotes: list[Remote]) -> ConnectorConfig:
    """Validate everything the user typed before any connection is tried."""
    if not args.server:
        raise UsageError("a server URL is required")
    try:
        server = normalize_server_url(args.server)
    except ValueError as exc:
        # The message quotes the URL; keep a password in it off the terminal.
        raise UsageError(str(exc).replace(args.server, redact(args.server))) from None
    if args.proxy:
        from cc.transport.proxy import ProxyURLError, parse_proxy_url

        try:
            parse_proxy_url(args.proxy)
        except ProxyURLError as exc:
            raise UsageError(str(exc)) from None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    tls = TLSOptions(
        ca=args.tls_ca,
        skip_verify=args.tls_skip_verify,
        cert=args.tls_cert,
        key=args.tls_key,
        sni=args.sni,
    )
    _check_tls(tls)
    # Imported here, not at the top: asyncssh takes half the start-up time, and
    # --help and typos should answer at once.
    from cc.connector.config import ConnectorConfig

    headers = [parse_header(h) for h in args.header]
    hostname = check_hostname(args.hostname) if args.hostname else args.hostname
    for name, value in headers:
        if name.lower() == "host" and not hostname:
            hostname = value
    if args.max_retry_interval <= 0:
        raise UsageError("--max-retry-interval must be positive")
    return ConnectorConfig(
        server=server,
        remotes=remotes,
        keepalive=args.keepalive,
        keepalive_timeout=args.keepalive_timeout,
        max_retry_count=args.max_retry_count,
        max_retry_interval=args.max_retry_interval,
        headers=headers,
        hostname=hostname,
        proxy=args.proxy,
        tls=tls,
        udp=udp_settings(args),
    )


async def run_connector(prog: str, config: ConnectorConfig, pid_path: str | None) -> int:
    """Run until stopped by a signal (exit 0) or a fatal error (exit 1).

    A signal asks the connector to stop; if it is stuck in a dial or pre-flight
    (a firewall that drops packets makes that last the full connect timeout),
    the run is cancelled after STOP_GRACE so SIGTERM always ends us promptly.
    """
    from cc.connector.connector import Connector, FatalError
    from cc.runtime.process import PidFile, install_signals

    connector = Connector(config)
    for remote in config.remotes:
        # SIGUSR2 lists every remote from the start, not only those used so far.
        connector.stats.remote(str(remote))
    loop = asyncio.get_running_loop()
    stopping = False

    def stop(_: str) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            connector.stop()
            loop.call_later(STOP_GRACE, task.cancel)

    with PidFile(pid_path):
        task = loop.create_task(connector.run())
        install_signals(
            loop,
            component="client",
            stop=stop,
            stats=connector.stats,
            hup=connector.skip_wait,
        )
        try:
            await task
        except FatalError as exc:
            fail(prog, str(exc), EXIT_FATAL)
        except asyncio.CancelledError:
            if not stopping:
                raise
    return 0


def _has_stdio(remotes: list[Remote]) -> bool:
    return any(remote.stdio for remote in remotes)


def _parser() -> GoArgumentParser:
    p = GoArgumentParser(prog=PROG, help_text=HELP)
    p.add_flag("--fingerprint", default=env_default("CC_FINGERPRINT", ""))
    p.add_flag("--auth", default=env_default("AUTH"))
    p.add_flag("--workers", type=worker_count, default=env_default("CC_WORKERS", "auto"))
    add_connector_flags(p)
    return p


def settings_from_args(args: argparse.Namespace) -> tuple[ConnectorConfig, int]:
    """The connector's config and the worker count, all checked; UsageError if wrong."""
    if not args.server:
        raise UsageError("a server URL is required (see --help)")
    remotes = [parse_remote(r) for r in args.remotes]
    if not remotes:
        raise UsageError("at least one remote is required")
    check_unique(remotes)
    config = build_connector_config(args, remotes)
    if args.auth:
        config.auth = parse_user_pass(args.auth)
    config.fingerprint = args.fingerprint
    config.config_version = __version__
    workers = args.workers
    if workers is None:
        workers = 1 if _has_stdio(remotes) else auto_workers()
    elif workers > 1 and _has_stdio(remotes):
        raise UsageError("a stdio remote has one stdin: it needs --workers 1")
    return config, workers


def main(argv: Sequence[str] | None = None) -> int:
    """``cloud-connector client``: chisel client's command line."""
    p = _parser()
    args = p.parse_args(argv)
    if args.help:
        p.print_help()
        return 0
    try:
        config, workers = settings_from_args(args)
    except (UsageError, ProtocolError, ValueError) as exc:
        fail(PROG, str(exc), EXIT_USAGE)
    # stdio: stdout is the tunnelled connection, so logs must not touch it.
    index = worker_index()
    stdio = _has_stdio(config.remotes)
    setup_logging(args.verbose, args.log_format, sys.stderr if stdio else None, index)
    pid_path = "cloud-connector.pid" if args.pid else None
    if workers > 1 and index is None:
        command = ["client", *(sys.argv[2:] if argv is None else argv)]
        return run_async(PROG, lambda: _supervise(command, workers, pid_path))
    if index is not None:
        config.worker_index, config.worker_count = index, workers
        config.group = sys.stdin.readline().strip() or None
        pid_path = None  # the control process has it
    return run_async(PROG, lambda: run_connector(PROG, config, pid_path))


async def _supervise(command: list[str], workers: int, pid_path: str | None) -> int:
    """The control process: one connector per worker, none here."""
    return await supervise(
        component="client",
        command=command,
        count=workers,
        # The group secret: our gateway lets only these sessions share ports.
        stdin_data=secrets.token_urlsafe(32).encode() + b"\n",
        pid_path=pid_path,
        fatal_codes=(EXIT_FATAL, EXIT_USAGE),
        forward_hup=True,
    )
