"""``--log-format json``: the events an operator filters on carry their fields.

Text lines stay exactly as they were (the seed's format, tested elsewhere); in
JSON the same records carry ``event``, ``session``, ``user``, ``peer``,
``remote``, ``bytes_in``, ``bytes_out``, ``duration_s`` and ``error`` at the top
level.  A real gateway and connector move a known number of bytes, so the
per-connection figures are checked exactly.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from pathlib import Path
from typing import Any

from cc.log import GoFormatter, JSONFormatter, event
from tests.support.cli import LOG_PREFIX, start_gateway
from tests.support.net import LOOPBACK, free_port, tcp_echo_server
from tests.support.processes import CC, CliProcess

REQUEST = b"x" * 1000


def _record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("cc.server", logging.INFO, "", 0, "Closed %s", ("it",), None)
    record.__dict__.update(extra)
    return record


def test_json_puts_fields_at_the_top_level_and_text_leaves_them_out() -> None:
    fields = event("session_closed", session=3, user="bob", peer="10.0.0.7:5123", error=None)
    assert fields == {
        "event": "session_closed",
        "session": 3,
        "user": "bob",
        "peer": "10.0.0.7:5123",
    }
    obj = json.loads(JSONFormatter().format(_record(**fields)))
    assert obj["msg"] == "Closed it"
    assert {k: obj[k] for k in fields} == fields
    assert "error" not in obj
    text = GoFormatter().format(_record(**fields))
    assert re.fullmatch(LOG_PREFIX + "server: Closed it", text)


def _records(process: CliProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in process.lines()]


def _wait_event(process: CliProcess, name: str, timeout: float = 15) -> dict[str, Any]:
    _, line = process.wait_for_line(rf'"event": "{name}"', timeout)
    record: dict[str, Any] = json.loads(line)
    return record


def _exchange(port: int) -> None:
    """One tunnelled connection: 1000 bytes there, 1000 back, then closed."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(REQUEST)
        got = b""
        while len(got) < len(REQUEST):
            chunk = sock.recv(65536)
            assert chunk, "tunnel closed early"
            got += chunk
    assert got == REQUEST


def test_gateway_and_connector_events_carry_fields(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"bob:pw": [""]}))
    json_v = ("--log-format", "json", "-v")
    with (
        start_gateway(tmp_path, *json_v, "--authfile", str(users)) as (gateway, port),
        tcp_echo_server() as echo,
    ):
        url = f"http://{LOOPBACK}:{port}"
        tunnel = free_port()
        remote = f"R:{LOOPBACK}:{tunnel}:{LOOPBACK}:{echo.port}"
        argv = [*CC, "client", *json_v, "--auth", "bob:pw", url, remote]
        with CliProcess("connector", argv, cwd=tmp_path, logdir=tmp_path) as connector:
            connected = _wait_event(connector, "session_connected")
            assert connected["msg"].startswith("Connected (Latency ")
            assert (connected["session"], connected["user"]) == (1, "bob")
            assert connected["peer"] == f"{LOOPBACK}:{port}"
            assert connected["duration_s"] > 0

            session = _wait_event(gateway, "session_connected")
            assert session["user"] == "bob"
            assert re.fullmatch(r"127\.0\.0\.1:\d+", session["peer"])

            _exchange(tunnel)
            # the gateway's side: the client's socket, bytes as RemoteStats names them
            closed = _wait_event(gateway, "connection_closed")
            assert closed["remote"] == f"R:{LOOPBACK}:{tunnel}=>{echo.port}"  # as chisel says it
            assert re.fullmatch(r"127\.0\.0\.1:\d+", closed["peer"])
            assert (closed["bytes_out"], closed["bytes_in"]) == (1000, 1000)
            assert closed["duration_s"] >= 0
            assert re.fullmatch(
                r"conn#\d+: R:\S+: closed after \d+\.\d{3}s: peer 127\.0\.0\.1:\d+ "
                r"sent 1000 bytes, received 1000 bytes",
                closed["msg"],
            ), closed["msg"]
            # the connector's side: its peer is the service it dialed
            dialed = _wait_event(connector, "connection_closed")
            assert dialed["peer"] == f"{LOOPBACK}:{echo.port}"
            assert (dialed["bytes_in"], dialed["bytes_out"]) == (1000, 1000)

            connector.popen.terminate()
            assert connector.wait_exit(10) == 0
        ended = _wait_event(gateway, "session_closed")
        assert (ended["session"], ended["user"]) == (session["session"], "bob")
        assert ended["duration_s"] > 0

        wrong = [*CC, "client", "--max-retry-count", "0", "--auth", "bob:nope", url, remote]
        with CliProcess("wrong", wrong, cwd=tmp_path, logdir=tmp_path) as refused:
            assert refused.wait_exit(15) == 1
        failed = _wait_event(gateway, "login_failed")
        assert (failed["user"], failed["error"]) == ("bob", "wrong password")
        assert re.fullmatch(r"127\.0\.0\.1:\d+", failed["peer"])
        assert "nope" not in gateway.stdout()
    assert all("event" not in r or r["event"] for r in _records(gateway))


def test_text_close_line_at_verbose(tmp_path: Path) -> None:
    with start_gateway(tmp_path, "-v") as (gateway, port), tcp_echo_server() as echo:
        tunnel = free_port()
        remote = f"R:{LOOPBACK}:{tunnel}:{LOOPBACK}:{echo.port}"
        argv = [*CC, "client", f"http://{LOOPBACK}:{port}", remote]
        with CliProcess("connector", argv, cwd=tmp_path, logdir=tmp_path) as connector:
            connector.wait_for_line(r"client: Connected \(Latency ", 15)
            _exchange(tunnel)
            _, line = gateway.wait_for_line(r" tun: conn#\d+: .*: closed", 10)
    assert re.fullmatch(
        LOG_PREFIX
        + rf"tun: conn#\d+: R:{LOOPBACK}:{tunnel}=>{echo.port}: closed after \d+\.\d{{3}}s: "
        r"peer 127\.0\.0\.1:\d+ sent 1000 bytes, received 1000 bytes",
        line,
    ), line
