"""The user's journey in the Home Assistant web UI, in Chromium, against a simulated meter.

Log in, add Smarty P1 through the config flow (a wrong key first), read the values on the device
page and compare them with what the meter sent, and put the import and export energy into the
energy dashboard without a validation issue. Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

from custom_components.smarty_p1.entity import meter_name
from custom_components.smarty_p1.p1.simulator import PtyMeter
from tests.conftest import RecordingMeter

from .conftest import (
    DEMO_KEY,
    DEMO_PASSWORD,
    DEMO_USER,
    METER_INTERVAL,
    READY_TIMEOUT,
    REPO,
    SCREENSHOTS,
    HomeAssistantProcess,
)

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

# The texts the user sees: the test finds and checks them by what en.json says.
MESSAGES: dict[str, Any] = json.loads(
    (REPO / "custom_components" / "smarty_p1" / "translations" / "en.json").read_text()
)
STRINGS: dict[str, Any] = MESSAGES["config"]
# The frontend's own text (ui.components.selectors.serial_port.enter_manually).
SERIAL_PORT_MANUAL = "Enter manually"
# A well-formed key that is not the meter's: the GCM tag does not verify.
WRONG_KEY = "00112233445566778899AABBCCDDEEFF"


def entity_name(key: str, **placeholders: str) -> str:
    """The name of one of the meter's sensors, as en.json gives it."""
    name: str = MESSAGES["entity"]["sensor"][key]["name"]
    return name.format(**placeholders)


# Entity name on the device page -> the OBIS code whose value it shows, and the unit shown.
SHOWN = {
    entity_name("energy_import"): ("1-0:1.8.0", "kWh"),
    entity_name("energy_export"): ("1-0:2.8.0", "kWh"),
    entity_name("power_import"): ("1-0:1.7.0", "kW"),
    entity_name("power_export"): ("1-0:2.7.0", "kW"),
}
# Totals take a new state once a minute (the default): each shows one of the readings the meter
# sent within the last minute and a telegram.
TOTALS = frozenset({entity_name("energy_import"), entity_name("energy_export")})
TOTALS_WITHIN = int(60 / METER_INTERVAL) + 2
# Values that change with every telegram and few users chart: disabled until the user enables
# them, so the device page does not list them.
HIDDEN = [
    entity_name(key, phase=phase)
    for phase in ("L1", "L2", "L3")
    for key in ("power_import_phase", "power_export_phase", "current_phase", "voltage_phase")
]
NET_POWER = entity_name("net_power")
# Entity rows of a page, deep in the shadow DOM: name -> state as displayed.
ENTITY_ROWS = """() => {
  const rows = {};
  const walk = (root) => {
    for (const el of root.querySelectorAll("*")) {
      if (el.tagName === "HUI-GENERIC-ENTITY-ROW" && el.shadowRoot) {
        const info = el.shadowRoot.querySelector(".info");
        if (info) rows[info.textContent.trim()] = el.textContent.trim();
      }
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  return rows;
}"""
# The frontend's own websocket connection, logged in as the demo user.
CALL_WS = "message => document.querySelector('home-assistant').hass.callWS(message)"


class Journey:
    """The browser tab, Home Assistant and the meter, and numbered screenshots of the way."""

    def __init__(self, page: Page, hass: HomeAssistantProcess, meter: PtyMeter) -> None:
        self.page = page
        self.hass = hass
        self.meter = meter
        self._shots = 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for old in SCREENSHOTS.glob("*.png"):
            old.unlink()

    def shot(self, name: str) -> None:
        self._shots += 1
        self.page.screenshot(path=SCREENSHOTS / f"{self._shots:02d}_{name}.png")

    def goto(self, path: str) -> None:
        url = self.hass.url + path
        # Once in ~10 runs the page ended on the energy page it came from, not on the device
        # page asked for (a route change of the energy panel still in flight): ask again then.
        for _ in range(2):
            self.page.goto(url)
            # The launch screen fades out over the page once the app has drawn it.
            self.page.locator("#ha-launch-screen").wait_for(state="detached")
            if self.page.url.startswith(url):
                return
        raise AssertionError(f"asked for {url}, the browser shows {self.page.url}")

    def call_ws(self, message: dict[str, Any]) -> Any:
        return self.page.evaluate(CALL_WS, message)

    def expect_text(self, text: str) -> None:
        """Wait until the text is on the page (it fails the test after the default timeout)."""
        self.page.get_by_text(text, exact=True).first.wait_for()

    def expect_step(self, step_id: str) -> None:
        """Wait for the flow dialog to show a step, known by its title (a field may share it)."""
        self.step_title(step_id).wait_for()

    def step_title(self, step_id: str) -> Locator:
        return self.page.get_by_title(STRINGS["step"][step_id]["title"], exact=True).first

    def submit(self) -> None:
        self.page.get_by_role("button", name="Submit").click()


