"""The reference-power tariff in Home Assistant: real coordinator, telegrams on a pty, frozen time.

Every scenario is hand-computed: the meter's clock (0-0:1.0.0) and import register (1-0:1.8.0)
are set per telegram; telegrams come every 30 s (under the 35 s gap threshold) to keep it fast.
Home Assistant's clock (the harness's ``freezer``) is moved to the scenario's start and then ticks
in real time: moving it with the meter's clock would also move the event loop's clock and trip
the silence timeout. The meter's clock is the one that bills, and decides quarters and years.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch

import pytest
from freezegun.api import TickingDateTimeFactory
from homeassistant.components.repairs import repairs_flow_manager
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import (
    ATTR_DEVICE_CLASS,
    ATTR_UNIT_OF_MEASUREMENT,
    CONF_DEVICE,
    CONF_HOST,
    CONF_PORT,
    CURRENCY_EURO,
    EVENT_STATE_CHANGED,
    STATE_OFF,
    STATE_ON,
    STATE_UNKNOWN,
)
from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.translation import async_get_translations
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.smarty_p1.const import (
    CONF_CONNECTION_TYPE,
    CONF_MIN_INTERVAL,
    CONF_RATE_NORMAL,
    CONF_RATE_OVERRUN,
    CONF_REFERENCE_POWER,
    CONF_TOTAL_INTERVAL,
    CONNECTION_SERIAL,
    DOMAIN,
)
from custom_components.smarty_p1.coordinator import SmartyCoordinator
from custom_components.smarty_p1.issues import MISSING_RATES, issue_id
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter, TcpMeter, meter_time
from custom_components.smarty_p1.repairs import async_create_fix_flow
from custom_components.smarty_p1.tariff import LUXEMBOURG, REFERENCE_POWERS

from .conftest import KEY, encrypt, entry_data, setup, state_of, wait_for, with_values
from .test_config_flow import assert_translated, schema, start, submit, suggested

STEP = timedelta(seconds=30)
# Home Assistant's clock ticks on from wherever a test moves it.
pytestmark = pytest.mark.freeze_time(tick=True)


def lux(text: str) -> datetime:
    """A local Luxembourg time, e.g. "2026-03-10 12:00:00"."""
    return datetime.fromisoformat(text).replace(tzinfo=LUXEMBOURG)


class Meter:
    """Puts telegrams of a given time, register and power on the quiet pty."""

    def __init__(
        self,
        hass: HomeAssistant,
        pty: PtyMeter,
        base: bytes,
        at: datetime,
        energy: float = 1000.0,
    ) -> None:
        self.hass = hass
        self.pty = pty
        self.base = base
        self.at = at.astimezone(UTC)
        self.energy = energy
        self.sent = 0
        self.counter = 5000
        self.coordinator: SmartyCoordinator | None = None
        self.entry: MockConfigEntry | None = None

    def telegram(self, power: float) -> bytes:
        values = {
            "0-0:1.0.0": meter_time(self.at),
            "1-0:1.8.0": f"{self.energy:010.3f}*kWh",
            "1-0:1.7.0": f"{power:06.3f}*kW",
        }
        return with_values(self.base, **values)

    async def run(self, until: datetime, power: float) -> None:
        """Telegrams from now (inclusive) to ``until`` (exclusive) at a steady power (kW)."""
        coordinator = self.coordinator
        assert coordinator is not None
        while self.at < until:
            self.counter += 1
            # One at a time: the pty's buffer is small, and the reader must see each.
            self.pty.inject(encrypt(self.telegram(power), self.counter))
            self.sent += 1
            await wait_for(self.hass, lambda: coordinator.health.stats.telegrams >= self.sent)
            self.at += STEP
            self.energy += power * STEP.total_seconds() / 3600

    def skip(self, until: datetime, power: float) -> None:
        """No telegram until ``until``; the load goes on."""
        self.energy += power * (until.astimezone(UTC) - self.at).total_seconds() / 3600
        self.at = until.astimezone(UTC)


@pytest.fixture
def base_telegram(simulator: MeterSimulator) -> bytes:
    """A telegram of the simulated meter, to modify and send."""
    simulator.next_frame()
    return simulator.last_telegram


def tariff_entry(simulator: MeterSimulator, device: str, **options: Any) -> MockConfigEntry:
    """The entry of the meter on a serial port, with options."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=f"Smarty {simulator.serial}",
        unique_id=simulator.serial,
        data=entry_data(
            simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: device}
        ),
        options=options,
    )


