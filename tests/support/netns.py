"""Network namespaces that a test creates, uses and always deletes again.

The fault tests put the gateway and the connector in two namespaces of their own,
joined only through the impairment relay (:mod:`tests.support.impair`), so that
what the relay does to packets is all that happens to the session and nothing
leaves the namespaces.  The test process itself stays in the host namespace; it
opens sockets *inside* a namespace by switching one thread there for the time it
takes to create them (``setns(2)`` moves only the calling thread, and a socket
keeps the namespace it was created in).  Child processes start through
``ip netns exec``, which ``exec``s the program, so a child's PID is the program's.

Names carry the creating PID (``ccf-<pid>-<n>``): a namespace left behind by a
test process that was itself SIGKILLed is recognised and deleted by the next one.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = [
    "NetNamespace",
    "unavailable_reason",
]

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
#: Bound on every ``ip`` invocation: a wedged one must not hang the suite.
IP_TIMEOUT = 10.0
_PREFIX = "ccf"
_NAME = re.compile(rf"^{_PREFIX}-(\d+)-\d+$")
_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    ip = shutil.which("ip") or "ip"
    result = subprocess.run(
        [ip, *args],
        capture_output=True,
        text=True,
        timeout=IP_TIMEOUT,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_stale() -> None:
    """Delete namespaces of ours whose creating process no longer exists."""
    if not NETNS_DIR.is_dir():
        return
    for entry in NETNS_DIR.iterdir():
        match = _NAME.match(entry.name)
        if match and not _pid_alive(int(match.group(1))):
            _ip("netns", "delete", entry.name, check=False)


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here (not root, no iproute2, no TUN), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun does not exist"
    try:
        with NetNamespace():
            pass
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot create a network namespace: {exc}"
    return None


class NetNamespace:
    """A fresh network namespace with its loopback up; ``close()`` deletes it.

    Deleting the name is enough once the processes in it have exited: the kernel
    frees the namespace with its last user.  Callers stop their children first.
    """

    def __init__(self) -> None:
        _delete_stale()
        self.name = f"{_PREFIX}-{os.getpid()}-{next(_counter)}"
        _ip("netns", "add", self.name)
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        self._closed = False

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    def ip(self, *args: str) -> None:
        """``ip -n <ns> ...``: configure links and addresses inside this namespace."""
        _ip("-n", self.name, *args)

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the block with the calling thread inside this namespace (only that thread)."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(self.path, os.O_RDONLY)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(own)

    def make_socket(
        self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
    ) -> socket.socket:
        """A socket that lives in this namespace."""
        with self.entered():
            return socket.socket(family, kind)

    def connect(self, host: str, port: int, timeout: float) -> socket.socket:
        """A TCP connection made from inside this namespace (numeric ``host`` only)."""
        sock = self.make_socket()
        try:
            sock.settimeout(timeout)
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def listen(self, host: str, port: int, backlog: int = 128) -> socket.socket:
        """A TCP listener inside this namespace."""
        sock = self.make_socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return sock

    def port_is_free(self, host: str, port: int) -> bool:
        """True when nothing in this namespace listens on host:port."""
        with contextlib.closing(self.make_socket()) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                return False
            return True

    def tcp_counters(self) -> dict[str, int]:
        """This namespace's ``Tcp:`` counters from /proc/net/snmp (RetransSegs, ...)."""
        with self.entered():
            lines = Path("/proc/thread-self/net/snmp").read_text().splitlines()
        names, values = (line.split()[1:] for line in lines if line.startswith("Tcp:"))
        return {name: int(value) for name, value in zip(names, values, strict=True)}

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this namespace (``ip netns exec`` execs it: same PID)."""
        return [shutil.which("ip") or "ip", "netns", "exec", self.name, *argv]

    def close(self) -> None:
        if getattr(self, "_closed", False):
            return
        self._closed = True
        _ip("netns", "delete", self.name, check=False)

    def __enter__(self) -> NetNamespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
