"""``cloud-connector`` (server, client, keygen) and ``outsystemscc`` on bad input and --help.

Bad input must end in one clear stderr line and exit status 2, never a Python
traceback: these programs run as services whose console is a log someone reads
at 3 a.m.  Help texts must name every option chisel users know.
"""

from __future__ import annotations

import contextlib
import json
import platform
import re
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import pytest

import cc
from cc import about, fastpath
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
    # --config mistakes: each must name the file, the line and the key
    (directory / "unknown-key.toml").write_text(
        '# ok\nkeepalive = "5s"\nkeepalive_timeout = "7s"\n'
    )
    (directory / "wrong-type.toml").write_text('\n\nmax-retry-count = "3"\n')
    (directory / "bad-value.toml").write_text('keepalive = "5x"\n')
    (directory / "not-toml.toml").write_text("keepalive = \n")
    (directory / "server-key.toml").write_text('reverse = true\nremotes = ["R:80"]\n')
    (directory / "server-port.toml").write_text("port = 70000\n")
    (directory / "flag-type.toml").write_text('reverse = "yes"\n')
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
    ("server-remoted-keys-json", ["server", "--remoted-keys", "{tmp}/bad.json"], "keys file"),
    ("server-remoted-max-waiting", ["server", "--remoted-max-waiting", "-1"], "negative"),
    (
        "server-remoted-workers",
        ["server", "--remoted-server-key", "k", "--workers", "2", "-p", "1"],
        "--workers 1",
    ),
    # named services: client R:svc/ and connect
    ("client-svc-no-key", ["client", CLOSED, "R:svc/x:127.0.0.1:1"], "CC_REMOTED_SERVER_KEY"),
    ("client-svc-malformed", ["client", "--remoted-key", "k", CLOSED, "R:svc/x:1"], "HOST:PORT"),
    ("connect-no-url", ["connect"], "service URL is required"),
    ("connect-no-key", ["connect", "http://127.0.0.1:1/x"], "CC_REMOTED_CLIENT_KEY"),
    ("connect-no-path", ["connect", "rwr://k@127.0.0.1:1"], "needs a path"),
    ("connect-listen", ["connect", "--listen", "x", "rwr://k@127.0.0.1:1/x"], "--listen"),
    ("agent-no-env", ["agent"], "missing environment variable(s): TUNNEL_PORT"),
    # --config FILE: a mistake names the file, its line and the key
    (
        "client-config-unknown-key",
        ["client", "--config", "unknown-key.toml"],
        "unknown-key.toml:3: unknown key 'keepalive_timeout' (did you mean 'keepalive-timeout'?)",
    ),
    (
        "client-config-wrong-type",
        ["client", "--config", "wrong-type.toml"],
        "wrong-type.toml:3: 'max-retry-count' must be an integer (like -1), not a string",
    ),
    (
        "client-config-bad-value",
        ["client", "--config", "bad-value.toml"],
        "bad-value.toml:1: 'keepalive'",
    ),
    ("client-config-not-toml", ["client", "--config", "not-toml.toml"], "(at line 1, column"),
    (
        "client-config-missing",
        ["client", "--config", "nope.toml"],
        "cannot read config file nope.toml",
    ),
    (
        "server-config-unknown-key",
        ["server", "--config", "server-key.toml"],
        "server-key.toml:2: unknown key 'remotes'",
    ),
    ("server-config-port", ["server", "--config", "server-port.toml"], "port 70000 out of range"),
    (
        "server-config-flag-type",
        ["server", "--config", "flag-type.toml"],
        "flag-type.toml:1: 'reverse' must be true or false, not a string",
    ),
    # a pinned fingerprint is checked before any dial
    (
        "client-fingerprint-format",
        ["client", "--fingerprint", "abc=", CLOSED, "3000"],
        "44 characters",
    ),
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
    ("config-unknown-key", ["--config", "unknown-key.toml"], "unknown-key.toml:3: unknown key"),
]


def _expand(args: list[str], tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)) for a in args]