def entity(hass: HomeAssistant, serial: str, key: str, domain: str = "sensor") -> str:
    found = er.async_get(hass).async_get_entity_id(domain, DOMAIN, f"{serial}_tariff_{key}")
    assert found is not None, key
    return found


def value(hass: HomeAssistant, serial: str, key: str) -> float:
    return float(state_of(hass, entity(hass, serial, key)).state)


@pytest.fixture
def meter(
    hass: HomeAssistant,
    simulator: MeterSimulator,
    quiet_pty: PtyMeter,
    base_telegram: bytes,
    freezer: TickingDateTimeFactory,
) -> Callable[..., Any]:
    """Set up the entry with a reference power; a Meter starting at a given local time."""

    async def start(at: datetime, **options: Any) -> Meter:
        freezer.move_to(at)
        line = Meter(hass, quiet_pty, base_telegram, at)
        options.setdefault(CONF_REFERENCE_POWER, 3.0)
        options = {key: option for key, option in options.items() if option is not None}
        line.entry = tariff_entry(simulator, quiet_pty.path, **options)
        line.coordinator = await setup(hass, line.entry)
        return line

    return start


def events_of(hass: HomeAssistant, entity_id: str) -> list[dict[str, Any]]:
    """Collect the overrun events an entity fires, as their state attributes."""
    fired: list[dict[str, Any]] = []

    @callback
    def changed(event: Event[EventStateChangedData]) -> None:
        if event.data["entity_id"] == entity_id and (state := event.data["new_state"]):
            fired.append(dict(state.attributes))

    hass.bus.async_listen(EVENT_STATE_CHANGED, changed)
    return fired


async def test_steady_load_over_the_reference(
    hass: HomeAssistant, meter: Callable[..., Any], simulator: MeterSimulator
) -> None:
    """4.8 kW at 3 kW: 1.2 kWh per quarter, 0.45 kWh over, 2026 overrun rate 7.65 ct/kWh."""
    line: Meter = await meter(lux("2026-03-10 11:59:30"))
    serial = simulator.serial
    event_id = entity(hass, serial, "quarter_overrun", "event")
    fired = events_of(hass, event_id)
    expected_id = entity(hass, serial, "overrun_expected", "binary_sensor")
    await line.run(lux("2026-03-10 12:00:40"), 4.8)
    quarter = state_of(hass, entity(hass, serial, "quarter_energy"))
    assert float(quarter.state) == pytest.approx(0.04, abs=1e-3)  # 30 s at 4.8 kW
    assert quarter.attributes["state_class"] == "total"
    assert quarter.attributes["last_reset"] == "2026-03-10T11:00:00+00:00"
    assert quarter.attributes[ATTR_UNIT_OF_MEASUREMENT] == "kWh"
    assert value(hass, serial, "quarter_average_power") == pytest.approx(4.8, abs=0.01)
    # 0.04 + 4.8 kW x 14.5 min
    assert value(hass, serial, "quarter_projected_energy") == pytest.approx(1.2, abs=1e-3)
    assert value(hass, serial, "quarter_headroom") == pytest.approx(
        (0.75 - 0.04) / (14.5 / 60), abs=1e-3
    )
    assert state_of(hass, expected_id).state == STATE_ON  # 30 s above: confirmed

    await line.run(lux("2026-03-10 12:30:10"), 4.8)
    assert value(hass, serial, "last_quarter_overrun") == pytest.approx(0.45, abs=1e-3)
    # 11:45 from 11:59:30 (0.04 kWh, no overrun) and two whole quarters.
    assert value(hass, serial, "overrun_today") == pytest.approx(0.9, abs=2e-3)
    assert value(hass, serial, "overrun_month") == pytest.approx(0.9, abs=2e-3)
    cost = state_of(hass, entity(hass, serial, "overrun_cost_month"))
    assert float(cost.state) == pytest.approx(0.9 * 0.0765, abs=1e-4)
    assert cost.attributes[ATTR_DEVICE_CLASS] == "monetary"
    assert cost.attributes[ATTR_UNIT_OF_MEASUREMENT] == CURRENCY_EURO
    assert cost.attributes["last_reset"] == "2026-03-01T00:00:00+01:00"
    assert value(hass, serial, "max_quarter_power_month") == pytest.approx(4.8, abs=0.01)
    assert [event["event_type"] for event in fired] == ["overrun", "overrun"]
    assert fired[0]["start"] == "2026-03-10T11:00:00+00:00"
    assert fired[0]["energy"] == pytest.approx(1.2, abs=1e-3)
    assert fired[0]["overrun"] == pytest.approx(0.45, abs=1e-3)
    assert fired[0]["complete"] is True


