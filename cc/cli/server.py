"""``cloud-connector server``: chisel server's options with the same names and meaning,
plus ``--tokens`` for the Cloud Connector's token header."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cc.aio.filewatch import FileWatcher
from cc.aio.gateway import Gateway, GatewayConfig
from cc.aio.runtime import PidFile, install_signals
from cc.cli.common import (
    EXIT_USAGE,
    GoArgumentParser,
    UsageError,
    duration,
    env_default,
    fail,
    run_async,
)
from cc.log import get_logger, setup_logging
from cc.protocol import keys
from cc.protocol.acl import UserTable, parse_authfile, parse_tokens_file, parse_user_pass
from cc.protocol.errors import ProtocolError

__all__ = ["load_host_key", "main"]

PROG = "cloud-connector server"
log = get_logger("server")


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
        if args.tls_ca:
            ctx.load_verify_locations(cafile=args.tls_ca) if Path(
                args.tls_ca
            ).is_file() else ctx.load_verify_locations(capath=args.tls_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"TLS setup failed: {exc}") from None
    return ctx


def _parser() -> GoArgumentParser:
    p = GoArgumentParser(prog=PROG, description="Run the chisel-v3 gateway.")
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
        "--backend", default=env_default("CC_BACKEND"), help="proxy plain HTTP requests here"
    )
    p.add_flag("--socks5", action="store_true", help="allow clients to use the SOCKS5 proxy")
    p.add_flag("--reverse", action="store_true", help="allow reverse (R:) remotes")
    p.add_flag("--tls-key", default=env_default("CC_TLS_KEY"))
    p.add_flag("--tls-cert", default=env_default("CC_TLS_CERT"))
    p.add_flag(
        "--tls-ca", default=env_default("CC_TLS_CA"), help="require client certs from this CA"
    )
    p.add_flag(
        "--pid", action="store_true", help="write cloud-connector.pid in the working directory"
    )
    p.add_flag("--verbose", "-v", action="store_true")
    p.add_flag(
        "--log-format", choices=("text", "json"), default=env_default("CC_LOG_FORMAT", "text")
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.help:
        p.print_help()
        return 0
    try:
        key = load_host_key(args.keyfile, args.key)
        if args.keygen:
            return _write_key(args.keygen, key)
        if not 0 <= args.port < 65536:
            raise UsageError(f"port {args.port} out of range")
        users: UserTable | None = None
        if args.authfile:
            users = parse_authfile(_read(args.authfile, "authfile"))
        elif args.auth:
            users = UserTable.single(*parse_user_pass(args.auth))
        tokens = parse_tokens_file(_read(args.tokens, "tokens file")) if args.tokens else None
        config = GatewayConfig(
            host=args.host,
            port=args.port,
            host_key_pem=keys.private_key_pem_for_asyncssh(key),
            users=users,
            tokens=tokens,
            reverse=args.reverse,
            socks5=args.socks5,
            backend=args.backend,
            keepalive=args.keepalive,
            tls=_tls_context(args),
        )
    except (UsageError, ProtocolError, ValueError) as exc:
        fail(PROG, str(exc), EXIT_USAGE)
    setup_logging(args.verbose, args.log_format)
    return run_async(PROG, lambda: _serve(config, args))


def _write_key(path: str, key: Any) -> int:
    data = keys.encode_inline(key) + "\n"
    if path == "-":
        sys.stdout.write(data)
    else:
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(data)
        tmp.replace(target)
    print(f"Fingerprint {keys.fingerprint_sha256(keys.public_key_wire(key))}", file=sys.stderr)
    return 0


async def _serve(config: GatewayConfig, args: Any) -> int:
    gateway = Gateway(config)
    try:
        await gateway.start()
    except OSError as exc:
        fail(PROG, f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}")
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
    with PidFile("cloud-connector.pid" if args.pid else None):
        serving = asyncio.ensure_future(gateway.serve_forever())
        await stopped.wait()
        for watcher in watchers:
            watcher.stop()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await gateway.close(drain_timeout=10.0)
    return 0
