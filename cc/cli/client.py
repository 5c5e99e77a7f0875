"""``cloud-connector client``: chisel client's options, every remote form of chisel."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cc import __version__
from cc.cli.common import (
    EXIT_FATAL,
    EXIT_USAGE,
    GoArgumentParser,
    UsageError,
    add_ssh_ciphers_flag,
    add_udp_flags,
    check_hostname,
    duration,
    fail,
    parse_header,
    run_async,
    udp_settings,
)
from cc.cli.workers import auto_workers, supervise, worker_count, worker_index
from cc.log import redact, set_error_format, setup_logging
from cc.protocol.acl import parse_user_pass
from cc.protocol.errors import ProtocolError
from cc.protocol.hosts import split_listen_address
from cc.protocol.keys import fingerprint_format_error
from cc.protocol.remote import Remote, check_unique, parse_remote
from cc.protocol.webroute import is_service_remote, parse_service_remote
from cc.transport.tls import TLSOptions
from cc.transport.urls import normalize_server_url

if TYPE_CHECKING:
    from cc.connector.config import ConnectorConfig
    from cc.connector.connector import Connector
    from cc.connector.monitor import Monitor
    from cc.connector.webroute import ServiceConfig, ServiceRegistrar
    from cc.stats import SessionStats

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
      R:svc/jira:jira.internal:443

    * Except for "socks", which needs no remote host or port: it opens a
    SOCKS5 proxy on the local side (default 127.0.0.1:1080) whose
    connections leave from the server, which must run with --socks5;
    "R:socks" listens on the server and leaves from this client instead
    (the server needs --reverse). "stdio:" connects this program's
    stdin/stdout to the remote, for use as an ssh ProxyCommand.
    Two remotes on the same local address and protocol are an error.

    "R:svc/PATH:HOST:PORT" serves a named service: it registers PATH at
    the server (a cloud-connector server with --remoted-* keys, or a
    Remoted API Server) with the server key of --remoted-key, and links
    each client that asks for PATH ("cloud-connector connect URL/PATH",
    or the Remoted API PHP SDK's rwr:// URLs) to HOST:PORT. It needs no
    SSH session: --auth, --fingerprint and --header do not apply to it.

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

    --identity, An OpenSSH private key file (cloud-connector keygen
    --client) to log in with, for a server with --authorized-keys
    (env CC_IDENTITY). --auth is still tried after it. A refused key
    stops the client (no retry loop).

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

    --ssh-ciphers, The SSH ciphers to offer, comma-separated, most
    preferred first, for sites whose policy allows only some:
    aes128-gcm@openssh.com, aes256-gcm@openssh.com,
    chacha20-poly1305@openssh.com, aes128-ctr, aes192-ctr, aes256-ctr.
    The first one the server also allows is used. Defaults to
    aes128-gcm@openssh.com,aes256-gcm@openssh.com,
    chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr. AES-GCM and
    chacha20 run on the fast path; AES-CTR works without it, slower. When
    the server allows none of them, the log names both lists and the
    client retries as after any failed handshake (env CC_SSH_CIPHERS).

    --udp-max-senders, How many senders of one UDP remote keep their own
    mapping (socket) on the side that dials; beyond it the least recently
    used one is closed. Defaults to 10000 (chisel: 100, and new senders
    lose their replies; env CC_UDP_MAX_SENDERS).

    --udp-idle-timeout, A UDP sender's mapping is closed after this long
    without traffic. Defaults to '15s' ('0s': never; env
    CC_UDP_IDLE_TIMEOUT).

    --udp-max-size, Largest UDP datagram relayed, in bytes; larger ones
    are dropped. Defaults to 9012, as chisel (env CC_UDP_MAX_SIZE).

    --identifier, A name this connector serves the HTTP API gateway
    under (repeatable): targets.yaml routes a target with an identifier
    only to connectors that carry it (env CC_IDENTIFIER, names separated
    by spaces or commas).

    --http-target, HOST[:PORT] the HTTP API gateway may ask this
    connector to dial (repeatable; without a port, 80 and 443). The
    connector dials nothing else for it, and the gateway routes a
    target only to connectors that declared it (env CC_HTTP_TARGETS,
    separated by spaces or commas). With --http-target no remote is
    required. A chisel server ignores both.

    --workers, Number of connector processes, each with its own session,
    so that tunnelled traffic spreads over the CPUs. Against a
    cloud-connector server the sessions share every TCP reverse port
    (connections are spread over them, and one session dying does not
    take the port down); against a chisel server, which cannot share a
    port, the reverse remotes are split among the sessions instead.
    Local (forward) TCP ports are shared by all workers. A control
    process restarts a worker that dies, passes signals on, and sums
    the workers' figures on SIGUSR2. Defaults to 'auto': the number of
    usable CPUs, at most 8; 1 on a machine with 2 CPUs or fewer (where
    a second worker finds no idle core and only costs memory) and with
    a stdio or R:svc/ remote (env CC_WORKERS).

    --remoted-key, The server key that R:svc/ remotes register with (env
    CC_REMOTED_SERVER_KEY; prefer it to the command line, which every
    local user can read).

    --metrics, An address to serve Prometheus metrics (/metrics) and a
    readiness probe (/ready: 200 while connected, 503 otherwise) on,
    for example 9090 or 127.0.0.1:9090; a port alone means 127.0.0.1,
    0.0.0.0:9090 every interface. Off by default (env CC_METRICS).

    --pid, Write the process id to cloud-connector.pid in the current
    working directory; the file is removed on a clean exit.

    -v, --verbose, Enable verbose logging.

    --log-format, 'text' (default: "2006/01/02 15:04:05 client: ...", as
    chisel prints) or 'json' (one object per line with time, level,
    logger and msg; env CC_LOG_FORMAT). Logs go to stdout, errors that
    stop the program to stderr. With a stdio remote, logs go to stderr
    so that stdout carries only the tunnelled bytes.

    --config, A TOML file of options, one key per long option without
    its dashes: server = "https://...", remotes = ["R:8081:..."],
    keepalive-timeout = "10s", header = ["Token: ..."], verbose = true.
    The command line wins over the environment, which wins over the
    file. An unknown key or a wrong type stops the client, naming the
    key and its line (env CC_CONFIG).

    --version, Print the version and exit.

    --help, This help text.

  Every option also takes Go's single-dash form (-auth) and --name=value.

  Signals:
    SIGINT/SIGTERM close the tunnel and exit with status 0;
    SIGUSR2 prints process and tunnel stats to the log;
    SIGHUP skips the current reconnect wait.

  Exit status: 0 after a signal, 1 when the client gives up or is
  refused (token, password, fingerprint) or when a stdio stream is
  refused or cut short, 2 for bad command-line input.

  Version:
    {__version__}
"""


