"""Which sensors a meter gets, their devices, a snapshot from a real vector, energy dashboard."""

from __future__ import annotations

from datetime import UTC, datetime
from unittest.mock import patch

import pytest
from homeassistant.const import CONF_DEVICE, STATE_UNKNOWN, EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry, snapshot_platform
from syrupy.assertion import SnapshotAssertion

from custom_components.smarty_p1.const import (
    CONF_CONNECTION_TYPE,
    CONF_DECRYPTION_KEY,
    CONF_SERIAL_NUMBER,
    CONNECTION_SERIAL,
    DOMAIN,
)
from custom_components.smarty_p1.coordinator import SmartyCoordinator
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter

from .conftest import (
    INTERVAL,
    KEY,
    encrypt,
    load_fixture,
    make_entry,
    setup,
    state_of,
    wait_for,
    with_values,
)

VECTOR = load_fixture("enc_synthetic_spec_appendix_4mbus")
VECTOR_SERIAL = "SAG1030790002574"


@pytest.fixture
def vector_entry(quiet_pty: PtyMeter) -> MockConfigEntry:
    """An entry for the meter of the specification's example (four M-Bus channels)."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=f"Smarty {VECTOR_SERIAL}",
        unique_id=VECTOR_SERIAL,
        data={
            CONF_CONNECTION_TYPE: CONNECTION_SERIAL,
            CONF_DEVICE: quiet_pty.path,
            CONF_DECRYPTION_KEY: VECTOR["key_hex"].upper(),
            CONF_SERIAL_NUMBER: VECTOR_SERIAL,
        },
    )


async def feed_vector(
    hass: HomeAssistant, entry: MockConfigEntry, quiet_pty: PtyMeter
) -> SmartyCoordinator:
    """Set up the vector's entry and send its real frame once."""
    coordinator = await setup(hass, entry)
    quiet_pty.inject(bytes.fromhex(VECTOR["frame_hex"]))
    await wait_for(hass, lambda: coordinator.health.stats.telegrams == 1)
    return coordinator


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_snapshot_spec_example(
    hass: HomeAssistant,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
    vector_entry: MockConfigEntry,
    quiet_pty: PtyMeter,
) -> None:
    """Every entity of the specification's example telegram, with its state."""
    moment = datetime(2020, 7, 6, 8, 41, 58, tzinfo=UTC)
    with patch("custom_components.smarty_p1.coordinator.dt_util.utcnow", return_value=moment):
        await feed_vector(hass, vector_entry, quiet_pty)
    await snapshot_platform(hass, entity_registry, snapshot, vector_entry.entry_id)
    assert await hass.config_entries.async_unload(vector_entry.entry_id)


async def test_mbus_devices(
    hass: HomeAssistant,
    device_registry: dr.DeviceRegistry,
    entity_registry: er.EntityRegistry,
    vector_entry: MockConfigEntry,
    quiet_pty: PtyMeter,
) -> None:
    """Each M-Bus channel is a device reached through the meter, typed by 0-x:24.1.0."""
    await feed_vector(hass, vector_entry, quiet_pty)
    entry_id = vector_entry.entry_id
    meter = device_registry.async_get_device_by_identifier((DOMAIN, VECTOR_SERIAL), entry_id)
    assert meter is not None
    assert (meter.manufacturer, meter.model) == ("Sagemcom", "T210-D")
    assert meter.serial_number == VECTOR_SERIAL
    assert meter.sw_version == "P1 42"
    for channel in range(1, 5):
        device = device_registry.async_get_device_by_identifier(
            (DOMAIN, f"{VECTOR_SERIAL}_mbus_{channel}"), entry_id
        )
        assert device is not None
        assert device.via_device_id == meter.id
        reading = entity_registry.async_get_entity_id(
            "sensor",
            DOMAIN,
            f"{VECTOR_SERIAL}_0-{channel}:24.2.1_mbus_{'gas' if channel in (1, 4) else 'water'}",
        )
        assert reading is not None
        entity = entity_registry.async_get(reading)
        assert entity is not None
        assert entity.device_id == device.id
    gas = device_registry.async_get_device_by_identifier(
        (DOMAIN, f"{VECTOR_SERIAL}_mbus_1"), entry_id
    )
    assert gas is not None
    assert gas.serial_number == "FLO189900060355"
    # Channel 2 has a placeholder reading (632525252525S): no value, never 0.
    water = entity_registry.async_get_entity_id(
        "sensor", DOMAIN, f"{VECTOR_SERIAL}_0-2:24.2.1_mbus_water"
    )
    assert state_of(hass, water).state == STATE_UNKNOWN
    gas_reading = entity_registry.async_get_entity_id(
        "sensor", DOMAIN, f"{VECTOR_SERIAL}_0-1:24.2.1_mbus_gas"
    )
    state = state_of(hass, gas_reading)
    assert state.state == "0.006"
    assert state.attributes["device_class"] == "gas"
    assert state.attributes["unit_of_measurement"] == "m³"
    assert await hass.config_entries.async_unload(vector_entry.entry_id)


