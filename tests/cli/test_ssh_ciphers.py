"""``--ssh-ciphers`` on the command line, in the environment and in ``--config``.

A wrong list must stop ``server`` and ``client`` before anything starts, in one
line with status 2 that names the accepted ciphers, wherever the list came from;
outsystemscc keeps the seed's options and does not take it.  With the programs
themselves: a pinned gateway and a connector that shares one of its ciphers
connect with that one; a connector that shares none says so and retries.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from cc.cli import client, server
from cc.protocol.ciphers import DEFAULT_CIPHERS, SUPPORTED_CIPHERS
from tests.support.cli import assert_one_line_error, run_cli, start_gateway
from tests.support.net import LOOPBACK, echo_back, free_port, tcp_echo_server
from tests.support.processes import CC, OSCC, CliProcess, clean_env

__all__: list[str] = []

CLOSED = "http://127.0.0.1:9"  # never dialled: every case fails before
ACCEPTED = ", ".join(SUPPORTED_CIPHERS)
CHACHA = "chacha20-poly1305@openssh.com"


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in list(os.environ):
        if name.startswith(("CC_", "CHISEL_")) or name in ("AUTH", "HOST", "PORT"):
            monkeypatch.delenv(name)
    yield monkeypatch


# (id, argv after the program, extra environment, config file text or None, fragment)
CASES: list[tuple[str, list[str], dict[str, str], str | None, str]] = [
    (
        "server-flag-unknown",
        ["server", "--ssh-ciphers", "aes128-gcm"],
        {},
        None,
        "--ssh-ciphers/-ssh-ciphers: unknown cipher 'aes128-gcm' "
        "(did you mean aes128-gcm@openssh.com?)",
    ),
    ("server-flag-empty", ["server", "--ssh-ciphers="], {}, None, "no cipher given"),
    (
        "client-flag-unknown",
        ["client", "-ssh-ciphers", "aes128-cbc", CLOSED, "3000"],
        {},
        None,
        "unknown cipher 'aes128-cbc'",
    ),
    ("client-flag-empty", ["client", "--ssh-ciphers", "", CLOSED, "3000"], {}, None, "no cipher"),
    (
        "client-env-stray-comma",
        ["client", CLOSED, "3000"],
        {"CC_SSH_CIPHERS": "aes128-ctr,"},
        None,
        "empty cipher name",
    ),
    ("server-env-unknown", ["server"], {"CC_SSH_CIPHERS": "3des-cbc"}, None, "unknown cipher"),
    (
        "server-config-twice",
        ["server"],
        {},
        'reverse = true\nssh-ciphers = "aes128-ctr, aes128-ctr"\n',
        ":2: 'ssh-ciphers': cipher 'aes128-ctr' is listed twice",
    ),
    (
        "client-config-unknown",
        ["client", CLOSED, "3000"],
        {},
        'ssh-ciphers = "rc4"\n',
        ":1: 'ssh-ciphers': unknown cipher 'rc4'",
    ),
    (
        "client-config-array",
        ["client", CLOSED, "3000"],
        {},
        'ssh-ciphers = ["aes128-ctr"]\n',
        "'ssh-ciphers' must be a string",
    ),
]


def _run_case(
    directory: Path, name: str, argv: list[str], env: dict[str, str], config: str | None
) -> CompletedProcess[str]:
    if config is not None:
        path = directory / f"{name}.toml"
        path.write_text(config)
        argv = [*argv, "--config", str(path)]
    return run_cli([*CC, *argv], cwd=directory, env=clean_env(**env))


def test_bad_lists_are_one_line_with_status_2(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = {case[0]: pool.submit(_run_case, tmp_path, *case[:4]) for case in CASES}
    for name, _, _, _, fragment in CASES:
        result = results[name].result()
        line = assert_one_line_error(result, 2)
        assert fragment in line, (name, line)
        if "unknown" in fragment or "no cipher" in fragment:
            assert ACCEPTED in line, (name, line)  # the error names what is accepted
        assert line.startswith(f"cloud-connector {name.split('-')[0]}: "), line


def test_outsystemscc_does_not_take_it(tmp_path: Path) -> None:
    result = run_cli(
        [*OSCC, "--ssh-ciphers", CHACHA, "--header", "token: t", CLOSED, "R:8081:h:80"],
        cwd=tmp_path,
    )
    line = assert_one_line_error(result, 2)
    assert "--ssh-ciphers" in line


def test_flag_beats_environment_beats_file_beats_default(
    tmp_path: Path, no_env: pytest.MonkeyPatch
) -> None:
    assert client._parser().parse_args([CLOSED, "3000"]).ssh_ciphers == DEFAULT_CIPHERS
    assert server._parser().parse_args([]).ssh_ciphers == DEFAULT_CIPHERS
    config = tmp_path / "c.toml"
    config.write_text('ssh-ciphers = "aes256-ctr, aes192-ctr"\n')
    for parser in (client._parser, server._parser):
        args = parser().parse_args(["--config", str(config)])
        assert args.ssh_ciphers == ("aes256-ctr", "aes192-ctr")
    no_env.setenv("CC_SSH_CIPHERS", f"{CHACHA},aes128-ctr")
    args = server._parser().parse_args(["--config", str(config)])
    assert args.ssh_ciphers == (CHACHA, "aes128-ctr")
    argv = ["--config", str(config), "--ssh-ciphers", CHACHA, CLOSED, "3000"]
    args = client._parser().parse_args(argv)
    assert args.ssh_ciphers == (CHACHA,)
    # and it reaches the connector's config
    connector_config, _, _ = client.settings_from_args(args)
    assert connector_config.ssh_ciphers == (CHACHA,)


def test_pinned_gateway_and_connectors_from_the_command_line(tmp_path: Path) -> None:
    with (
        tcp_echo_server() as echo,
        start_gateway(tmp_path, "--ssh-ciphers", f"aes256-ctr,{CHACHA}") as (gateway, port),
    ):
        url = f"http://{LOOPBACK}:{port}"
        tunnel = free_port()
        remote = f"R:{LOOPBACK}:{tunnel}:{LOOPBACK}:{echo.port}"
        # the connector's order picks among what the gateway allows
        env = clean_env(CC_SSH_CIPHERS=f"aes128-gcm@openssh.com,{CHACHA},aes256-ctr")
        argv = [*CC, "client", "-v", url, remote]
        with CliProcess("connector", argv, cwd=tmp_path, logdir=tmp_path, env=env) as ok:
            ok.wait_for(rf"client: SSH cipher {CHACHA} \(fast path\)", timeout=15)
            gateway.wait_for(rf"Connected: .* cipher={CHACHA} ", timeout=15)
            gateway.wait_listening(tunnel)
            assert echo_back(tunnel, b"x" * 100_000) == b"x" * 100_000
        argv = [*CC, "client", "--ssh-ciphers", "aes128-gcm@openssh.com,aes128-ctr"]
        argv += ["--max-retry-count", "1", url, f"R:{LOOPBACK}:{free_port()}:{LOOPBACK}:9"]
        refused = run_cli(argv, cwd=tmp_path)
    assert refused.returncode == 1, refused.stderr
    lines = refused.stdout.splitlines()
    errors = [line for line in lines if "Connection error:" in line]
    assert len(errors) == 2 and all(
        line.endswith(
            "no SSH cipher in common: the connector offers "
            f"aes128-gcm@openssh.com,aes128-ctr, the gateway allows aes256-ctr,{CHACHA} "
            "(--ssh-ciphers on both ends must share at least one)"
        )
        for line in errors
    ), refused.stdout
    assert any("Retrying in" in line for line in lines), refused.stdout
    assert "gave up after 1 retries" in refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr
