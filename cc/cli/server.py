"""``cloud-connector server``: chisel server's options with the same names and meaning,
plus ``--tokens`` for the Cloud Connector's token header."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import ssl
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from cc import __version__
from cc.cli.common import (
    EXIT_USAGE,
    GoArgumentParser,
    UsageError,
    add_ssh_ciphers_flag,
    add_udp_flags,
    duration,
    fail,
    fail_on_refused_import,
    run_async,
    udp_settings,
)
from cc.cli.keygen import write_key
from cc.cli.workers import auto_workers, supervise, worker_count, worker_index
from cc.log import get_logger, set_error_format, setup_logging
from cc.protocol import keys
from cc.protocol.acl import (
    TokenTable,
    UserTable,
    parse_authfile,
    parse_tokens_file,
    parse_user_pass,
)
from cc.protocol.admission import AdmissionPolicy
from cc.protocol.authguard import GuardPolicy
from cc.protocol.basicauth import AdminCredentials
from cc.protocol.errors import ProtocolError
from cc.protocol.hosts import join_host_port
from cc.protocol.webroute import (
    BUSY_RETRY_AFTER,
    DEFAULT_MAX_WAITING,
    KeyTable,
    parse_keys_file,
)

if TYPE_CHECKING:
    from cc.gateway.gateway import GatewayConfig
    from cc.protocol.authorized_keys import ClientKeyTable

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
    it changes, and sessions already in are held to it: a removed user
    or a changed password closes the user's sessions, narrower regexes
    close the reverse ports and refuse the channels they no longer
    allow (env CC_AUTHFILE).

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
    Reloaded when it changes, like --authfile: a removed token closes
    the sessions that came with it (env CC_TOKENS).

    --authorized-keys, An OpenSSH authorized_keys file of connectors that
    log in with a key pair (cloud-connector keygen --client; connector
    --identity). Options: cc-acl="regex,regex" limits the key's remotes
    as the authfile's regexes (none: full access), and
    cc-identifier="name,name" the HTTP API gateway identifiers it may
    claim. Works beside --auth/--authfile. Reloaded on change: a removed
    key closes its sessions (env CC_AUTHORIZED_KEYS).

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
    gateway behind a normal web site. Without it, / answers one line
    ("cloud-connector gateway VERSION"), /health "OK", /version the
    version, everything else 404 (env CC_BACKEND). /ready,
    /metrics and /status are always the gateway's own.

    --admin, Credentials in the form <user:pass> that turn on the status
    page (/status, and /status.json) and are then also required for
    /metrics; HTTP Basic authentication, and wrong guesses cost the
    guesser like wrong passwords do. Without it there is no status page
    and /metrics is public (env CC_ADMIN).

    --ssh-ciphers, The SSH ciphers clients may use, comma-separated, for
    sites whose policy allows only some (the client's order picks among
    them): aes128-gcm@openssh.com, aes256-gcm@openssh.com,
    chacha20-poly1305@openssh.com, aes128-ctr, aes192-ctr, aes256-ctr.
    Defaults to aes128-gcm@openssh.com,aes256-gcm@openssh.com,
    chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr. AES-GCM and
    chacha20 run on the fast path; AES-CTR works without it, slower. A
    client that offers none of them cannot connect, and the log names
    both lists (env CC_SSH_CIPHERS).

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
    each answer after 3 failures (0.5s doubling to 8s), and
    --max-auth-failures failures within 10 minutes ban it for
    --auth-ban-time (doubling for repeat offenders, at most an hour):
    its upgrades get HTTP 429 with Retry-After. With --workers the
    workers count together: the budget is the gateway's, not each
    worker's. Failures are logged once, then summarised per address
    every minute. Defaults to 3 (env CC_MAX_AUTH_TRIES).

    --max-auth-failures, Failed logins from one address (an IPv6 /64
    counts as one) within 10 minutes that ban it. Defaults to 20 (env
    CC_MAX_AUTH_FAILURES).

    --auth-ban-time, How long the first ban lasts. Defaults to '5m'
    (env CC_AUTH_BAN_TIME).

    --remoted-server-key, --remoted-client-key, Serve named services on
    this port, wire-compatible with Remoted API Server (cubiclesoft's
    remoted-api-server and its PHP SDK): a server behind a firewall
    registers a path over a WebSocket with the server key ("rws://KEY@
    host:port/path" in the SDK, "cloud-connector client R:svc/PATH:..."
    here) and clients reach it through this port with the client key
    over WebRoute ("rwr://KEY@host:port/path", "cloud-connector connect").
    Keys go in the X-Remoted-APIKey header; a wrong one is a failed login
    for the address, as a wrong password. Prefer the environment
    (CC_REMOTED_SERVER_KEY, CC_REMOTED_CLIENT_KEY) or --remoted-keys: a
    command line is visible to every local user.

    --remoted-keys, A keys file, reloaded when it changes: remoted's own
    config.dat ({{"server_apikey": "...", "client_apikey": "..."}}), or

      {{
        "server_keys": {{"<key>": ["<path-regex>", ...]}},
        "client_keys": {{"<key>": ["<path-regex>", ...]}},
        "exclusive": false
      }}

    where each key may only use the paths its regexes fully match ("" or
    "*": any path). Adds to the keys above (env CC_REMOTED_KEYS).

    --remoted-exclusive, One server per path, as remoted: a second
    registration is refused with 400. By default several servers may
    register one path; new clients go to each in turn, and the clients
    waiting for a server that drops are offered to the others (env
    CC_REMOTED_EXCLUSIVE; the keys file's "exclusive" does the same).
    Named services need one gateway process: --workers is 1 with them.

    --remoted-max-waiting, Clients that may wait at once for one named
    service's server (each waits until the server answers its
    notification with a second connection, or for its timeout: 60s
    unless it asks for more). A healthy server answers within a round
    trip, so a full queue means a stuck or overloaded one: the next
    client is refused at once with "503 Service Unavailable",
    Retry-After: {BUSY_RETRY_AFTER} and the JSON errorcode
    "destination_busy" (remoted has no such limit or answer; its PHP SDK
    reports "Server returned: 503 Service Unavailable"). Logged once per
    path, then summed up every minute; counted in /metrics as
    cloud_connector_named_service_busy_refusals_total. Waiting clients
    that hang up free their place. Defaults to {DEFAULT_MAX_WAITING}; 0
    lifts the cap (env CC_REMOTED_MAX_WAITING).

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

    --targets, Serve the HTTP API gateway: a targets.yaml mapping each
    public Host to a target behind connectors, with path/method policies
    and connector identifiers (see the README). Reloaded when it
    changes; a broken new version keeps the last good one (env
    CC_TARGETS). Needs --app-port. With --workers, a request reaching a
    worker whose connectors do not serve its target is handed (the client
    socket itself) to a worker whose connectors do.

    --app-port, --app-host, Where the HTTP API gateway takes requests
    (env CC_APP_PORT, CC_APP_HOST; the host defaults to 0.0.0.0). GET
    /healthz and /readyz answer there for a Host with no target.

    --timeout, How long the HTTP API gateway waits for the next bytes of
    a target's answer before it answers 504 (or cuts a started answer).
    Defaults to '180s' (env CC_TIMEOUT).

    --app-head-timeout, How long a client on the app port may take to
    send a whole request head, from its first byte (the first request's
    first byte must also come within it); then 408 and the connection
    is closed. Defaults to '30s' (env CC_APP_HEAD_TIMEOUT).

    --app-max-clients, Client connections the app port holds at once;
    when full, the oldest one waiting for its next request is closed for
    the newcomer (one in the middle of a request never is), and if all
    are busy the newcomer is refused. At most half the process's
    descriptor limit is used, whatever is asked. Defaults to 4096; 0
    leaves only that bound (env CC_APP_MAX_CLIENTS).

    --app-max-clients-per-source, The same per client address (an IPv6
    /64 counts as one; --trusted-proxies are exempt, a load balancer
    carries everyone's connections); more are refused at once. Defaults
    to 256; 0 lifts the cap (env CC_APP_MAX_CLIENTS_PER_SOURCE).

    --trusted-proxies, Comma-separated addresses or CIDR blocks whose
    X-Forwarded-* and X-Real-IP headers the HTTP API gateway believes and
    appends to; anyone else's are replaced (env CC_TRUSTED_PROXIES).

    --workers, Number of gateway processes sharing the port with
    SO_REUSEPORT, so sessions spread over the CPUs; a control process
    restarts a worker that dies and sums their figures on SIGUSR2.
    Sessions of one multi-worker connector share its reverse ports
    even when they land on different workers. Defaults to 'auto': the
    number of usable CPUs, at most 8; 1 on a machine with 2 CPUs or
    fewer and with --port 0 (env CC_WORKERS). More than 1 needs a fixed
    --port. A port that cannot be opened (in use, not allowed) stops
    the whole gateway with status 1, whatever the number of workers.

    --pid, Write the process id to cloud-connector.pid in the current
    working directory; the file is removed on a clean exit.

    -v, --verbose, Enable verbose logging.

    --log-format, 'text' (default: "2006/01/02 15:04:05 server: ...", as
    chisel prints) or 'json' (one object per line with time, level,
    logger and msg; env CC_LOG_FORMAT). Logs go to stdout, errors that
    stop the program to stderr.

    --config, A TOML file of options, one key per long option without
    its dashes: port = 8080, reverse = true, authfile = "users.json",
    keepalive-timeout = "10s". Relative paths are taken from the file's
    directory; --authfile and --tokens are still reloaded on change.
    The command line wins over the environment, which wins over the
    file. An unknown key or a wrong type stops the server, naming the
    key and its line (env CC_CONFIG).

    --version, Print the version and exit.

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


def listen_error(host: str, port: int, exc: OSError) -> str:
    """Why the gateway cannot have its port, and what to do about it."""
    where = join_host_port(host, port)
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: address already in use "
            "(another program, or another gateway, has this port: stop it or choose --port)"
        )
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: no such local address (check --host)"
    return f"cannot listen on {where}: {exc.strerror or exc}"


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
    p.add_config_flag()
    p.add_flag("--host", env="HOST", default="0.0.0.0")
    p.add_flag("--port", "-p", type=int, env="PORT", default="8080")
    p.add_flag("--key", env="CHISEL_KEY", help="seed for a deterministic host key")
    p.add_flag(
        "--keygen", in_file=False, help="write a new private key to PATH (- for stdout) and exit"
    )
    p.add_flag("--keyfile", env="CHISEL_KEY_FILE", path=True, help="host key: PEM file or ck-...")
    p.add_flag("--authfile", env="CC_AUTHFILE", path=True, help="users.json, reloaded on change")
    p.add_flag("--auth", env="AUTH", help="one user with full access, user:pass")
    p.add_flag("--tokens", env="CC_TOKENS", path=True, help="tokens.json: token -> allowed remotes")
    p.add_flag(
        "--authorized-keys",
        env="CC_AUTHORIZED_KEYS",
        path=True,
        help="connectors' public keys (authorized_keys format), reloaded on change",
    )
    p.add_flag("--keepalive", type=duration, env="CC_KEEPALIVE", default="25s")
    p.add_flag(
        "--keepalive-timeout",
        type=duration,
        env="CC_KEEPALIVE_TIMEOUT",
        default="10s",
        help="close a session (and free its reverse ports) when a keepalive ping "
        "gets no answer within this long",
    )
    p.add_flag("--backend", env="CC_BACKEND", help="proxy plain HTTP requests here")
    p.add_flag(
        "--admin",
        env="CC_ADMIN",
        help="user:pass for /status (and /metrics), HTTP Basic",
    )
    p.add_flag(
        "--socks5",
        action="store_true",
        env="CC_SOCKS5",
        default=False,
        help="allow clients to use the SOCKS5 proxy",
    )
    p.add_flag(
        "--reverse",
        action="store_true",
        env="CC_REVERSE",
        default=False,
        help="allow reverse (R:) remotes",
    )
    add_udp_flags(p)
    add_ssh_ciphers_flag(p)
    p.add_flag(
        "--login-grace-time",
        type=positive_duration,
        env="CC_LOGIN_GRACE_TIME",
        default="30s",
        help="close connections that have not logged in within this long",
    )
    p.add_flag(
        "--max-unauthenticated",
        type=count,
        env="CC_MAX_UNAUTHENTICATED",
        default="512",
        file_types=(int,),
        help="connections waiting to log in, at most (the oldest goes first)",
    )
    p.add_flag(
        "--max-unauthenticated-per-source",
        type=count,
        env="CC_MAX_UNAUTHENTICATED_PER_SOURCE",
        default="32",
        file_types=(int,),
        help="connections waiting to log in from one address, at most",
    )
    p.add_flag(
        "--max-auth-tries",
        type=positive_count,
        env="CC_MAX_AUTH_TRIES",
        default="3",
        file_types=(int,),
        help="wrong passwords per connection before it is closed",
    )
    p.add_flag(
        "--max-auth-failures",
        type=positive_count,
        env="CC_MAX_AUTH_FAILURES",
        default="20",
        file_types=(int,),
        help="failed logins from one address within 10 minutes that ban it",
    )
    p.add_flag(
        "--auth-ban-time",
        type=positive_duration,
        env="CC_AUTH_BAN_TIME",
        default="5m",
        help="how long an address is banned the first time",
    )
    p.add_flag(
        "--remoted-server-key",
        env="CC_REMOTED_SERVER_KEY",
        help="Remoted API Server server key: may register named services",
    )
    p.add_flag(
        "--remoted-client-key",
        env="CC_REMOTED_CLIENT_KEY",
        help="Remoted API Server client key: may reach named services",
    )
    p.add_flag(
        "--remoted-keys",
        env="CC_REMOTED_KEYS",
        path=True,
        help="keys file (remoted's config.dat or per-path keys), reloaded on change",
    )
    p.add_flag(
        "--remoted-exclusive",
        action="store_true",
        env="CC_REMOTED_EXCLUSIVE",
        default=False,
        help="one server per named service path, as remoted",
    )
    p.add_flag(
        "--remoted-max-waiting",
        type=count,
        env="CC_REMOTED_MAX_WAITING",
        default=str(DEFAULT_MAX_WAITING),
        file_types=(int,),
        help="clients waiting per named service path, at most; more get 503 (0: no cap)",
    )
    p.add_flag("--tls-key", env="CC_TLS_KEY", path=True)
    p.add_flag("--tls-cert", env="CC_TLS_CERT", path=True)
    p.add_flag("--tls-ca", env="CC_TLS_CA", path=True, help="require client certs from this CA")
    p.add_flag(
        "--pid",
        action="store_true",
        env="CC_PID",
        default=False,
        help="write cloud-connector.pid in the working directory",
    )
    p.add_flag("--targets", env="CC_TARGETS", path=True, help="HTTP API gateway targets.yaml")
    p.add_flag("--app-port", type=int, env="CC_APP_PORT")
    p.add_flag("--app-host", env="CC_APP_HOST", default="0.0.0.0")
    p.add_flag("--timeout", type=positive_duration, env="CC_TIMEOUT", default="180s")
    p.add_flag(
        "--app-head-timeout",
        type=positive_duration,
        env="CC_APP_HEAD_TIMEOUT",
        default="30s",
        help="time a client has to send a whole request head",
    )
    p.add_flag(
        "--app-max-clients",
        type=count,
        env="CC_APP_MAX_CLIENTS",
        default="4096",
        file_types=(int,),
        help="client connections on the app port, at most (idle ones go first)",
    )
    p.add_flag(
        "--app-max-clients-per-source",
        type=count,
        env="CC_APP_MAX_CLIENTS_PER_SOURCE",
        default="256",
        file_types=(int,),
        help="client connections on the app port from one address, at most",
    )
    p.add_flag("--trusted-proxies", env="CC_TRUSTED_PROXIES", default="")
    p.add_flag(
        "--workers", type=worker_count, env="CC_WORKERS", default="auto", file_types=(int, str)
    )
    p.add_flag("--verbose", "-v", action="store_true", env="CC_VERBOSE", default=False)
    p.add_flag("--log-format", choices=("text", "json"), env="CC_LOG_FORMAT", default="text")
    return p


@dataclass
class ServerSettings:
    """Everything checked from the command line before anything listens."""

    key: Any
    users: UserTable | None
    tokens: TokenTable | None
    tls: ssl.SSLContext | None
    workers: int
    admin: AdminCredentials | None = None
    #: the HTTP API gateway's targets, loaded (None: not serving it)
    targets: Any = None
    trusted: Any = None
    #: named services' keys (None: off)
    remoted_keys: KeyTable | None = None
    #: --authorized-keys: connectors' key pairs (None: off)
    authorized_keys: ClientKeyTable | None = None


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
    remoted_keys = remoted_key_table(args)
    workers = args.workers
    random_app_port = args.app_port == 0
    if workers is None:  # auto: one per CPU, unless the port is picked at random
        random_port = args.port == 0 or random_app_port
        workers = 1 if random_port or remoted_keys is not None else auto_workers()
    elif workers > 1 and not worker and args.port == 0:
        raise UsageError("--workers needs a fixed --port (workers share it)")
    elif workers > 1 and not worker and random_app_port:
        raise UsageError("--workers needs a fixed --app-port (workers share it)")
    elif workers > 1 and remoted_keys is not None:
        # a server registered on one worker could not be found by a client on another
        raise UsageError("named services (--remoted-*) need one gateway process: --workers 1")
    users: UserTable | None = None
    if args.authfile:
        users = parse_authfile(_read(args.authfile, "authfile"))
    elif args.auth:
        users = UserTable.single(*parse_user_pass(args.auth))
    tokens = parse_tokens_file(_read(args.tokens, "tokens file")) if args.tokens else None
    admin = AdminCredentials.parse(args.admin) if args.admin else None
    settings = ServerSettings(key, users, tokens, _tls_context(args), workers, admin)
    settings.remoted_keys = remoted_keys
    if args.authorized_keys:
        from cc.protocol.authorized_keys import parse_authorized_keys

        settings.authorized_keys = parse_authorized_keys(
            _read(args.authorized_keys, "authorized keys file")
        )
    if args.targets or args.app_port is not None:
        _app_settings(args, settings)
    return settings


def _app_settings(args: argparse.Namespace, settings: ServerSettings) -> None:
    """--targets and its companions, checked and loaded now (exit 2 when wrong)."""
    from cc.gateway.apigw.targetfile import load_targets
    from cc.protocol.apigw.forwarding import TrustedProxies

    if not args.targets or args.app_port is None:
        raise UsageError("--targets and --app-port go together")
    if not 0 <= args.app_port < 65536:
        raise UsageError(f"--app-port {args.app_port} out of range")
    try:
        settings.targets = load_targets(args.targets)
    except OSError as exc:
        raise UsageError(f"cannot read --targets {args.targets}: {exc.strerror or exc}") from None
    except ProtocolError as exc:
        raise UsageError(f"--targets {args.targets}: {exc}") from None
    settings.trusted = TrustedProxies.parse(args.trusted_proxies)


def remoted_key_table(
    args: argparse.Namespace, file_keys: KeyTable | None = None
) -> KeyTable | None:
    """The keys of --remoted-server-key/--remoted-client-key and --remoted-keys (None: off).

    ``file_keys``: a reloaded keys file, instead of reading it again.
    """
    keys: KeyTable | None = None
    if args.remoted_server_key or args.remoted_client_key:
        keys = KeyTable.from_keys(args.remoted_server_key, args.remoted_client_key)
    if args.remoted_keys:
        if file_keys is None:
            file_keys = parse_keys_file(_read(args.remoted_keys, "keys file"))
        keys = file_keys if keys is None else keys.merged(file_keys)
    if keys is not None and args.remoted_exclusive:
        keys = KeyTable(keys.entries, exclusive=True)
    return keys


def main(argv: Sequence[str] | None = None) -> int:
    """``cloud-connector server``: chisel server's command line."""
    p = _parser()
    args = p.parse_args(argv)
    if args.help:
        p.print_help()
        return 0
    if args.version:
        print(__version__)
        return 0
    set_error_format(args.log_format)
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
    return run_async(
        PROG, lambda: _serve(config, args, pid=not worker, settings=settings), component="server"
    )


