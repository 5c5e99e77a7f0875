"""Real third-party peers (proxies, sshd, iperf3) started on free loopback ports for tests.

Interop tests must run against the real programs our users meet (tinyproxy, squid,
microsocks, dante, OpenSSH), not against our own stand-ins, so each context manager
here starts one from its Debian package as a foreground child, waits until it accepts
connections, yields a small frozen dataclass describing it, and always stops it again.
Everything listens on 127.0.0.1 only and keeps its files under the given ``tmp_path``.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

from bench import peers as bench_peers
from tests.support.net import LOOPBACK, PeerStartError, free_port, read_log, wait_for_port
from tests.support.processes import stop_process

__all__ = [
    "Iperf3Peer",
    "ProxyPeer",
    "SshdPeer",
    "dante",
    "iperf3_server",
    "microsocks",
    "require_binary",
    "squid",
    "sshd",
    "tinyproxy",
    "wait_for_log",
]

START_TIMEOUT = 20.0

# Daemons live in sbin, which a non-root PATH often lacks; helpers live in lib dirs.
_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
_SQUID_HELPER_DIRS = ("/usr/lib/squid", "/usr/lib64/squid", "/usr/libexec/squid")


# --------------------------------------------------------------------------- helpers


def _on_ci() -> bool:
    """CI installs every peer, so a missing one there is a bug, not a reason to skip."""
    return os.environ.get("CI", "").lower() == "true"


def _missing(reason: str) -> NoReturn:
    """Skip locally but fail on CI, where .ci/run must have installed the peer."""
    if _on_ci():
        pytest.fail(f"{reason} [CI=true: .ci/run must install it]", pytrace=False)
    pytest.skip(reason)


def require_binary(name: str, package: str, *, extra_dirs: Sequence[str] = ()) -> str:
    """Return the absolute path of ``name`` or skip (fail on CI) naming the apt package."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *_SBIN_DIRS, *extra_dirs])
    path = shutil.which(name, path=search)
    if path is None:
        _missing(f"{name} not installed (apt-get install {package})")
    return path


def wait_for_log(
    marker: str,
    timeout: float,
    proc: subprocess.Popen[bytes],
    log_path: Path,
) -> None:
    """Poll a peer's log for ``marker``: for peers that a probe connection would upset.

    iperf3 takes any connection as a test client, so probing its port breaks the
    next real test; sshd forks a child per connection. Both log "Server listening".
    """
    deadline = time.monotonic() + timeout
    while True:
        if marker in read_log(log_path):
            return
        if proc.poll() is not None:
            raise PeerStartError(
                f"{proc.args!r} exited with {proc.returncode} before logging {marker!r}"
                f"\n--- log ---\n{read_log(log_path)}"
            )
        if time.monotonic() >= deadline:
            raise PeerStartError(
                f"{proc.args!r} did not log {marker!r} within {timeout}s"
                f"\n--- log ---\n{read_log(log_path)}"
            )
        time.sleep(0.05)


@contextlib.contextmanager
def _run_peer(
    name: str,
    argv: Sequence[str],
    tmp_path: Path,
    port: int,
    *,
    host: str = LOOPBACK,
    cwd: Path | None = None,
    start_timeout: float = START_TIMEOUT,
    ready_marker: str | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """Start ``argv`` with output to a log file, wait for its port, always stop it.

    The log goes to a file rather than a pipe so a chatty peer can never block on a
    full pipe; it is printed to stderr (which pytest shows) when the body fails.
    """
    log_path = tmp_path / f"{name}.log"
    log = log_path.open("wb")
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd or tmp_path,
        )
    except BaseException:
        log.close()
        raise
    try:
        if ready_marker is None:
            wait_for_port(host, port, start_timeout, proc, log_path=log_path)
        else:
            wait_for_log(ready_marker, start_timeout, proc, log_path)
        yield proc, log_path
    except BaseException:
        print(f"--- {name} log ({log_path}) ---\n{read_log(log_path)}", file=sys.stderr)
        raise
    finally:
        stop_process(proc)
        log.close()


def _is_root() -> bool:
    return os.geteuid() == 0


def _check_credentials(user: str | None, password: str | None) -> None:
    if (user is None) != (password is None):
        raise ValueError("give both user and password, or neither")


def _unprivileged_user() -> tuple[str, str]:
    """The account a root-started daemon should drop to (Debian: nobody/nogroup)."""
    import grp

    for group in ("nogroup", "nobody"):
        with contextlib.suppress(KeyError):
            grp.getgrnam(group)
            return "nobody", group
    return "nobody", "nobody"


