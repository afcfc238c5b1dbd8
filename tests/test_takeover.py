"""Taking over core dsmr's (or dsmr_encrypted's) entry of the same meter, history kept.

Core dsmr is Home Assistant's own, configured for the Smarty (MSn) through its own config flow
and reading the same pty as we do, fed by the simulator. dsmr_encrypted (a custom integration
that cannot be installed here) is represented by the registry entries its code makes, and by a
stand-in integration that holds the port while it is set up, as it does.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from freezegun import freeze_time
from homeassistant.components.energy import data as energy_data
from homeassistant.components.recorder import statistics
from homeassistant.components.recorder.history import get_significant_states
from homeassistant.config_entries import (
    SOURCE_USER,
    ConfigEntry,
    ConfigEntryDisabler,
    ConfigEntryState,
    ConfigFlow,
    ConfigFlowResult,
)
from homeassistant.const import CONF_DEVICE, CONF_HOST, CONF_PORT, STATE_UNAVAILABLE, STATE_UNKNOWN
from homeassistant.core import HomeAssistant, State
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers import translation
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    MockModule,
    mock_config_flow,
    mock_integration,
    mock_platform,
)
from pytest_homeassistant_custom_component.components.recorder.common import (
    async_wait_recording_done,
    do_adhoc_statistics,
)
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.smarty_p1 import sensor
from custom_components.smarty_p1.const import CONF_DECRYPTION_KEY, DOMAIN
from custom_components.smarty_p1.entity import value_unique_id
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter, TcpMeter, serve_tcp
from custom_components.smarty_p1.takeover import DSMR_VALUES

from .conftest import EVERY_TOTAL, INTERVAL, KEY, state_of, wait_for

OTHER_KEY = bytes.fromhex("F0E0D0C0B0A090807060504030201000")
NEW_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
# dsmr's entity ids for the simulated meter (its device names are "Electricity Meter", ...).
DSMR_IMPORT = "sensor.electricity_meter_energy_consumption_total"
DSMR_EXPORT = "sensor.electricity_meter_energy_production_total"
DSMR_POWER = "sensor.electricity_meter_power_consumption"
DSMR_DELIVERY = "sensor.electricity_meter_power_production"
DSMR_VOLTAGE = "sensor.electricity_meter_voltage_phase_l1"
DSMR_CURRENT = "sensor.electricity_meter_current_phase_l1"
DSMR_GAS = "sensor.gas_meter_gas_consumption"
DSMR_WATER = "sensor.water_meter_water_consumption"
# What each of them is here: the OBIS code of its register.
TAKEN_OVER = {
    DSMR_IMPORT: "1-0:1.8.0",
    DSMR_EXPORT: "1-0:2.8.0",
    DSMR_POWER: "1-0:1.7.0",
    DSMR_DELIVERY: "1-0:2.7.0",
    DSMR_VOLTAGE: "1-0:32.7.0",
    DSMR_CURRENT: "1-0:31.7.0",
    "sensor.electricity_meter_power_consumption_phase_l3": "1-0:61.7.0",
    "sensor.electricity_meter_power_production_phase_l2": "1-0:42.7.0",
    "sensor.electricity_meter_timestamp": "0-0:1.0.0",
    DSMR_GAS: "0-1:24.2.1",
    DSMR_WATER: "0-2:24.2.1",
}
# The meter's counters go on only where ours make the same kind of statistics as dsmr's
# (total_increasing); until the entities branch gives ours that state class, they stay dsmr's.
COUNTERS_CONTINUE = sensor.DESCRIPTIONS["0-0:96.7.21"][0].state_class is not None
# Roles of the sensors whose unique id is not their code's alone (the entities branch's scheme).
ROLES = {
    "net_power": "net",
    "current_limit_import": "import",
    "current_limit_export": "export",
    "mbus_reading_time": "time",
}


class Household(MeterSimulator):
    """Ten seconds of a household in every frame, sent every 50 ms: the registers visibly move."""

    def next_frame(self) -> bytes:
        with self._lock:
            self._advance(10.0 - self.interval)
        return super().next_frame()


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(
    recorder_mock: object,
    hass: HomeAssistant,
    enable_custom_integrations: None,
    socket_enabled: None,
) -> None:
    """As in conftest, with the recorder (states, statistics) set up before hass."""
    # Core dsmr depends on usb, which would watch the machine's real USB ports.
    hass.config.components.add("usb")


@pytest.fixture(autouse=True)
def short_probe_timeout() -> Iterator[None]:
    """A probe waits for 25 s on a real meter; here frames come every 50 ms. No serial port is
    listed by Home Assistant's selector here: the path is typed in."""
    with patch("custom_components.smarty_p1.const.PROBE_TIMEOUT", 2.0):
        yield


@pytest.fixture
def expected_lingering_timers() -> bool:
    """Core dsmr leaves the 60 s keep-alive timer of a bridge entry behind when it unloads."""
    return True


@pytest.fixture
def simulator(meter_key: bytes) -> Household:
    """The meter of conftest's pty_meter and tcp_meter: the household, registers moving."""
    return Household(meter_key, interval=INTERVAL)