async def test_five_minute_burst(
    hass: HomeAssistant, meter: Callable[..., Any], simulator: MeterSimulator
) -> None:
    """11 kW for 5 minutes then nothing, at 3 kW: 0.167 kWh of overrun, not 0.667."""
    line: Meter = await meter(lux("2025-06-02 08:59:30"))
    serial = simulator.serial
    await line.run(lux("2025-06-02 09:00:00"), 0.0)
    await line.run(lux("2025-06-02 09:05:00"), 11.0)
    await line.run(lux("2025-06-02 09:15:30"), 0.0)
    assert value(hass, serial, "last_quarter_overrun") == pytest.approx(0.1667, abs=1e-3)
    assert value(hass, serial, "overrun_month") == pytest.approx(0.1667, abs=1e-3)
    # 2025: 11.39 ct/kWh
    assert value(hass, serial, "overrun_cost_month") == pytest.approx(0.019, abs=1e-4)
    assert value(hass, serial, "max_quarter_power_month") == pytest.approx(3.667, abs=0.01)
    assert state_of(hass, entity(hass, serial, "overrun_expected", "binary_sensor")).state == (
        STATE_OFF
    )


async def test_overrun_expected_before_the_quarter_overruns(
    hass: HomeAssistant, meter: Callable[..., Any], simulator: MeterSimulator
) -> None:
    """2 kW then 5 kW from 12:05: on at 12:05:30 (projection 1.0 kWh), the energy passes
    0.75 kWh only at 12:12."""
    line: Meter = await meter(lux("2026-03-10 11:59:30"))
    serial = simulator.serial
    expected_id = entity(hass, serial, "overrun_expected", "binary_sensor")
    await line.run(lux("2026-03-10 12:05:00"), 2.0)
    assert state_of(hass, expected_id).state == STATE_OFF
    await line.run(lux("2026-03-10 12:05:30"), 5.0)  # one telegram at 5 kW: not yet
    assert state_of(hass, expected_id).state == STATE_OFF
    await line.run(lux("2026-03-10 12:06:00"), 5.0)
    assert state_of(hass, expected_id).state == STATE_ON
    assert value(hass, serial, "quarter_energy") < 0.75 / 2
    # 0.208 kWh taken, 9.5 minutes left: 3.42 kW on average, less than the 5 kW drawn.
    taken = 2.0 * 5 / 60 + 5.0 * 0.5 / 60
    assert value(hass, serial, "quarter_headroom") == pytest.approx(
        (0.75 - taken) / (9.5 / 60), abs=0.01
    )


