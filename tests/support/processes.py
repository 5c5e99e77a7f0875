"""Child processes for tests: our CLIs (and chisel) as an operator runs them.

:class:`CliProcess` is one child whose stdout and stderr go to two files, never
pipes, so a chatty process cannot block on a full pipe while the test is busy;
every wait polls those files with a bound.  :class:`Processes` is what the
``procs`` fixture hands a test: it starts children under ``tmp_path`` and stops
each by PID at teardown (after a SIGCONT, in case a test stopped it).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

from bench import peers as bench_peers
from tests.support.net import LOOPBACK, STOP_TIMEOUT, PeerStartError, free_port, wait_for_port

__all__ = [
    "CC",
    "OSCC",
    "START_TIMEOUT",
    "CliProcess",
    "Processes",
    "clean_env",
    "stop_process",
]

#: ``cloud-connector`` and ``outsystemscc`` as the installed console scripts run them.
CC = [sys.executable, "-m", "cc.cli.main"]
OSCC = [sys.executable, "-m", "cc.cli.outsystemscc"]

#: Bound on a process's start (until it listens) and on each wait for a log line.
START_TIMEOUT = 20.0
POLL = 0.02

Stream = Literal["stdout", "stderr", "both"]

# Environment variables that chisel or our CLIs read as option defaults; a stray
# value in the developer's shell (AUTH, PORT, a proxy) must not change a test.
_ENV_DROP_EXACT = frozenset(
    {"AUTH", "HOST", "PORT", "http_proxy", "https_proxy", "all_proxy", "no_proxy"}
)
_ENV_DROP_PREFIXES = ("CC_", "CHISEL_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the variables our CLIs and chisel read.

    One worker per process unless a test passes ``--workers`` or ``CC_WORKERS``:
    most tests read one session's log lines and pid.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _ENV_DROP_EXACT and not k.startswith(_ENV_DROP_PREFIXES)
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["CC_WORKERS"] = "1"
    env.update(extra)
    return env


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, bounded wait, then SIGKILL: the PID we started and its descendants."""
    bench_peers.stop_process(proc, timeout)


