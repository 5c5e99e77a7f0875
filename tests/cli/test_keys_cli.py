"""Key-pair connectors end to end: ``keygen --client``, ``server --authorized-keys``
(reloaded on change) and ``client --identity``, as separate processes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.chisel import CONNECTED_RE, check_tunnel
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.net import LOOPBACK, EchoServer, free_port
from tests.support.processes import CC, Processes

__all__: list[str] = []

EXIT_TIMEOUT = 30.0


def keygen(tmp_path: Path, name: str) -> tuple[Path, str]:
    """A connector key made by the CLI: its private key file and its .pub line."""
    result = run_cli([*CC, "keygen", "--client", name], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path / name, (tmp_path / f"{name}.pub").read_text().strip()


def forward(port: int, echo: EchoServer) -> str:
    return f"{LOOPBACK}:{port}:{echo.host}:{echo.port}"


def test_key_connector_beside_passwords_and_revoked_on_reload(
    procs: Processes, echo: EchoServer, tmp_path: Path
) -> None:
    alice, alice_pub = keygen(tmp_path, "alice")
    _, bob_pub = keygen(tmp_path, "bob")
    stranger, _ = keygen(tmp_path, "stranger")
    authorized = tmp_path / "authorized_keys"
    allowed = f"^{LOOPBACK.replace('.', '[.]')}:{echo.port}$"
    authorized.write_text(f'cc-acl="{allowed}" {alice_pub}\n{bob_pub}\n')
    authfile = tmp_path / "users.json"
    authfile.write_text(json.dumps({"carol:pw": [""]}))
    server, url = procs.our_server(
        "--authfile", str(authfile), "--authorized-keys", str(authorized)
    )

    aport, cport = free_port(), free_port()
    key_client = procs.our_client("--identity", str(alice), url, forward(aport, echo))
    key_client.wait_for(CONNECTED_RE, stream="stdout")
    check_tunnel(aport, b"key login")

    password_client = procs.our_client(
        "--auth", "carol:pw", url, forward(cport, echo), name="password-client"
    )
    password_client.wait_for(CONNECTED_RE, stream="stdout")
    check_tunnel(cport, b"password login")

    unknown = procs.our_client(
        "--identity", str(stranger), url, forward(free_port(), echo), name="stranger"
    )
    assert unknown.wait_exit(EXIT_TIMEOUT) != 0, unknown.report()
    assert "authentication failed" in unknown.stderr().lower(), unknown.report()
    unknown.assert_no_traceback()

    authorized.write_text(f"{bob_pub}\n")  # alice's key is revoked
    server.wait_for("key removed from the authorized keys file", stream="stdout")
    assert key_client.wait_exit(EXIT_TIMEOUT) != 0, key_client.report()
    check_tunnel(cport, b"password login still up")


def test_identity_that_is_not_a_private_key_is_a_usage_error(tmp_path: Path) -> None:
    _, public = keygen(tmp_path, "conn")
    (tmp_path / "conn.pub").write_text(public + "\n")
    for name in ("conn.pub", "missing"):
        argv = [*CC, "client", "--identity", name, "http://127.0.0.1:1", "3000:127.0.0.1:1"]
        line = assert_one_line_error(run_cli(argv, cwd=tmp_path), 2)
        assert "--identity" in line, line