async def test_boundary_between_telegrams_and_dst(
    hass: HomeAssistant, meter: Callable[..., Any], simulator: MeterSimulator
) -> None:
    """Spring forward: 01:45 is followed by 03:00 local; a boundary 10 s after a telegram."""
    line: Meter = await meter(lux("2026-03-29 01:44:50"))
    serial = simulator.serial
    await line.run(lux("2026-03-29 01:59:51"), 3.6)  # the last telegram at 01:59:50 CET
    # The next one 20 s later, in summer time; 3.6 kW is 10 Wh per 10 s.
    line.at = lux("2026-03-29 03:00:10").astimezone(UTC)
    line.energy += 3.6 * (20 - 30) / 3600
    await line.run(lux("2026-03-29 03:00:11"), 3.6)
    quarter = state_of(hass, entity(hass, serial, "quarter_energy"))
    assert quarter.attributes["last_reset"] == "2026-03-29T01:00:00+00:00"  # 03:00 CEST
    # The boundary lies halfway between the two telegrams: 10 of their 20 Wh.
    assert float(quarter.state) == pytest.approx(0.010, abs=1e-6)
    # 01:45-02:00 CET was 15 minutes at 3.6 kW: 0.9 kWh, 0.15 over.
    assert value(hass, serial, "last_quarter_overrun") == pytest.approx(0.15, abs=1e-6)


async def test_dst_autumn_repeated_hour(
    hass: HomeAssistant, meter: Callable[..., Any], simulator: MeterSimulator
) -> None:
    """Fall back: 02:00-03:00 local comes twice; quarters are keyed in UTC, none merged."""
    line: Meter = await meter(datetime(2026, 10, 25, 0, 44, 50, tzinfo=UTC))  # 02:44:50 CEST
    serial = simulator.serial
    # Telegrams every 30 s up to 01:00:20 UTC, which is 02:00:20 CET, the hour's second time.
    await line.run(datetime(2026, 10, 25, 1, 0, 21, tzinfo=UTC), 3.6)
    quarter = state_of(hass, entity(hass, serial, "quarter_energy"))
    assert quarter.attributes["last_reset"] == "2026-10-25T01:00:00+00:00"
    # 20 s of the 30 s step after 00:59:50 UTC fall in the new quarter: 3.6 kW x 20 s.
    assert float(quarter.state) == pytest.approx(0.020, abs=1e-6)
    # 02:45-03:00 CEST was 15 minutes at 3.6 kW: 0.9 kWh, 0.15 over the 3 kW reference.
    assert value(hass, serial, "last_quarter_overrun") == pytest.approx(0.15, abs=1e-6)


async def test_data_gap_and_restart_mid_month(
    hass: HomeAssistant, meter: Callable[..., Any], simulator: MeterSimulator
) -> None:
    """Totals survive a restart; a gap across boundaries leaves incomplete quarters, no more."""
    line: Meter = await meter(lux("2026-03-10 11:59:30"))
    serial = simulator.serial
    await line.run(lux("2026-03-10 12:15:30"), 4.0)  # 12:00: 1 kWh, 0.25 over
    assert value(hass, serial, "overrun_month") == pytest.approx(0.25, abs=1e-3)
    entry = line.entry
    assert entry is not None
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.NOT_LOADED

    # Home Assistant is down from 12:15:00 until 12:47:00 while 4 kW go on.
    line.skip(lux("2026-03-10 12:47:00"), 4.0)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    line.coordinator = entry.runtime_data
    line.sent = 0
    fired = events_of(hass, entity(hass, serial, "quarter_overrun", "event"))
    assert value(hass, serial, "overrun_month") == pytest.approx(0.25, abs=1e-3)  # restored
    await line.run(lux("2026-03-10 13:00:30"), 4.0)
    # 12:15 had one telegram (12:15:00): 0 kWh, incomplete; 12:30 was not measured at all;
    # 12:45 measured from 12:47:00: 4 kW x 13 min = 0.867 kWh, 0.117 over, incomplete.
    assert [event["start"] for event in fired] == ["2026-03-10T11:45:00+00:00"]
    assert fired[0]["complete"] is False
    assert fired[0]["energy"] == pytest.approx(4.0 * 13 / 60, abs=1e-3)
    assert value(hass, serial, "overrun_month") == pytest.approx(0.25 + 0.1167, abs=1e-3)
    assert value(hass, serial, "overrun_today") == pytest.approx(0.25 + 0.1167, abs=1e-3)


