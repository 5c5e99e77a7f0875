"""What an idle gateway and connector leave unimported, and that using it still works.

Each command runs under a small driver that writes the process's ``sys.modules``
(name and file) to a file on SIGUSR1, so the modules are read from the running
process itself, after a tunnel carried bytes.  Memory figures are machine-dependent
and not asserted here (README "Performance" has them and the command measuring them).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cc.runtime.lean import DEFERRED, UNUSED
from tests.support.net import LOOPBACK, free_port
from tests.support.processes import CliProcess, Processes

#: ``python -c DRIVER <dump file> <cloud-connector arguments>``.
DRIVER = textwrap.dedent(
    """
    import signal, sys

    def dump(*_):
        def where(m):  # a module that loads at its first use has a file but no contents
            return "stand-in" if type(m).__name__ == "_OnFirstUse" else getattr(m, "__file__", None)
        rows = (f"{n}\\t{where(m)}" for n, m in sorted(sys.modules.items()))
        with open(sys.argv[1] + ".tmp", "w") as f:
            f.write("\\n".join(rows))
        import os
        os.replace(sys.argv[1] + ".tmp", sys.argv[1])

    signal.signal(signal.SIGUSR1, dump)
    from cc.cli.main import main
    sys.exit(main(sys.argv[2:]))
    """
)

#: Loaded only when their feature is used (--config, --http-target, a scrape, /status,
#: SIGUSR2's report).
LAZY = ("prometheus_client", "cc.exposition", "yaml", "tomllib", "html.entities", "psutil")


def _driven(dump: Path) -> list[str]:
    return [sys.executable, "-c", DRIVER, str(dump)]


def _modules(proc: CliProcess, dump: Path) -> dict[str, str]:
    """The running process's modules: name -> file ("None" for placeholders)."""
    dump.unlink(missing_ok=True)
    proc.signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not dump.exists():
        assert proc.popen.poll() is None, proc.report()
        assert time.monotonic() < deadline, f"no module list\n{proc.report()}"
        time.sleep(0.02)
    return dict(line.split("\t", 1) for line in dump.read_text().splitlines())


@pytest.fixture
def echo() -> Iterator[int]:
    """A loopback echo service: the tunnel's target."""
    listener = socket.create_server((LOOPBACK, 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    listener.close()


def _through(port: int, payload: bytes) -> bytes:
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                got = b""
                while chunk := sock.recv(65536):
                    got += chunk
                if got:
                    return got
        except OSError:
            pass
        assert time.monotonic() < deadline, f"nothing came back through port {port}"
        time.sleep(0.1)


def test_idle_tunnel_processes_leave_out_unused_modules(
    procs: Processes, tmp_path: Path, echo: int
) -> None:
    port, remote = free_port(), free_port()
    gateway = ["server", "--host", LOOPBACK, "-p", str(port), "--reverse"]
    server = procs.start("server", [*_driven(tmp_path / "server.mods"), *gateway])
    server.wait_listening(port)
    connector = ["client", f"http://{LOOPBACK}:{port}", f"R:{LOOPBACK}:{remote}:{LOOPBACK}:{echo}"]
    client = procs.start("client", [*_driven(tmp_path / "client.mods"), *connector])
    server.wait_listening(remote)
    assert _through(remote, b"x" * 100_000) == b"x" * 100_000

    for proc, dump in ((server, tmp_path / "server.mods"), (client, tmp_path / "client.mods")):
        modules = _modules(proc, dump)
        assert modules["asyncssh.connection"].endswith("connection.py")
        for name in UNUSED:  # placeholders, no file: asyncssh's own modules never ran
            assert modules[f"asyncssh.{name}"] == "None", name
        assert "cryptography.x509" not in modules
        loaded = [name for name in LAZY if name in modules]
        assert not loaded, f"{proc.name} imported {loaded} while idle"
        for name in DEFERRED:  # imported by a dependency, never used: still a stand-in
            assert modules.get(name, "stand-in") == "stand-in", (name, modules.get(name))
        assert "email.message" not in modules  # what importlib.metadata pulls in

    # Using a feature loads its module, and the feature works: a scrape of /metrics.
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    assert 'cloud_connector_info{fast_path="' in text
    assert "cloud_connector_sessions 1.0" in text
    modules = _modules(server, tmp_path / "server.mods")
    assert "prometheus_client" in modules and "cc.exposition" in modules
    # SIGUSR2's report loads psutil, and reports
    server.signal(signal.SIGUSR2)
    server.wait_for_text("rss=", timeout=10)
    assert "psutil" in _modules(server, tmp_path / "server.mods")
    server.assert_no_traceback()
    client.assert_no_traceback()


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_left_out_part_says_so_when_used() -> None:
    result = _python(
        """
        from cc.runtime.lean import NotLoaded, leave_out_unused_asyncssh
        assert leave_out_unused_asyncssh()
        import asyncssh
        assert not isinstance(object(), asyncssh.SFTPClient)
        try:
            asyncssh.SFTPClient(None, None, None)
        except NotLoaded as exc:
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "asyncssh.sftp.SFTPClient is not loaded" in result.stdout
    assert "cc/runtime/lean.py" in result.stdout


def test_placeholders_that_do_not_fit_fall_back_to_all_of_asyncssh() -> None:
    # asyncssh subclasses misc's classes while it imports: a placeholder cannot stand
    # in for it, as one could not for a module a later release starts to use that way.
    result = _python(
        """
        import cc.runtime.lean as lean
        lean.UNUSED = (*lean.UNUSED, "misc")
        assert lean.leave_out_unused_asyncssh()
        import sys, asyncssh
        assert asyncssh.sftp.__file__.endswith("sftp.py"), asyncssh.sftp
        assert sys.modules["asyncssh.misc"].__file__.endswith("misc.py")
        assert "cryptography.x509" in sys.modules
        print(asyncssh.SSHClientConnection.__name__)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "SSHClientConnection"


def test_a_deferred_module_loads_at_its_first_use() -> None:
    result = _python(
        """
        import sys
        from cc.runtime.lean import defer_unused_stdlib
        assert defer_unused_stdlib() == ["importlib.metadata"]
        import websockets.version  # imports importlib.metadata, uses nothing of it
        assert type(sys.modules["importlib.metadata"]).__name__ == "_OnFirstUse"
        assert "email.message" not in sys.modules
        import importlib.metadata
        from importlib.metadata import version
        print(version("websockets") == websockets.version.version)
        print(importlib.metadata.version("asyncssh") == version("asyncssh"))
        print(type(sys.modules["importlib.metadata"]).__name__)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "module"]
