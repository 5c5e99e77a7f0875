"""The gateway's status page in a real headless Chromium (Debian's chromium and
chromium-driver, driven by selenium): an operator logs in, sees the live connectors'
rows with their remotes, watches the bytes grow after traffic, and sees a row go
when its connector stops.  Screenshots (desktop and phone widths) are saved as CI
artifacts in ``$CC_ARTIFACTS`` (default ``tests/artifacts/``).

Skipped only when the chromium or chromedriver binary is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from cc.protocol.basicauth import basic_header
from tests.cli.test_operating import connector
from tests.support.cli import start_gateway
from tests.support.net import echo_back, tcp_echo_server

__all__: list[str] = []

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver; .ci/run installs them)",
)

ADMIN = ("ops", "correct horse")
ROOT = Path(__file__).resolve().parents[2]
#: Seconds the browser may take to see a change (the page reloads every second).
SEE = 20.0


def artifacts() -> Path:
    path = Path(os.environ.get("CC_ARTIFACTS") or ROOT / "tests" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory(prefix="cc-chromium-") as profile:
        for flag in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--window-size=1200,360",
        ):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        try:
            driver.set_page_load_timeout(30)
            yield driver
        finally:
            driver.quit()


def rows(driver: WebDriver) -> dict[str, dict[str, str]]:
    """The page's session rows by user: remotes text and the exact byte counts."""
    found = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "tr.session"):
        found[row.get_attribute("data-user") or ""] = {
            "remotes": row.find_element(By.CSS_SELECTOR, "td.remotes").text,
            "bytes_in": row.get_attribute("data-bytes-in") or "",
            "bytes_out": row.get_attribute("data-bytes-out") or "",
            "in": row.find_element(By.CSS_SELECTOR, "td.in").text,
        }
    return found


Rows = dict[str, dict[str, str]]


def wait_rows(driver: WebDriver, check: Callable[[Rows], bool]) -> Rows:
    """Until ``check(rows)`` holds on a (re)loaded page; the rows it held on."""
    seen: dict[str, dict[str, str]] = {}

    def holds(d: WebDriver) -> bool:
        nonlocal seen
        try:
            seen = rows(d)
        except WebDriverException:  # the page reloaded under us (stale, detached, unloaded)
            return False
        return check(seen)

    WebDriverWait(driver, SEE, poll_frequency=0.2).until(holds, f"status page rows: {seen}")
    return seen


def test_status_page_in_chromium(tmp_path: Path, browser: WebDriver) -> None:
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"alice:pw-a": [""], "bob:pw-b": [""]}))
    admin = ":".join(ADMIN)
    with (
        start_gateway(tmp_path, "--authfile", str(users), "--admin", admin) as (_gw, port),
        tcp_echo_server() as echo,
        ExitStack() as stack,
    ):
        base = f"http://127.0.0.1:{port}"
        # no credentials: the browser is asked for them (a dialog), and nothing shows
        browser.get(f"{base}/status")
        assert "session(s)" not in browser.page_source and not rows(browser)
        # log in: Basic credentials on every request, the page's own reloads included
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": basic_header(*ADMIN)}}
        )
        browser.get(f"{base}/status?refresh=1")
        assert "No connector is connected." in browser.page_source

        alice, alice_port = stack.enter_context(
            connector(tmp_path, port, echo.port, "--auth", "alice:pw-a", name="alice")
        )
        bob_stack = stack.enter_context(ExitStack())
        _bob, bob_port = bob_stack.enter_context(
            connector(tmp_path, port, echo.port, "--auth", "bob:pw-b", name="bob")
        )
        seen = wait_rows(browser, lambda r: {"alice", "bob"} <= set(r))
        assert seen["alice"]["remotes"] == f"R:127.0.0.1:{alice_port}=>{echo.port}"
        assert seen["bob"]["remotes"] == f"R:127.0.0.1:{bob_port}=>{echo.port}"
        before = int(seen["alice"]["bytes_in"])

        payload = os.urandom(3 * 1024 * 1024 + 1234)
        assert echo_back(alice_port, payload) == payload
        assert echo_back(bob_port, payload[:200_000]) == payload[:200_000]
        seen = wait_rows(
            browser,
            lambda r: "alice" in r and int(r["alice"]["bytes_in"]) >= before + len(payload),
        )
        assert int(seen["alice"]["bytes_out"]) >= len(payload)
        assert seen["alice"]["in"] == "3.0 MiB"
        wait_rows(browser, lambda r: "bob" in r and int(r["bob"]["bytes_in"]) >= 200_000)
        browser.save_screenshot(str(artifacts() / "status-page.png"))
        browser.set_window_size(390, 844)
        browser.refresh()
        wait_rows(browser, lambda r: {"alice", "bob"} <= set(r))
        browser.save_screenshot(str(artifacts() / "status-page-phone.png"))
        browser.set_window_size(1200, 360)

        bob_stack.close()  # bob's connector stops (SIGTERM): its row goes
        seen = wait_rows(browser, lambda r: "bob" not in r)
        assert set(seen) == {"alice"}
        alice.signal(signal.SIGTERM)
        assert alice.wait_exit(20.0) == 0
        WebDriverWait(browser, SEE, poll_frequency=0.2).until(
            lambda d: "No connector is connected." in d.page_source
        )
    assert (artifacts() / "status-page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