async def test_month_rollover(
    hass: HomeAssistant, meter: Callable[..., Any], simulator: MeterSimulator
) -> None:
    line: Meter = await meter(lux("2026-03-31 23:44:30"))
    serial = simulator.serial
    await line.run(lux("2026-04-01 00:00:30"), 4.0)
    month = state_of(hass, entity(hass, serial, "overrun_month"))
    assert float(month.state) == 0
    assert month.attributes["last_reset"] == "2026-04-01T00:00:00+02:00"
    assert value(hass, serial, "last_quarter_overrun") == pytest.approx(0.25, abs=1e-3)
    assert value(hass, serial, "overrun_today") == 0
    assert state_of(hass, entity(hass, serial, "max_quarter_power_month")).state == STATE_UNKNOWN
    await line.run(lux("2026-04-01 00:15:30"), 4.0)
    assert value(hass, serial, "overrun_month") == pytest.approx(0.25, abs=1e-3)


async def test_options_switch_the_tariff_on_and_off(
    hass: HomeAssistant, meter: Callable[..., Any], simulator: MeterSimulator
) -> None:
    """Off: no tariff entities. A reference power set in the options adds them (reload);
    a changed one applies at the next telegram; emptied, they go again."""
    line: Meter = await meter(lux("2026-03-10 11:59:30"), reference_power=None)
    entry = line.entry
    assert entry is not None
    serial = simulator.serial
    registry = er.async_get(hass)
    unique_id = f"{serial}_tariff_quarter_energy"
    assert registry.async_get_entity_id("sensor", DOMAIN, unique_id) is None

    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {CONF_MIN_INTERVAL: 0, CONF_REFERENCE_POWER: "7", CONF_RATE_OVERRUN: 10.0},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {
        CONF_MIN_INTERVAL: 0,
        CONF_TOTAL_INTERVAL: 60,
        CONF_REFERENCE_POWER: 7.0,
        CONF_RATE_OVERRUN: 10.0,
    }
    await hass.async_block_till_done()
    line.coordinator = entry.runtime_data
    line.sent = 0
    await line.run(lux("2026-03-10 12:15:30"), 8.0)  # 2 kWh in 12:00, 0.25 over 7 kW
    assert value(hass, serial, "last_quarter_overrun") == pytest.approx(0.25, abs=1e-3)
    assert value(hass, serial, "overrun_cost_month") == pytest.approx(0.025, abs=1e-4)

    # A new reference power is read live: no reload, the tracker keeps its totals.
    hass.config_entries.async_update_entry(
        entry, options={**entry.options, CONF_REFERENCE_POWER: 12.0, CONF_RATE_NORMAL: 4.0}
    )
    await hass.async_block_till_done()
    assert entry.runtime_data is line.coordinator
    await line.run(lux("2026-03-10 12:30:30"), 8.0)
    assert value(hass, serial, "last_quarter_overrun") == 0
    assert value(hass, serial, "overrun_month") == pytest.approx(0.25, abs=1e-3)

    # Emptied in the options: the tariff entities go (reload).
    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_MIN_INTERVAL: 0}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    await wait_for(hass, lambda: entry.state is ConfigEntryState.LOADED)
    assert state_of(hass, entity(hass, serial, "quarter_energy")).state == "unavailable"
    assert entry.runtime_data.tariff is None


# --- Where the reference power is set: the end of the config flow, and the options. ---


