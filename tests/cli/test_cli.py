"""``cloud-connector`` (server, client, keygen) and ``outsystemscc`` on bad input and --help.

Bad input must end in one clear stderr line and exit status 2, never a Python
traceback: these programs run as services whose console is a log someone reads
at 3 a.m.  Help texts must name every option chisel users know.
"""

from __future__ import annotations

import contextlib
import json
import re
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cc.cli.client import HELP as client_help
from cc.cli.client import main as client_main
from cc.cli.server import HELP as server_help
from cc.cli.server import main as server_main
from tests.support.cli import LOG_PREFIX, assert_one_line_error, run_cli, start_gateway
from tests.support.net import free_port
from tests.support.processes import CC, OSCC
from tests.support.vectors import outsystemscc_usage

CHISEL_SERVER_OPTIONS = (
    "--host",
    "--port",
    "--key",
    "--keygen",
    "--keyfile",
    "--authfile",
    "--auth",
    "--keepalive",
    "--backend",
    "--socks5",
    "--reverse",
    "--tls-key",
    "--tls-cert",
    "--tls-ca",
    "--pid",
    "-v",
)
CHISEL_CLIENT_OPTIONS = (
    "--fingerprint",
    "--auth",
    "--keepalive",
    "--max-retry-count",
    "--max-retry-interval",
    "--proxy",
    "--header",
    "--hostname",
    "--sni",
    "--tls-ca",
    "--tls-skip-verify",
    "--tls-key",
    "--tls-cert",
    "--pid",
    "-v",
)
OUTSYSTEMSCC_OPTIONS = (
    "--keepalive",
    "--max-retry-count",
    "--max-retry-interval",
    "--proxy",
    "--header",
    "--hostname",
    "--pid",
    "-v",
    "--help",
)


def _make_inputs(directory: Path) -> Path:
    """Inputs for the error cases: broken JSON, a directory, a non-key, an existing key."""
    (directory / "bad.json").write_text('{"user:pass": [')
    (directory / "adir").mkdir()
    (directory / "garbage.key").write_text("this is not a key\n")
    (directory / "existing.key").write_text("precious\n")
    return directory


@pytest.fixture
def files(tmp_path: Path) -> Path:
    return _make_inputs(tmp_path)


CLOSED = "http://127.0.0.1:9"  # never reached: every case below fails before dialing
R = "R:8081:127.0.0.1:8393"