async def dsmr_entry(hass: HomeAssistant, port: str, key: bytes = KEY) -> MockConfigEntry:
    """Core dsmr's entry for the meter at port, with its data as dsmr's own flow stores it.

    Re-made with an update on every telegram: dsmr's default (30 s) would keep the test waiting.
    """
    pytest.importorskip("dsmr_parser", reason="core dsmr needs dsmr-parser (HA's pinned version)")
    result = await hass.config_entries.flow.async_init("dsmr", context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"port": port, "dsmr_version": "MSn"}
    )
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"encryption_key": key.hex()}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    data = dict(result["data"])
    await hass.config_entries.async_remove(result["result"].entry_id)
    entry = MockConfigEntry(
        domain="dsmr",
        title=port,
        unique_id=data["serial_id"],
        data=data,
        options={"time_between_update": 0},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_for(hass, lambda: number(hass, DSMR_IMPORT) is not None, 10)
    return entry


def number(hass: HomeAssistant, entity_id: str) -> float | None:
    """The state of a sensor as a number; None while it has none."""
    state = hass.states.get(entity_id)
    if state is None or state.state in (STATE_UNKNOWN, STATE_UNAVAILABLE):
        return None
    return float(state.state)


async def open_flow(hass: HomeAssistant) -> ConfigFlowResult:
    """Our add flow."""
    return await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})


async def step(
    hass: HomeAssistant, result: ConfigFlowResult, data: dict[str, Any]
) -> ConfigFlowResult:
    """Answer a step (a probe it starts, shown as progress, answered); every text of what comes
    back exists in English."""
    result = await hass.config_entries.flow.async_configure(result["flow_id"], data)
    await hass.async_block_till_done()
    if result["type"] is FlowResultType.SHOW_PROGRESS:
        # The probe's end moves the flow on; the frontend then asks for the next step.
        result = await hass.config_entries.flow.async_configure(result["flow_id"])
        await hass.async_block_till_done()
    strings = await translation.async_get_translations(hass, "en", "config", {DOMAIN})
    prefix = f"component.{DOMAIN}.config"
    if result["type"] in (FlowResultType.FORM, FlowResultType.MENU):
        assert f"{prefix}.step.{result['step_id']}.title" in strings
        options = result.get("menu_options") or []
        assert isinstance(options, list)
        for option in options:
            assert f"{prefix}.step.{result['step_id']}.menu_options.{option}" in strings
    for error in (result.get("errors") or {}).values():
        assert f"{prefix}.error.{error}" in strings, error
    if result["type"] is FlowResultType.ABORT:
        assert f"{prefix}.abort.{result['reason']}" in strings
    if result["type"] is FlowResultType.CREATE_ENTRY and result.get("description"):
        text = strings[f"{prefix}.create_entry.{result['description']}"]
        assert text.format(**(result.get("description_placeholders") or {}))
    return result


async def on_serial(hass: HomeAssistant, device: str) -> ConfigFlowResult:
    """Our add flow with a serial port typed in."""
    result = await step(hass, await open_flow(hass), {"next_step_id": "serial"})
    return await step(hass, result, {CONF_DEVICE: device})


def registry_of(hass: HomeAssistant, entry: ConfigEntry) -> dict[str, tuple[str, str]]:
    """An entry's entities: entity id -> (platform, unique id)."""
    return {
        found.entity_id: (found.platform, found.unique_id)
        for found in er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    }


def smarty_entries(hass: HomeAssistant) -> list[ConfigEntry]:
    return hass.config_entries.async_entries(DOMAIN)


def sensor_issues(hass: HomeAssistant) -> list[str]:
    """The recorder's statistics issues (units changed, state class removed, ...)."""
    return [issue_id for (domain, issue_id) in ir.async_get(hass).issues if domain == "sensor"]


# --- One port, one reader ---


async def test_dsmr_on_the_port_is_offered_never_probed(
    hass: HomeAssistant, pty_meter: PtyMeter
) -> None:
    """With dsmr reading the port, the flow says so instead of blaming the key or the port;
    declining ends the flow with that explanation and leaves dsmr as it was."""
    dsmr = await dsmr_entry(hass, pty_meter.path)
    before = registry_of(hass, dsmr)
    result = await on_serial(hass, pty_meter.path)
    assert result["type"] is FlowResultType.MENU, result.get("errors")
    assert result["step_id"] == "dsmr_port"
    assert result["menu_options"] == ["takeover", "dsmr_keep"]
    assert result["description_placeholders"] == {"integration": "dsmr", "title": pty_meter.path}
    result = await step(hass, result, {"next_step_id": "dsmr_keep"})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "dsmr_reads_port"
    assert dsmr.state is ConfigEntryState.LOADED
    assert registry_of(hass, dsmr) == before
    assert smarty_entries(hass) == []
    # dsmr still reads every telegram.
    seen = number(hass, DSMR_IMPORT)
    await wait_for(hass, lambda: number(hass, DSMR_IMPORT) != seen)
    assert await hass.config_entries.async_unload(dsmr.entry_id)


async def test_the_same_port_by_another_name(
    hass: HomeAssistant, pty_meter: PtyMeter, tmp_path: Path
) -> None:
    """A by-id link and the device it points to are one port."""
    link = tmp_path / "usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0"
    link.symlink_to(pty_meter.path)
    dsmr = await dsmr_entry(hass, str(link))
    result = await on_serial(hass, pty_meter.path)
    assert result["type"] is FlowResultType.MENU
    assert result["step_id"] == "dsmr_port"
    assert await hass.config_entries.async_unload(dsmr.entry_id)


