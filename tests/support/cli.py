"""Helpers for the command-line tests: run our CLIs to completion, or keep a gateway up.

The CLIs are what operators run, so they are tested as subprocesses (exit status,
stdout, stderr, signals, pid files) rather than by calling ``main()``; a
``RecordingServer`` stands in for the Private Gateway where a test needs to see
the exact bytes a connector sends.  Long-running children are
:class:`tests.support.processes.CliProcess`.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import LOOPBACK, free_port
from tests.support.processes import CC, CliProcess, clean_env

__all__ = [
    "GO_DURATION",
    "LOG_PREFIX",
    "RecordedRequest",
    "RecordingServer",
    "assert_one_line_error",
    "run_cli",
    "start_gateway",
]

#: Go's ``log`` timestamp (``2006/01/02 15:04:05``) at the start of every text log line.
LOG_PREFIX = r"\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} "
#: A Go ``time.Duration.String()``: ``100ms``, ``1.234567s``, ``2m3.5s``, ``0s``.
GO_DURATION = r"(?:\d+h)?(?:\d+m)?\d+(?:\.\d+)?(?:ns|µs|ms|s)"

RUN_TIMEOUT = 20.0


def run_cli(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = RUN_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion (bounded) and capture its output as text."""
    return subprocess.run(
        list(argv),
        cwd=cwd,
        env=env if env is not None else clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], status: int = 2) -> str:
    """The contract for bad input: one readable stderr line, no traceback, ``status``."""
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    assert result.returncode == status, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@contextlib.contextmanager
def start_gateway(
    tmp_path: Path, *extra: str, name: str = "gateway", timeout: float = 15.0
) -> Iterator[tuple[CliProcess, int]]:
    """``cloud-connector server --reverse`` on a free loopback port, in its own directory."""
    port = free_port()
    workdir = tmp_path / name
    workdir.mkdir(exist_ok=True)
    argv = [*CC, "server", "--reverse", "--host", LOOPBACK, "--port", str(port), *extra]
    with CliProcess(name, argv, cwd=workdir, logdir=tmp_path) as gateway:
        gateway.wait_listening(port, timeout)
        yield gateway, port


@dataclass
class RecordedRequest:
    """One HTTP request head as it arrived on the wire."""

    raw: bytes
    method: str = ""
    target: str = ""
    #: (name, value) in wire order, names in their wire case.
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: bytes) -> RecordedRequest:
        text = raw.decode("latin-1")
        request_line, *header_lines = text.split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers = []
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers.append((name, value.strip()))
        return cls(raw, method, target, headers)

    def header(self, name: str) -> str | None:
        """Value of ``name``, matched case-insensitively as HTTP requires."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def names(self) -> list[str]:
        return [name for name, _ in self.headers]


Responder = Callable[[int, RecordedRequest], bytes]


def _not_found(_index: int, _request: RecordedRequest) -> bytes:
    return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class RecordingServer:
    """A plain TCP listener on 127.0.0.1 that records each request head and answers it.

    ``respond(index, request)`` returns the raw response for the ``index``-th request
    (default: 404 to everything), so a test can play the pre-flight and the refused
    upgrade the way the real Private Gateway or a redirecting front end would.
    """

    def __init__(self, respond: Responder = _not_found) -> None:
        self.respond = respond
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((LOOPBACK, 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="recording-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
        except OSError:
            return
        request = RecordedRequest.parse(data.split(b"\r\n\r\n", 1)[0])
        with self._lock:
            index = len(self.requests)
            self.requests.append(request)
        with contextlib.suppress(OSError):
            conn.sendall(self.respond(index, request))

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self.requests)

    def wait_for_requests(self, count: int, timeout: float) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while True:
            requests = self.snapshot()
            if len(requests) >= count or time.monotonic() >= deadline:
                return requests
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> RecordingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
