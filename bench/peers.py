"""Child programs of a bench run: start them logged, wait until ready, always stop them.

Everything listens on 127.0.0.1 and keeps its files in a caller-given work directory.
The tests start their peers with pytest's help (``tests/support/peers.py``) but take
sshd's configuration, the ssh command line and the process stopping from here, so
that the bench runs without pytest and each of those exists once. Each child gets SIGTERM from the
kernel if the bench itself dies (Linux ``PR_SET_PDEATHSIG``), so nothing outlives a run.
"""

from __future__ import annotations

import contextlib
import ctypes
import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = [
    "LOOPBACK",
    "Child",
    "PeerError",
    "SshdPeer",
    "find_binary",
    "free_port",
    "iperf3_server",
    "listening_ports",
    "python_env",
    "python_service",
    "spawn",
    "sshd",
    "sshd_config",
    "stop_process",
    "wait_listening",
    "wait_shared",
]

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
REPO_ROOT = Path(__file__).resolve().parent.parent

# Daemons live in sbin, which a non-root PATH often lacks.
_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
_TCP_LISTEN = "0A"  # st column of /proc/net/tcp
_PR_SET_PDEATHSIG = 1


class PeerError(RuntimeError):
    """A child died or never became ready; the message carries the end of its log."""


def find_binary(name: str) -> str | None:
    """``name`` on PATH or in the sbin directories, or None."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *_SBIN_DIRS])
    return shutil.which(name, path=search)


def free_port() -> int:
    """An unused loopback port (racy in theory, fine on one machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def listeners() -> Counter[int]:
    """Listening TCP sockets per port (IPv4 and IPv6), read from /proc/net.

    Used instead of a probe connection: through a tunnel a probe would reach the
    target, and iperf3 takes any connection for a test client.  A port shared
    with SO_REUSEPORT counts once per socket.
    """
    counts: Counter[int] = Counter()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f, None)  # header
            for line in f:
                fields = line.split()
                if len(fields) > 3 and fields[3] == _TCP_LISTEN:
                    counts[int(fields[1].rsplit(":", 1)[1], 16)] += 1
    return counts


def listening_ports() -> set[int]:
    """TCP ports something listens on."""
    return set(listeners())


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for our Python children: ``cc`` and ``bench`` importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM when the bench goes away (Linux only)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """A started program, with the log its stdout and stderr go to."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, limit: int = 1500) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return text[-limit:].strip() or "<empty log>"

    def check_alive(self) -> None:
        """Raise PeerError (with the log) if the program has exited."""
        code = self.popen.poll()
        if code is not None:
            raise PeerError(f"{self.name} exited with {code}; log:\n{self.log_tail()}")


def stop_process(popen: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, bounded wait, SIGKILL: the PID we started, then its descendants by PID.

    Daemons leave children behind when their parent goes (sshd's per-connection
    processes keep the listening socket briefly, squid's auth helpers, danted's
    workers), so they are collected before the parent is signalled.  tests/support/peers.py
    uses this one too.
    """
    try:
        children = psutil.Process(popen.pid).children(recursive=True)
    except psutil.Error:
        children = []
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                popen.kill()
            popen.wait(timeout=timeout)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(alive, timeout=timeout)


@contextlib.contextmanager
def spawn(
    name: str,
    argv: Sequence[str],
    workdir: Path,
    *,
    env: Mapping[str, str] | None = None,
) -> Iterator[Child]:
    """Start ``argv`` with output to ``workdir/name.log``; stop it when the block ends."""
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=dict(env) if env is not None else None,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        except OSError as exc:
            raise PeerError(f"cannot start {name} ({argv[0]}): {exc}") from exc
        try:
            yield Child(name, popen, log_path)
        finally:
            stop_process(popen)


def wait_listening(
    ports: Iterable[int], children: Sequence[Child], timeout: float = START_TIMEOUT
) -> None:
    """Poll until every port listens; fail early if one of ``children`` exits."""
    wanted = set(ports)
    deadline = time.monotonic() + timeout
    while True:
        for child in children:
            child.check_alive()
        missing = wanted - listening_ports()
        if not missing:
            return
        if time.monotonic() >= deadline:
            logs = "\n".join(f"--- {c.name}:\n{c.log_tail()}" for c in children)
            raise PeerError(f"ports {sorted(missing)} not listening after {timeout}s\n{logs}")
        time.sleep(0.05)


def wait_shared(
    ports: Iterable[int], child: Child, sessions: int, timeout: float = START_TIMEOUT
) -> None:
    """Poll until each port has ``sessions`` listening sockets (SO_REUSEPORT sharing)."""
    deadline = time.monotonic() + timeout
    while True:
        child.check_alive()
        counts = listeners()
        short = {p: counts[p] for p in ports if counts[p] < sessions}
        if not short:
            return
        if time.monotonic() >= deadline:
            raise PeerError(f"listeners per port {short}, wanted {sessions}\n{child.log_tail()}")
        time.sleep(0.05)


