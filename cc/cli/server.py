"""``cloud-connector server``: chisel server's options with the same names and meaning,
plus ``--tokens`` for the Cloud Connector's token header."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cc import __version__
from cc.cli.common import (
    EXIT_USAGE,
    GoArgumentParser,
    UsageError,
    add_udp_flags,
    duration,
    env_default,
    env_flag,
    fail,
    fail_on_refused_import,
    run_async,
    udp_settings,
)
from cc.cli.keygen import write_key
from cc.cli.workers import auto_workers, supervise, worker_count, worker_index
from cc.log import get_logger, setup_logging
from cc.protocol import keys
from cc.protocol.acl import (
    TokenTable,
    UserTable,
    parse_authfile,
    parse_tokens_file,
    parse_user_pass,
)
from cc.protocol.admission import AdmissionPolicy
from cc.protocol.errors import ProtocolError
from cc.protocol.hosts import join_host_port

if TYPE_CHECKING:
    from cc.gateway.gateway import GatewayConfig

__all__ = ["HELP", "load_host_key", "main"]

PROG = "cloud-connector server"
log = get_logger("server")

HELP = f"""\
  Usage: cloud-connector server [options]

  Runs the gateway: a chisel-v3 server that connectors ("cloud-connector
  client", outsystemscc or chisel clients) reach over HTTP/WebSocket.

  Options:

    --host, The network interface the HTTP listener binds to (defaults
    to the environment variable HOST, then 0.0.0.0: all interfaces).

    --port, -p, The HTTP listening port (defaults to the environment
    variable PORT, then 8080).

    --key, (prefer --keygen and --keyfile) A seed string from which the
    ECDSA P-256 host key is derived, exactly as chisel derives it, so the
    same seed gives the same fingerprint with chisel and with us. The
    host key secures every session; give its fingerprint to clients
    (--fingerprint) so they can detect a man in the middle. Defaults to
    the environment variable CHISEL_KEY; without it and without
    --keyfile a new key (and fingerprint) is generated on every start.

    --keygen, A path to write a newly generated private key to, in
    chisel's inline "ck-..." form, then exit; "-" prints it to stdout.
    With --key, writes the key derived from that seed instead. An
    existing file is never overwritten (a replaced host key breaks
    every client that pinned its fingerprint).

    --keyfile, The host private key: a path to a PEM-encoded key or a
    "ck-..." file, or the "ck-..." string itself. When set, --key is
    ignored. Defaults to the environment variable CHISEL_KEY_FILE.

    --authfile, An optional path to a users.json file, an object like

      {{
        "<user:pass>": ["<addr-regex>", "<addr-regex>"]
      }}

    When <user> connects, <pass> is checked and each of the remotes it
    asks for must fully match one of the regular expressions. Remotes
    are matched as "<remote-host>:<remote-port>" for normal remotes and
    "R:<local-interface>:<local-port>" for reverse ones; "" or "*"
    allows everything, an empty list nothing. The file is reloaded when
    it changes (env CC_AUTHFILE).

    --auth, A single user with full access, in the form <user:pass>;
    the same as an authfile holding {{"<user:pass>": [""]}}. Defaults to
    the environment variable AUTH. Without --auth and --authfile any
    client may connect.

    --tokens, An optional path to a tokens.json file, an object like

      {{
        "<token>": ["<addr-regex>", ...]
      }}

    When set, every WebSocket request must carry a "Token: <token>"
    header (what the Cloud Connector sends with --header "token: ...");
    a missing or unknown token is refused with HTTP 401 before any SSH
    state exists, and the token's regexes limit its remotes as above.
    Reloaded when it changes (env CC_TOKENS).

    --keepalive, How often the server pings each client. Since the
    underlying transport is HTTP, proxies on the way often close idle
    connections. Give a time with a unit, for example '5s' or '2m'.
    Defaults to '25s' (set to 0s to disable; env CC_KEEPALIVE).

    --keepalive-timeout, How long a keepalive ping may go unanswered
    before the session is closed and its reverse ports are freed for
    the reconnecting client (chisel keeps them bound for ever).
    Defaults to '10s' (env CC_KEEPALIVE_TIMEOUT).

    --backend, Another HTTP server to proxy plain (non-WebSocket)
    requests to, for example http://127.0.0.1:3000, which hides the
    gateway behind a normal web site. Without it, /health answers "OK",
    /version the version, everything else 404 (env CC_BACKEND).

    --socks5, Allow clients to use the server's internal SOCKS5 proxy
    (the "socks" remote; see cloud-connector client --help). Unlike
    chisel, every SOCKS CONNECT must be allowed by the user's (and the
    token's) ACL for its real target host:port.

    --udp-max-senders, --udp-idle-timeout, --udp-max-size, Limits of UDP
    remotes, as for the client: mappings per UDP channel (10000, least
    recently used evicted; env CC_UDP_MAX_SENDERS), idle time before a
    mapping is closed ('15s', '0s' never; env CC_UDP_IDLE_TIMEOUT), and
    the largest datagram relayed (9012; env CC_UDP_MAX_SIZE).

    --login-grace-time, How long an accepted connection may take to log
    in (TLS, HTTP upgrade and SSH password together) before it is closed.
    Defaults to '30s' (env CC_LOGIN_GRACE_TIME).

    --max-unauthenticated, Connections that may wait for their login at
    once; when full, the oldest waiting one is closed for the newcomer
    (a real connector logs in within milliseconds, idle sockets do not).
    Defaults to 512; 0 lifts the cap (env CC_MAX_UNAUTHENTICATED).

    --max-unauthenticated-per-source, The same, per client address (an
    IPv6 /64 counts as one address); more are refused at once. Defaults
    to 32; 0 lifts the cap (env CC_MAX_UNAUTHENTICATED_PER_SOURCE).

    --max-auth-tries, Wrong passwords one connection may try before it
    is closed, like OpenSSH's MaxAuthTries. Whatever the connection, an
    address that keeps failing (passwords or tokens) waits longer for
    each answer after 3 failures (0.5s doubling to 8s), and 20 failures
    within 10 minutes ban it for 5 minutes (doubling for repeat
    offenders, at most an hour): its upgrades get HTTP 429 with
    Retry-After. Failures are logged once, then summarised per address
    every minute. Defaults to 3 (env CC_MAX_AUTH_TRIES).

    --reverse, Allow clients to ask for reverse port forwarding remotes
    ("R:..."), which listen on this server. outsystemscc uses only
    these, so a Cloud Connector gateway needs --reverse.

    --tls-key, Enables TLS: a path to a PEM-encoded TLS private key.
    Requires --tls-cert (env CC_TLS_KEY).

    --tls-cert, Enables TLS: a path to a PEM-encoded TLS certificate
    (chain). Requires --tls-key (env CC_TLS_CERT).

    --tls-ca, A PEM file, or a directory of PEM files, with the CA
    certificates that client certificates must chain to: clients
    without one are refused (mutual TLS). Requires --tls-cert and
    --tls-key (env CC_TLS_CA).

    --workers, Number of gateway processes sharing the port with
    SO_REUSEPORT, so sessions spread over the CPUs; a control process
    restarts a worker that dies and sums their figures on SIGUSR2.
    Sessions of one multi-worker connector share its reverse ports
    even when they land on different workers. Defaults to 'auto': the
    number of usable CPUs, at most 8, or 1 with --port 0 (env
    CC_WORKERS). More than 1 needs a fixed --port.

    --pid, Write the process id to cloud-connector.pid in the current
    working directory; the file is removed on a clean exit.

    -v, --verbose, Enable verbose logging.

    --log-format, 'text' (default: "2006/01/02 15:04:05 server: ...", as
    chisel prints) or 'json' (one object per line with time, level,
    logger and msg; env CC_LOG_FORMAT). Logs go to stdout, errors that
    stop the program to stderr.

    --help, This help text.

  Every option also takes Go's single-dash form (-port) and --name=value.

  Signals:
    SIGINT/SIGTERM close every session and exit with status 0;
    SIGUSR2 prints process and tunnel stats to the log.

  Exit status: 0 after a signal, 1 when the port cannot be opened,
  2 for bad command-line input or unreadable key, auth or TLS files.

  Version:
    {__version__}
"""


def load_host_key(keyfile: str | None, seed: str | None) -> Any:
    """--keyfile (path or ck-...) wins over --key SEED; neither means a fresh key per run."""
    if keyfile:
        return keys.load_key(keyfile)
    if seed:
        return keys.seed_private_key(seed)
    return keys.generate_private_key()


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _tls_context(args: Any) -> ssl.SSLContext | None:
    if not (args.tls_cert or args.tls_key):
        if args.tls_ca:
            raise UsageError("--tls-ca needs --tls-cert and --tls-key")
        return None
    if not (args.tls_cert and args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(
            f"--tls-cert/--tls-key: cannot load a PEM certificate and its key ({_reason(exc)})"
        ) from None
    if args.tls_ca:
        ca = Path(args.tls_ca)
        # OpenSSL takes a missing capath without complaint and then refuses every client.
        if not ca.exists():
            raise UsageError(f"--tls-ca {ca}: no such file or directory")
        try:
            if ca.is_dir():
                ctx.load_verify_locations(capath=str(ca))
            else:
                ctx.load_verify_locations(cafile=str(ca))
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"--tls-ca {ca}: not a PEM CA bundle ({_reason(exc)})") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _reason(exc: OSError) -> str:
    """``ssl.SSLError`` carries a short library reason; plain OSErrors a strerror."""
    return str(getattr(exc, "reason", None) or exc.strerror or exc)


def count(text: str) -> int:
    """argparse type: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def positive_count(text: str) -> int:
    """argparse type: a whole number, 1 or more."""
    value = count(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def positive_duration(text: str) -> float:
    """argparse type: a Go duration longer than 0s."""
    value = duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be longer than 0s")
    return value


def _parser() -> GoArgumentParser:
    p = GoArgumentParser(prog=PROG, help_text=HELP)
    p.add_flag("--host", default=env_default("HOST", "0.0.0.0"))
    p.add_flag("--port", "-p", type=int, default=env_default("PORT", "8080"))
    p.add_flag("--key", default=env_default("CHISEL_KEY"), help="seed for a deterministic host key")
    p.add_flag("--keygen", help="write a new private key to PATH (- for stdout) and exit")
    p.add_flag(
        "--keyfile", default=env_default("CHISEL_KEY_FILE"), help="host key: PEM file or ck-..."
    )
    p.add_flag(
        "--authfile", default=env_default("CC_AUTHFILE"), help="users.json, reloaded on change"
    )
    p.add_flag("--auth", default=env_default("AUTH"), help="one user with full access, user:pass")
    p.add_flag(
        "--tokens", default=env_default("CC_TOKENS"), help="tokens.json: token -> allowed remotes"
    )
    p.add_flag("--keepalive", type=duration, default=env_default("CC_KEEPALIVE", "25s"))
    p.add_flag(
        "--keepalive-timeout",
        type=duration,
        default=env_default("CC_KEEPALIVE_TIMEOUT", "10s"),
        help="close a session (and free its reverse ports) when a keepalive ping "
        "gets no answer within this long",
    )
    p.add_flag(
        "--backend", default=env_default("CC_BACKEND"), help="proxy plain HTTP requests here"
    )
    p.add_flag(
        "--socks5",
        action="store_true",
        default=env_flag("CC_SOCKS5"),
        help="allow clients to use the SOCKS5 proxy",
    )
    p.add_flag(
        "--reverse",
        action="store_true",
        default=env_flag("CC_REVERSE"),
        help="allow reverse (R:) remotes",
    )
    add_udp_flags(p)
    p.add_flag(
        "--login-grace-time",
        type=positive_duration,
        default=env_default("CC_LOGIN_GRACE_TIME", "30s"),
        help="close connections that have not logged in within this long",
    )
    p.add_flag(
        "--max-unauthenticated",
        type=count,
        default=env_default("CC_MAX_UNAUTHENTICATED", "512"),
        help="connections waiting to log in, at most (the oldest goes first)",
    )
    p.add_flag(
        "--max-unauthenticated-per-source",
        type=count,
        default=env_default("CC_MAX_UNAUTHENTICATED_PER_SOURCE", "32"),
        help="connections waiting to log in from one address, at most",
    )
    p.add_flag(
        "--max-auth-tries",
        type=positive_count,
        default=env_default("CC_MAX_AUTH_TRIES", "3"),
        help="wrong passwords per connection before it is closed",
    )
    p.add_flag("--tls-key", default=env_default("CC_TLS_KEY"))
    p.add_flag("--tls-cert", default=env_default("CC_TLS_CERT"))
    p.add_flag(
        "--tls-ca", default=env_default("CC_TLS_CA"), help="require client certs from this CA"
    )
    p.add_flag(
        "--pid",
        action="store_true",
        default=env_flag("CC_PID"),
        help="write cloud-connector.pid in the working directory",
    )
    p.add_flag("--workers", type=worker_count, default=env_default("CC_WORKERS", "auto"))
    p.add_flag("--verbose", "-v", action="store_true", default=env_flag("CC_VERBOSE"))
    p.add_flag(
        "--log-format", choices=("text", "json"), default=env_default("CC_LOG_FORMAT", "text")
    )
    return p


@dataclass
class ServerSettings:
    """Everything checked from the command line before anything listens."""

    key: Any
    users: UserTable | None
    tokens: TokenTable | None
    tls: ssl.SSLContext | None
    workers: int


def settings_from_args(args: argparse.Namespace, worker: bool) -> ServerSettings:
    """Validate the flags and load the key, auth, token and TLS files; UsageError if wrong.

    A worker started without --keyfile/--key reads its control process's key on stdin.
    """
    if worker and not (args.keyfile or args.key):
        key = keys.load_key(sys.stdin.readline().strip())
    else:
        key = load_host_key(args.keyfile, args.key)
    if args.keygen:  # nothing else matters: main writes the key and exits
        return ServerSettings(key, None, None, None, 1)
    if not 0 <= args.port < 65536:
        raise UsageError(f"port {args.port} out of range")
    workers = args.workers
    if workers is None:  # auto: one per CPU, unless the port is picked at random
        workers = 1 if args.port == 0 else auto_workers()
    elif workers > 1 and not worker and args.port == 0:
        raise UsageError("--workers needs a fixed --port (workers share it)")
    users: UserTable | None = None
    if args.authfile:
        users = parse_authfile(_read(args.authfile, "authfile"))
    elif args.auth:
        users = UserTable.single(*parse_user_pass(args.auth))
    tokens = parse_tokens_file(_read(args.tokens, "tokens file")) if args.tokens else None
    return ServerSettings(key, users, tokens, _tls_context(args), workers)


def main(argv: Sequence[str] | None = None) -> int:
    """``cloud-connector server``: chisel server's command line."""
    p = _parser()
    args = p.parse_args(argv)
    if args.help:
        p.print_help()
        return 0
    worker = worker_index() is not None
    try:
        settings = settings_from_args(args, worker)
    except (UsageError, ProtocolError, ValueError) as exc:
        fail(PROG, str(exc), EXIT_USAGE)
    if args.keygen:
        return write_key(PROG, args.keygen, settings.key, "ck")
    setup_logging(args.verbose, args.log_format, worker=worker_index())
    if settings.workers > 1 and not worker:
        return run_async(PROG, lambda: _supervise(args, argv, settings), component="server")
    config = _gateway_config(args, settings, worker)
    return run_async(PROG, lambda: _serve(config, args, pid=not worker), component="server")


async def _supervise(
    args: argparse.Namespace, argv: Sequence[str] | None, settings: ServerSettings
) -> int:
    """The control process never serves: it stays small (no asyncssh import)."""
    handoff = None if (args.keyfile or args.key) else keys.encode_inline(settings.key) + "\n"
    worker_argv = list(sys.argv[2:] if argv is None else argv)
    return await supervise(
        component="server",
        command=["server", *worker_argv],
        count=settings.workers,
        stdin_data=handoff.encode() if handoff is not None else None,
        pid_path="cloud-connector.pid" if args.pid else None,
        share_ports=True,
        what=f" on {join_host_port(args.host, args.port)} (SO_REUSEPORT)",
    )


def _gateway_config(args: argparse.Namespace, settings: ServerSettings, worker: bool) -> Any:
    """The GatewayConfig of one serving process."""
    # Imported only now (asyncssh is slow to import): --help and typos answer at once.
    try:
        from cc.gateway.gateway import GatewayConfig
        from cc.gateway.ports import registry_from_environment
    except ImportError as exc:
        fail_on_refused_import(PROG, exc)
        raise

    return GatewayConfig(
        host=args.host,
        port=args.port,
        host_key_pem=keys.private_key_pem_for_asyncssh(settings.key),
        users=settings.users,
        tokens=settings.tokens,
        reverse=args.reverse,
        socks5=args.socks5,
        backend=args.backend,
        keepalive=args.keepalive,
        keepalive_timeout=args.keepalive_timeout,
        tls=settings.tls,
        udp=udp_settings(args),
        login_grace_time=args.login_grace_time,
        admission=AdmissionPolicy(args.max_unauthenticated, args.max_unauthenticated_per_source),
        max_auth_tries=args.max_auth_tries,
        reuse_port=worker,
        port_registry=registry_from_environment(),
    )


async def _serve(config: GatewayConfig, args: Any, pid: bool = True) -> int:
    from cc.gateway.gateway import Gateway
    from cc.runtime.filewatch import FileWatcher
    from cc.runtime.process import PidFile, install_signals

    gateway = Gateway(config)
    try:
        await gateway.start()
    except OSError as exc:
        where = join_host_port(config.host, config.port)
        fail(PROG, f"cannot listen on {where}: {exc.strerror or exc}")
    watchers: list[FileWatcher[Any]] = []
    if args.authfile:
        watchers.append(
            FileWatcher(
                args.authfile, parse_authfile, lambda users: setattr(config, "users", users), log
            )
        )
    if args.tokens:
        watchers.append(
            FileWatcher(args.tokens, parse_tokens_file, lambda t: setattr(config, "tokens", t), log)
        )
    for watcher in watchers:
        watcher.start()
    stopped = asyncio.Event()
    install_signals(
        asyncio.get_running_loop(),
        component="server",
        stop=lambda _: stopped.set(),
        stats=gateway.stats,
    )
    with PidFile("cloud-connector.pid" if args.pid and pid else None):
        serving = asyncio.ensure_future(gateway.serve_forever())
        await stopped.wait()
        for watcher in watchers:
            watcher.stop()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await gateway.close(drain_timeout=10.0)
    return 0