# --------------------------------------------------------------------------- proxies


@dataclass(frozen=True)
class ProxyPeer:
    """A running proxy: where it listens, what credentials it wants, and its process."""

    kind: str  # "http" or "socks5"
    host: str
    port: int
    user: str | None
    password: str | None
    process: subprocess.Popen[bytes] = field(repr=False, compare=False)
    log_path: Path = field(repr=False, compare=False)

    @property
    def url(self) -> str:
        """Proxy URL in the form our CLI and python-socks accept."""
        auth = f"{self.user}:{self.password}@" if self.user is not None else ""
        return f"{self.kind}://{auth}{self.host}:{self.port}"

    def log(self) -> str:
        """The peer's output so far, for assertion messages."""
        return read_log(self.log_path)


@contextlib.contextmanager
def tinyproxy(
    tmp_path: Path, *, user: str | None = None, password: str | None = None
) -> Iterator[ProxyPeer]:
    """tinyproxy 1.11 as an HTTP CONNECT proxy, optionally with Basic auth.

    No ConnectPort line means CONNECT is allowed to every port (tinyproxy.conf(5)).
    """
    _check_credentials(user, password)
    exe = require_binary("tinyproxy", "tinyproxy")
    port = free_port()
    lines = [
        f"Port {port}",
        f"Listen {LOOPBACK}",
        "Timeout 600",
        "MaxClients 100",
        "LogLevel Info",  # no LogFile/Syslog: logs to stderr in foreground mode
        "Allow 127.0.0.1",
        "DisableViaHeader Yes",
    ]
    if _is_root():  # tinyproxy refuses to keep running as root
        run_user, run_group = _unprivileged_user()
        lines += [f"User {run_user}", f"Group {run_group}"]
    if user is not None:
        lines.append(f"BasicAuth {user} {password}")
    conf = tmp_path / "tinyproxy.conf"
    conf.write_text("\n".join(lines) + "\n")
    with _run_peer("tinyproxy", [exe, "-d", "-c", str(conf)], tmp_path, port) as (proc, log):
        yield ProxyPeer("http", LOOPBACK, port, user, password, proc, log)


def _apr1_hash(password: str) -> str:
    """An htpasswd-style hash that squid's basic_ncsa_auth verifies (MD5 apr1)."""
    openssl = require_binary("openssl", "openssl")
    out = subprocess.run(
        [openssl, "passwd", "-apr1", "-stdin"],
        input=password.encode(),
        capture_output=True,
        check=True,
        timeout=30,
    )
    return out.stdout.decode().strip()


@contextlib.contextmanager
def squid(
    tmp_path: Path, *, user: str | None = None, password: str | None = None
) -> Iterator[ProxyPeer]:
    """squid as a second, stricter HTTP CONNECT proxy, optionally with basic_ncsa_auth.

    squid drops to an unprivileged user when started as root, and that user cannot
    traverse pytest's 0700 base temp dir; so squid runs with its cwd (and
    coredump_dir) in a world-searchable subdir and names its files relatively.
    """
    _check_credentials(user, password)
    exe = require_binary("squid", "squid")
    port = free_port()
    workdir = tmp_path / "squid"
    workdir.mkdir()
    workdir.chmod(0o755)
    lines = [
        f"http_port {LOOPBACK}:{port}",
        "pid_filename none",
        # -d 1 copies cache.log to our stderr; squid cannot reopen that log file as
        # its unprivileged user, so the real cache_log goes nowhere.
        "cache_log /dev/null",
        "access_log none",
        # Keep squid's own traffic on loopback: no resolver, ICMP pinger or ICP/HTCP.
        "dns_nameservers 127.0.0.1",
        "udp_incoming_address 127.0.0.1",
        "visible_hostname localhost",
        "pinger_enable off",
        "icp_port 0",
        "htcp_port 0",
        "cache deny all",
        "cache_mem 8 MB",
        "shutdown_lifetime 0 seconds",
        f"coredump_dir {workdir}",
        "max_filedescriptors 1024",
        "acl CONNECT method CONNECT",
        "acl loopback src 127.0.0.1/32 ::1",
    ]
    if _is_root():  # squid will not run as root; Debian's package makes "proxy"
        lines.append(f"cache_effective_user {'proxy' if _has_user('proxy') else 'nobody'}")
    if user is not None:
        helper = require_binary("basic_ncsa_auth", "squid", extra_dirs=_SQUID_HELPER_DIRS)
        passwd = workdir / "htpasswd"
        passwd.write_text(f"{user}:{_apr1_hash(password or '')}\n")
        passwd.chmod(0o644)
        lines += [
            f"auth_param basic program {helper} htpasswd",
            "auth_param basic children 2",
            "auth_param basic realm cloud-connector-test",
            "acl authed proxy_auth REQUIRED",
            "http_access deny !loopback",
            "http_access allow loopback authed",
            "http_access deny all",
        ]
    else:
        lines += ["http_access allow loopback", "http_access deny all"]
    conf = workdir / "squid.conf"
    conf.write_text("\n".join(lines) + "\n")
    conf.chmod(0o644)
    argv = [exe, "-N", "-d", "1", "-f", str(conf)]
    with _run_peer("squid", argv, tmp_path, port, cwd=workdir, start_timeout=60) as (
        proc,
        log,
    ):
        yield ProxyPeer("http", LOOPBACK, port, user, password, proc, log)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def microsocks(
    tmp_path: Path, *, user: str | None = None, password: str | None = None
) -> Iterator[ProxyPeer]:
    """microsocks as a minimal SOCKS5 proxy; it does user/pass auth on its own."""
    _check_credentials(user, password)
    exe = require_binary("microsocks", "microsocks")
    port = free_port()
    argv = [exe, "-i", LOOPBACK, "-p", str(port)]
    if user is not None:
        argv += ["-u", user, "-P", password or ""]
    with _run_peer("microsocks", argv, tmp_path, port) as (proc, log):
        yield ProxyPeer("socks5", LOOPBACK, port, user, password, proc, log)


