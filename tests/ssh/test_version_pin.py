"""The asyncssh pin: pyproject and cc.ssh agree, and a wrong asyncssh fails in one line.

``_max_recv_pktlen`` and ``_update_recv_pktlen`` exist only from asyncssh 2.24.1: with
an older release the first session used to die with an AttributeError.  Now importing
``cc.ssh`` refuses it, and every command line turns that into one line on stderr and
exit status 1.  The wrong version is simulated by patching ``asyncssh.__version__`` in
a fresh interpreter before anything imports ``cc.ssh``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cc.ssh import ASYNCSSH_REQUIREMENT, AsyncsshVersionError, check_asyncssh_version

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[2]
MESSAGE = (
    "cloud-connector needs asyncssh >=2.24.1,<2.25, found 2.20.0: "
    "pip install 'asyncssh>=2.24.1,<2.25'"
)
PATCH = "import asyncssh, sys; asyncssh.__version__ = '2.20.0'; "


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CC_WORKERS": "1"}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_pyproject_pins_the_range_cc_ssh_checks() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [d for d in project["dependencies"] if d.startswith("asyncssh")]
    assert pins == [f"asyncssh{ASYNCSSH_REQUIREMENT}"]
    assert ASYNCSSH_REQUIREMENT == ">=2.24.1,<2.25"


@pytest.mark.parametrize("version", ["2.24.1", "2.24.2", "2.24.10", "2.24.1.post1"])
def test_versions_in_range_pass(version: str) -> None:
    check_asyncssh_version(version)


@pytest.mark.parametrize(
    "version", ["2.17.0", "2.20.0", "2.24.0", "2.24.1rc1", "2.25.0", "2.25.0.dev0", "3.0"]
)
def test_versions_out_of_range_fail(version: str) -> None:
    with pytest.raises(AsyncsshVersionError) as info:
        check_asyncssh_version(version)
    assert isinstance(info.value, ImportError)
    assert info.value.name == "asyncssh"
    assert f"found {version}:" in str(info.value)


def test_importing_cc_ssh_with_an_old_asyncssh_fails_clearly() -> None:
    result = _python(PATCH + "import cc.ssh")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"cc.ssh.AsyncsshVersionError: {MESSAGE}"


def test_importing_cc_ssh_with_the_installed_asyncssh_works() -> None:
    result = _python("import asyncssh, cc.ssh; print(asyncssh.__version__)")
    assert result.returncode == 0, result.stderr
    check_asyncssh_version(result.stdout.strip())


@pytest.mark.parametrize(
    ("module", "args", "prog"),
    [
        ("cc.cli.main", ["server", "--port", "0"], "cloud-connector server"),
        (
            "cc.cli.main",
            ["client", "http://127.0.0.1:9", "R:127.0.0.1:9000:127.0.0.1:9001"],
            "cloud-connector client",
        ),
        ("cc.cli.main", ["demo"], "cloud-connector demo"),
        ("cc.cli.outsystemscc", ["http://127.0.0.1:9", "R:8081:127.0.0.1:9001"], "outsystemscc"),
    ],
    ids=["server", "client", "demo", "outsystemscc"],
)
def test_commands_report_a_wrong_asyncssh_in_one_line(
    module: str, args: list[str], prog: str
) -> None:
    result = _python(PATCH + f"from {module} import main; sys.exit(main(sys.argv[1:]))", *args)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"{prog}: {MESSAGE}"]