# (id, argv after the program, a fragment the one stderr line must contain)
USAGE_ERRORS: list[tuple[str, list[str], str]] = [
    # cloud-connector client
    ("client-malformed-remote", ["client", CLOSED, "R:80:a:b:c:d"], "invalid remote"),
    ("client-bad-remote-port", ["client", CLOSED, "70000"], "remote"),
    ("client-duplicate-port", ["client", CLOSED, "3000", "3000"], "same local port"),
    ("client-url-scheme", ["client", "ftp://127.0.0.1:1", "3000"], "scheme"),
    ("client-url-no-host", ["client", "http://", "3000"], "no host"),
    ("client-url-port-range", ["client", "http://127.0.0.1:99999", "3000"], "bad port"),
    ("client-keepalive", ["client", "--keepalive", "5x", CLOSED, "3000"], "--keepalive"),
    ("client-header", ["client", "--header", "nocolon", CLOSED, "3000"], "--header"),
    ("client-proxy-scheme", ["client", "--proxy", "ftp://h:1", CLOSED, "3000"], "proxy scheme"),
    ("client-proxy-no-host", ["client", "--proxy", "http://", CLOSED, "3000"], "proxy"),
    ("client-tls-cert-alone", ["client", "--tls-cert", "c.pem", CLOSED, "3000"], "--tls-key"),
    ("client-tls-ca-missing", ["client", "--tls-ca", "{tmp}/nope", CLOSED, "3000"], "--tls-ca"),
    ("client-no-server", ["client"], "server"),
    ("client-no-remotes", ["client", CLOSED], "remote"),
    ("client-auth", ["client", "--auth", "nocolon", CLOSED, "3000"], "user:pass"),
    ("client-retry-count", ["client", "--max-retry-count", "x", CLOSED, "3000"], "retry-count"),
    ("client-retry-interval", ["client", "--max-retry-interval", "0s", CLOSED, "3000"], "retry"),
    ("client-unknown-flag", ["client", "--bogus", CLOSED, "3000"], "--bogus"),
    # a secret in bad input is not echoed (see test_secrets_in_bad_input_are_not_echoed)
    ("client-url-secret", ["client", "http://user:hunter2@127.0.0.1:abc", "3000"], "bad port"),
    ("client-header-secret", ["client", "--header", "token hunter2", CLOSED, "3000"], "--header"),
    ("client-proxy-secret", ["client", "--proxy", "ftp://u:hunter2@h:1", CLOSED, "3000"], "proxy"),
    # found by fuzzing: these passed the CLI and failed each connection attempt instead
    ("client-header-ctl", ["client", "--header", "X-A: a\x01b", CLOSED, "3000"], "control char"),
    ("client-hostname-ctl", ["client", "--hostname", "h\x01", CLOSED, "3000"], "--hostname"),
    ("client-url-ctl", ["client", "http://127.0.0.1\x01:1", "3000"], "control character"),
    ("client-url-no-idna", ["client", "http://a..b:1", "3000"], "invalid host name"),
    # cloud-connector server
    ("server-keyfile-missing", ["server", "--keyfile", "{tmp}/missing.key"], "missing.key"),
    ("server-keyfile-dir", ["server", "--keyfile", "{tmp}/adir"], "directory"),
    ("server-keyfile-garbage", ["server", "--keyfile", "{tmp}/garbage.key"], "key"),
    ("server-authfile-json", ["server", "--authfile", "{tmp}/bad.json"], "not valid JSON"),
    ("server-authfile-missing", ["server", "--authfile", "{tmp}/missing.json"], "authfile"),
    ("server-authfile-dir", ["server", "--authfile", "{tmp}/adir"], "authfile"),
    ("server-tokens-json", ["server", "--tokens", "{tmp}/bad.json"], "tokens file"),
    ("server-keepalive", ["server", "--keepalive", "bogus"], "--keepalive"),
    ("server-port", ["server", "--port", "70000"], "port"),
    ("server-tls-cert-alone", ["server", "--tls-cert", "c.pem"], "--tls-key"),
    ("server-tls-ca-alone", ["server", "--tls-ca", "{tmp}/adir"], "--tls-cert"),
    (
        "server-tls-garbage",
        ["server", "--tls-cert", "{tmp}/garbage.key", "--tls-key", "{tmp}/garbage.key"],
        "--tls-cert",
    ),
    ("server-auth", ["server", "--auth", "nocolon"], "user:pass"),
    # cloud-connector itself
    ("unknown-command", ["bogus-command"], "unknown command 'bogus-command'"),
    # (keygen onto an existing file: test_keygen_refuses_to_overwrite)
]

OUTSYSTEMSCC_ERRORS: list[tuple[str, list[str], str]] = [
    ("forward-remote", [CLOSED, "3000"], "reverse"),
    ("socks-remote", [CLOSED, "R:socks"], "socks"),
    ("stdio-remote", [CLOSED, "stdio:example.com:22"], "reverse"),
    ("malformed-remote", [CLOSED, "R:8081:a:b:c"], "remote"),
    ("duplicate-port", [CLOSED, R, "R:8081:127.0.0.1:587"], "8081"),
    ("no-server", [], "server"),
    ("no-remote", [CLOSED], "remote"),
    ("bad-scheme", ["ftp://127.0.0.1:1/sg_1", R], "scheme"),
    ("no-host", ["https:///sg_1", R], "no host"),
    ("bad-header", ["--header", "token hunter2", CLOSED, R], "--header"),
    ("bad-keepalive", ["--keepalive", "10", CLOSED, R], "--keepalive"),
    ("bad-proxy", ["--proxy", "gopher://h:1", CLOSED, R], "proxy"),
]


def _expand(args: list[str], tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)) for a in args]


HELP_RUNS: dict[str, list[str]] = {
    "cc --help": [*CC, "--help"],
    "cc help": [*CC, "help"],
    "cc version": [*CC, "version"],
    "server --help": [*CC, "server", "--help"],
    "server -h": [*CC, "server", "-h"],
    "client --help": [*CC, "client", "--help"],
    "client -help": [*CC, "client", "-help"],
    "outsystemscc --help": [*OSCC, "--help"],
    "outsystemscc -help": [*OSCC, "-help"],
}