_TEST_ACCOUNT_MARK = "cloud-connector test account"


@contextlib.contextmanager
def _temporary_system_user(user: str, password: str) -> Iterator[None]:
    """Create a throwaway no-login account, because dante checks SYSTEM passwords.

    Only as root. An existing account is reused only if an earlier (killed) run made
    it, as its GECOS mark shows; any other account is never touched.
    """
    if not _is_root():
        _missing("dante username auth needs a system account; only possible as root")
    useradd = require_binary("useradd", "passwd")
    chpasswd = require_binary("chpasswd", "passwd")
    userdel = require_binary("userdel", "passwd")
    if _has_user(user):
        if pwd.getpwnam(user).pw_gecos != _TEST_ACCOUNT_MARK:
            raise ValueError(f"account {user!r} exists and is not ours; not changing it")
    else:
        nologin = shutil.which("nologin", path=os.pathsep.join(_SBIN_DIRS)) or "false"
        mark = ["--comment", _TEST_ACCOUNT_MARK]
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", nologin, *mark, user],
            check=True,
            capture_output=True,
            timeout=30,
        )
    try:
        subprocess.run(
            [chpasswd],
            input=f"{user}:{password}\n".encode(),
            check=True,
            capture_output=True,
            timeout=30,
        )
        yield
    finally:
        subprocess.run([userdel, user], check=False, capture_output=True, timeout=30)


@contextlib.contextmanager
def dante(
    tmp_path: Path, *, user: str | None = None, password: str | None = None
) -> Iterator[ProxyPeer]:
    """dante-server (danted) as a full-featured SOCKS5 proxy.

    With credentials, dante's ``username`` method checks the system password database,
    so (as root only) a temporary system account ``user`` is created and removed.
    """
    _check_credentials(user, password)
    exe = require_binary("danted", "dante-server")
    port = free_port()
    method = "username" if user is not None else "none"
    lines = [
        "logoutput: stderr",
        f"internal: {LOOPBACK} port = {port}",
        f"external: {LOOPBACK}",
        "clientmethod: none",
        f"socksmethod: {method}",
    ]
    if _is_root():
        lines += ["user.privileged: root", f"user.unprivileged: {_unprivileged_user()[0]}"]
    lines += [
        "client pass {\n    from: 127.0.0.1/32 to: 0.0.0.0/0\n    log: error\n}",
        # Only loopback targets: a test can never make dante reach the outside world.
        "socks pass {\n    from: 127.0.0.1/32 to: 127.0.0.0/8\n    log: error\n}",
        "socks block {\n    from: 0.0.0.0/0 to: 0.0.0.0/0\n    log: connect error\n}",
    ]
    conf = tmp_path / "danted.conf"
    conf.write_text("\n".join(lines) + "\n")
    with contextlib.ExitStack() as stack:
        if user is not None:
            stack.enter_context(_temporary_system_user(user, password or ""))
        proc, log = stack.enter_context(
            _run_peer("danted", [exe, "-f", str(conf), "-N", "1"], tmp_path, port)
        )
        yield ProxyPeer("socks5", LOOPBACK, port, user, password, proc, log)


