"""The browser test's world: Home Assistant in its own process, a simulated meter, Chromium.

Home Assistant runs from the environment of ``scripts/develop`` (the newest release with its
frontend, a venv next to the test venv), on a free port, with a throwaway configuration folder
made like ``scripts/develop`` makes ``config/``. The meter simulator runs in this process, so the
test knows exactly what the meter sent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from custom_components.smarty_p1.p1.simulator import PtyMeter
from tests.conftest import RecordingMeter

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

REPO = Path(__file__).parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
# scripts/develop's venv sits next to the test venv: /opt/venv-develop in the chroot,
# <cache>/venv-develop in host mode.
DEVELOP_VENV = Path(sys.prefix).parent / "venv-develop"
# The demo meter and login of scripts/develop.
DEMO_KEY = "0102030405060708090A0B0C0D0E0F10"
DEMO_USER = "demo"
DEMO_PASSWORD = "smarty-demo"
# The first start of a new develop venv installs default_config's requirements (uv, network).
READY_TIMEOUT = 300.0
STOP_TIMEOUT = 30.0
# Without the background-networking flags a closed network refuses Chromium's many calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A meter every 2 s: each probe of the flow gets a telegram at once, and the values stay still
# long enough to read them off a page.
METER_INTERVAL = 2.0
SUNNY_NOON = datetime(2026, 6, 21, 10, 0, tzinfo=UTC)


@dataclass(frozen=True)
class HomeAssistantProcess:
    """A running Home Assistant: where it answers and where its configuration lives."""

    url: str
    config: Path

    def log_tail(self, lines: int = 60) -> str:
        """The end of its log, for failure messages."""
        log = self.config / "home-assistant.log"
        text = log.read_text(errors="replace") if log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations() -> None:
    """Override tests/conftest.py's: no in-process Home Assistant here, the real one runs."""


@pytest.fixture
def browser_requirements() -> None:
    """Skip, saying why, where the browser test cannot run."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (scripts/setup installs it in the chroot)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if not (DEVELOP_VENV / "bin" / "hass").exists():
        pytest.skip(f"no Home Assistant in {DEVELOP_VENV} (scripts/setup or scripts/develop)")


@pytest.fixture
def meter() -> Iterator[PtyMeter]:
    """The demo meter of scripts/develop on a pty, queryable: ``meter.sim.last_values``."""
    # A sunny noon with solar panels: the meter imports on no phase and exports on all three,
    # so the export values and the currents are not all zero.
    sim = RecordingMeter(
        bytes.fromhex(DEMO_KEY), interval=METER_INTERVAL, seed=2, pv=True, start=SUNNY_NOON
    )
    with PtyMeter(sim) as pty:
        yield pty


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _make_config(config: Path) -> None:
    """A configuration folder like scripts/develop's: a demo user, onboarding done."""
    config.mkdir()
    text = (REPO / "config" / "configuration.yaml").read_text()
    # The port comes from SETUP_PORT: an http: block in YAML is now a settings change that
    # Home Assistant asks to confirm in a dialog covering the page.
    assert "\nhttp:" not in f"\n{text}", "config/configuration.yaml must not set http:"
    (config / "configuration.yaml").write_text(text)
    (config / "custom_components").symlink_to(REPO / "custom_components")
    hass = str(DEVELOP_VENV / "bin" / "hass")
    subprocess.run(
        [hass, "--script", "auth", "-c", str(config), "add", DEMO_USER, DEMO_PASSWORD],
        check=True,
        capture_output=True,
        timeout=120,
    )
    onboarding = {"done": ["user", "core_config", "analytics", "integration"]}
    (config / ".storage" / "onboarding").write_text(
        json.dumps({"version": 4, "minor_version": 1, "key": "onboarding", "data": onboarding})
    )


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except urllib.error.URLError, OSError:
        return False


@pytest.fixture
def home_assistant(
    browser_requirements: None, meter: PtyMeter, tmp_path: Path, socket_enabled: None
) -> Iterator[HomeAssistantProcess]:
    """Home Assistant from the develop venv on a free port; stopped and its files kept as logs."""
    port = _free_port()
    config = tmp_path / "config"
    _make_config(config)
    hass = HomeAssistantProcess(f"http://127.0.0.1:{port}", config)
    # Packages whose pinned release the package index lacks (scripts/develop installed the
    # newest it has): Home Assistant must not try the pin.
    skip = DEVELOP_VENV / ".skip-pip-packages"
    skipped = skip.read_text().strip() if skip.exists() else ""
    process = subprocess.Popen(
        [
            DEVELOP_VENV / "bin" / "hass",
            "-c",
            config,
            *(["--skip-pip-packages", skipped] if skipped else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env={**os.environ, "SETUP_PORT": str(port)},
        # Its own process group: stopping it reaches the helpers it starts.
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        # The login providers answer once auth and the frontend are up.
        while not _answers(f"{hass.url}/auth/providers"):
            if process.poll() is not None:
                pytest.fail(f"Home Assistant exited ({process.returncode}):\n{hass.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"Home Assistant not ready in {READY_TIMEOUT:g} s:\n{hass.log_tail()}")
            time.sleep(0.5)
        yield hass
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        log = config / "home-assistant.log"
        if log.exists():
            shutil.copy(log, SCREENSHOTS.parent / "home-assistant.log")


@pytest.fixture
def browser(browser_requirements: None, tmp_path: Path) -> Iterator[BrowserContext]:
    """Debian's Chromium, headless, with a new empty profile."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "chromium",
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 860},
            locale="en-US",
            timezone_id="Europe/Luxembourg",
        )
        # Every wait is bounded: a missing element fails the test instead of hanging CI.
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Page:
    """The browser's tab."""
    return browser.pages[0] if browser.pages else browser.new_page()