@pytest.mark.parametrize("meter_key", [None])
async def test_config_flow_offers_the_tariff(hass: HomeAssistant, tcp_meter: TcpMeter) -> None:
    """After the meter answered: a reference power from the published levels, no other."""
    result = await start(hass, "network")
    result = await submit(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: tcp_meter.port})
    assert result["step_id"] == "tariff"
    config = schema(result).schema[CONF_REFERENCE_POWER].config
    assert [option["value"] for option in config["options"]] == [str(kw) for kw in REFERENCE_POWERS]
    # Not a level any bill shows: typos, or what an earlier version took.
    for typo in ("0", "-3", "twelve", "1e9", "12.5", "13 kW"):
        result = await submit(hass, result, {CONF_REFERENCE_POWER: typo})
        assert result["step_id"] == "tariff"
        assert result["errors"] == {CONF_REFERENCE_POWER: "invalid_reference_power"}
        assert result["description_placeholders"] == {
            "levels": "3, 7, 12, 17, 27, 43, 70, 100, 150, 200"
        }
        assert suggested(result, CONF_REFERENCE_POWER) == typo
    result = await submit(hass, result, {CONF_REFERENCE_POWER: " 12,0 kW "})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["options"] == {CONF_REFERENCE_POWER: 12.0}
    entry = result["result"]
    await wait_for(hass, lambda: entry.state is ConfigEntryState.LOADED)
    assert entry.runtime_data.tariff.tracker.reference == 12.0


async def test_options_form(hass: HomeAssistant, simulator: MeterSimulator) -> None:
    """The stored power is offered back as the list's text; emptied fields turn settings off."""
    entry = tariff_entry(
        simulator,
        "/dev/ttyUSB0",
        **{CONF_MIN_INTERVAL: 10, CONF_REFERENCE_POWER: 7.0, CONF_RATE_NORMAL: 5.0},
    )
    entry.add_to_hass(hass)
    result = await hass.config_entries.options.async_init(entry.entry_id)
    await assert_translated(hass, result, "options")
    assert suggested(result, CONF_REFERENCE_POWER) == "7"
    assert suggested(result, CONF_RATE_NORMAL) == 5.0
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_MIN_INTERVAL: 10, CONF_REFERENCE_POWER: "abc"}
    )
    assert result["errors"] == {CONF_REFERENCE_POWER: "invalid_reference_power"}
    await assert_translated(hass, result, "options")
    assert suggested(result, CONF_REFERENCE_POWER) == "abc"
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_MIN_INTERVAL: 10, CONF_RATE_OVERRUN: 8.5}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {CONF_MIN_INTERVAL: 10, CONF_TOTAL_INTERVAL: 60, CONF_RATE_OVERRUN: 8.5}


# --- The stored state. ---