HELP_RUNS: dict[str, list[str]] = {
    "cc --help": [*CC, "--help"],
    "cc help": [*CC, "help"],
    "cc version": [*CC, "version"],
    "cc --version": [*CC, "--version"],
    "server --help": [*CC, "server", "--help"],
    "server -h": [*CC, "server", "-h"],
    "client --help": [*CC, "client", "--help"],
    "client -help": [*CC, "client", "-help"],
    "connect --help": [*CC, "connect", "--help"],
    "agent --help": [*CC, "agent", "--help"],
    "outsystemscc --help": [*OSCC, "--help"],
    "outsystemscc -help": [*OSCC, "-help"],
    "outsystemscc --version": [*OSCC, "--version"],
    "outsystemscc -version": [*OSCC, "-version"],
    "version: client": [*CC, "client", "--version"],
    "demo --help": [*CC, "demo", "--help"],
    "demo -h": [*CC, "demo", "-h"],
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
    argvs |= {
        f"os:{case}": [*OSCC, *_expand(args, directory)] for case, args, _ in OUTSYSTEMSCC_ERRORS
    }
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
        for command in ("server", "client", "connect", "agent", "keygen", "version"):
            assert re.search(rf"^\s+{command}\b", result.stdout, re.M), result.stdout
    version = usage_results["cc --version"]
    assert version.returncode == 0
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*\n", version.stdout)


def test_version_says_what_runs(usage_results: Results) -> None:
    """``cloud-connector version``: ours, Python's, the fast path, the dependencies'."""
    result = usage_results["cc version"]
    assert result.returncode == 0, result.stderr
    facts = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert list(facts)[:3] == ["cloud-connector", "python", "fast path"]
    assert facts["cloud-connector"] == cc.__version__
    assert facts["python"].startswith(
        f"{platform.python_implementation()} {platform.python_version()}"
    )
    assert facts["fast path"] == fastpath.describe()
    for name in about.DEPENDENCIES:
        assert facts[name] == metadata.version(name), name


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


@pytest.mark.parametrize("command", ["connect", "agent"])
def test_named_service_and_agent_help(usage_results: Results, command: str) -> None:
    result = usage_results[f"{command} --help"]
    assert result.returncode == 0, result.stderr
    assert f"Usage: cloud-connector {command}" in result.stdout
    assert ("ProxyCommand" if command == "connect" else "docker run") in result.stdout


def test_outsystemscc_help_names_its_options(usage_results: Results) -> None:
    result = usage_results["outsystemscc --help"]
    assert result.returncode == 0
    for option in OUTSYSTEMSCC_OPTIONS:
        assert f"    {option}" in result.stdout


#: Where ``outsystemscc --help`` leaves the seed's text for our own options.
EXTRA_HEADING = "Options of this implementation (not in the original outsystemscc):"
#: What the extra section must explain (the seed's text names none of them).
OUTSYSTEMSCC_EXTRAS = (
    "--log-format",
    "--keepalive-timeout",
    "--udp-max-senders",
    "--udp-idle-timeout",
    "--udp-max-size",
    "--config",
    "--version",
    "CC_SERVER",
    "CC_REMOTES",
    "CC_LOG_FORMAT",
    "CC_KEEPALIVE_TIMEOUT",
    "CC_UDP_MAX_SIZE",
    "CC_CONFIG",
)


def test_outsystemscc_help_is_the_seed_usage_text_then_ours(usage_results: Results) -> None:
    """The seed's text verbatim, then our options in a section of their own."""
    expected = outsystemscc_usage()
    for flag in ("--help", "-help"):
        result = usage_results[f"outsystemscc {flag}"]
        assert result.returncode == 0, result.stderr
        seed, heading, extra = result.stdout.strip("\n").partition(EXTRA_HEADING)
        assert heading, result.stdout
        assert seed.rstrip("\n") == expected
        assert seed.endswith("\n\n"), "a blank line before our section"
        for name in OUTSYSTEMSCC_EXTRAS:
            assert name in extra, name
            assert name not in expected, f"{name} is in the seed's text: no need to add it"


def test_outsystemscc_help_mentions_every_option() -> None:
    """A new outsystemscc flag must come with help, in the seed's part or ours."""
    from cc.cli.outsystemscc import HELP, _parser

    options = {name for name in _parser()._option_string_actions if name.startswith("--")}
    missing = sorted(o for o in options if not re.search(rf"{o}\b", HELP))
    assert not missing, f"outsystemscc --help does not mention {missing}"


def test_version_flags_print_the_version(usage_results: Results) -> None:
    for key in ("outsystemscc --version", "outsystemscc -version", "version: client"):
        result = usage_results[key]
        assert result.returncode == 0, (key, result.stderr)
        assert re.fullmatch(r"\d+\.\d+\.\d+\S*\n", result.stdout), (key, result.stdout)


def test_demo_help_explains_instead_of_running(usage_results: Results) -> None:
    for key in ("demo --help", "demo -h"):
        result = usage_results[key]
        assert result.returncode == 0, (key, result.stderr)
        assert result.stdout.lstrip().startswith("Usage: cloud-connector demo"), result.stdout
        assert "demo: " not in result.stdout, "the demo ran"


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


@pytest.mark.parametrize("workers", ["1", "2"])
def test_gateway_port_in_use_is_one_line(tmp_path: Path, workers: str) -> None:
    """With workers too: a port in use stops the whole gateway (it used to restart
    its workers for ever), and the reason is said once, by the control process."""
    with start_gateway(tmp_path) as (_gateway, port):
        argv = [*CC, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", workers]
        result = run_cli(argv, cwd=tmp_path, timeout=30)
    line = assert_one_line_error(result, 1)
    assert line.startswith(f"cloud-connector server: cannot listen on 127.0.0.1:{port}: "), line
    assert "address already in use" in line
    if workers == "2":
        assert "restarting" not in result.stdout, result.stdout


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


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_keygen_client_writes_openssh_key_pair(tmp_path: Path, kind: str) -> None:
    import asyncssh

    argv = [*CC, "keygen", "--client", "conn"] + ([] if kind == "ed25519" else ["--type", kind])
    result = run_cli(argv, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    private = tmp_path / "conn"
    assert private.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = asyncssh.import_private_key(private.read_bytes())
    public = asyncssh.import_authorized_keys((tmp_path / "conn.pub").read_text())
    assert public.validate(key.convert_to_public(), "127.0.0.1", "127.0.0.1") is not None
    assert key.get_fingerprint("sha256") in result.stderr


def test_keygen_client_refuses_to_overwrite(files: Path) -> None:
    line = assert_one_line_error(run_cli([*CC, "keygen", "--client", "existing.key"], cwd=files), 2)
    assert "refusing to overwrite" in line
    assert (files / "existing.key").read_text() == "precious\n"
    assert not (files / "existing.key.pub").exists()