@pytest.mark.parametrize("legacy", [False, True], ids=["socket-url", "host-and-port"])
async def test_dsmr_on_the_bridge(hass: HomeAssistant, tcp_meter: TcpMeter, legacy: bool) -> None:
    """A bridge is the same when host and port are, as a socket:// URL or (older entries) a
    host and a port; another port of the host is another bridge."""
    pytest.importorskip("dsmr_parser", reason="core dsmr needs dsmr-parser")
    data = {
        "dsmr_version": "MSn",
        "encryption_key": KEY.hex(),
        "serial_id": "53414731303330373030303132333435",
        "serial_id_gas": None,
        "protocol": "dsmr_protocol",
    }
    port: dict[str, Any] = (
        {"host": "127.0.0.1", "port": str(tcp_meter.port)}
        if legacy
        else {"port": f"socket://127.0.0.1:{tcp_meter.port}"}
    )
    dsmr = MockConfigEntry(domain="dsmr", data={**data, **port}, title="bridge")
    dsmr.add_to_hass(hass)
    result = await step(hass, await open_flow(hass), {"next_step_id": "network"})
    answer = await step(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: tcp_meter.port})
    assert answer["type"] is FlowResultType.MENU
    assert answer["step_id"] == "dsmr_port"
    async with await serve_tcp(MeterSimulator(KEY, interval=INTERVAL)) as other:
        result = await step(hass, await open_flow(hass), {"next_step_id": "network"})
        result = await step(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: other.port})
        # Another bridge: probed as usual (the key is asked for), and the meter recognised by
        # its serial number.
        assert result["step_id"] == "key"
        result = await step(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
        assert result["type"] is FlowResultType.MENU
        assert result["step_id"] == "dsmr_meter"


# --- Taking over ---


async def test_take_over_keeps_history_statistics_and_dashboard(
    hass: HomeAssistant,
    hass_ws_client: WebSocketGenerator,
    simulator: Household,
    pty_meter: PtyMeter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """dsmr records and its statistics are compiled; the take-over; the meter goes on: the same
    statistics continue, with the register's growth, the energy dashboard set up with dsmr's
    ids stays valid, what the user set on entities and devices stays, dsmr is gone."""
    caplog.set_level("DEBUG")
    assert await async_setup_component(hass, "energy", {})
    # The next 5-minute statistics period for dsmr's states, and the one after it for ours; the
    # clock only goes forward (the websocket's access token was issued in real time).
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    period_1 = now + timedelta(minutes=5 - now.minute % 5)
    period_2 = period_1 + timedelta(minutes=5)
    with freeze_time(period_1 + timedelta(minutes=1), tick=True) as clock:
        dsmr = await dsmr_entry(hass, pty_meter.path)
        dsmr_entities = registry_of(hass, dsmr)
        devices = dr.async_get(hass)
        entities = er.async_get(hass)
        electricity = entities.async_get(DSMR_IMPORT)
        gas = entities.async_get(DSMR_GAS)
        assert electricity is not None
        assert gas is not None
        assert electricity.device_id is not None
        assert gas.device_id is not None
        # What the user set: names, icons, areas, hidden, enabled, on entities and devices.
        cellar = ar.async_get(hass).async_create("Cellar")
        garden = ar.async_get(hass).async_create("Garden")
        entities.async_update_entity(
            DSMR_IMPORT, name="Grid import", icon="mdi:transmission-tower", area_id=garden.id
        )
        entities.async_update_entity(DSMR_DELIVERY, hidden_by=er.RegistryEntryHider.USER)
        entities.async_update_entity(DSMR_VOLTAGE, disabled_by=None)
        devices.async_update_device(electricity.device_id, area_id=cellar.id, name_by_user="Smarty")
        devices.async_update_device(gas.device_id, area_id=garden.id)
        # Automations and scripts aimed at dsmr's devices (not at its entities).
        assert await async_setup_component(
            hass,
            "automation",
            {
                "automation": {
                    "alias": "Refresh the meter",
                    "triggers": [{"trigger": "time_pattern", "hours": "/1"}],
                    "actions": [
                        {
                            "action": "homeassistant.update_entity",
                            "target": {"device_id": electricity.device_id},
                        }
                    ],
                }
            },
        )
        assert await async_setup_component(
            hass,
            "script",
            {
                "script": {
                    "gas_refresh": {
                        "sequence": [
                            {
                                "action": "homeassistant.update_entity",
                                "target": {"device_id": gas.device_id},
                            }
                        ]
                    }
                }
            },
        )
        manager = await energy_data.async_get_manager(hass)
        await manager.async_update(
            {
                "energy_sources": [
                    {
                        "type": "grid",
                        "stat_energy_from": DSMR_IMPORT,
                        "stat_energy_to": DSMR_EXPORT,
                        "stat_cost": None,
                        "entity_energy_price": None,
                        "number_energy_price": None,
                        "stat_compensation": None,
                        "entity_energy_price_export": None,
                        "number_energy_price_export": None,
                        "cost_adjustment_day": 0,
                    },
                    {
                        "type": "gas",
                        "stat_energy_from": DSMR_GAS,
                        "stat_cost": None,
                        "entity_energy_price": None,
                        "number_energy_price": None,
                    },
                ],
                "device_consumption": [],
            }
        )
        # dsmr's statistics of its first period.
        first = number(hass, DSMR_IMPORT)
        await wait_for(hass, lambda: number(hass, DSMR_IMPORT) != first, 10)
        await async_wait_recording_done(hass)
        do_adhoc_statistics(hass, start=period_1)
        await async_wait_recording_done(hass)
        before = await compiled(hass, DSMR_IMPORT, period_1)
        assert before["state"] > first
        clock.move_to(period_2 + timedelta(seconds=30))

        result = await on_serial(hass, pty_meter.path)
        assert result["step_id"] == "dsmr_port"
        result = await step(hass, result, {"next_step_id": "takeover"})
        assert result["type"] is FlowResultType.CREATE_ENTRY, result.get("errors")
        assert result["description"] == "takeover"
        ours = result["result"]
        assert ours.data[CONF_DECRYPTION_KEY] == KEY.hex().upper()
        placeholders = result["description_placeholders"]
        assert placeholders is not None
        assert placeholders["integration"] == "dsmr"
        assert placeholders["automations"] == (
            "Refresh the meter (automation.refresh_the_meter), gas_refresh (script.gas_refresh)"
        )
        # dsmr and its devices are gone; its entities are ours, under their entity ids.
        assert hass.config_entries.async_get_entry(dsmr.entry_id) is None
        assert dr.async_entries_for_config_entry(devices, dsmr.entry_id) == []
        assert devices.async_get(electricity.device_id) is None
        serial = simulator.serial
        moved = registry_of(hass, ours)
        for entity_id, obis in TAKEN_OVER.items():
            assert moved[entity_id] == (DOMAIN, value_unique_id(serial, obis)), entity_id
        counters = {e for e, (_, unique) in dsmr_entities.items() if unique.endswith("_count")}
        assert counters
        left = set(dsmr_entities) - set(moved)
        assert left == (set() if COUNTERS_CONTINUE else counters)
        assert placeholders["moved"] == str(len(dsmr_entities) - len(left))
        assert placeholders["left"] == (", ".join(sorted(left)) or "-")
        imported = entities.async_get(DSMR_IMPORT)
        assert imported is not None
        assert (imported.name, imported.icon, imported.area_id) == (
            "Grid import",
            "mdi:transmission-tower",
            garden.id,
        )
        delivery = entities.async_get(DSMR_DELIVERY)
        voltage = entities.async_get(DSMR_VOLTAGE)
        current = entities.async_get(DSMR_CURRENT)
        assert delivery is not None
        assert delivery.hidden_by is er.RegistryEntryHider.USER
        assert voltage is not None
        assert voltage.disabled_by is None
        assert current is not None
        assert current.disabled_by is er.RegistryEntryDisabler.INTEGRATION
        meter_device = devices.async_get_device_by_identifier((DOMAIN, serial), ours.entry_id)
        gas_device = devices.async_get_device_by_identifier(
            (DOMAIN, f"{serial}_mbus_1"), ours.entry_id
        )
        assert meter_device is not None
        assert gas_device is not None
        assert (meter_device.area_id, meter_device.name_by_user) == (cellar.id, "Smarty")
        assert gas_device.area_id == garden.id
        assert imported.device_id == meter_device.id
        assert entities.async_get(DSMR_GAS).device_id == gas_device.id  # type: ignore[union-attr]

        # The meter goes on; the statistics of the next period continue dsmr's. Our totals
        # take a new state once a minute by default: here with every telegram, so that the
        # rise shows within the test's seconds (the option is read live, nothing reloads).
        await wait_for(hass, lambda: ours.state is ConfigEntryState.LOADED)
        hass.config_entries.async_update_entry(ours, options={**ours.options, **EVERY_TOTAL})
        await wait_for(hass, lambda: (number(hass, DSMR_IMPORT) or 0) > before["state"] + 0.002)
        await async_wait_recording_done(hass)
        do_adhoc_statistics(hass, start=period_2)
        await async_wait_recording_done(hass)
        after = await compiled(hass, DSMR_IMPORT, period_2)
        assert after["state"] > before["state"]
        assert after["sum"] - before["sum"] == pytest.approx(after["state"] - before["state"])
        ids = await hass.async_add_executor_job(statistics.list_statistic_ids, hass)
        energy = {found["statistic_id"] for found in ids if found["unit_class"] == "energy"}
        # One statistic per register, dsmr's: no second one of ours next to it.
        assert energy == {DSMR_IMPORT, DSMR_EXPORT}
        assert await compiled(hass, DSMR_GAS, period_2)

        client = await hass_ws_client(hass)
        await client.send_json_auto_id({"type": "energy/validate"})
        validation = await client.receive_json()
        assert validation["result"] == {
            "energy_sources": [[], []],
            "device_consumption": [],
            "device_consumption_water": [],
        }
        await client.send_json_auto_id({"type": "recorder/update_statistics_issues"})
        assert (await client.receive_json())["success"]
        await hass.async_block_till_done()
        assert sensor_issues(hass) == []
        assert await hass.config_entries.async_unload(ours.entry_id)
    assert KEY.hex().upper() not in caplog.text
    assert KEY.hex() not in caplog.text


async def compiled(hass: HomeAssistant, statistic_id: str, start: datetime) -> dict[str, Any]:
    """The 5-minute statistics row of a period."""

    def read() -> dict[str, list[statistics.StatisticsRow]]:
        return statistics.statistics_during_period(
            hass,
            start,
            start + timedelta(minutes=5),
            {statistic_id},
            "5minute",
            None,
            {"state", "sum"},
        )

    (row,) = (await hass.async_add_executor_job(read))[statistic_id]
    return dict(row)


# --- Failures on the way: dsmr runs as before ---


async def start_takeover(hass: HomeAssistant, device: str) -> ConfigFlowResult:
    """Our add flow on the port dsmr reads, up to taking it over."""
    result = await on_serial(hass, device)
    assert result["step_id"] == "dsmr_port"
    return await step(hass, result, {"next_step_id": "takeover"})


def assert_untouched(hass: HomeAssistant, dsmr: ConfigEntry, before: dict[str, Any]) -> None:
    """The dsmr entry runs, with its entities and devices as they were; no entry of ours."""
    assert dsmr.state is ConfigEntryState.LOADED
    assert registry_of(hass, dsmr) == before
    assert len(dr.async_entries_for_config_entry(dr.async_get(hass), dsmr.entry_id)) == 3
    assert smarty_entries(hass) == []


async def test_wrong_keys_leave_dsmr_running(
    hass: HomeAssistant, simulator: Household, pty_meter: PtyMeter
) -> None:
    """The meter's key changed, so dsmr's no longer verifies; a wrong key typed in; the dialog
    closed: dsmr is set up again after each try, as it was, and reads again with its key."""
    dsmr = await dsmr_entry(hass, pty_meter.path)
    before = registry_of(hass, dsmr)
    simulator.set_key(NEW_KEY)
    result = await start_takeover(hass, pty_meter.path)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "takeover_key"
    assert result["errors"] == {"base": "invalid_key"}
    assert_untouched(hass, dsmr, before)
    result = await step(hass, result, {CONF_DECRYPTION_KEY: "not a key"})
    assert result["errors"] == {CONF_DECRYPTION_KEY: "invalid_key_format"}
    result = await step(hass, result, {CONF_DECRYPTION_KEY: OTHER_KEY.hex()})
    assert result["errors"] == {"base": "invalid_key"}
    assert_untouched(hass, dsmr, before)
    hass.config_entries.flow.async_abort(result["flow_id"])
    await hass.async_block_till_done()
    assert_untouched(hass, dsmr, before)
    simulator.set_key(KEY)
    seen = number(hass, DSMR_IMPORT)
    await wait_for(hass, lambda: number(hass, DSMR_IMPORT) not in (seen, None))
    assert await hass.config_entries.async_unload(dsmr.entry_id)


async def test_the_meters_new_key_takes_over(
    hass: HomeAssistant, simulator: Household, pty_meter: PtyMeter
) -> None:
    """dsmr's key no longer verifies: the key typed in does, and the take-over goes through."""
    dsmr = await dsmr_entry(hass, pty_meter.path)
    simulator.set_key(NEW_KEY)
    result = await start_takeover(hass, pty_meter.path)
    assert result["errors"] == {"base": "invalid_key"}
    result = await step(hass, result, {CONF_DECRYPTION_KEY: NEW_KEY.hex()})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    ours = result["result"]
    assert ours.data[CONF_DECRYPTION_KEY] == NEW_KEY.hex().upper()
    assert hass.config_entries.async_get_entry(dsmr.entry_id) is None
    assert registry_of(hass, ours)[DSMR_IMPORT] == (
        DOMAIN,
        value_unique_id(simulator.serial, "1-0:1.8.0"),
    )
    await wait_for(hass, lambda: number(hass, DSMR_IMPORT) is not None)
    assert await hass.config_entries.async_unload(ours.entry_id)


async def test_port_gone_leaves_dsmr_running(hass: HomeAssistant, pty_meter: PtyMeter) -> None:
    """The cable is pulled after dsmr read it: the check fails and dsmr is set up again."""
    dsmr = await dsmr_entry(hass, pty_meter.path)
    before = registry_of(hass, dsmr)
    pty_meter.close()
    result = await start_takeover(hass, pty_meter.path)
    assert result["step_id"] == "takeover_key"
    assert result["errors"] == {"base": "cannot_connect"}
    assert_untouched(hass, dsmr, before)
    assert await hass.config_entries.async_unload(dsmr.entry_id)


async def test_meter_added_already_leaves_dsmr_running(
    hass: HomeAssistant, simulator: Household, pty_meter: PtyMeter
) -> None:
    """The meter turns out to have an entry of ours (on another path): the flow ends there."""
    dsmr = await dsmr_entry(hass, pty_meter.path)
    before = registry_of(hass, dsmr)
    MockConfigEntry(
        domain=DOMAIN,
        unique_id=simulator.serial,
        data={"connection_type": "serial", CONF_DEVICE: "/dev/ttyUSB9"},
    ).add_to_hass(hass)
    result = await start_takeover(hass, pty_meter.path)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert dsmr.state is ConfigEntryState.LOADED
    assert registry_of(hass, dsmr) == before
    assert await hass.config_entries.async_unload(dsmr.entry_id)


async def test_another_meter_on_the_port_leaves_dsmr_running(
    hass: HomeAssistant, pty_meter: PtyMeter
) -> None:
    """The port now shows another meter than dsmr's: its history is not this meter's."""
    dsmr = await dsmr_entry(hass, pty_meter.path)
    before = registry_of(hass, dsmr)
    hass.config_entries.async_update_entry(
        dsmr, data={**dsmr.data, "serial_id": b"SAG1030700099999".hex().upper()}
    )
    await hass.async_block_till_done()
    result = await start_takeover(hass, pty_meter.path)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "dsmr_other_meter"
    assert_untouched(hass, dsmr, before)
    assert await hass.config_entries.async_unload(dsmr.entry_id)


async def test_our_setup_without_the_plan_leaves_dsmr_running(
    hass: HomeAssistant, pty_meter: PtyMeter
) -> None:
    """Our entry is created but its setup never gets to the moves (it fails before): nothing
    moved, so nothing of dsmr's is removed and dsmr runs again."""
    dsmr = await dsmr_entry(hass, pty_meter.path)
    before = registry_of(hass, dsmr)
    with patch("custom_components.smarty_p1.async_setup_entry", return_value=False):
        result = await start_takeover(hass, pty_meter.path)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert "description" not in result or result["description"] is None
    assert dsmr.state is ConfigEntryState.LOADED
    assert registry_of(hass, dsmr) == before
    await hass.config_entries.async_remove(result["result"].entry_id)
    assert await hass.config_entries.async_unload(dsmr.entry_id)


async def test_a_flow_that_breaks_at_the_end_leaves_dsmr_running(
    hass: HomeAssistant, pty_meter: PtyMeter
) -> None:
    """Adding our entry fails (a bug in Home Assistant, say) and the dialog is closed: the plan
    is dropped and dsmr set up again."""
    dsmr = await dsmr_entry(hass, pty_meter.path)
    before = registry_of(hass, dsmr)
    result = await on_serial(hass, pty_meter.path)
    probing = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": "takeover"}
    )
    assert probing["type"] is FlowResultType.SHOW_PROGRESS
    await hass.async_block_till_done()
    with (
        patch.object(hass.config_entries, "async_add", side_effect=RuntimeError("broken")),
        pytest.raises(RuntimeError),
    ):
        # The probe has answered: the flow goes on to create the entry, which fails.
        await hass.config_entries.flow.async_configure(result["flow_id"])
    hass.config_entries.flow.async_abort(result["flow_id"])
    await hass.async_block_till_done()
    assert_untouched(hass, dsmr, before)
    assert await hass.config_entries.async_unload(dsmr.entry_id)


# --- The same meter, read elsewhere ---


@pytest.mark.parametrize("take_over", [True, False], ids=["take-over", "next-to-it"])
async def test_dsmr_of_the_meter_elsewhere(
    hass: HomeAssistant,
    simulator: Household,
    pty_meter: PtyMeter,
    tcp_meter: TcpMeter,
    take_over: bool,
) -> None:
    """dsmr reads the meter through a bridge, we through the cable: the meter is known by its
    serial number once it answered; taking over or adding it next to dsmr."""
    dsmr = await dsmr_entry(hass, f"socket://127.0.0.1:{tcp_meter.port}")
    before = registry_of(hass, dsmr)
    result = await on_serial(hass, pty_meter.path)
    assert result["step_id"] == "key"
    result = await step(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
    assert result["type"] is FlowResultType.MENU
    assert result["step_id"] == "dsmr_meter"
    assert result["menu_options"] == ["takeover", "tariff"]
    if take_over:
        result = await step(hass, result, {"next_step_id": "takeover"})
        assert result["type"] is FlowResultType.CREATE_ENTRY
        assert hass.config_entries.async_get_entry(dsmr.entry_id) is None
        moved = registry_of(hass, result["result"])
        assert moved[DSMR_GAS] == (DOMAIN, value_unique_id(simulator.serial, "0-1:24.2.1"))
    else:
        result = await step(hass, result, {"next_step_id": "tariff"})
        result = await step(hass, result, {})
        assert result["type"] is FlowResultType.CREATE_ENTRY
        assert result.get("description") is None
        assert registry_of(hass, dsmr) == before
        assert dsmr.state is ConfigEntryState.LOADED
        assert DSMR_IMPORT not in registry_of(hass, result["result"])
        assert await hass.config_entries.async_unload(dsmr.entry_id)
    assert await hass.config_entries.async_unload(result["result"].entry_id)


async def test_reconfigure_onto_the_port_dsmr_reads(
    hass: HomeAssistant, pty_meter: PtyMeter, tcp_meter: TcpMeter
) -> None:
    """Moving an entry of ours onto dsmr's port is refused with the reason, never probed."""
    dsmr = await dsmr_entry(hass, pty_meter.path)
    ours = MockConfigEntry(
        domain=DOMAIN,
        unique_id="SAG1030700012345",
        data={
            "connection_type": "network",
            CONF_HOST: "127.0.0.1",
            CONF_PORT: tcp_meter.port,
            CONF_DECRYPTION_KEY: KEY.hex().upper(),
            "serial_number": "SAG1030700012345",
        },
    )
    ours.add_to_hass(hass)
    result = await ours.start_reconfigure_flow(hass)
    result = await step(hass, result, {"next_step_id": "serial"})
    result = await step(hass, result, {CONF_DEVICE: pty_meter.path})
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "dsmr_reads_port"}
    assert dsmr.state is ConfigEntryState.LOADED
    assert await hass.config_entries.async_unload(dsmr.entry_id)


# --- dsmr_encrypted (a custom integration: its registry entries and a stand-in reader) ---


class DsmrEncryptedFlow(ConfigFlow):
    """dsmr_encrypted's flow handler, which its entries need (its steps are not used here)."""

    VERSION = 1


@pytest.fixture
def dsmr_encrypted(hass: HomeAssistant) -> Iterator[None]:
    """dsmr_encrypted while it is set up: it holds its port (locked, as a serial reader locks
    it) and reads every byte, so a probe of the port cannot work until it is unloaded."""
    readers: dict[str, int] = {}

    async def setup_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
        fd = os.open(entry.data["port"], os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        hass.loop.add_reader(fd, os.read, fd, 4096)
        readers[entry.entry_id] = fd
        # The states its entities show (a reading of gas, a power in W as the user chose).
        hass.states.async_set(DSMR_GAS, "1234.567", {"unit_of_measurement": "m³"})
        hass.states.async_set(DSMR_POWER, "250", {"unit_of_measurement": "W"})
        return True

    async def unload_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
        fd = readers.pop(entry.entry_id)
        hass.loop.remove_reader(fd)
        os.close(fd)
        # Its entities go with it, as entities do when their entry unloads.
        for entity in er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id):
            hass.states.async_remove(entity.entity_id)
        return True

    mock_integration(
        hass,
        MockModule(
            "dsmr_encrypted", async_setup_entry=setup_entry, async_unload_entry=unload_entry
        ),
    )
    mock_platform(hass, "dsmr_encrypted.config_flow", None)
    with mock_config_flow("dsmr_encrypted", DsmrEncryptedFlow):
        yield


# The entities dsmr_encrypted makes for a Smarty (MSn): its table has no energy totals for MSn,
# so these are the power, phase, voltage and current values and the M-Bus readings; and one of
# an older version (the active tariff, which a Smarty does not send and we do not have).
ENCRYPTED_ENTITIES = {
    "timestamp": ("sensor.electricity_meter_timestamp", None, None, "timestamp"),
    # Shown in W: a sensor registers its display unit, the user's choice of entity option.
    "current_electricity_usage": (DSMR_POWER, "W", "measurement", "power"),
    "current_electricity_delivery": (DSMR_DELIVERY, "kW", "measurement", "power"),
    "instantaneous_voltage_l1": (DSMR_VOLTAGE, "V", "measurement", "voltage"),
    "instantaneous_current_l1": (DSMR_CURRENT, "A", "measurement", "current"),
    "electricity_active_tariff": (
        "sensor.electricity_meter_active_tariff",
        None,
        None,
        "enum",
    ),
}


@pytest.mark.usefixtures("dsmr_encrypted")
async def test_take_over_dsmr_encrypted(
    hass: HomeAssistant, simulator: Household, pty_meter: PtyMeter
) -> None:
    """The same take-over for a dsmr_encrypted entry: its entities continue here under their
    entity ids (history included), the one we do not have is named, its devices are gone."""
    serial_hex = simulator.serial.encode().hex().upper()
    entry = MockConfigEntry(
        domain="dsmr_encrypted",
        title=pty_meter.path,
        unique_id=serial_hex,
        data={
            "port": pty_meter.path,
            "dsmr_version": "MSn",
            "encryption_key": KEY.hex(),
            "serial_id": serial_hex,
            "serial_id_gas": None,
            "protocol": "dsmr_protocol",
        },
    )
    entry.add_to_hass(hass)
    devices = dr.async_get(hass)
    entities = er.async_get(hass)
    electricity = devices.async_get_or_create(
        config_entry_id=entry.entry_id,
        identifiers={("dsmr_encrypted", serial_hex)},
        name="Electricity Meter",
    )
    for key, (entity_id, unit, state_class, device_class) in ENCRYPTED_ENTITIES.items():
        entities.async_get_or_create(
            "sensor",
            "dsmr_encrypted",
            f"{serial_hex}_{key}",
            config_entry=entry,
            device_id=electricity.id,
            suggested_object_id=entity_id.removeprefix("sensor."),
            unit_of_measurement=unit,
            capabilities={"state_class": state_class} if state_class else None,
            original_device_class=device_class,
        )
    entities.async_update_entity_options(DSMR_POWER, "sensor", {"unit_of_measurement": "W"})
    entities.async_update_entity(DSMR_POWER, name="House")
    gas_id = str(simulator.last_values["0-1:96.1.0"]).encode().hex().upper()
    gas = devices.async_get_or_create(
        config_entry_id=entry.entry_id,
        identifiers={("dsmr_encrypted", gas_id)},
        name="Gas Meter",
    )
    entities.async_get_or_create(
        "sensor",
        "dsmr_encrypted",
        gas_id,
        config_entry=entry,
        device_id=gas.id,
        suggested_object_id="gas_meter_gas_consumption",
        unit_of_measurement="m³",
        capabilities={"state_class": "total_increasing"},
        original_device_class="gas",
    )
    assert await hass.config_entries.async_setup(entry.entry_id)
    await async_wait_recording_done(hass)

    result = await on_serial(hass, pty_meter.path)
    assert result["step_id"] == "dsmr_port"
    assert result["description_placeholders"]["integration"] == "dsmr_encrypted"  # type: ignore[index]
    result = await step(hass, result, {"next_step_id": "takeover"})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    ours = result["result"]
    placeholders = result["description_placeholders"]
    assert placeholders is not None
    assert placeholders["left"] == "sensor.electricity_meter_active_tariff"
    assert placeholders["automations"] == "-"
    assert hass.config_entries.async_get_entry(entry.entry_id) is None
    assert devices.async_get(electricity.id) is None
    assert devices.async_get(gas.id) is None
    assert entities.async_get("sensor.electricity_meter_active_tariff") is None
    moved = registry_of(hass, ours)
    for key, (entity_id, *_) in ENCRYPTED_ENTITIES.items():
        if key != "electricity_active_tariff":
            assert moved[entity_id] == (DOMAIN, value_unique_id(simulator.serial, DSMR_VALUES[key]))
    assert moved[DSMR_GAS] == (DOMAIN, value_unique_id(simulator.serial, "0-1:24.2.1"))
    power = entities.async_get(DSMR_POWER)
    assert power is not None
    assert power.name == "House"
    # Our readings go on under the same entity ids, after dsmr_encrypted's.
    await wait_for(hass, lambda: number(hass, DSMR_GAS) not in (None, 1234.567))
    await wait_for(hass, lambda: number(hass, DSMR_POWER) not in (None, 250))
    assert state_of(hass, DSMR_POWER).attributes["unit_of_measurement"] == "W"
    await async_wait_recording_done(hass)
    history = await hass.async_add_executor_job(
        get_significant_states, hass, dt_util.utcnow() - timedelta(hours=1), None, [DSMR_GAS]
    )
    values = [state.state for state in history[DSMR_GAS] if isinstance(state, State)]
    # dsmr_encrypted's reading, then ours (the simulated gas meter is at about 12988 m³).
    assert values[0] == "1234.567"
    assert float(values[-1]) > 12000
    assert await hass.config_entries.async_unload(ours.entry_id)


@pytest.mark.usefixtures("dsmr_encrypted")
async def test_take_over_an_older_disabled_entry(
    hass: HomeAssistant, simulator: Household, pty_meter: PtyMeter
) -> None:
    """An entry of an older dsmr_encrypted, disabled by the user: no key stored (that version
    kept it elsewhere), a gas reading from before M-Bus devices, a water reading keyed by its
    channel, an entity without a device. Nothing reads the port, so nothing is unloaded or set
    up again; the key is asked for; the entities come back enabled with ours."""
    serial_hex = simulator.serial.encode().hex().upper()
    entry = MockConfigEntry(
        domain="dsmr_encrypted",
        title=pty_meter.path,
        data={"port": pty_meter.path, "dsmr_version": "MSn", "serial_id": serial_hex},
        disabled_by=ConfigEntryDisabler.USER,
    )
    entry.add_to_hass(hass)
    entities = er.async_get(hass)
    for unique_id, object_id, unit, device_class in (
        (f"{serial_hex}_hourly_gas_meter_reading", "gas_meter_gas_consumption", "m³", "gas"),
        (f"{serial_hex}_2", "water_meter_water_consumption", "m³", "water"),
        (f"{serial_hex}_electricity_imported_total", "energy_consumption_total", "kWh", "energy"),
        ("something_else", "electricity_meter_frequency", "Hz", "frequency"),
    ):
        entities.async_get_or_create(
            "sensor",
            "dsmr_encrypted",
            unique_id,
            config_entry=entry,
            suggested_object_id=object_id,
            unit_of_measurement=unit,
            capabilities={"state_class": "total_increasing"},
            original_device_class=device_class,
            # As Home Assistant marks the entities of a disabled entry.
            disabled_by=er.RegistryEntryDisabler.CONFIG_ENTRY,
        )
    assert entities.async_get(DSMR_GAS).disabled_by is er.RegistryEntryDisabler.CONFIG_ENTRY  # type: ignore[union-attr]
    result = await on_serial(hass, pty_meter.path)
    assert result["step_id"] == "dsmr_port"
    result = await step(hass, result, {"next_step_id": "takeover"})
    assert result["step_id"] == "takeover_key"
    assert result["errors"] == {"base": "key_required"}
    assert entry.state is ConfigEntryState.NOT_LOADED
    result = await step(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    moved = registry_of(hass, result["result"])
    assert moved[DSMR_GAS] == (DOMAIN, value_unique_id(simulator.serial, "0-1:24.2.1"))
    assert moved[DSMR_WATER] == (DOMAIN, value_unique_id(simulator.serial, "0-2:24.2.1"))
    assert moved["sensor.energy_consumption_total"] == (
        DOMAIN,
        value_unique_id(simulator.serial, "1-0:1.8.0"),
    )
    assert result["description_placeholders"]["left"] == "sensor.electricity_meter_frequency"  # type: ignore[index]
    gas = entities.async_get(DSMR_GAS)
    assert gas is not None
    assert gas.disabled_by is None
    await wait_for(hass, lambda: number(hass, DSMR_GAS) is not None)
    assert await hass.config_entries.async_unload(result["result"].entry_id)


async def test_no_dsmr_entry_for_other_connections(hass: HomeAssistant, tmp_path: Path) -> None:
    """A dsmr entry on an ESPHome serial proxy reads no port or bridge of ours; an MQTT topic
    is nothing dsmr reads: both flows go on as without dsmr."""
    MockConfigEntry(
        domain="dsmr",
        data={"port": "esphome://192.0.2.7:6053?port_name=P1", "dsmr_version": "MSn"},
    ).add_to_hass(hass)
    MockConfigEntry(
        domain="dsmr", data={"port": str(tmp_path / "gone"), "dsmr_version": "MSn"}
    ).add_to_hass(hass)
    result = await step(hass, await open_flow(hass), {"next_step_id": "mqtt_topic"})
    result = await step(hass, result, {"topic": "smarty/raw"})
    assert result["errors"] == {"base": "mqtt_not_setup"}
    result = await on_serial(hass, str(tmp_path / "nothing"))
    assert result["errors"] == {"base": "cannot_connect"}
    # Another meter than any dsmr entry's: added as usual.
    async with await serve_tcp(
        MeterSimulator(KEY, serial="SAG1030700099999", interval=INTERVAL)
    ) as other:
        result = await step(hass, await open_flow(hass), {"next_step_id": "network"})
        result = await step(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: other.port})
        result = await step(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
        assert result["step_id"] == "tariff"
