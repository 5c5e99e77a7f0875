"""The Armorcode-style agent as a program (issue 13 C): env only, a tunnel, a clear failure.

Our gateway binds each agent's token (its CLIENT_UUID here) to its tunnel port with
``--tokens``; the agent runs from exactly the seed's variables (plus TUNNEL_HOST, so
the tunnel listens on loopback in tests).  A second agent with another UUID on the
same TUNNEL_PORT exits 1 at once with a message that says the port is taken.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.net import LOOPBACK, EchoServer, blob, echo_roundtrip, free_port
from tests.support.processes import CC, CliProcess, Processes, clean_env

__all__: list[str] = []

JIRA = "6f1c2d3e-aaaa-bbbb-cccc-000000000001"
WIKI = "6f1c2d3e-aaaa-bbbb-cccc-000000000002"


def gateway(procs: Processes, tmp_path: Path, tunnel_port: int) -> str:
    tokens = tmp_path / "tokens.json"
    allowed = [rf"R:127\.0\.0\.1:{tunnel_port}"]
    tokens.write_text(json.dumps({JIRA: allowed, WIKI: allowed}))
    _, url = procs.our_server("--reverse", "--tokens", str(tokens))
    return url


def agent(procs: Processes, url: str, uuid: str, tunnel_port: int, port: int) -> CliProcess:
    env = clean_env(
        TUNNEL_PORT=str(tunnel_port),
        CLIENT_SIDE_DOMAIN=LOOPBACK,
        CLIENT_SIDE_PORT=str(port),
        SERVER_IP_DOMAIN=url,
        CLIENT_UUID=uuid,
        TUNNEL_HOST=LOOPBACK,
    )
    return procs.start(f"agent-{uuid[-1]}", [*CC, "agent"], env=env)


def test_agent_runs_a_tunnel_from_its_environment(
    procs: Processes, tmp_path: Path, echo: EchoServer
) -> None:
    tunnel_port = free_port()
    url = gateway(procs, tmp_path, tunnel_port)
    jira = agent(procs, url, JIRA, tunnel_port, echo.port)
    jira.wait_listening(tunnel_port)
    payload = blob(1 << 20, seed=3)
    assert echo_roundtrip(tunnel_port, payload) == payload
    jira.assert_no_traceback()


def test_second_agent_on_the_same_port_exits_with_a_clear_message(
    procs: Processes, tmp_path: Path, echo: EchoServer
) -> None:
    tunnel_port = free_port()
    url = gateway(procs, tmp_path, tunnel_port)
    jira = agent(procs, url, JIRA, tunnel_port, echo.port)
    jira.wait_listening(tunnel_port)
    wiki = agent(procs, url, WIKI, tunnel_port, echo.port)
    assert wiki.wait_exit() == 1
    message = wiki.stderr()
    assert f"port {tunnel_port} is taken by another client" in message, wiki.report()
    assert f"R:{LOOPBACK}:{tunnel_port}=>" in message, "names its own remote"
    assert JIRA not in message, "never whose"
    assert echo_roundtrip(tunnel_port, b"still jira's") == b"still jira's"


def test_agent_without_its_variables_names_them(procs: Processes) -> None:
    proc = procs.start("agent", [*CC, "agent"], env=clean_env(TUNNEL_PORT="5000"))
    assert proc.wait_exit() == 2
    assert "CLIENT_SIDE_DOMAIN, CLIENT_SIDE_PORT, SERVER_IP_DOMAIN, CLIENT_UUID" in proc.stderr()
