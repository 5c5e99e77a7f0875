"""Helpers for the interop tests against the real chisel binary (found via CHISEL_BIN).

Every process here is a child we start on 127.0.0.1 with free ports; its stdout and
stderr go to separate files (Go's log package writes to stderr, our CLIs log to
stdout and print fatal errors on stderr), so a test can say which stream a line must
appear on.  Every wait is bounded, and every process is stopped by its PID through
``tests.peers.stop_process``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from tests import peers

LOOPBACK = peers.LOOPBACK
SEED = "someseed"
#: What chisel (and, by the same derivation, our server) prints for ``--key someseed``.
SEED_FINGERPRINT = "pdeCjHNkdSw2t8djM+QABRa1g2xXLXBGebxmcfXHAic="
#: The legacy MD5 form of the same key, as chisel's client prints it.
SEED_MD5_FINGERPRINT = "e4:02:6f:96:d2:e2:65:50:93:78:60:ad:ee:f8:a2:72"
#: A well-formed SHA-256 fingerprint (44 characters) that belongs to no key here.
WRONG_FINGERPRINT = base64.b64encode(hashlib.sha256(b"no such host key").digest()).decode()

START_TIMEOUT = 20.0
CONNECT_TIMEOUT = 20.0
EXIT_TIMEOUT = 20.0
IO_TIMEOUT = 30.0
TRANSFER_TIMEOUT = 60.0

CONNECTED_RE = r"client: Connected \(Latency [^)\n]+\)"
FINGERPRINT_RE = r"server: Fingerprint (\S+)"

#: Our CLIs, run by the interpreter running the tests (no PATH lookup needed).
CLOUD_CONNECTOR: tuple[str, ...] = (sys.executable, "-m", "cc.cli.main")
OUTSYSTEMSCC: tuple[str, ...] = (
    sys.executable,
    "-c",
    "import sys; from cc.cli.outsystemscc import main; sys.exit(main())",
)

Stream = Literal["stdout", "stderr", "both"]

# Environment variables that chisel or our CLIs read as option defaults; a stray
# value in the developer's shell (AUTH, PORT, a proxy) must not change a test.
_ENV_DROP_EXACT = frozenset(
    {"AUTH", "HOST", "PORT", "http_proxy", "https_proxy", "all_proxy", "no_proxy"}
)
_ENV_DROP_PREFIXES = ("CC_", "CHISEL_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def chisel_binary() -> str:
    """The chisel binary named by CHISEL_BIN; skip when unset, fail when it is unusable."""
    path = os.environ.get("CHISEL_BIN", "")
    if not path:
        pytest.skip("CHISEL_BIN is not set: point it at a chisel v1.11.x binary to run")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"CHISEL_BIN={path!r} is not an executable file", pytrace=False)
    return path


def child_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _ENV_DROP_EXACT and not k.startswith(_ENV_DROP_PREFIXES)
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["CC_WORKERS"] = "1"  # one session each, unless a test passes --workers
    return env


def _tail(path: Path, limit: int = 6000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<missing>"
    return text[-limit:] if text else "<empty>"


@dataclass
class Proc:
    """One started child: its argv, Popen and the files holding its two streams."""

    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes] = field(repr=False)
    out_path: Path = field(repr=False)
    err_path: Path = field(repr=False)

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def text(self, stream: Stream) -> str:
        if stream == "stdout":
            return self.stdout()
        if stream == "stderr":
            return self.stderr()
        return self.stdout() + self.stderr()

    def report(self) -> str:
        rc = self.popen.poll()
        return (
            f"=== {self.name} (pid {self.popen.pid}, rc {rc}): {' '.join(self.argv)}\n"
            f"--- stdout ---\n{_tail(self.out_path)}\n--- stderr ---\n{_tail(self.err_path)}"
        )

    def wait_for(
        self, pattern: str, timeout: float = CONNECT_TIMEOUT, stream: Stream = "both"
    ) -> re.Match[str]:
        """Poll the stream until ``pattern`` matches; fail with the logs on exit or timeout."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            exited = self.popen.poll() is not None
            match = regex.search(self.text(stream))
            if match:
                return match
            if exited:
                raise AssertionError(f"{self.name} exited before {pattern!r}\n{self.report()}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {pattern!r} within {timeout}s\n{self.report()}")
            time.sleep(0.05)

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {timeout}s\n{self.report()}"
            ) from None

    def assert_no_traceback(self) -> None:
        assert "Traceback" not in self.text("both"), self.report()