def add_connector_flags(p: GoArgumentParser) -> None:
    """Options shared by ``cloud-connector client`` and ``outsystemscc``."""
    p.add_config_flag()
    p.add_flag("--keepalive", type=duration, env="CC_KEEPALIVE", default="25s")
    p.add_flag("--max-retry-count", type=int, env="CC_MAX_RETRY_COUNT", default="-1")
    p.add_flag("--max-retry-interval", type=duration, env="CC_MAX_RETRY_INTERVAL", default="5m")
    p.add_flag("--proxy", env="CC_PROXY")
    p.add_flag("--header", action="append", env="CC_HEADERS")
    p.add_flag("--hostname", env="CC_HOSTNAME")
    p.add_flag("--pid", action="store_true", env="CC_PID", default=False)
    p.add_flag("--verbose", "-v", action="store_true", env="CC_VERBOSE", default=False)
    p.add_flag("--log-format", choices=("text", "json"), env="CC_LOG_FORMAT", default="text")
    p.add_flag("--keepalive-timeout", type=duration, env="CC_KEEPALIVE_TIMEOUT", default="10s")
    p.add_flag("--metrics", env="CC_METRICS")
    p.add_flag("--tls-ca", env="CC_TLS_CA", path=True)
    p.add_flag("--tls-skip-verify", action="store_true", env="CC_TLS_SKIP_VERIFY", default=False)
    p.add_flag("--tls-cert", env="CC_TLS_CERT", path=True)
    p.add_flag("--tls-key", env="CC_TLS_KEY", path=True)
    p.add_flag("--sni", env="CC_SNI")
    add_udp_flags(p)
    p.add_flag("server", nargs="?", env="CC_SERVER")
    p.add_flag("remotes", nargs="*", env="CC_REMOTES", default=[])


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
    if args.metrics:
        split_listen_address(args.metrics)  # HostError (a ProtocolError) if malformed
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


