"""``outsystemscc`` on the wire and in its log, as the seed README and the captured
requests in tests/vectors/upgrade_requests.txt describe it.

A plain TCP listener (``RecordingServer``) plays the Private Gateway, so each test
sees the exact request bytes; the gateway refusing the upgrade makes the
connector log, retry and give up the way the seed shows.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.cli import (
    GO_DURATION,
    LOG_PREFIX,
    RecordedRequest,
    RecordingServer,
    assert_one_line_error,
    run_cli,
    start_gateway,
)
from tests.support.net import free_port
from tests.support.processes import CC, OSCC, CliProcess, clean_env
from tests.support.vectors import read_text

REMOTES = ["R:8081:127.0.0.1:8393", "R:8082:127.0.0.1:587"]
UPGRADE_TARGET = r"/sg_123\?id=(\d{9})&ports=8081,8082"
#: Header names of outsystemscc 2.0.11's upgrade request, in wire order (from the vectors).
UPGRADE_HEADER_ORDER = [
    "Host",
    "User-Agent",
    "Connection",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Version",
    "Token",
    "Upgrade",
]


def _redirect_to(location: str) -> bytes:
    return (
        f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def _run_oscc(
    tmp_path: Path, *args: str, timeout: float = 15.0, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = run_cli([*OSCC, *args], cwd=tmp_path, timeout=timeout, env=env)
    return result, time.monotonic() - started


def _check_upgrade(request: RecordedRequest, host: str, path_re: str) -> str:
    """The upgrade as outsystemscc sends it; returns the connector id from the query."""
    assert request.method == "GET"
    match = re.fullmatch(path_re, request.target)
    assert match, request.target
    assert request.header("Host") == host
    assert re.fullmatch(r"CloudConnector/\d+\.\d+\.\d+\S*", request.header("User-Agent") or "")
    assert request.header("Sec-WebSocket-Protocol") == "chisel-v3"
    assert request.header("Sec-WebSocket-Version") == "13"
    assert re.fullmatch(r"[A-Za-z0-9+/]{22}==", request.header("Sec-WebSocket-Key") or "")
    assert request.header("Token") == "abc"
    assert (request.header("Upgrade") or "").lower() == "websocket"
    assert (request.header("Connection") or "").lower() == "upgrade"
    return match.group(1) if match.groups() else ""


def _check_preflight(request: RecordedRequest, host: str, target: str) -> None:
    """A plain GET of the server URL: no token (it must not follow a redirect elsewhere)."""
    assert (request.method, request.target) == ("GET", target)
    assert request.header("Host") == host
    assert request.header("Token") is None
    assert request.header("Upgrade") is None
    assert request.header("Sec-WebSocket-Key") is None


def test_preflight_then_upgrade_exactly_as_outsystemscc(tmp_path: Path) -> None:
    with RecordingServer() as gateway:
        host = f"127.0.0.1:{gateway.port}"
        result, elapsed = _run_oscc(
            tmp_path,
            "--header",
            "token: abc",
            "--max-retry-count",
            "1",
            f"http://{host}/sg_123",
            *REMOTES,
        )
        requests = gateway.snapshot()
    assert len(requests) == 4, [r.raw for r in requests]  # two attempts, each GET + upgrade
    _check_preflight(requests[0], host, "/sg_123")
    connector_id = _check_upgrade(requests[1], host, UPGRADE_TARGET)
    # Header names and order as the Go client writes them (canonical case, sorted).
    assert requests[1].names() == UPGRADE_HEADER_ORDER
    _check_preflight(requests[2], host, "/sg_123")
    # The id names this connector process: every attempt sends the same one.
    assert _check_upgrade(requests[3], host, UPGRADE_TARGET) == connector_id

    # The log: seed format, the refused handshake, the first retry after 100ms.
    out = result.stdout
    lines = out.splitlines()
    assert all(re.match(LOG_PREFIX + "client: ", line) for line in lines), out
    assert re.fullmatch(
        LOG_PREFIX
        + rf"client: Connecting to ws://{host}/sg_123\?id={connector_id}&ports=8081,8082",
        lines[0],
    ), out
    assert re.fullmatch(
        LOG_PREFIX + r"client: Connection error: websocket: bad handshake.*", lines[1]
    )
    assert re.fullmatch(LOG_PREFIX + r"client: Retrying in 100ms\.\.\.", lines[2]), out
    assert "client: Give up" in out
    assert result.returncode == 1
    assert elapsed < 10


def test_upgrade_matches_captured_vector(tmp_path: Path) -> None:
    """Compare with the request captured from the real outsystemscc 2.0.11."""
    text = read_text("upgrade_requests.txt")
    block = text.split("# 2) the WebSocket upgrade\n", 1)[1].split("\n\n", 1)[0]
    vector = RecordedRequest.parse(block.replace("\n", "\r\n").encode())
    with RecordingServer() as gateway:
        port = gateway.port
        _run_oscc(
            tmp_path,
            "--header",
            "token: abc",
            "--max-retry-count",
            "0",
            f"http://127.0.0.1:{port}/sg_123",
            "R:8081:127.0.0.1:8393",
            "R:8082:127.0.0.1:587",
        )
        ours = gateway.snapshot()[1]
    assert [n.lower() for n in ours.names()] == [n.lower() for n in vector.names()]
    assert ours.names() == vector.names()  # even the case: Go canonicalises "token"
    for name, value in vector.headers:
        if name == "Host":
            assert ours.header(name) == value.replace("PORT", str(port))
        elif name == "User-Agent":
            assert (ours.header(name) or "").split("/")[0] == value.split("/")[0]
        elif name != "Sec-WebSocket-Key":
            assert ours.header(name) == value, name
    query = re.sub(r"id=\d{9}", "id=ID", ours.target)
    assert query == re.sub(r"id=\d{9}", "id=ID", vector.target)


def test_redirect_location_becomes_the_websocket_url(tmp_path: Path) -> None:
    with RecordingServer() as other:
        other_host = f"127.0.0.1:{other.port}"
        location = f"http://{other_host}/sg_other"
        with RecordingServer(lambda _i, _r: _redirect_to(location)) as front:
            front_host = f"127.0.0.1:{front.port}"
            result, _ = _run_oscc(
                tmp_path,
                "--header",
                "token: abc",
                "--max-retry-count",
                "0",
                f"http://{front_host}/sg_123",
                *REMOTES,
            )
            front_requests = front.snapshot()
        other_requests = other.snapshot()
    # The front end only ever sees the token-less pre-flight ...
    assert len(front_requests) == 1
    _check_preflight(front_requests[0], front_host, "/sg_123")
    # ... and the upgrade goes where Location points, with the id and ports appended.
    assert len(other_requests) == 1
    _check_upgrade(other_requests[0], other_host, r"/sg_other\?id=(\d{9})&ports=8081,8082")
    assert f"client: Connecting to ws://{other_host}/sg_other?id=" in result.stdout


def test_hostname_sets_the_upgrade_host_header(tmp_path: Path) -> None:
    with RecordingServer() as gateway:
        host = f"127.0.0.1:{gateway.port}"
        _run_oscc(
            tmp_path,
            "--header",
            "token: abc",
            "--hostname",
            "gateway.example.com",
            "--max-retry-count",
            "0",
            f"http://{host}/sg_123",
            *REMOTES,
        )
        requests = gateway.snapshot()
    assert len(requests) == 2
    _check_preflight(requests[0], host, "/sg_123")  # a plain GET of the URL, as Go's http.Get
    _check_upgrade(requests[1], "gateway.example.com", UPGRADE_TARGET)


def _not_found_response() -> bytes:
    return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def _closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/sg_123"


@pytest.mark.parametrize("retries", [0, 2])
def test_gives_up_after_max_retry_count_with_nonzero_status(tmp_path: Path, retries: int) -> None:
    result, elapsed = _run_oscc(
        tmp_path, "--max-retry-count", str(retries), _closed_url(), REMOTES[0], timeout=15
    )
    line = assert_one_line_error(result, 1)
    # We differ from chisel on purpose: giving up is a failure a supervisor must see.
    assert f"--max-retry-count {retries}" in line and "gave up" in line
    out = result.stdout
    retry_lines = re.findall(LOG_PREFIX + rf"client: Retrying in ({GO_DURATION})\.\.\.$", out, re.M)
    assert len(retry_lines) == retries, out
    assert len(re.findall(r"client: Connection error: ", out)) == retries + 1, out
    assert out.rstrip().endswith("client: Give up")
    assert elapsed < 8


def test_log_format_json(tmp_path: Path) -> None:
    with RecordingServer() as gateway:
        result, _ = _run_oscc(
            tmp_path,
            "--log-format",
            "json",
            "--max-retry-count",
            "1",
            f"http://127.0.0.1:{gateway.port}/sg_123",
            REMOTES[0],
        )
    lines = result.stdout.splitlines()
    assert len(lines) >= 5
    records = [json.loads(line) for line in lines]
    for record in records:
        assert {"time", "level", "logger", "msg"} <= set(record)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
        assert record["level"] == "info"
        assert record["logger"] == "client"
    messages = [r["msg"] for r in records]
    assert messages[0].startswith(f"Connecting to ws://127.0.0.1:{gateway.port}/sg_123?id=")
    assert messages[1].startswith("Connection error: websocket: bad handshake")
    assert messages[2] == "Retrying in 100ms..."
    assert messages[-1] == "Give up"
    # the events an operator filters on carry fields at the top level
    refused = "websocket: bad handshake (HTTP 404 Not Found)"
    assert records[1]["event"] == "connection_error"
    assert records[1]["error"] == refused
    assert (records[2]["event"], records[2]["delay_s"]) == ("reconnect", 0.1)
    assert records[-1]["event"] == "give_up"
    assert records[-1]["error"] == "gave up after 1 retries (--max-retry-count 1)"
    # the error that stops the program is JSON too, on stderr
    assert result.returncode == 1
    fatal = json.loads(assert_one_line_error(result, 1))
    assert fatal["event"] == "fatal" and fatal["level"] == "error" and fatal["status"] == 1
    assert fatal["error"] == fatal["msg"] == records[-1]["error"]


SECRETS = ("secretpw", "secretpw2", "secrettoken")


def _assert_no_secrets(result: subprocess.CompletedProcess[str]) -> None:
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked:\n{text}"


def test_secrets_never_reach_the_log(tmp_path: Path) -> None:
    closed_proxy = f"http://user:secretpw@127.0.0.1:{free_port()}"
    common = ["-v", "--max-retry-count", "1", "--header", "token: secrettoken"]
    # cloud-connector client takes --auth; outsystemscc reads AUTH from the environment.
    client_argv = [*CC, "client", *common, "--proxy", closed_proxy, "--auth", "user:secretpw2"]
    client = run_cli([*client_argv, _closed_url(), REMOTES[0]], cwd=tmp_path)
    assert client.returncode == 1
    assert "Connection error" in client.stdout
    _assert_no_secrets(client)
    oscc, _ = _run_oscc(
        tmp_path,
        *common,
        "--proxy",
        closed_proxy,
        _closed_url(),
        REMOTES[0],
        env=clean_env(AUTH="user:secretpw2"),
    )
    assert oscc.returncode == 1
    _assert_no_secrets(oscc)

    # A proxy that is there and refuses the credentials: still nothing leaks.
    refusing = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
    with RecordingServer(lambda _i, _r: refusing) as proxy:
        oscc, _ = _run_oscc(
            tmp_path,
            *common,
            "--proxy",
            f"http://user:secretpw@127.0.0.1:{proxy.port}",
            "http://gateway.invalid/sg_123",
            REMOTES[0],
        )
        proxied = proxy.snapshot()
    assert proxied and proxied[0].method == "CONNECT", [r.raw for r in proxied]
    assert oscc.returncode == 1
    _assert_no_secrets(oscc)


# ------------------------------------------------------------------ against our gateway


def test_token_checked_by_gateway(tmp_path: Path) -> None:
    """A good token connects; a wrong one is a 401, which must stop the connector
    with a clear message instead of retrying for ever (retrying cannot fix it)."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"goodtoken": [""]}))
    with start_gateway(tmp_path, "--tokens", str(tokens)) as (_gateway, port):
        url = f"http://127.0.0.1:{port}/sg_123"
        with CliProcess(
            "good",
            [*OSCC, "--header", "token: goodtoken", url, f"R:{free_port()}:127.0.0.1:9"],
            cwd=tmp_path,
            logdir=tmp_path,
        ) as good:
            good.wait_for_line(r"client: Connected \(Latency ", 15)
            good.popen.terminate()
            assert good.wait_exit(10) == 0

        with CliProcess(
            "wrong",
            [*OSCC, "--header", "token: wrongtoken", url, f"R:{free_port()}:127.0.0.1:9"],
            cwd=tmp_path,
            logdir=tmp_path,
        ) as wrong:
            try:
                status = wrong.popen.wait(timeout=10)
            except Exception:
                pytest.fail(f"a refused token must stop the connector\n{wrong.report()}")
            assert status != 0
            assert "Traceback" not in wrong.stderr()
            stderr = wrong.stderr().strip()
            assert len(stderr.splitlines()) == 1, stderr
            # what happened, in the gateway's words, and what to check
            assert stderr == (
                "outsystemscc: the gateway refused the token (HTTP 401: wrong token: "
                'the "Token" header is not one of this gateway\'s tokens): '
                'check the "Token" header (--header "Token: <token>")'
            ), stderr
            assert "wrongtoken" not in wrong.stdout() + wrong.stderr()
            assert len(re.findall("Connecting to", wrong.stdout())) == 1, wrong.stdout()

        missing = run_cli([*OSCC, url, f"R:{free_port()}:127.0.0.1:9"], cwd=tmp_path)
        line = assert_one_line_error(missing, 1)
        assert line.startswith("outsystemscc: the gateway refused the token (HTTP 401: no token: ")
        assert 'check the "Token" header' in line


def test_rate_limited_upgrade_says_why_and_waits_as_told(tmp_path: Path) -> None:
    """A banned address gets 429 + Retry-After: retried, after the time it was given."""
    banned = (
        b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Retry-After: 1\r\nContent-Length: 41\r\nConnection: close\r\n\r\n"
        b"too many failed logins from your address\n"
    )
    with RecordingServer(
        lambda _i, request: banned if request.header("Upgrade") else _not_found_response()
    ) as gateway:
        result, _ = _run_oscc(
            tmp_path,
            "--max-retry-count",
            "1",
            f"http://127.0.0.1:{gateway.port}/sg_123",
            REMOTES[0],
        )
    lines = result.stdout.splitlines()
    assert re.fullmatch(
        LOG_PREFIX + r"client: Connection error: websocket: bad handshake "
        r"\(HTTP 429 Too Many Requests\): the gateway is rate-limiting this address "
        r"after too many failed logins "
        r"\(banned for 1 s\); will retry",
        lines[1],
    ), result.stdout
    assert re.fullmatch(LOG_PREFIX + r"client: Retrying in 1s\.\.\.", lines[2]), result.stdout
    assert result.returncode == 1  # then it gives up: --max-retry-count 1
