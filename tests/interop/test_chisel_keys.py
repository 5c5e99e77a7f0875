"""A real chisel client still logs in with a password to a gateway that also takes keys."""

from __future__ import annotations

import json
from pathlib import Path

import asyncssh

from tests.support.chisel import CONNECTED_RE, check_tunnel
from tests.support.net import LOOPBACK, EchoServer, free_port
from tests.support.processes import Processes

__all__: list[str] = []


def test_chisel_password_beside_authorized_keys(
    chisel: str, procs: Processes, echo: EchoServer, tmp_path: Path, small_payload: bytes
) -> None:
    authorized = tmp_path / "authorized_keys"
    key = asyncssh.generate_private_key("ssh-ed25519")
    authorized.write_bytes(key.export_public_key("openssh"))
    authfile = tmp_path / "users.json"
    authfile.write_text(json.dumps({"alice:secret": [""]}))
    _, url = procs.our_server(
        "--reverse", "--authfile", str(authfile), "--authorized-keys", str(authorized)
    )
    fport = free_port()
    client = procs.chisel_client(
        chisel,
        "--auth",
        "alice:secret",
        "--max-retry-count",
        "0",
        url,
        f"{LOOPBACK}:{fport}:{echo.host}:{echo.port}",
    )
    client.wait_for(CONNECTED_RE, stream="stderr")
    client.wait_listening(fport)
    check_tunnel(fport, small_payload)


def test_our_client_with_identity_falls_back_to_password_on_chisel(
    chisel: str, procs: Processes, echo: EchoServer, tmp_path: Path, small_payload: bytes
) -> None:
    """chisel's server takes no keys: --identity must not stop --auth from working."""
    identity = tmp_path / "conn"
    key = asyncssh.generate_private_key("ssh-ed25519")
    identity.write_bytes(key.export_private_key("openssh"))
    _, url = procs.chisel_server(chisel, "--auth", "user:pass")
    fport = free_port()
    client = procs.our_client(
        "--identity",
        str(identity),
        "--auth",
        "user:pass",
        url,
        f"{LOOPBACK}:{fport}:{echo.host}:{echo.port}",
    )
    client.wait_for(CONNECTED_RE, stream="stdout")
    check_tunnel(fport, small_payload)