async def run_connector(
    prog: str,
    config: ConnectorConfig,
    pid_path: str | None,
    metrics: str | None = None,
    *,
    services: Sequence[ServiceConfig] = (),
) -> int:
    """Run until stopped by a signal (exit 0) or a fatal error (exit 1).

    A signal asks the connector to stop; if it is stuck in a dial or pre-flight
    (a firewall that drops packets makes that last the full connect timeout),
    the run is cancelled after STOP_GRACE so SIGTERM always ends us promptly.
    ``metrics``: the --metrics address (cc.connector.monitor), None for none.
    Named services (``R:svc/``) run beside the SSH session, which exists only when
    there is something else to serve; whichever stops first stops the others.
    """
    from cc.connector.connector import Connector
    from cc.connector.webroute import ServiceRegistrar
    from cc.stats import SessionStats

    session = bool(config.remotes or config.http_targets) or not services
    connector = Connector(config) if session else None
    stats = connector.stats if connector is not None else SessionStats(state="serving")
    for remote in config.remotes:
        # SIGUSR2 lists every remote from the start, not only those used so far.
        stats.remote(str(remote))
    registrars = [ServiceRegistrar(service, stats) for service in services]
    monitor = await _start_monitor(prog, connector, metrics) if connector is not None else None
    try:
        return await _run(prog, connector, registrars, stats, pid_path)
    finally:
        if monitor is not None:
            await monitor.stop()


async def _start_monitor(prog: str, connector: Connector, address: str | None) -> Monitor | None:
    """--metrics: listen now, so that a taken port fails at start, not later."""
    if not address:
        return None
    from cc.connector.monitor import Monitor
    from cc.runtime.figures import FiguresLink, Fleet

    host, port = split_listen_address(address)
    worker = connector.config.worker_count > 1
    fleet = Fleet(connector.figures, FiguresLink.from_environment() if worker else None)
    monitor = Monitor(fleet, host, port, reuse_port=worker)
    try:
        await monitor.start()
    except OSError as exc:
        fail(prog, f"--metrics: cannot listen on {monitor.address}: {exc.strerror or exc}")
    return monitor


async def _run(
    prog: str,
    connector: Connector | None,
    registrars: Sequence[ServiceRegistrar],
    stats: SessionStats,
    pid_path: str | None,
) -> int:
    from cc.connector.connector import FatalError
    from cc.runtime.process import PidFile, install_signals

    parts: list[Connector | ServiceRegistrar] = [*registrars]
    if connector is not None:
        parts.insert(0, connector)
    loop = asyncio.get_running_loop()
    stopping = False

    def stop(_: str) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            for part in parts:
                part.stop()
            for task in tasks:
                loop.call_later(STOP_GRACE, task.cancel)

    with PidFile(pid_path):
        tasks = [loop.create_task(part.run()) for part in parts]
        install_signals(
            loop,
            component="client",
            stop=stop,
            stats=stats,
            hup=connector.skip_wait if connector is not None else None,
        )
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if not stopping:  # one ended by itself (stdio done, or fatal): end the rest
                stopping = True
                for part in parts:
                    part.stop()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, FatalError):
                    fail(prog, str(result), EXIT_FATAL)
                if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError
                ):
                    raise result
        except asyncio.CancelledError:
            if not stopping:
                raise
    return 0


def _has_stdio(remotes: list[Remote]) -> bool:
    return any(remote.stdio for remote in remotes)


def _read_identity(path: str) -> bytes:
    """The --identity file's bytes, checked once here so a bad file is a usage error."""
    import asyncssh  # not at module level: the --workers control process stays without it

    try:
        data = Path(path).read_bytes()
        asyncssh.import_private_key(data)
    except OSError as exc:
        raise UsageError(f"cannot read --identity {path}: {exc.strerror or exc}") from None
    except (ValueError, asyncssh.KeyImportError) as exc:
        raise UsageError(f"--identity {path} is not a private key: {exc}") from None
    return data