async def test_stored_state_is_checked_and_removed_with_the_entry(
    hass: HomeAssistant,
    *,
    hass_storage: dict[str, Any],
    meter: Callable[..., Any],
    simulator: MeterSimulator,
    base_telegram: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A state that does not restore is ignored with one warning; removal deletes it."""
    # The entry id is not known before the entry exists: the load returns garbage for any id.
    with patch(
        "custom_components.smarty_p1.tariff_runtime.Store.async_load",
        return_value={"version": 99},
    ):
        line: Meter = await meter(lux("2026-03-10 11:59:30"))
    assert "Ignoring the stored tariff state" in caplog.text
    entry = line.entry
    assert entry is not None
    # A telegram without the import register leaves the tariff as it is.
    line.pty.inject(encrypt(with_values(base_telegram, **{"1-0:1.8.0": ""}), 4000))
    line.sent += 1
    coordinator = line.coordinator
    assert coordinator is not None
    await wait_for(hass, lambda: coordinator.health.stats.telegrams >= line.sent)
    assert coordinator.tariff is not None
    assert coordinator.tariff.tracker.quarter_start is None
    await line.run(lux("2026-03-10 12:00:30"), 1.0)
    assert await hass.config_entries.async_unload(entry.entry_id)
    key = f"smarty_p1.{entry.entry_id}.tariff"
    assert hass_storage[key]["data"]["start"] == "2026-03-10T11:00:00+00:00"
    await hass.config_entries.async_remove(entry.entry_id)
    await hass.async_block_till_done()
    assert key not in hass_storage


# --- Which year's rates price the cost, and the repair issue of a year without any. ---


def rates_issue(hass: HomeAssistant, entry: MockConfigEntry) -> ir.IssueEntry | None:
    """The entry's missing-rates issue, if raised."""
    return ir.async_get(hass).async_get_issue(DOMAIN, issue_id(MISSING_RATES, entry.entry_id))


def rates_of(hass: HomeAssistant, serial: str) -> dict[str, Any]:
    """The rates attributes of the month's cost sensor."""
    attributes = state_of(hass, entity(hass, serial, "overrun_cost_month")).attributes
    return {key: attributes[key] for key in ("rates_year", "rates_source")}


async def issue_text(hass: HomeAssistant, issue: ir.IssueEntry, key: str) -> str:
    """An issue string in English with the issue's placeholders filled in, as the frontend does."""
    strings = await async_get_translations(hass, "en", "issues", {DOMAIN})
    text = strings[f"component.{DOMAIN}.issues.{issue.translation_key}.{key}"]
    return text.format(**(issue.translation_placeholders or {}))


async def test_new_year_without_published_rates_raises_a_fixable_issue(
    hass: HomeAssistant, meter: Callable[..., Any], simulator: MeterSimulator
) -> None:
    """2026 is priced at its own rates; from 2027-01-01 00:00 at 2026's, and the user is asked
    for 2027's in Settings > Repairs; the fix flow saves them in the options."""
    line: Meter = await meter(lux("2026-12-31 23:59:00"))
    entry = line.entry
    assert entry is not None
    serial = simulator.serial
    assert dt_util.now().year == 2026  # Home Assistant's clock too
    await line.run(lux("2027-01-01 00:00:00"), 4.0)  # 23:59:00 and 23:59:30
    assert rates_of(hass, serial) == {"rates_year": 2026, "rates_source": "published"}
    assert rates_issue(hass, entry) is None

    # The meter's clock bills: its first telegram of 2027 opens the first quarter of 2027.
    await line.run(lux("2027-01-01 00:00:30"), 4.0)
    cost = state_of(hass, entity(hass, serial, "overrun_cost_month"))
    assert cost.attributes["last_reset"] == "2027-01-01T00:00:00+01:00"
    assert float(cost.state) == 0
    assert rates_of(hass, serial) == {"rates_year": 2026, "rates_source": "published"}
    issue = rates_issue(hass, entry)
    assert issue is not None
    assert issue.is_fixable
    assert issue.severity is ir.IssueSeverity.WARNING
    assert issue.translation_placeholders == {
        "title": entry.title,
        "year": "2027",
        "published_year": "2026",
    }
    assert await issue_text(hass, issue, "title") == (
        f"Enter the grid rates of 2027 for {entry.title}"
    )

    # The fix flow, as the frontend runs it from Settings > Repairs.
    assert await async_setup_component(hass, "repairs", {})
    flows = repairs_flow_manager(hass)
    assert flows is not None
    result = await flows.async_init(DOMAIN, data={"issue_id": issue.issue_id})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "rates"
    data_schema = result["data_schema"]
    assert data_schema is not None
    assert set(data_schema.schema) == {CONF_RATE_NORMAL, CONF_RATE_OVERRUN}
    assert result["description_placeholders"] == issue.translation_placeholders
    step = "fix_flow.step.rates"
    assert "at the rates of 2026" in await issue_text(hass, issue, f"{step}.description")
    for field in (CONF_RATE_NORMAL, CONF_RATE_OVERRUN):
        assert await issue_text(hass, issue, f"{step}.data.{field}")
        assert await issue_text(hass, issue, f"{step}.data_description.{field}")
    result = await flows.async_configure(
        result["flow_id"], {CONF_RATE_NORMAL: 5.5, CONF_RATE_OVERRUN: 8.25}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert rates_issue(hass, entry) is None
    assert entry.options == {
        CONF_REFERENCE_POWER: 3.0,
        CONF_RATE_NORMAL: 5.5,
        CONF_RATE_OVERRUN: 8.25,
    }
    assert entry.runtime_data is line.coordinator  # no reload

    # 00:00-00:15 at 4 kW: 1 kWh, 0.25 kWh over 3 kW, at the user's 8.25 ct/kWh.
    await line.run(lux("2027-01-01 00:15:30"), 4.0)
    assert value(hass, serial, "overrun_month") == pytest.approx(0.25, abs=1e-3)
    assert value(hass, serial, "overrun_cost_month") == pytest.approx(0.25 * 0.0825, abs=1e-4)
    assert rates_of(hass, serial) == {"rates_year": None, "rates_source": "options"}
    assert rates_issue(hass, entry) is None


async def test_rates_entered_in_the_options_remove_the_issue(
    hass: HomeAssistant, meter: Callable[..., Any], simulator: MeterSimulator
) -> None:
    """One rate is not enough (the other still falls back on 2026); both are, at once."""
    line: Meter = await meter(lux("2027-03-01 08:00:00"), rate_overrun=9.0)
    entry = line.entry
    assert entry is not None
    await line.run(lux("2027-03-01 08:00:30"), 1.0)
    assert rates_of(hass, simulator.serial) == {
        "rates_year": 2026,
        "rates_source": "published_and_options",
    }
    assert rates_issue(hass, entry) is not None

    result = await hass.config_entries.options.async_init(entry.entry_id)
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {
            CONF_MIN_INTERVAL: 0,
            CONF_REFERENCE_POWER: "3",
            CONF_RATE_NORMAL: 6.0,
            CONF_RATE_OVERRUN: 9.0,
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert rates_issue(hass, entry) is None  # before any telegram
    await line.run(lux("2027-03-01 08:01:00"), 1.0)
    assert rates_of(hass, simulator.serial) == {"rates_year": None, "rates_source": "options"}

    # Emptied again: asked again at once; the entry's removal takes the issue with it.
    hass.config_entries.async_update_entry(entry, options={CONF_REFERENCE_POWER: 3.0})
    await hass.async_block_till_done()
    assert rates_issue(hass, entry) is not None
    await hass.config_entries.async_remove(entry.entry_id)
    await hass.async_block_till_done()
    assert rates_issue(hass, entry) is None


async def test_fix_flow_of_a_removed_meter_or_an_unknown_issue(
    hass: HomeAssistant, meter: Callable[..., Any]
) -> None:
    """A meter deleted while its fix flow is open aborts the flow; only known issues get one."""
    line: Meter = await meter(lux("2027-01-05 12:00:00"))
    entry = line.entry
    assert entry is not None
    await line.run(lux("2027-01-05 12:00:30"), 1.0)
    issue = rates_issue(hass, entry)
    assert issue is not None
    assert await async_setup_component(hass, "repairs", {})
    flows = repairs_flow_manager(hass)
    assert flows is not None
    result = await flows.async_init(DOMAIN, data={"issue_id": issue.issue_id})
    assert result["type"] is FlowResultType.FORM
    await hass.config_entries.async_remove(entry.entry_id)
    await hass.async_block_till_done()
    result = await flows.async_configure(
        result["flow_id"], {CONF_RATE_NORMAL: 5.0, CONF_RATE_OVERRUN: 7.5}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "entry_removed"
    strings = await async_get_translations(hass, "en", "issues", {DOMAIN})
    assert f"component.{DOMAIN}.issues.{MISSING_RATES}.fix_flow.abort.entry_removed" in strings
    unfixable: list[dict[str, str | int | float | None] | None] = [
        None,
        {"issue": "no_such_issue", "entry_id": entry.entry_id},
        {"issue": MISSING_RATES},
    ]
    for data in unfixable:
        with pytest.raises(ValueError, match="has no fix"):
            await async_create_fix_flow(hass, "some_issue", data)