def test_user_journey(home_assistant: HomeAssistantProcess, meter: PtyMeter, page: Page) -> None:
    journey = Journey(page, home_assistant, meter)
    log_in(journey)
    add_meter(journey)
    configure_energy(journey)
    check_device_page(journey)
    check_energy_validation(journey)
    # Nothing for the user to repair: the integration raised no issue on the way.
    issues = journey.call_ws({"type": "repairs/list_issues"})["issues"]
    assert [issue for issue in issues if issue["domain"] == "smarty_p1"] == []


def log_in(journey: Journey) -> None:
    page = journey.page
    journey.goto("/")
    page.locator("input[name=username]").fill(DEMO_USER)
    page.locator("input[name=password]").fill(DEMO_PASSWORD)
    journey.shot("login")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/auth/" not in url and "auth_callback" not in url)
    # The login page answers early; the first start of a new develop venv is still installing
    # default_config's requirements then, and the main view comes only when that is done.
    page.locator("home-assistant-main").wait_for(timeout=READY_TIMEOUT * 1000)
    deadline = time.monotonic() + READY_TIMEOUT
    while journey.call_ws({"type": "get_config"})["state"] != "RUNNING":
        assert time.monotonic() < deadline, journey.hass.log_tail()
        time.sleep(1)


def add_meter(journey: Journey) -> None:
    """Settings > Devices & services > Add integration > Smarty P1, as a user does it."""
    page = journey.page
    steps = STRINGS["step"]
    journey.goto("/config/integrations/dashboard")
    page.get_by_role("button", name="Add integration").click()
    page.get_by_placeholder("Search for a brand name").fill("Smarty")
    page.get_by_text("Smarty P1", exact=True).click()

    journey.expect_step("user")
    journey.shot("connection_menu")
    page.get_by_text(steps["user"]["menu_options"]["serial"], exact=True).click()

    # Home Assistant's serial port picker (default_config loads usb) lists this machine's ports,
    # none of them the simulator's pty; "Enter manually" turns it into a path field. Without
    # usb it is that field from the start.
    journey.expect_step("serial")
    journey.shot("serial_port")
    selector = page.locator("ha-selector-serial_port")
    path = selector.locator("input")
    if not path.is_visible():
        selector.locator("ha-generic-picker").click()
        page.get_by_text(SERIAL_PORT_MANUAL, exact=True).click()
        # The field takes typing once the frontend has focused it (it clears the value first).
        from playwright.sync_api import expect

        expect(path).to_be_focused()
    # Typed key by key as a user does: the field drops a value set at once with fill(). What
    # is typed while the picker turns into the field may be lost: then typed again.
    for _ in range(5):
        path.press_sequentially(journey.meter.path)
        page.wait_for_timeout(300)
        if path.input_value() == journey.meter.path:
            break
        path.press("Control+a")
        path.press("Backspace")
    assert path.input_value() == journey.meter.path
    journey.shot("serial_path")
    journey.submit()

    journey.expect_step("key")
    page.locator("input[name=decryption_key]").fill(WRONG_KEY)
    journey.submit()
    journey.expect_text(STRINGS["error"]["invalid_key"])
    journey.shot("invalid_key")

    page.locator("input[name=decryption_key]").fill(DEMO_KEY.lower())
    journey.submit()
    if "tariff" in steps:
        # Optional: left empty, the tariff sensors stay off.
        journey.expect_step("tariff")
        journey.shot("tariff")
        journey.submit()
    page.get_by_role("button", name="Skip and finish").wait_for()
    journey.shot("created")
    page.get_by_role("button", name="Skip and finish").click()


def check_device_page(journey: Journey) -> None:
    """The values on the meter's device page are the ones the simulator sent."""
    devices = journey.call_ws({"type": "config/device_registry/list"})
    serial = journey.meter.sim.serial
    (device,) = [d for d in devices if ["smarty_p1", serial] in d["identifiers"]]
    journey.goto(f"/config/devices/device/{device['id']}")
    journey.expect_text(entity_name("energy_import"))
    # A telegram every 2 s: compare the page with the telegram it shows, read while it shows it.
    deadline = time.monotonic() + 30
    while True:
        sent = journey.meter.sim.last_values
        rows = journey.page.evaluate(ENTITY_ROWS)
        sim = journey.meter.sim
        assert isinstance(sim, RecordingMeter)
        problems = compare(rows, sent, sim.sent[-TOTALS_WITHIN:])
        if not problems and journey.meter.sim.last_values is sent:
            break
        assert time.monotonic() < deadline, "\n".join(problems) or "the values kept changing"
        time.sleep(0.3)
    journey.shot("device")