async def _supervise(
    args: argparse.Namespace, argv: Sequence[str] | None, settings: ServerSettings
) -> int:
    """The control process never serves: it stays small (no asyncssh import)."""
    handoff = None if (args.keyfile or args.key) else keys.encode_inline(settings.key) + "\n"
    worker_argv = list(sys.argv[2:] if argv is None else argv)
    with contextlib.ExitStack() as stack:
        if settings.targets is not None:
            # the HTTP API gateway's workers hand each other connections there
            from cc.protocol.apigw.handoff import HANDOFF_DIR_ENV

            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="cc-apigw-"))
            os.environ[HANDOFF_DIR_ENV] = folder
        return await _supervise_workers(args, worker_argv, settings, handoff)


async def _supervise_workers(
    args: argparse.Namespace,
    worker_argv: list[str],
    settings: ServerSettings,
    handoff: str | None,
) -> int:
    return await supervise(
        prog=PROG,
        component="server",
        command=["server", *worker_argv],
        count=settings.workers,
        stdin_data=handoff.encode() if handoff is not None else None,
        pid_path="cloud-connector.pid" if args.pid else None,
        share_ports=True,
        share_failures=True,
        what=f" on {join_host_port(args.host, args.port)} (SO_REUSEPORT)",
    )


def _gateway_config(args: argparse.Namespace, settings: ServerSettings, worker: bool) -> Any:
    """The GatewayConfig of one serving process."""
    # Imported only now (asyncssh is slow to import): --help and typos answer at once.
    try:
        from cc.gateway.gateway import GatewayConfig
        from cc.gateway.ports import registry_from_environment
        from cc.gateway.webroute import WebRouteSettings
        from cc.runtime.figures import FiguresLink
        from cc.runtime.sharedfailures import failures_from_environment
    except ImportError as exc:
        fail_on_refused_import(PROG, exc)
        raise

    guard = GuardPolicy(ban_after=args.max_auth_failures, ban_time=args.auth_ban_time)

    return GatewayConfig(
        host=args.host,
        port=args.port,
        host_key_pem=keys.private_key_pem_for_asyncssh(settings.key),
        users=settings.users,
        tokens=settings.tokens,
        authorized_keys=settings.authorized_keys,
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
        guard=guard,
        failures=failures_from_environment(guard.window) if worker else None,
        reuse_port=worker,
        port_registry=registry_from_environment(),
        webroute=(
            WebRouteSettings(settings.remoted_keys, max_waiting=args.remoted_max_waiting)
            if settings.remoted_keys
            else None
        ),
        admin=settings.admin,
        figures_link=FiguresLink.from_environment() if worker else None,
        worker=worker_index(),
        ssh_ciphers=args.ssh_ciphers,
    )


