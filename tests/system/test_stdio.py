"""``stdio:host:port`` remotes: the client's stdin/stdout are the tunnelled connection.

Each test starts our gateway (``cloud-connector server``) on loopback and runs
``cloud-connector client ... stdio:127.0.0.1:PORT`` as a child process: with pipes,
with a regular file and ``/dev/null`` (descriptors the event loop cannot poll), and
as OpenSSH's ProxyCommand against the sshd of tests/support/peers.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shlex
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import peers
from tests.support.chisel import SEED, SEED_FINGERPRINT
from tests.support.net import STOP_TIMEOUT, free_port
from tests.support.processes import CC, Processes, clean_env

__all__: list[str] = []

RUN_TIMEOUT = 60.0


@pytest.fixture
def gateway(procs: Processes) -> str:
    """Our gateway on a free loopback port; returns its URL."""
    _, url = procs.our_server("--key", SEED)
    return url


def answer(data: bytes) -> bytes:
    return b"%d %s\n" % (len(data), hashlib.sha256(data).hexdigest().encode())


@contextlib.contextmanager
def answer_after_eof_service() -> Iterator[int]:
    """TCP service on 127.0.0.1: reads to EOF, then sends ``answer(data)`` and closes.

    It can only answer if the client's EOF crossed the tunnel while the other
    direction stayed open (half-close).
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(RUN_TIMEOUT)
                chunks = []
                with contextlib.suppress(OSError):
                    while chunk := conn.recv(1 << 16):
                        chunks.append(chunk)
                    conn.sendall(answer(b"".join(chunks)))

    thread = threading.Thread(target=serve, name="answer-after-eof", daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stopping.set()
        listener.close()
        thread.join(timeout=STOP_TIMEOUT)


def client_argv(url: str, target: str) -> list[str]:
    return [*CC, "client", "--fingerprint", SEED_FINGERPRINT, url, f"stdio:{target}"]


def test_stdio_pipes_with_half_close(gateway: str, tmp_path: Path) -> None:
    """stdin to EOF goes in, the answer comes back on stdout; logs stay on stderr."""
    data = random.Random(11).randbytes(3 * 1024 * 1024)
    with answer_after_eof_service() as port, (tmp_path / "stderr").open("wb") as err:
        result = subprocess.run(
            client_argv(gateway, f"127.0.0.1:{port}"),
            input=data,
            stdout=subprocess.PIPE,
            stderr=err,
            env=clean_env(),
            timeout=RUN_TIMEOUT,
            check=False,
        )
    stderr = (tmp_path / "stderr").read_text()
    assert result.stdout == answer(data), stderr
    assert result.returncode == 0, stderr
    assert "client: Connected" in stderr, "logs go to stderr in stdio mode"
    assert "Traceback" not in stderr


def test_stdio_with_files_and_devnull(gateway: str, tmp_path: Path) -> None:
    """A regular file and /dev/null cannot be polled; they are read and written anyway."""
    data = random.Random(12).randbytes(200_000)
    source, sink = tmp_path / "in", tmp_path / "out"
    source.write_bytes(data)
    with answer_after_eof_service() as port:
        for stdin_path, expected in ((source, answer(data)), (Path(os.devnull), answer(b""))):
            with stdin_path.open("rb") as stdin, sink.open("wb") as stdout:
                result = subprocess.run(
                    client_argv(gateway, f"127.0.0.1:{port}"),
                    stdin=stdin,
                    stdout=stdout,
                    stderr=subprocess.PIPE,
                    env=clean_env(),
                    timeout=RUN_TIMEOUT,
                    check=False,
                )
            assert result.returncode == 0, result.stderr.decode(errors="replace")
            assert sink.read_bytes() == expected, result.stderr.decode(errors="replace")


def test_stdio_refused_target_ends_the_client(gateway: str) -> None:
    """Nothing listens at the target: the client says so on stderr and exits."""
    result = subprocess.run(
        client_argv(gateway, f"127.0.0.1:{free_port()}"),
        input=b"hello",
        capture_output=True,
        env=clean_env(),
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert result.stdout == b""
    assert b"stdio=>" in result.stderr
    assert b"Traceback" not in result.stderr
    assert result.returncode == 1, "a refused stream is no success"


@contextlib.contextmanager
def endless_service() -> Iterator[int]:
    """TCP service on 127.0.0.1: sends zeros to its first client until that fails."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                while True:
                    conn.sendall(bytes(1 << 16))

    thread = threading.Thread(target=serve, name="endless", daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()
        thread.join(timeout=STOP_TIMEOUT)


def test_stdio_exits_non_zero_when_the_session_dies(procs: Processes, tmp_path: Path) -> None:
    """The gateway is SIGKILLed mid-download: stdout cannot carry a reset, so the client
    flushes what it got and exits 1 (a reader would otherwise take the cut for the end)."""
    server, url = procs.our_server("--key", SEED)
    with endless_service() as port, (tmp_path / "stderr").open("wb") as err:
        client = subprocess.Popen(
            client_argv(url, f"127.0.0.1:{port}"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=clean_env(),
        )
        try:
            assert client.stdout is not None
            received = 0
            while received < 1 << 20:
                chunk = client.stdout.read1(1 << 16)
                assert chunk, (tmp_path / "stderr").read_text()
                received += len(chunk)
            server.signal(signal.SIGKILL)
            while chunk := client.stdout.read1(1 << 16):
                received += len(chunk)
            status = client.wait(timeout=RUN_TIMEOUT)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
            if client.stdin is not None:
                client.stdin.close()
            if client.stdout is not None:
                client.stdout.close()
    stderr = (tmp_path / "stderr").read_text()
    print(f"\nstdio: {received / (1 << 20):.1f} MiB, then exit {status}")
    assert status == 1, stderr
    assert "cut short" in stderr
    assert "Traceback" not in stderr


@pytest.mark.interop
def test_ssh_proxycommand_through_stdio(gateway: str, tmp_path: Path) -> None:
    """OpenSSH runs a command through ``ProxyCommand='cloud-connector client ... stdio:...'``."""
    with peers.sshd(tmp_path) as sshd:
        proxy = shlex.join(client_argv(gateway, "127.0.0.1:PORT")).replace("PORT", "%p")
        argv = sshd.ssh_argv("-o", f"ProxyCommand={proxy}", command=["echo", "hello"])
        result = subprocess.run(
            argv, capture_output=True, env=clean_env(), timeout=RUN_TIMEOUT, check=False
        )
        assert result.returncode == 0, (result.stderr.decode(errors="replace"), sshd.log())
        assert result.stdout == b"hello\n"
