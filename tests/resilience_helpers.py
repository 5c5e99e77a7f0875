"""Processes, services and probes for the resilience tests (tests/test_resilience.py).

The gateway and the connector run as real CLI subprocesses
(``python -m cc.cli.main server|client``) so a test can SIGKILL, SIGSTOP and
SIGCONT them exactly as an operator's machine (or the kernel) would.  Their
stdout/stderr go to files, never pipes, so a chatty process cannot block on a
full pipe; :meth:`CliProcess.wait_for` polls those files.  Every wait is bounded
and every process is stopped (after a SIGCONT, in case it was stopped) by PID.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from cc.protocol import keys
from tests.peers import LOOPBACK, free_port, stop_process, wait_for_port

__all__ = [
    "GATEWAY_SEED",
    "STEP",
    "CliProcess",
    "SlowTransfer",
    "blob",
    "echo_roundtrip",
    "free_port",
    "gateway_fingerprint",
    "port_is_free",
    "port_refuses",
    "start_client",
    "start_gateway",
    "verified_echo",
]

#: A fixed host-key seed: a restarted gateway keeps its identity (and fingerprint).
GATEWAY_SEED = "resilience-test-gateway"
#: Upper bound on any single step: a process start, a reconnect, a transfer.
STEP = 15.0
POLL = 0.02


def gateway_fingerprint(seed: str = GATEWAY_SEED) -> str:
    return keys.fingerprint_sha256(keys.public_key_wire(keys.seed_private_key(seed)))


def blob(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes: incompressible, reproducible from ``seed``."""
    return random.Random(seed).randbytes(size)


@dataclass
class CliProcess:
    """One ``cloud-connector`` subprocess with its output in ``<name>.out`` / ``<name>.err``."""

    name: str
    proc: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    _files: list[IO[bytes]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def count(self, marker: str) -> int:
        return self.stdout().count(marker)

    def describe(self) -> str:
        return (
            f"--- {self.name} (pid {self.pid}, rc {self.proc.poll()}) stdout ---\n"
            f"{self.stdout()[-6000:]}\n--- {self.name} stderr ---\n{self.stderr()[-3000:]}"
        )

    def wait_for(self, marker: str, *, count: int = 1, timeout: float = STEP) -> float:
        """Block until ``marker`` occurs ``count`` times in stdout; return time.monotonic()."""
        deadline = time.monotonic() + timeout
        while True:
            if self.count(marker) >= count:
                return time.monotonic()
            if self.proc.poll() is not None and self.count(marker) < count:
                raise AssertionError(
                    f"{self.name} exited before logging {marker!r} x{count}\n{self.describe()}"
                )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{self.name} did not log {marker!r} x{count} within {timeout}s\n"
                    f"{self.describe()}"
                )
            time.sleep(POLL)

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        """SIGCONT (a stopped process cannot act on SIGTERM), then SIGTERM/SIGKILL by PID."""
        with contextlib.suppress(ProcessLookupError):
            self.signal(signal.SIGCONT)
        stop_process(self.proc, timeout=5.0)
        for f in self._files:
            f.close()


def _spawn(name: str, args: Sequence[str], workdir: Path) -> CliProcess:
    out_path = workdir / f"{name}.out"
    err_path = workdir / f"{name}.err"
    out = out_path.open("ab")
    err = err_path.open("ab")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cc.cli.main", *args],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
        cwd=workdir,
        env=env,
    )
    return CliProcess(name, proc, out_path, err_path, [out, err])


def start_gateway(
    workdir: Path,
    port: int,
    *,
    keepalive: str = "25s",
    keepalive_timeout: str = "10s",
    name: str = "gateway",
) -> CliProcess:
    """``cloud-connector server --reverse`` on 127.0.0.1:port; returns once it listens."""
    gw = _spawn(
        name,
        [
            "server",
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--reverse",
            "--key",
            GATEWAY_SEED,
            "--keepalive",
            keepalive,
            "--keepalive-timeout",
            keepalive_timeout,
        ],
        workdir,
    )
    try:
        gw.wait_for("Listening on", timeout=STEP)
        wait_for_port(LOOPBACK, port, STEP, gw.proc)
    except BaseException:
        gw.stop()
        raise
    return gw


def start_client(
    workdir: Path,
    gateway_port: int,
    remotes: Sequence[str],
    *extra: str,
    name: str = "client",
) -> CliProcess:
    """``cloud-connector client`` for the gateway on ``gateway_port``; does not wait."""
    return _spawn(
        name,
        [
            "client",
            "--fingerprint",
            gateway_fingerprint(),
            *extra,
            f"http://{LOOPBACK}:{gateway_port}",
            *remotes,
        ],
        workdir,
    )


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port (we could bind it ourselves)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def port_refuses(port: int) -> bool:
    """True when a TCP connect to 127.0.0.1:port is refused."""
    with socket.socket() as s:
        s.settimeout(2.0)
        try:
            s.connect((LOOPBACK, port))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        return False


def echo_roundtrip(port: int, payload: bytes, timeout: float = STEP) -> bytes:
    """Send ``payload`` to an echo service behind ``port``, half-close, read all back."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
        received = bytearray()
        errors: list[BaseException] = []

        def send() -> None:
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
            except OSError as exc:
                errors.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            received += chunk
        sender.join(timeout=timeout)
        if errors:
            raise errors[0]
        return bytes(received)


def verified_echo(port: int, size: int, seed: int) -> bool:
    """An echo round trip of ``size`` bytes through ``port``; True if the SHA-256s match."""
    payload = blob(size, seed)
    echoed = echo_roundtrip(port, payload)
    return hashlib.sha256(echoed).hexdigest() == hashlib.sha256(payload).hexdigest()


class SlowTransfer(threading.Thread):
    """A long echo transfer (``chunk`` bytes every ``pause`` s) running in a thread.

    ``received`` grows while the tunnel carries it; ``error``/``eof_early`` say how
    it ended if it did not complete.
    """

    def __init__(self, port: int, total: int, chunk: int = 16 * 1024, pause: float = 0.02) -> None:
        super().__init__(daemon=True, name="slow-transfer")
        self.port = port
        self.payload = blob(total, seed=99)
        self.chunk = chunk
        self.pause = pause
        self.received = 0
        self.error: BaseException | None = None
        self.completed = False
        self.stop_event = threading.Event()

    def run(self) -> None:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=STEP) as s:
                s.settimeout(STEP)
                got = bytearray()
                for offset in range(0, len(self.payload), self.chunk):
                    if self.stop_event.is_set():
                        return
                    s.sendall(self.payload[offset : offset + self.chunk])
                    # Read back what has been echoed so far without blocking for long.
                    s.settimeout(self.pause)
                    with contextlib.suppress(TimeoutError):
                        while data := s.recv(1 << 16):
                            got += data
                            self.received = len(got)
                        raise ConnectionError("EOF before the transfer finished")
                    s.settimeout(STEP)
                s.shutdown(socket.SHUT_WR)
                while data := s.recv(1 << 16):
                    got += data
                    self.received = len(got)
                self.completed = bytes(got) == self.payload
        except (OSError, ConnectionError) as exc:
            self.error = exc