def _tail(path: Path, limit: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<missing>"
    return text[-limit:] if text else "<empty>"


class CliProcess:
    """One started child: its argv, its Popen, and the files holding its two streams.

    ``<logdir>/<name>.out`` and ``.err``; ``stop()`` (or leaving a ``with``) ends it.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        logdir: Path,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.out_path = logdir / f"{name}.out"
        self.err_path = logdir / f"{name}.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.popen: subprocess.Popen[bytes] = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=env if env is not None else clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                preexec_fn=preexec_fn,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    # -- what it printed ----------------------------------------------------------
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

    def lines(self) -> list[str]:
        """stdout, line by line (our CLIs log there)."""
        return self.stdout().splitlines()

    def count(self, marker: str) -> int:
        return self.stdout().count(marker)

    def report(self) -> str:
        """Everything it printed, for assertion messages."""
        return (
            f"=== {self.name} (pid {self.pid}, rc {self.popen.poll()}): {' '.join(self.argv)}\n"
            f"--- stdout ---\n{_tail(self.out_path, 6000)}\n"
            f"--- stderr ---\n{_tail(self.err_path, 6000)}"
        )

    def assert_no_traceback(self) -> None:
        assert "Traceback" not in self.text("both"), self.report()

    # -- waiting --------------------------------------------------------------------
    def _poll(self, found: object, what: str, timeout: float) -> None:
        """Poll ``found()`` until it is truthy; fail with the logs on exit or timeout."""
        assert callable(found)
        deadline = time.monotonic() + timeout
        while True:
            exited = self.popen.poll() is not None
            if found():
                return
            if exited:
                raise AssertionError(f"{self.name} exited before {what}\n{self.report()}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {what} within {timeout}s\n{self.report()}")
            time.sleep(POLL)

    def wait_for(
        self, pattern: str, timeout: float = START_TIMEOUT, stream: Stream = "both"
    ) -> re.Match[str]:
        """The first match of the regex ``pattern`` in ``stream``, once it appears."""
        regex = re.compile(pattern)
        match: list[re.Match[str]] = []

        def found() -> bool:
            m = regex.search(self.text(stream))
            if m:
                match.append(m)
            return m is not None

        self._poll(found, repr(pattern), timeout)
        return match[0]

    def wait_for_line(self, pattern: str, timeout: float, *, after: int = 0) -> tuple[int, str]:
        """Index and text of the first stdout line at or after ``after`` matching ``pattern``."""
        regex = re.compile(pattern)
        hit: list[tuple[int, str]] = []

        def found() -> bool:
            lines = self.lines()
            for index in range(after, len(lines)):
                if regex.search(lines[index]):
                    hit.append((index, lines[index]))
                    return True
            return False

        self._poll(found, repr(pattern), timeout)
        return hit[0]

    def wait_for_text(
        self, marker: str, *, count: int = 1, timeout: float = START_TIMEOUT
    ) -> float:
        """Block until ``marker`` occurs ``count`` times in stdout; return time.monotonic()."""
        self._poll(lambda: self.count(marker) >= count, f"{marker!r} x{count}", timeout)
        return time.monotonic()

    def wait_exit(self, timeout: float = START_TIMEOUT) -> int:
        """Exit status, waiting at most ``timeout`` seconds."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {timeout}s\n{self.report()}"
            ) from None

    def wait_listening(self, port: int, timeout: float = START_TIMEOUT) -> None:
        """Until 127.0.0.1:``port`` accepts (a listener this process opens)."""
        try:
            wait_for_port(LOOPBACK, port, timeout, self.popen)
        except PeerStartError as exc:
            raise AssertionError(f"{exc}\n{self.report()}") from None

    # -- ending it -------------------------------------------------------------------
    def signal(self, sig: signal.Signals) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def stop(self) -> None:
        """SIGCONT (a stopped process cannot act on SIGTERM), then SIGTERM/SIGKILL by PID."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGCONT)
        stop_process(self.popen)

    def __enter__(self) -> CliProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Processes:
    """Starts children with logs under ``tmp_path``; ``stop_all`` ends them by PID."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[CliProcess] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> CliProcess:
        """``argv`` as the child ``<index>-<name>``, in its own directory unless ``cwd``.

        ``env``: its environment (default ``clean_env()``).
        """
        label = f"{len(self.started):02d}-{name}"
        workdir = cwd or self.tmp_path / f"{label}.cwd"
        workdir.mkdir(exist_ok=True)
        proc = CliProcess(label, argv, cwd=workdir, logdir=self.tmp_path, env=env)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()

    def report(self) -> str:
        return "\n".join(proc.report() for proc in self.started)

    # -- our CLIs and chisel --------------------------------------------------------
    def _server(self, name: str, argv: list[str], port: int) -> tuple[CliProcess, str]:
        proc = self.start(name, argv)
        proc.wait_listening(port)
        return proc, f"http://{LOOPBACK}:{port}"

    def chisel_server(
        self, chisel: str, *options: str, port: int | None = None
    ) -> tuple[CliProcess, str]:
        """``chisel server`` on a free (or the given) loopback port; returns it and its URL."""
        port = port or free_port()
        argv = [chisel, "server", "--host", LOOPBACK, "--port", str(port), *options]
        return self._server("chisel-server", argv, port)

    def our_server(
        self, *options: str, port: int | None = None, name: str = "our-server"
    ) -> tuple[CliProcess, str]:
        """``cloud-connector server`` on a free (or the given) loopback port; it and its URL."""
        port = port or free_port()
        argv = [*CC, "server", "--host", LOOPBACK, "-p", str(port), *options]
        return self._server(name, argv, port)

    def chisel_client(self, chisel: str, *args: str) -> CliProcess:
        return self.start("chisel-client", [chisel, "client", *args])

    def our_client(self, *args: str, name: str = "our-client") -> CliProcess:
        return self.start(name, [*CC, "client", *args])

    def outsystemscc(self, *args: str) -> CliProcess:
        return self.start("outsystemscc", [*OSCC, *args])

    def run_ours(self, name: str, *args: str) -> CliProcess:
        """A short-lived ``cloud-connector`` command (keygen ...), waited for."""
        proc = self.start(name, [*CC, *args])
        proc.wait_exit()
        return proc
