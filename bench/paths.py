"""The tunnel paths under test, each brought up between the bench and the same targets.

Every path is a context manager that yields a ``Tunnel``: the loopback ports the
workloads connect to (one per target) and the PIDs of its two roles. "gateway" is the
side whose port clients connect to (chisel/our server, sshd), "connector" the side
next to the service (chisel/our client, ``ssh``). All tunnels are reverse remotes
(``R:``), as the Cloud Connector uses them: data the client sends flows
gateway -> connector.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from bench.peers import (
    LOOPBACK,
    Child,
    PeerError,
    free_port,
    python_env,
    spawn,
    sshd,
    wait_listening,
    wait_shared,
)
from bench.probe import PREFIX as PROBE_PREFIX
from cc.cli.workers import auto_workers

__all__ = ["PATHS", "PathSkipped", "PathSpec", "Settings", "Targets", "Tunnel"]

SSH_CIPHER = "aes128-gcm@openssh.com"


class PathSkipped(Exception):
    """The path cannot run here for a known reason (e.g. CHISEL_BIN unset)."""


@dataclass(frozen=True)
class Targets:
    """Loopback ports: where the bulk service and the echo service listen."""

    bulk: int
    echo: int


@dataclass(frozen=True)
class Tunnel:
    """A running path: where to connect for each target, and the processes per role."""

    entry: Targets
    roles: dict[str, int] = field(default_factory=dict)
    children: tuple[Child, ...] = ()

    def check_alive(self) -> None:
        for child in self.children:
            child.check_alive()


@dataclass(frozen=True)
class Settings:
    """What the paths need from the command line and the machine."""

    workdir: Path
    chisel: str | None = None
    ours_server_args: tuple[str, ...] = ()
    ours_client_args: tuple[str, ...] = ()


Opener = Callable[[Targets, Settings], AbstractContextManager[Tunnel]]


@dataclass(frozen=True)
class PathSpec:
    name: str
    label: str
    open: Opener
    needs_chisel: bool = False


# --------------------------------------------------------------------------- helpers


def _remotes(entry: Targets, targets: Targets) -> list[str]:
    return [
        f"R:{LOOPBACK}:{entry.bulk}:{LOOPBACK}:{targets.bulk}",
        f"R:{LOOPBACK}:{entry.echo}:{LOOPBACK}:{targets.echo}",
    ]


def _ours(*args: str) -> list[str]:
    return [sys.executable, "-m", "cc.cli.main", *args]


def _chisel(settings: Settings) -> str:
    if settings.chisel is None:
        raise PathSkipped("CHISEL_BIN not set")
    if not os.access(settings.chisel, os.X_OK):
        raise PeerError(f"CHISEL_BIN={settings.chisel} is not an executable file")
    return settings.chisel


@contextlib.contextmanager
def _gateway_and_connector(
    targets: Targets,
    settings: Settings,
    gateway: Callable[[int], Sequence[str]],
    connector: Callable[[str, list[str]], Sequence[str]],
    gateway_env: dict[str, str] | None,
    connector_env: dict[str, str] | None,
    sessions: int = 1,
) -> Iterator[Tunnel]:
    """A chisel-style pair: gateway on a free port, connector with two reverse remotes.

    ``sessions``: wait until that many sessions listen on each reverse port.
    """
    port = free_port()
    entry = Targets(bulk=free_port(), echo=free_port())
    with spawn("gateway", gateway(port), settings.workdir, env=gateway_env) as gw:
        wait_listening([port], [gw])
        url = f"http://{LOOPBACK}:{port}"
        argv = connector(url, _remotes(entry, targets))
        with spawn("connector", argv, settings.workdir, env=connector_env) as conn:
            wait_listening([entry.bulk, entry.echo], [gw, conn])
            if sessions > 1:
                wait_shared([entry.bulk, entry.echo], gw, sessions)
            yield Tunnel(entry, {"gateway": gw.pid, "connector": conn.pid}, (gw, conn))


# --------------------------------------------------------------------------- paths


@contextlib.contextmanager
def relay(targets: Targets, settings: Settings) -> Iterator[Tunnel]:
    """No tunnel at all: the workloads connect straight to the targets (kernel only)."""
    yield Tunnel(targets)


def _probed(settings: Settings, role: str) -> list[str]:
    """Our CLI under ``bench.probe``: its fast-path counts land in the work directory."""
    out = settings.workdir / f"{PROBE_PREFIX}{role}.json"
    return [sys.executable, "-m", "bench.probe", str(out)]


def _ours_pair(
    targets: Targets, settings: Settings, workers: int | None
) -> AbstractContextManager[Tunnel]:
    """Our gateway and connector with ``--workers workers`` each; None: no flag (defaults)."""
    env = python_env()
    count = () if workers is None else ("--workers", str(workers))
    processes = auto_workers() if workers is None else workers
    # One worker: the processes measured are the ones moving the bytes, so their
    # fast-path counts say whether it engaged (a control process has none).
    gateway = _probed(settings, "gateway") if processes == 1 else _ours()
    connector = _probed(settings, "connector") if processes == 1 else _ours()
    return _gateway_and_connector(
        targets,
        settings,
        lambda port: [
            *gateway,
            "server",
            "--host",
            LOOPBACK,
            "-p",
            str(port),
            "--reverse",
            *count,
            *settings.ours_server_args,
        ],
        lambda url, remotes: [
            *connector,
            "client",
            *count,
            *settings.ours_client_args,
            url,
            *remotes,
        ],
        env,
        env,
        sessions=processes,
    )


def ours(targets: Targets, settings: Settings) -> AbstractContextManager[Tunnel]:
    """What users run: no ``--workers`` flag, so ``auto`` on both sides."""
    return _ours_pair(targets, settings, None)


def ours_2w(targets: Targets, settings: Settings) -> AbstractContextManager[Tunnel]:
    """``--workers 2`` on both sides: two sessions sharing each reverse port."""
    return _ours_pair(targets, settings, 2)


def chisel(targets: Targets, settings: Settings) -> AbstractContextManager[Tunnel]:
    exe = _chisel(settings)
    return _gateway_and_connector(
        targets,
        settings,
        lambda port: [exe, "server", "--host", LOOPBACK, "-p", str(port), "--reverse"],
        lambda url, remotes: [exe, "client", url, *remotes],
        None,
        None,
    )


def ours_vs_chisel(targets: Targets, settings: Settings) -> AbstractContextManager[Tunnel]:
    exe = _chisel(settings)
    return _gateway_and_connector(
        targets,
        settings,
        lambda port: [exe, "server", "--host", LOOPBACK, "-p", str(port), "--reverse"],
        lambda url, remotes: _ours(
            "client", "--workers", "1", *settings.ours_client_args, url, *remotes
        ),
        None,
        python_env(),
    )


@contextlib.contextmanager
def ssh(targets: Targets, settings: Settings) -> Iterator[Tunnel]:
    """OpenSSH ``ssh -N -R`` to an sshd of our own, cipher forced to aes128-gcm."""
    entry = Targets(bulk=free_port(), echo=free_port())
    with sshd(settings.workdir) as server:
        argv = server.ssh_argv(
            "-N",
            "-c",
            SSH_CIPHER,
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            "Compression=no",
            "-R",
            f"{LOOPBACK}:{entry.bulk}:{LOOPBACK}:{targets.bulk}",
            "-R",
            f"{LOOPBACK}:{entry.echo}:{LOOPBACK}:{targets.echo}",
        )
        with spawn("ssh", argv, settings.workdir) as client:
            wait_listening([entry.bulk, entry.echo], [server.child, client])
            roles = {"gateway": server.child.pid, "connector": client.pid}
            yield Tunnel(entry, roles, (server.child, client))


PATHS: dict[str, PathSpec] = {
    spec.name: spec
    for spec in (
        PathSpec("relay", "direct to the target, no tunnel (kernel loopback ceiling)", relay),
        PathSpec(
            "ours",
            f"our gateway + our connector, defaults (--workers auto: {auto_workers()} each here)",
            ours,
        ),
        PathSpec("ours-2w", "our gateway + our connector, --workers 2 each", ours_2w),
        PathSpec("chisel", "chisel server + chisel client", chisel, needs_chisel=True),
        PathSpec(
            "ours-vs-chisel", "chisel server + our connector", ours_vs_chisel, needs_chisel=True
        ),
        PathSpec("ssh", f"OpenSSH sshd + ssh -R ({SSH_CIPHER})", ssh),
    )
}
