"""``--config FILE``: TOML options under the environment and the command line.

Precedence is checked on the real parsers in this process (fast, every layer at
once); what the file changes on the wire, and that the authfile it names is still
reloaded, is checked with the programs themselves.  Mistakes in the file are in
tests/cli/test_cli.py with the other bad-input cases.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cc.cli import client, server
from tests.support.cli import RecordingServer, run_cli, start_gateway
from tests.support.net import LOOPBACK, echo_back, free_port, tcp_echo_server
from tests.support.processes import CC, OSCC, CliProcess, clean_env


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """None of the variables our CLIs read, whatever the developer's shell has."""
    for name in list(os.environ):
        if name.startswith(("CC_", "CHISEL_")) or name in ("AUTH", "HOST", "PORT"):
            monkeypatch.delenv(name)
    yield monkeypatch


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_flags_beat_environment_beat_file_beat_defaults(
    tmp_path: Path, no_env: pytest.MonkeyPatch
) -> None:
    config = _write(
        tmp_path / "client.toml",
        """
        server = "https://gateway.example.com/sg_1"
        remotes = ["R:8081:127.0.0.1:8393", "R:8082:127.0.0.1:587"]
        keepalive = "3s"
        keepalive-timeout = "7s"
        max-retry-count = 4
        header = ["Token: from-file"]
        tls-skip-verify = true
        workers = 2
        log-format = "json"
        """.replace("\n        ", "\n"),
    )
    no_env.setenv("CC_KEEPALIVE", "9s")  # the environment beats the file
    no_env.setenv("CC_TLS_SKIP_VERIFY", "0")  # also to turn a flag off
    args = client._parser().parse_args(["--config", config, "--max-retry-count", "2"])
    assert args.max_retry_count == 2  # the command line beats everything
    assert args.keepalive == 9.0
    assert args.tls_skip_verify is False
    assert args.keepalive_timeout == 7.0  # the file beats the default
    assert args.header == ["Token: from-file"]
    assert args.server == "https://gateway.example.com/sg_1"
    assert args.remotes == ["R:8081:127.0.0.1:8393", "R:8082:127.0.0.1:587"]
    assert args.workers == 2
    assert args.log_format == "json"
    assert args.max_retry_interval == 300.0  # no layer sets it: the default
    assert args.udp_max_size == 9012

    # remotes on the command line replace the file's; CC_CONFIG names the file
    no_env.setenv("CC_CONFIG", config)
    args = client._parser().parse_args(["http://other:1", "3000"])
    assert (args.server, args.remotes) == ("http://other:1", ["3000"])
    assert args.keepalive_timeout == 7.0
    # without a file, the defaults as before
    no_env.delenv("CC_CONFIG")
    args = client._parser().parse_args([])
    assert (args.keepalive_timeout, args.max_retry_count, args.header) == (10.0, -1, [])


def test_server_file_paths_are_relative_to_the_file(
    tmp_path: Path, no_env: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    config = _write(
        etc / "gateway.toml",
        'port = 9999\nreverse = true\nauthfile = "users.json"\ntokens = "/abs/tokens.json"\n'
        'keyfile = "ck-inline-key-stays"\nmax-auth-tries = 5\n',
    )
    no_env.setenv("PORT", "8888")
    args = server._parser().parse_args(["--config", config])
    assert args.port == 8888
    assert args.reverse is True
    assert args.authfile == str(etc / "users.json")
    assert args.tokens == "/abs/tokens.json"
    assert args.keyfile == "ck-inline-key-stays"
    assert args.max_auth_tries == 5
    assert server._parser().parse_args(["--config", config, "--port", "1"]).port == 1


def test_remoted_max_waiting_from_file_environment_or_flag(
    tmp_path: Path, no_env: pytest.MonkeyPatch
) -> None:
    assert server._parser().parse_args([]).remoted_max_waiting == 128
    config = _write(tmp_path / "gateway.toml", "remoted-max-waiting = 16\n")
    assert server._parser().parse_args(["--config", config]).remoted_max_waiting == 16
    no_env.setenv("CC_REMOTED_MAX_WAITING", "0")  # 0 lifts the cap
    assert server._parser().parse_args(["--config", config]).remoted_max_waiting == 0
    args = server._parser().parse_args(["--config", config, "--remoted-max-waiting", "4"])
    assert args.remoted_max_waiting == 4
    no_env.delenv("CC_REMOTED_MAX_WAITING")
    args = server._parser().parse_args(["--remoted-client-key", "c", "--remoted-max-waiting", "4"])
    settings = server.settings_from_args(args, worker=False)
    gateway_config = server._gateway_config(args, settings, worker=False)
    assert gateway_config.webroute.max_waiting == 4


def test_outsystemscc_sends_what_its_config_file_says(tmp_path: Path) -> None:
    with RecordingServer() as gateway:
        config = _write(
            tmp_path / "oscc.toml",
            f'server = "http://127.0.0.1:{gateway.port}/sg_7"\n'
            'remotes = ["R:8091:127.0.0.1:9"]\nheader = ["token: abc"]\nmax-retry-count = 0\n',
        )
        result = run_cli([*OSCC, "--config", config], cwd=tmp_path)
        requests = gateway.snapshot()
    assert result.returncode == 1, result.stderr  # 404: gives up after 0 retries
    upgrade = requests[1]
    assert upgrade.target.startswith("/sg_7?id=") and upgrade.target.endswith("&ports=8091")
    assert upgrade.header("Token") == "abc"


def test_authfile_named_in_the_config_file_is_still_reloaded(tmp_path: Path) -> None:
    """The gateway reads users.json through --config, and a new user works without a restart."""
    conf = tmp_path / "conf"
    conf.mkdir()
    users = conf / "users.json"
    users.write_text(json.dumps({"alice:one": [""]}))
    config = _write(conf / "gateway.toml", 'authfile = "users.json"\nkeepalive = "1s"\n')

    def connect(name: str, auth: str, echo_port: int) -> None:
        port = free_port()
        argv = [*CC, "client", "--auth", auth, url, f"R:{LOOPBACK}:{port}:{LOOPBACK}:{echo_port}"]
        with CliProcess(name, argv, cwd=tmp_path, logdir=tmp_path) as connector:
            connector.wait_for_line(r"client: Connected \(Latency ", 15)
            assert echo_back(port, b"through") == b"through"
            connector.popen.terminate()
            assert connector.wait_exit(10) == 0

    # started from another directory than the file's: the relative path still holds
    with (
        start_gateway(tmp_path, "--config", config) as (gateway, gw_port),
        tcp_echo_server() as echo,
    ):
        url = f"http://{LOOPBACK}:{gw_port}"
        connect("alice", "alice:one", echo.port)
        refused = run_cli(
            [*CC, "client", "--auth", "bob:two", url, f"R:{free_port()}:{LOOPBACK}:9"],
            cwd=tmp_path,
            env=clean_env(),
        )
        assert refused.returncode == 1 and "authentication failed" in refused.stderr
        mark = len(gateway.lines())
        users.write_text(json.dumps({"alice:one": [""], "bob:two": [""]}))
        gateway.wait_for_line(r"server: Reloaded .*users\.json", 10, after=mark)
        connect("bob", "bob:two", echo.port)