async def test_single_phase_meter_has_no_l2_l3(hass: HomeAssistant, tmp_path: object) -> None:
    """A single-phase meter sends no L2/L3 lines, so it gets no L2/L3 sensors."""
    simulator = MeterSimulator(KEY, phases=1, mbus=(), interval=INTERVAL)
    with PtyMeter(simulator) as meter:
        entry = make_entry(
            simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: meter.path}
        )
        coordinator = await setup(hass, entry)
        await wait_for(hass, lambda: coordinator.health.stats.telegrams >= 1)
        entries = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
        unique_ids = {entity.unique_id for entity in entries}
        assert f"{simulator.serial}_1-0:32.7.0_voltage_phase_1" in unique_ids
        assert not [uid for uid in unique_ids if ":52." in uid or ":72." in uid]
        assert not [uid for uid in unique_ids if "phase_2" in uid or "phase_3" in uid]
        assert not [uid for uid in unique_ids if "mbus" in uid]
        assert await hass.config_entries.async_unload(entry.entry_id)


async def test_enabled_by_default_are_the_quiet_ones(
    hass: HomeAssistant, simulator: MeterSimulator, quiet_pty: PtyMeter
) -> None:
    """Enabled at first: the energy dashboard's values, the meter's state and counters. Values
    that move with every telegram and few users chart (per phase, reactive, apparent, times)
    exist but wait to be enabled, as in core's dsmr: each would cost a recorder row every 10 s."""
    entry = make_entry(
        simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: quiet_pty.path}
    )
    coordinator = await setup(hass, entry)
    simulator.next_frame()
    quiet_pty.inject(encrypt(simulator.last_telegram, 1))
    await wait_for(hass, lambda: coordinator.health.stats.telegrams == 1)
    entries = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    prefix = f"{simulator.serial}_"
    enabled = {e.unique_id.removeprefix(prefix) for e in entries if e.disabled_by is None}
    assert enabled == {
        "1-0:1.8.0_energy_import",
        "1-0:2.8.0_energy_export",
        "1-0:1.7.0_power_import",
        "1-0:2.7.0_power_export",
        "0-0:17.0.0_power_limit",
        "1-1:31.4.0_current_limit_import",
        "1-1:31.4.0_current_limit_export",
        "0-0:96.3.10_breaker_state",
        "0-0:96.7.21_power_failures",
        *(f"1-0:{code}.32.0_voltage_sags_{n}" for n, code in enumerate((32, 52, 72), 1)),
        *(f"1-0:{code}.36.0_voltage_swells_{n}" for n, code in enumerate((32, 52, 72), 1)),
        "0-0:96.13.0_message",
        "0-1:24.2.1_mbus_gas",
        "0-1:24.4.0_valve_position",
        "0-2:24.2.1_mbus_water",
        "0-2:24.4.0_valve_position",
        "rejected_tag",
        "rejected_crc",
    }
    disabled = {e.unique_id.removeprefix(prefix) for e in entries if e.disabled_by is not None}
    assert {"1-0:32.7.0_voltage_phase_1", "1-0:21.7.0_power_import_phase_1"} <= disabled
    # Without an export the net power would repeat the import power: no such sensor.
    assert "1-0:2.7.0_net_power" not in enabled | disabled
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_net_power_appears_with_the_first_export(
    hass: HomeAssistant, simulator: MeterSimulator, quiet_pty: PtyMeter
) -> None:
    """Solar panels installed later: the net power sensor appears with the first exported Wh."""
    entry = make_entry(
        simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: quiet_pty.path}
    )
    coordinator = await setup(hass, entry)
    simulator.next_frame()
    no_export = with_values(simulator.last_telegram, **{"1-0:1.7.0": "01.500*kW"})
    registry = er.async_get(hass)
    unique_id = f"{simulator.serial}_1-0:2.7.0_net_power"
    for counter in (1, 2):
        quiet_pty.inject(encrypt(no_export, counter))
        await wait_for(hass, lambda: coordinator.health.stats.telegrams == counter)  # noqa: B023
        assert registry.async_get_entity_id("sensor", DOMAIN, unique_id) is None
    exported = with_values(no_export, **{"1-0:2.8.0": "000000.001*kWh", "1-0:2.7.0": "00.250*kW"})
    quiet_pty.inject(encrypt(exported, 3))
    await wait_for(hass, lambda: coordinator.health.stats.telegrams == 3)
    await hass.async_block_till_done()
    entity_id = registry.async_get_entity_id("sensor", DOMAIN, unique_id)
    assert entity_id is not None
    assert state_of(hass, entity_id).state == "1.250"
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_unknown_code_is_a_disabled_diagnostic(
    hass: HomeAssistant, simulator: MeterSimulator, quiet_pty: PtyMeter
) -> None:
    """A code the catalog lacks is kept as a disabled diagnostic sensor with the raw text."""
    simulator.next_frame()
    telegram = simulator.last_telegram.replace(
        b"1-0:32.7.0(", b"0-0:96.99.9(ABC)(12)\r\n1-0:32.7.0("
    )
    telegram = with_values(telegram)
    entry = make_entry(
        simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: quiet_pty.path}
    )
    coordinator = await setup(hass, entry)
    quiet_pty.inject(encrypt(telegram, 7))
    await wait_for(hass, lambda: coordinator.health.stats.telegrams == 1)
    registry = er.async_get(hass)
    entity_id = registry.async_get_entity_id(
        "sensor", DOMAIN, f"{simulator.serial}_0-0:96.99.9_unknown"
    )
    assert entity_id is not None
    entity = registry.async_get(entity_id)
    assert entity is not None
    assert entity.disabled_by is er.RegistryEntryDisabler.INTEGRATION
    assert entity.entity_category is EntityCategory.DIAGNOSTIC
    # Enabled, it shows the bracket contents as sent.
    registry.async_update_entity(entity_id, disabled_by=None)
    await hass.config_entries.async_reload(entry.entry_id)
    coordinator = entry.runtime_data
    quiet_pty.inject(encrypt(telegram, 8))
    await wait_for(hass, lambda: coordinator.health.stats.telegrams == 1)
    assert state_of(hass, entity_id).state == "ABC)(12"
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_odd_values_give_no_state(
    hass: HomeAssistant, simulator: MeterSimulator, quiet_pty: PtyMeter
) -> None:
    """Empty, unknown or partial values leave a sensor without state (never 0); an M-Bus
    device of a type the specification does not name shows its reading as sent."""
    simulator.next_frame()
    telegram = with_values(
        simulator.last_telegram,
        **{
            "1-0:2.7.0": "",
            # Exported once (solar panels): the net power sensor exists.
            "1-0:2.8.0": "000001.000*kWh",
            "0-0:96.3.10": "7",
            "1-1:31.4.0": "040*A",
            "0-1:24.1.0": "002",
        },
    )
    entry = make_entry(
        simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: quiet_pty.path}
    )
    coordinator = await setup(hass, entry)
    quiet_pty.inject(encrypt(telegram, 9))
    await wait_for(hass, lambda: coordinator.health.stats.telegrams == 1)
    registry = er.async_get(hass)
    serial = simulator.serial

    def state(suffix: str) -> str:
        return state_of(
            hass, registry.async_get_entity_id("sensor", DOMAIN, f"{serial}_{suffix}")
        ).state

    assert state("1-0:2.7.0_power_export") == STATE_UNKNOWN
    assert state("1-0:2.7.0_net_power") == STATE_UNKNOWN
    assert state("0-0:96.3.10_breaker_state") == STATE_UNKNOWN
    assert state("1-1:31.4.0_current_limit_import") == "40"
    assert state("1-1:31.4.0_current_limit_export") == STATE_UNKNOWN
    reading = state_of(
        hass, registry.async_get_entity_id("sensor", DOMAIN, f"{serial}_0-1:24.2.1_mbus_reading")
    )
    assert reading.state == str(simulator.last_values["0-1:24.2.1"])
    assert reading.attributes["unit_of_measurement"] == "m³"
    assert "device_class" not in reading.attributes
    assert await hass.config_entries.async_unload(entry.entry_id)