class Processes:
    """Starts children with logs under ``tmp_path``; ``stop_all`` ends them by PID."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Proc] = []

    def start(self, name: str, argv: Sequence[str], *, cwd: Path | None = None) -> Proc:
        index = len(self.started)
        out_path = self.tmp_path / f"{index:02d}-{name}.out"
        err_path = self.tmp_path / f"{index:02d}-{name}.err"
        workdir = cwd or self.tmp_path / f"{index:02d}-{name}.cwd"
        workdir.mkdir(exist_ok=True)
        with out_path.open("wb") as out, err_path.open("wb") as err:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=workdir,
                env=child_env(),
            )
        proc = Proc(name, list(argv), popen, out_path, err_path)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            peers.stop_process(proc.popen)

    def report(self) -> str:
        return "\n".join(proc.report() for proc in self.started)

    # -- the peers ---------------------------------------------------------------
    def _server(self, name: str, argv: list[str], port: int) -> tuple[Proc, str]:
        proc = self.start(name, argv)
        try:
            peers.wait_for_port(LOOPBACK, port, START_TIMEOUT, proc.popen)
        except peers.PeerStartError as exc:
            raise AssertionError(f"{exc}\n{proc.report()}") from None
        return proc, f"http://{LOOPBACK}:{port}"

    def chisel_server(
        self, chisel: str, *options: str, port: int | None = None
    ) -> tuple[Proc, str]:
        """``chisel server`` on a free (or the given) loopback port; returns it and its URL."""
        port = port or peers.free_port()
        argv = [chisel, "server", "--host", LOOPBACK, "--port", str(port), *options]
        return self._server("chisel-server", argv, port)

    def our_server(self, *options: str) -> tuple[Proc, str]:
        """``cloud-connector server`` on a free loopback port; returns it and its URL."""
        port = peers.free_port()
        argv = [*CLOUD_CONNECTOR, "server", "--host", LOOPBACK, "-p", str(port), *options]
        return self._server("our-server", argv, port)

    def chisel_client(self, chisel: str, *args: str) -> Proc:
        return self.start("chisel-client", [chisel, "client", *args])

    def our_client(self, *args: str) -> Proc:
        return self.start("our-client", [*CLOUD_CONNECTOR, "client", *args])

    def outsystemscc(self, *args: str) -> Proc:
        return self.start("outsystemscc", [*OUTSYSTEMSCC, *args])

    def run_ours(self, name: str, *args: str) -> Proc:
        """A short-lived ``cloud-connector`` command (keygen ...), waited for."""
        proc = self.start(name, [*CLOUD_CONNECTOR, *args])
        proc.wait_exit()
        return proc


def ready(port: int, proc: Proc) -> None:
    """Wait until a tunnel's listening port accepts (reverse listeners bind after config)."""
    try:
        peers.wait_for_port(LOOPBACK, port, START_TIMEOUT, proc.popen)
    except peers.PeerStartError as exc:
        raise AssertionError(f"{exc}\n{proc.report()}") from None


Connect = Callable[[], socket.socket]


def _connector(port: int, connect: Connect | None) -> Connect:
    return connect or (lambda: socket.create_connection((LOOPBACK, port), timeout=IO_TIMEOUT))


def small_exchange(
    port: int, message: bytes = b"hello through the tunnel\n", *, connect: Connect | None = None
) -> None:
    """One short request and its echoed response over a fresh connection."""
    with _connector(port, connect)() as sock:
        sock.sendall(message)
        got = b""
        while len(got) < len(message):
            chunk = sock.recv(len(message) - len(got))
            if not chunk:
                break
            got += chunk
    assert got == message, f"port {port}: echoed {got!r}, sent {message!r}"


