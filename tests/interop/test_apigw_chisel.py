"""A connector with HTTP API gateway flags still works against a real chisel server.

The flags travel as an extra ``HTTPGateway`` field of the config request, which
chisel's server (Go's json.Unmarshal) ignores.
"""

from __future__ import annotations

from tests.support.chisel import CONNECTED_RE, SEED, small_exchange
from tests.support.net import EchoServer, free_port
from tests.support.processes import Processes

__all__: list[str] = []


def test_http_offer_is_ignored_by_chisel(chisel: str, procs: Processes, echo: EchoServer) -> None:
    _, url = procs.chisel_server(chisel, "--key", SEED, "--reverse")
    port = free_port()
    client = procs.our_client(
        "--identifier",
        "dc1",
        "--http-target",
        "api.internal:8443",
        url,
        f"R:{port}:127.0.0.1:{echo.port}",
    )
    client.wait_for(CONNECTED_RE, 20.0)
    small_exchange(port)