def wait_for_log(child: Child, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
    """Poll ``child``'s log for the regex ``pattern`` (multiline); return the match."""
    regex = re.compile(pattern, re.MULTILINE)
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            match = regex.search(child.log_path.read_text(errors="replace"))
            if match:
                return match
        child.check_alive()
        if time.monotonic() >= deadline:
            raise PeerError(f"{child.name} did not log {pattern!r}; log:\n{child.log_tail()}")
        time.sleep(0.05)


@contextlib.contextmanager
def python_service(kind: str, workdir: Path, *args: str) -> Iterator[tuple[int, Child]]:
    """Run ``python -m bench.services KIND``; yield the port it announces, and the child."""
    argv = [sys.executable, "-m", "bench.services", kind, *args]
    with spawn(f"service-{kind}", argv, workdir, env=python_env()) as child:
        match = wait_for_log(child, r"^PORT (\d+)$")
        yield int(match.group(1)), child


@contextlib.contextmanager
def iperf3_server(iperf3: str, workdir: Path) -> Iterator[int]:
    """``iperf3 -s`` on a free loopback port; yields the port."""
    port = free_port()
    argv = [iperf3, "-s", "-B", LOOPBACK, "-p", str(port), "--forceflush"]
    with spawn("iperf3-server", argv, workdir) as child:
        wait_for_log(child, rf"Server listening on {port}")
        yield port


# --------------------------------------------------------------------------- sshd


@dataclass(frozen=True)
class SshdPeer:
    """A running sshd that lets ``user`` in with ``client_key``."""

    port: int
    user: str
    client_key: Path
    ssh: str
    child: Child

    def ssh_argv(self, *options: str) -> list[str]:
        """``ssh`` to this server, ignoring every user or system configuration."""
        return [
            *ssh_base_argv(self.ssh, self.client_key, self.port),
            *options,
            f"{self.user}@{LOOPBACK}",
        ]


def ssh_base_argv(ssh: str, client_key: Path, port: int) -> list[str]:
    """``ssh`` with our key and port and no user or system configuration (bench and tests)."""
    return [
        ssh,
        "-F",
        os.devnull,
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        f"UserKnownHostsFile={os.devnull}",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=10",
        "-i",
        str(client_key),
        "-p",
        str(port),
    ]


def make_ssh_key(ssh_keygen: str, path: Path, comment: str) -> None:
    """A passphrase-less ed25519 key pair at ``path`` (and ``path``.pub)."""
    subprocess.run(
        [ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def sshd_config(
    port: int, host_key: Path, authorized: Path, user: str, *, log_level: str = "ERROR"
) -> list[str]:
    """An sshd_config on 127.0.0.1:``port``: ``user`` by public key only, TCP forwarding on."""
    return [
        f"Port {port}",
        f"ListenAddress {LOOPBACK}",
        f"HostKey {host_key}",
        "PidFile none",
        "UsePAM no",
        "StrictModes no",
        f"AuthorizedKeysFile {authorized}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "AllowTcpForwarding yes",
        "GatewayPorts no",
        "X11Forwarding no",
        "PrintMotd no",
        f"LogLevel {log_level}",
        f"AllowUsers {user}",
    ]


@contextlib.contextmanager
def sshd(workdir: Path) -> Iterator[SshdPeer]:
    """OpenSSH sshd in the foreground on 127.0.0.1 with its own host and client keys."""
    binaries = {name: find_binary(name) for name in ("sshd", "ssh", "ssh-keygen")}
    missing = [name for name, path in binaries.items() if path is None]
    if missing:
        raise PeerError(f"{', '.join(missing)} not installed (openssh-server/-client)")
    if not Path("/run/sshd").is_dir():
        if os.geteuid() != 0:
            raise PeerError("sshd needs /run/sshd (create it as root)")
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    exe, ssh, ssh_keygen = (str(binaries[n]) for n in ("sshd", "ssh", "ssh-keygen"))
    keydir = workdir / "sshd"
    keydir.mkdir(exist_ok=True)
    host_key, client_key = keydir / "host_key", keydir / "client_key"
    make_ssh_key(ssh_keygen, host_key, "cc-bench-host")
    make_ssh_key(ssh_keygen, client_key, "cc-bench-client")
    authorized = keydir / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    user = getpass.getuser()
    port = free_port()
    config = sshd_config(port, host_key, authorized, user)
    conf = keydir / "sshd_config"
    conf.write_text("\n".join(config) + "\n")
    with spawn("sshd", [exe, "-D", "-e", "-f", str(conf)], workdir) as child:
        # No probe connection: sshd would fork a child for it.
        wait_listening([port], [child])
        yield SshdPeer(port, user, client_key, ssh, child)