def compare(
    rows: dict[str, str], sent: dict[str, Any], last_minute: list[dict[str, Any]]
) -> list[str]:
    """What differs between the shown rows and the values sent (the last telegram's, for a
    total one of the last minute's): [] when all match."""
    problems = []
    for name, (obis, unit) in SHOWN.items():
        shown = rows.get(name)
        expected = f"{sent[obis]} {unit}"
        readings = [values[obis] for values in last_minute] if name in TOTALS else [sent[obis]]
        if shown is None or parse_shown(shown) not in [(value, unit) for value in readings]:
            problems.append(f"{name}: shown {shown!r}, sent {expected!r}")
    problems += [f"{name}: shown, but disabled by default" for name in HIDDEN if name in rows]
    net = sent["1-0:1.7.0"] - sent["1-0:2.7.0"]
    if parse_shown(rows.get(NET_POWER, "")) != (net, "kW"):
        problems.append(f"{NET_POWER}: shown {rows.get(NET_POWER)!r}, sent {net} kW")
    return problems


def parse_shown(text: str) -> tuple[Decimal, str] | None:
    """ "25,488.235 kWh" -> (Decimal("25488.235"), "kWh"); None for anything else."""
    number, _, unit = text.replace("\u202f", " ").replace("\xa0", " ").rpartition(" ")
    try:
        return Decimal(number.replace(",", "")), unit
    except ArithmeticError:
        return None


def configure_energy(journey: Journey) -> None:
    """Settings > Dashboards > Energy > Add grid connection: the meter's two registers."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = journey.page
    wanted = {key: entity_id(journey, key) for key in ("energy_import", "energy_export")}
    journey.goto("/config/energy")
    page.get_by_role("button", name="Add grid connection").click()
    names = [entity_name(key) for key in ("energy_import", "energy_export")]
    for index, name in enumerate(names):
        picker = page.locator("ha-statistic-picker").nth(index)
        chosen = picker.locator("ha-picker-field").get_by_text(name, exact=True)
        # The list may still be filling when the item is clicked: then it is picked again.
        for attempt in range(3):
            picker.click()
            page.locator("ha-combo-box-item").filter(has_text=name).first.click()
            try:
                chosen.wait_for(timeout=10_000)
                break
            except PlaywrightTimeout:
                if attempt == 2:
                    raise
                page.keyboard.press("Escape")
        page.get_by_placeholder("Search", exact=True).wait_for(state="hidden")
    journey.shot("energy_grid_dialog")
    page.get_by_role("button", name="Save").click()
    # The grid connection is listed by the sensors' full names: device name and entity name.
    page.get_by_text(f"{meter_name(journey.meter.sim.serial)} {names[1]}", exact=True).wait_for()

    (grid,) = [
        source
        for source in journey.call_ws({"type": "energy/get_prefs"})["energy_sources"]
        if source["type"] == "grid"
    ]
    assert grid["stat_energy_from"] == wanted["energy_import"]
    assert grid["stat_energy_to"] == wanted["energy_export"]


def check_energy_validation(journey: Journey) -> None:
    """No validation issue, for Home Assistant and on the energy configuration page.

    Home Assistant reports "statistics not defined" for a new sensor until it compiles its
    first five-minute statistics, at the next multiple of five minutes: that one is waited out.
    """
    deadline = time.time() + 300 - time.time() % 300 + 60
    while issues := energy_issues(journey):
        assert all(issue["type"] == "statistics_not_defined" for issue in issues), issues
        assert time.time() < deadline, issues
        time.sleep(5)
    page = journey.page
    journey.goto("/config/energy")
    # The frontend renders a source's validation result once it has it.
    result = page.locator("ha-energy-grid-settings ha-energy-validation-result").first
    result.wait_for(state="attached")
    assert result.evaluate("element => element.issues") == []
    assert page.locator("ha-energy-grid-settings ha-alert").count() == 0
    device = meter_name(journey.meter.sim.serial)
    page.get_by_text(f"{device} {entity_name('energy_import')}", exact=True).wait_for()
    journey.shot("energy")


def energy_issues(journey: Journey) -> list[dict[str, Any]]:
    """What the energy dashboard's validation finds wrong with the energy sources."""
    sources = journey.call_ws({"type": "energy/validate"})["energy_sources"]
    return [issue for source in sources for issue in source]


def entity_id(journey: Journey, translation_key: str) -> str:
    """The entity id of the meter's sensor with that translation key, once it exists.

    The sensors appear with the first telegram after the entry is set up.
    """
    deadline = time.monotonic() + 30
    while True:
        found = [
            str(entry["entity_id"])
            for entry in journey.call_ws({"type": "config/entity_registry/list"})
            if entry["platform"] == "smarty_p1" and entry["translation_key"] == translation_key
        ]
        if found:
            (entity,) = found
            return entity
        assert time.monotonic() < deadline, f"no {translation_key} sensor"
        time.sleep(0.5)