Results = dict[str, subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def usage_results(tmp_path_factory: pytest.TempPathFactory) -> Results:
    """Every bad-input and --help case, each its own process, run a few at a time.

    One real process per case (that is what a user runs); started concurrently
    only because ~70 interpreter start-ups in a row would dominate the suite.
    """
    directory = _make_inputs(tmp_path_factory.mktemp("usage"))
    argvs = {f"cc:{case}": [*CC, *_expand(args, directory)] for case, args, _ in USAGE_ERRORS}
    argvs |= {f"os:{case}": [*OSCC, *args] for case, args, _ in OUTSYSTEMSCC_ERRORS}
    argvs |= HELP_RUNS
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {key: pool.submit(run_cli, argv, cwd=directory) for key, argv in argvs.items()}
        return {key: future.result() for key, future in futures.items()}


@pytest.mark.parametrize(
    ("case", "fragment"),
    [(c[0], c[2]) for c in USAGE_ERRORS],
    ids=[c[0] for c in USAGE_ERRORS],
)
def test_cloud_connector_usage_errors(usage_results: Results, case: str, fragment: str) -> None:
    line = assert_one_line_error(usage_results[f"cc:{case}"], 2)
    assert line.startswith("cloud-connector"), line
    assert fragment.lower() in line.lower(), line


@pytest.mark.parametrize(
    ("case", "fragment"),
    [(c[0], c[2]) for c in OUTSYSTEMSCC_ERRORS],
    ids=[c[0] for c in OUTSYSTEMSCC_ERRORS],
)
def test_outsystemscc_usage_errors(usage_results: Results, case: str, fragment: str) -> None:
    line = assert_one_line_error(usage_results[f"os:{case}"], 2)
    assert line.startswith("outsystemscc: "), line
    assert fragment.lower() in line.lower(), line


def test_keygen_refuses_to_overwrite(files: Path) -> None:
    for argv in (["keygen", "existing.key"], ["server", "--keygen", "existing.key"]):
        assert_one_line_error(run_cli([*CC, *argv], cwd=files), 2)
        assert (files / "existing.key").read_text() == "precious\n"


def test_keygen_into_missing_directory_is_one_line(tmp_path: Path) -> None:
    for argv in (["keygen", "no/such/dir/k"], ["server", "--keygen", "no/such/dir/k"]):
        line = assert_one_line_error(run_cli([*CC, *argv], cwd=tmp_path), 1)
        assert "cannot write" in line


def test_keygen_writes_private_key_and_prints_fingerprint(tmp_path: Path) -> None:
    result = run_cli([*CC, "keygen", "host.key"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    key = tmp_path / "host.key"
    assert key.read_text().startswith("-----BEGIN")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert re.fullmatch(r"Fingerprint [A-Za-z0-9+/]{43}=\n", result.stderr), result.stderr

    result = run_cli([*CC, "server", "--keygen", "-", "--key", "seed"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ck-")
    # The same seed gives the same key, as with chisel's --key.
    again = run_cli([*CC, "server", "--keygen", "-", "--key", "seed"], cwd=tmp_path)
    assert again.stdout == result.stdout


def test_secrets_in_bad_input_are_not_echoed(usage_results: Results) -> None:
    """A password in a URL or a token in a malformed --header stays off the terminal."""
    cases = ["cc:client-url-secret", "cc:client-header-secret", "cc:client-proxy-secret"]
    for key in [*cases, "os:bad-header"]:
        result = usage_results[key]
        assert_one_line_error(result, 2)
        assert "hunter2" not in result.stderr + result.stdout, result.stderr


# ----------------------------------------------------------------------------- help


def test_cloud_connector_help_lists_commands(usage_results: Results) -> None:
    for key in ("cc --help", "cc help"):
        result = usage_results[key]
        assert result.returncode == 0, result.stderr
        for command in ("server", "client", "keygen", "version"):
            assert re.search(rf"^\s+{command}\b", result.stdout, re.M), result.stdout
    version = usage_results["cc version"]
    assert version.returncode == 0
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*\n", version.stdout)


def _documented_options(text: str) -> set[str]:
    """Options a help text explains: those that start an entry (``    --name,``)."""
    return set(re.findall(r"^\s+(-{1,2}[a-z0-9-]+)[, ]", text, re.M))


@pytest.mark.parametrize(
    ("command", "options"),
    [("server", CHISEL_SERVER_OPTIONS), ("client", CHISEL_CLIENT_OPTIONS)],
)
def test_server_and_client_help_explain_every_chisel_option(
    usage_results: Results, command: str, options: tuple[str, ...]
) -> None:
    runs = [r for key, r in usage_results.items() if key.startswith(f"{command} -")]
    assert len(runs) == 2
    for result in runs:
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        documented = _documented_options(result.stdout)
        missing = [o for o in options if o not in documented]
        assert not missing, f"{command} --help does not explain {missing}\n{result.stdout}"
    # Defaults and environment variables are spelled out, as in chisel's help.
    if command == "server":
        for text in ("HOST", "0.0.0.0", "PORT", "8080", "CHISEL_KEY", "CHISEL_KEY_FILE", "AUTH"):
            assert text in result.stdout
        assert "--tokens" in result.stdout
    else:
        for text in ("AUTH", "'25s'", "unlimited", "5 minutes", "100ms"):
            assert text in result.stdout
        assert "R:<local-interface>" not in result.stdout  # that is the server's ACL text
        assert "R:2222:localhost:22" in result.stdout  # remote examples, as in chisel
    assert "Signals:" in result.stdout and "SIGUSR2" in result.stdout


def test_every_server_option_is_documented() -> None:
    """The other direction: a new server flag must come with a help entry."""
    from cc.cli.server import _parser

    options = {name for name in _parser()._option_string_actions if name.startswith("--")}
    undocumented = sorted(o for o in options if not re.search(rf"{o}\b", server_help))
    assert not undocumented, f"cloud-connector server --help does not mention {undocumented}"


def test_every_documented_option_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    """No help text promises an option the parser would reject (checked in-process: fast)."""
    for text, main in ((server_help, server_main), (client_help, client_main)):
        for option in sorted(_documented_options(text)):
            capsys.readouterr()
            with contextlib.suppress(SystemExit):
                main([option, "--help"])
            err = capsys.readouterr().err
            assert "unrecognized arguments" not in err, (option, err)


def test_outsystemscc_help_names_its_options(usage_results: Results) -> None:
    result = usage_results["outsystemscc --help"]
    assert result.returncode == 0
    for option in OUTSYSTEMSCC_OPTIONS:
        assert f"    {option}" in result.stdout


def test_outsystemscc_help_is_the_seed_usage_text(usage_results: Results) -> None:
    expected = outsystemscc_usage()
    for flag in ("--help", "-help"):
        result = usage_results[f"outsystemscc {flag}"]
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip("\n") == expected


# ----------------------------------------------------------------------------- gateway


def test_gateway_json_logs_and_ready_line(tmp_path: Path) -> None:
    with start_gateway(tmp_path, "--log-format", "json") as (gateway, port):
        _, line = gateway.wait_for_line("Listening", 10)
        record = json.loads(line)
        assert set(record) == {"time", "level", "logger", "msg"}
        assert record["logger"] == "server"
        assert record["msg"] == f"Listening on http://127.0.0.1:{port}"
        gateway.popen.terminate()
        assert gateway.wait_exit(10) == 0
    for line in gateway.lines():
        json.loads(line)


def test_gateway_text_logs_use_go_timestamps(tmp_path: Path) -> None:
    with start_gateway(tmp_path) as (gateway, port):
        _, line = gateway.wait_for_line("Listening", 10)
        assert re.fullmatch(LOG_PREFIX + rf"server: Listening on http://127.0.0.1:{port}", line)


def test_gateway_port_in_use_is_one_line(tmp_path: Path) -> None:
    with start_gateway(tmp_path) as (_gateway, port):
        result = run_cli([*CC, "server", "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path)
    line = assert_one_line_error(result, 1)
    assert f"cannot listen on 127.0.0.1:{port}" in line


def test_client_gives_up_with_nonzero_status(tmp_path: Path) -> None:
    port = free_port()
    result = run_cli(
        [*CC, "client", "--max-retry-count", "0", f"http://127.0.0.1:{port}", R],
        cwd=tmp_path,
        timeout=10,
    )
    line = assert_one_line_error(result, 1)
    assert "--max-retry-count 0" in line
    assert re.search(
        LOG_PREFIX + rf"client: Connecting to ws://127.0.0.1:{port}$", result.stdout, re.M
    )
    assert "client: Give up" in result.stdout


def test_unwritable_pid_file_is_one_line(tmp_path: Path) -> None:
    # A directory where the pid file's temporary name goes: unwritable even for root.
    (tmp_path / "outsystemscc.pid.tmp").mkdir()
    result = run_cli([*OSCC, "--pid", CLOSED + "/sg_1", R], cwd=tmp_path, timeout=10)
    line = assert_one_line_error(result, 1)
    assert "cannot write pid file outsystemscc.pid" in line