async def _serve(
    config: GatewayConfig, args: Any, pid: bool = True, settings: ServerSettings | None = None
) -> int:
    from cc.gateway.gateway import Gateway
    from cc.runtime.filewatch import FileWatcher
    from cc.runtime.process import PidFile, install_signals

    gateway = Gateway(config)
    try:
        await gateway.start()
    except OSError as exc:
        fail(PROG, listen_error(config.host, config.port, exc))
    app = None
    if settings is not None and settings.targets is not None:
        from cc.gateway.apigw import AppConfig, AppGateway
        from cc.protocol.apigw.handoff import HANDOFF_DIR_ENV

        app = AppGateway(
            gateway,
            AppConfig(
                targets_path=args.targets,
                host=args.app_host,
                port=args.app_port,
                timeout=args.timeout,
                head_timeout=args.app_head_timeout,
                max_clients=args.app_max_clients,
                max_clients_per_source=args.app_max_clients_per_source,
                trusted=settings.trusted,
                reuse_port=config.reuse_port,
                worker=worker_index() or 0,
                workers=settings.workers,
                handoff_dir=os.environ.get(HANDOFF_DIR_ENV),
            ),
            settings.targets,
        )
        try:
            await app.start()
        except OSError as exc:
            await gateway.close()
            fail(PROG, listen_error(args.app_host, args.app_port, exc))
    # Every worker watches the files itself and re-checks its own live sessions.
    watchers: list[FileWatcher[Any]] = []
    if args.authfile:
        watchers.append(
            FileWatcher(
                args.authfile,
                parse_authfile,
                lambda users: gateway.apply_credentials(users, config.tokens),
                log,
            )
        )
    if args.authorized_keys:
        from cc.protocol.authorized_keys import parse_authorized_keys

        watchers.append(
            FileWatcher(
                args.authorized_keys, parse_authorized_keys, gateway.apply_authorized_keys, log
            )
        )
    if args.tokens:
        watchers.append(
            FileWatcher(
                args.tokens,
                parse_tokens_file,
                lambda tokens: gateway.apply_credentials(config.users, tokens),
                log,
            )
        )
    if args.remoted_keys and gateway.named_services is not None:
        services = gateway.named_services
        watchers.append(
            FileWatcher(
                args.remoted_keys,
                parse_keys_file,
                lambda keys: services.replace_keys(cast(KeyTable, remoted_key_table(args, keys))),
                log,
            )
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
        if app is not None:
            await app.close()
        await gateway.close(drain_timeout=10.0)
    return 0