# --------------------------------------------------------------------------- sshd


@dataclass(frozen=True)
class SshdPeer:
    """A running OpenSSH server that accepts ``client_key`` for ``user``."""

    host: str
    port: int
    user: str
    client_key: Path
    host_key: Path
    ssh: str
    process: subprocess.Popen[bytes] = field(repr=False, compare=False)
    log_path: Path = field(repr=False, compare=False)

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"

    def ssh_argv(self, *extra: str, command: Sequence[str] = ()) -> list[str]:
        """argv for ``ssh`` to this server, ignoring any user/system ssh config.

        ``extra`` are ssh options (e.g. ``"-N", "-R", "0:127.0.0.1:80"``); ``command``
        is the remote command, placed after the destination.
        """
        return [
            *bench_peers.ssh_base_argv(self.ssh, self.client_key, self.port),
            *extra,
            self.destination,
            *command,
        ]

    def log(self) -> str:
        return read_log(self.log_path)


def _ensure_privsep_dir() -> None:
    """sshd refuses to start without /run/sshd; systemd normally makes it, here we do."""
    privsep = Path("/run/sshd")
    if privsep.is_dir():
        return
    if not _is_root():
        _missing("sshd needs its privilege separation dir /run/sshd (create it as root)")
    privsep.mkdir(mode=0o755, parents=True, exist_ok=True)


@contextlib.contextmanager
def sshd(tmp_path: Path) -> Iterator[SshdPeer]:
    """OpenSSH sshd in the foreground on 127.0.0.1 with its own host and client keys."""
    exe = require_binary("sshd", "openssh-server")
    ssh = require_binary("ssh", "openssh-client")
    ssh_keygen = require_binary("ssh-keygen", "openssh-client")
    _ensure_privsep_dir()
    workdir = tmp_path / "sshd"
    workdir.mkdir()
    host_key = workdir / "ssh_host_ed25519_key"
    client_key = workdir / "id_ed25519"
    bench_peers.make_ssh_key(ssh_keygen, host_key, "cc-test-host")
    bench_peers.make_ssh_key(ssh_keygen, client_key, "cc-test-client")
    authorized = workdir / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    user = getpass.getuser()
    port = free_port()
    conf = workdir / "sshd_config"
    # VERBOSE: sshd logs "Server listening" (our readiness mark) and each key it accepts.
    lines = bench_peers.sshd_config(port, host_key, authorized, user, log_level="VERBOSE")
    conf.write_text("\n".join([*lines, "Subsystem sftp internal-sftp"]) + "\n")
    argv = [exe, "-D", "-e", "-f", str(conf)]
    # A probe connection would leave a per-connection child that may still hold the
    # listening socket when the test ends; sshd announces readiness on stderr instead.
    marker = f"Server listening on {LOOPBACK} port {port}."
    with _run_peer("sshd", argv, tmp_path, port, ready_marker=marker) as (proc, log):
        yield SshdPeer(LOOPBACK, port, user, client_key, host_key, ssh, proc, log)


# --------------------------------------------------------------------------- iperf3


@dataclass(frozen=True)
class Iperf3Peer:
    """A running iperf3 server for throughput benchmarks through a tunnel."""

    host: str
    port: int
    iperf3: str
    process: subprocess.Popen[bytes] = field(repr=False, compare=False)
    log_path: Path = field(repr=False, compare=False)

    def client_argv(self, *extra: str, port: int | None = None) -> list[str]:
        """argv for an iperf3 client to this server (or to ``port``, e.g. a tunnel's)."""
        return [self.iperf3, "-c", self.host, "-p", str(port or self.port), *extra]


@contextlib.contextmanager
def iperf3_server(tmp_path: Path, *, one_off: bool = False) -> Iterator[Iperf3Peer]:
    """iperf3 -s on 127.0.0.1; ``one_off`` makes it exit after one test (``-1``)."""
    exe = require_binary("iperf3", "iperf3")
    port = free_port()
    argv = [exe, "-s", "-B", LOOPBACK, "-p", str(port), "--forceflush"]
    if one_off:
        argv.append("-1")
    marker = f"Server listening on {port}"
    with _run_peer("iperf3", argv, tmp_path, port, ready_marker=marker) as (proc, log):
        yield Iperf3Peer(LOOPBACK, port, exe, proc, log)
