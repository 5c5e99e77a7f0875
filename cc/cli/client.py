"""``cloud-connector client``: chisel client's options, every remote form of chisel."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from cc import __version__
from cc.aio.connector import Connector, ConnectorConfig, FatalError
from cc.aio.dial import TLSOptions, normalize_server_url
from cc.aio.proxy import ProxyURLError, parse_proxy_url
from cc.aio.runtime import PidFile, install_signals
from cc.cli.common import (
    EXIT_FATAL,
    GoArgumentParser,
    UsageError,
    duration,
    env_default,
    fail,
    parse_header,
    run_async,
)
from cc.log import setup_logging
from cc.protocol.acl import parse_user_pass
from cc.protocol.errors import ProtocolError
from cc.protocol.remote import Remote, check_unique, parse_remote

__all__ = ["add_connector_flags", "build_connector_config", "main"]

PROG = "cloud-connector client"


def add_connector_flags(p: GoArgumentParser) -> None:
    """Options shared by ``cloud-connector client`` and ``outsystemscc``."""
    p.add_flag("--keepalive", type=duration, default=env_default("CC_KEEPALIVE", "25s"))
    p.add_flag("--max-retry-count", type=int, default=env_default("CC_MAX_RETRY_COUNT", "-1"))
    p.add_flag(
        "--max-retry-interval", type=duration, default=env_default("CC_MAX_RETRY_INTERVAL", "5m")
    )
    p.add_flag("--proxy", default=env_default("CC_PROXY"))
    p.add_flag("--header", action="append", default=[])
    p.add_flag("--hostname", default=env_default("CC_HOSTNAME"))
    p.add_flag("--pid", action="store_true")
    p.add_flag("--verbose", "-v", action="store_true")
    p.add_flag(
        "--log-format", choices=("text", "json"), default=env_default("CC_LOG_FORMAT", "text")
    )
    p.add_flag(
        "--keepalive-timeout", type=duration, default=env_default("CC_KEEPALIVE_TIMEOUT", "10s")
    )
    p.add_flag("--tls-ca", default=env_default("CC_TLS_CA"))
    p.add_flag("--tls-skip-verify", action="store_true")
    p.add_flag("--tls-cert", default=env_default("CC_TLS_CERT"))
    p.add_flag("--tls-key", default=env_default("CC_TLS_KEY"))
    p.add_flag("--sni", default=env_default("CC_SNI"))
    p.add_argument("server", nargs="?")
    p.add_argument("remotes", nargs="*")


def build_connector_config(args: argparse.Namespace, remotes: list[Remote]) -> ConnectorConfig:
    """Validate everything the user typed before any connection is tried."""
    if not args.server:
        raise UsageError("a server URL is required")
    try:
        server = normalize_server_url(args.server)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.proxy:
        try:
            parse_proxy_url(args.proxy)
        except ProxyURLError as exc:
            raise UsageError(str(exc)) from None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    headers = [parse_header(h) for h in args.header]
    hostname = args.hostname
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
        tls=TLSOptions(
            ca=args.tls_ca,
            skip_verify=args.tls_skip_verify,
            cert=args.tls_cert,
            key=args.tls_key,
            sni=args.sni,
        ),
    )


async def run_connector(prog: str, config: ConnectorConfig, pid_path: str | None) -> int:
    """Run until stopped by a signal (exit 0) or a fatal error (exit 1)."""
    connector = Connector(config)
    loop = asyncio.get_running_loop()
    install_signals(
        loop,
        component="client",
        stop=lambda _: connector.stop(),
        stats=connector.stats,
        hup=connector.skip_wait,
    )
    with PidFile(pid_path):
        try:
            await connector.run()
        except FatalError as exc:
            fail(prog, str(exc), EXIT_FATAL)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = GoArgumentParser(prog=PROG, description="Connect to a chisel-v3 gateway and serve remotes.")
    p.add_flag("--fingerprint", default=env_default("CC_FINGERPRINT", ""))
    p.add_flag("--auth", default=env_default("AUTH"))
    add_connector_flags(p)
    args = p.parse_args(argv)
    if args.help:
        p.print_help()
        return 0
    try:
        remotes = [parse_remote(r) for r in args.remotes]
        if not remotes:
            raise UsageError("at least one remote is required")
        check_unique(remotes)
        config = build_connector_config(args, remotes)
        if args.auth:
            config.auth = parse_user_pass(args.auth)
        config.fingerprint = args.fingerprint
        config.config_version = __version__
    except (UsageError, ProtocolError, ValueError) as exc:
        fail(PROG, str(exc), 2)
    setup_logging(args.verbose, args.log_format)
    return run_async(
        PROG, lambda: run_connector(PROG, config, "cloud-connector.pid" if args.pid else None)
    )