def _parser() -> GoArgumentParser:
    p = GoArgumentParser(prog=PROG, help_text=HELP)
    p.add_flag("--fingerprint", env="CC_FINGERPRINT", default="")
    p.add_flag("--auth", env="AUTH")
    p.add_flag("--identity", env="CC_IDENTITY", path=True)
    p.add_flag(
        "--workers", type=worker_count, env="CC_WORKERS", default="auto", file_types=(int, str)
    )
    p.add_flag("--identifier", action="append", env="CC_IDENTIFIER", default=[])
    p.add_flag("--http-target", action="append", env="CC_HTTP_TARGETS", default=[])
    p.add_flag("--remoted-key", env="CC_REMOTED_SERVER_KEY")
    add_ssh_ciphers_flag(p)
    add_connector_flags(p)
    return p


def _http_offer(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """--identifier and --http-target, checked: (identifiers, canonical host:port targets)."""
    identifiers = []
    for name in args.identifier:
        if not name or len(name) > 200 or any(c.isspace() or c == "," for c in name):
            raise UsageError(f"--identifier {name!r}: a name without spaces or commas")
        identifiers.append(name)
    targets: list[str] = []
    if not args.http_target:
        return identifiers, targets
    # Only now: that module reads targets.yaml too, and PyYAML costs ~1 MB idle.
    from cc.protocol.apigw.targets import parse_http_target

    for text in args.http_target:
        for target in parse_http_target(text):
            if target not in targets:
                targets.append(target)
    return identifiers, targets


def settings_from_args(
    args: argparse.Namespace,
) -> tuple[ConnectorConfig, int, list[ServiceConfig]]:
    """The connector's config, the worker count and the named services; UsageError if wrong."""
    if not args.server:
        raise UsageError("a server URL is required (see --help)")
    remotes = [parse_remote(r) for r in args.remotes if not is_service_remote(r)]
    services = [parse_service_remote(r) for r in args.remotes if is_service_remote(r)]
    identifiers, http_targets = _http_offer(args)
    if not remotes and not http_targets and not services:
        raise UsageError("at least one remote (or --http-target) is required")
    check_unique(remotes)
    if len({s.path for s in services}) < len(services):
        raise UsageError("two R:svc/ remotes register the same path")
    if services and not args.remoted_key:
        raise UsageError(
            "R:svc/ remotes need the server key: --remoted-key or CC_REMOTED_SERVER_KEY"
        )
    config = build_connector_config(args, remotes)
    config.identifiers = identifiers
    config.http_targets = http_targets
    if args.auth:
        config.auth = parse_user_pass(args.auth)
    if args.identity:
        config.identity = _read_identity(args.identity)
    problem = fingerprint_format_error(args.fingerprint)
    if problem is not None:
        raise UsageError(problem)
    config.fingerprint = args.fingerprint
    config.ssh_ciphers = args.ssh_ciphers
    config.config_version = __version__
    workers = args.workers
    if workers is None:
        workers = 1 if _has_stdio(remotes) or services else auto_workers()
    elif workers > 1 and _has_stdio(remotes):
        raise UsageError("a stdio remote has one stdin: it needs --workers 1")
    elif workers > 1 and services:
        raise UsageError("R:svc/ remotes are served by one process: they need --workers 1")
    if not services:
        return config, workers, []
    from cc.connector.webroute import ServiceConfig  # loads asyncssh: only when needed

    gateway = config.server._replace(
        scheme="https" if config.server.scheme in ("https", "wss") else "http", path="", query=""
    )
    service_configs = [
        ServiceConfig(
            gateway=gateway,
            remote=service,
            key=args.remoted_key,
            proxy=config.proxy,
            tls=config.tls,
            max_retry_interval=config.max_retry_interval,
            max_retry_count=config.max_retry_count,
        )
        for service in services
    ]
    return config, workers, service_configs


def main(argv: Sequence[str] | None = None) -> int:
    """``cloud-connector client``: chisel client's command line."""
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
        config, workers, services = settings_from_args(args)
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
    return run_async(
        PROG, lambda: run_connector(PROG, config, pid_path, args.metrics, services=services)
    )


async def _supervise(command: list[str], workers: int, pid_path: str | None) -> int:
    """The control process: one connector per worker, none here."""
    return await supervise(
        prog=PROG,
        component="client",
        command=command,
        count=workers,
        # The group secret: our gateway lets only these sessions share ports.
        stdin_data=secrets.token_urlsafe(32).encode() + b"\n",
        pid_path=pid_path,
        fatal_codes=(EXIT_FATAL, EXIT_USAGE),
        forward_hup=True,
    )