def sha256_roundtrip(
    port: int,
    payload: bytes,
    timeout: float = TRANSFER_TIMEOUT,
    *,
    connect: Connect | None = None,
) -> float:
    """Send ``payload`` through an echo tunnel while reading it back; compare SHA-256.

    No half-close: chisel closes both directions when one side sends EOF, so the
    reader counts bytes instead of waiting for EOF.  Returns the seconds taken.
    """
    want = hashlib.sha256(payload).hexdigest()
    got = hashlib.sha256()
    received = 0
    errors: list[BaseException] = []
    started = time.monotonic()
    deadline = started + timeout
    with _connector(port, connect)() as sock:

        def send() -> None:
            try:
                view = memoryview(payload)
                for offset in range(0, len(view), 1 << 20):
                    sock.sendall(view[offset : offset + (1 << 20)])
            except OSError as exc:
                errors.append(exc)

        sender = threading.Thread(target=send, name=f"send-{port}", daemon=True)
        sender.start()
        try:
            while received < len(payload):
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"port {port}: {received} of {len(payload)} bytes after {timeout}s"
                    )
                chunk = sock.recv(min(1 << 20, len(payload) - received))
                if not chunk:
                    break
                got.update(chunk)
                received += len(chunk)
        finally:
            sender.join(timeout=IO_TIMEOUT)
    elapsed = time.monotonic() - started
    assert not errors, f"port {port}: send failed: {errors[0]!r}"
    assert received == len(payload), f"port {port}: got {received} of {len(payload)} bytes"
    assert got.hexdigest() == want, f"port {port}: SHA-256 mismatch after {received} bytes"
    return elapsed


def check_tunnel(port: int, payload: bytes, *, connect: Connect | None = None) -> float:
    """Small request/response, then the big SHA-256-verified transfer."""
    small_exchange(port, connect=connect)
    return sha256_roundtrip(port, payload, connect=connect)


def parallel_roundtrips(port: int, payload: bytes, connections: int = 16) -> None:
    """``connections`` simultaneous transfers, each of a different slice of ``payload``.

    Distinct data per connection means that bytes delivered on the wrong channel, or
    a stalled channel window, show up as a hash mismatch or a timeout.
    """
    size = len(payload) // connections
    errors: list[BaseException] = []

    def one(index: int) -> None:
        try:
            sha256_roundtrip(port, payload[index * size : (index + 1) * size])
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=one, args=(i,), name=f"parallel-{port}-{i}", daemon=True)
        for i in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TRANSFER_TIMEOUT + IO_TIMEOUT)
    assert not any(t.is_alive() for t in threads), f"port {port}: a transfer hung"
    assert not errors, f"port {port}: {len(errors)} of {connections} failed: {errors[0]}"


class CountingRelay:
    """A TCP relay on 127.0.0.1 that counts the bytes it carries in each direction.

    Placed between a client and a server it shows that an idle session still
    carries keepalive traffic both ways, which neither program logs.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server((LOOPBACK, 0))
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.lock = threading.Lock()
        self.upstream = 0  # client -> server
        self.downstream = 0  # server -> client
        self.stopping = threading.Event()
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.upstream, self.downstream

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                server = socket.create_connection((LOOPBACK, self.target_port), timeout=IO_TIMEOUT)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.sockets += [client, server]
            self._spawn(self._pump, client, server, True)
            self._spawn(self._pump, server, client, False)

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(65536):
                with self.lock:
                    if up:
                        self.upstream += len(data)
                    else:
                        self.downstream += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> CountingRelay:
        self._spawn(self._serve)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.listener.close()
        with self.lock:
            sockets = list(self.sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(timeout=IO_TIMEOUT)
        for sock in sockets:
            sock.close()


# --------------------------------------------------------------------------- SOCKS


def socks_connect(proxy_port: int, host: str, port: int) -> socket.socket:
    """A TCP connection to ``host:port`` through the SOCKS5 proxy on ``proxy_port``."""
    from python_socks.sync import Proxy

    sock = Proxy.from_url(f"socks5://{LOOPBACK}:{proxy_port}").connect(
        host, port, timeout=IO_TIMEOUT
    )
    sock.settimeout(IO_TIMEOUT)
    return sock
