"""Which sensors a meter gets, their devices, a snapshot from a real vector, energy dashboard."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from unittest.mock import patch

import pytest
from homeassistant.components.sensor import SensorStateClass
from homeassistant.const import CONF_DEVICE, STATE_UNKNOWN, EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.util import slugify
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
from custom_components.smarty_p1.p1 import generic_code
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter
from custom_components.smarty_p1.sensor import DESCRIPTIONS, MBUS_OTHER, MBUS_READINGS

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


async def set_up_with(
    hass: HomeAssistant,
    simulator: MeterSimulator,
    quiet_pty: PtyMeter,
    telegram: bytes | None = None,
) -> tuple[MockConfigEntry, SmartyCoordinator]:
    """An entry for the quiet meter, set up, that has received one telegram: ``telegram``, or
    the simulator's next one."""
    entry = make_entry(
        simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: quiet_pty.path}
    )
    coordinator = await setup(hass, entry)
    if telegram is None:
        simulator.next_frame()
        telegram = simulator.last_telegram
    quiet_pty.inject(encrypt(telegram, 1))
    await wait_for(hass, lambda: coordinator.health.stats.telegrams == 1)
    return entry, coordinator


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
            "sensor", DOMAIN, f"{VECTOR_SERIAL}_0-{channel}:24.2.1"
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
    water = entity_registry.async_get_entity_id("sensor", DOMAIN, f"{VECTOR_SERIAL}_0-2:24.2.1")
    assert state_of(hass, water).state == STATE_UNKNOWN
    gas_reading = entity_registry.async_get_entity_id(
        "sensor", DOMAIN, f"{VECTOR_SERIAL}_0-1:24.2.1"
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
        assert f"{simulator.serial}_1-0:32.7.0" in unique_ids
        assert not [uid for uid in unique_ids if ":52." in uid or ":72." in uid]
        assert not [uid for uid in unique_ids if re.search(r"_0-\d:24\.", uid)]
        assert await hass.config_entries.async_unload(entry.entry_id)


async def test_enabled_by_default_are_the_quiet_ones(
    hass: HomeAssistant, simulator: MeterSimulator, quiet_pty: PtyMeter
) -> None:
    """Enabled at first: the energy dashboard's values, the meter's state and counters. Values
    that move with every telegram and few users chart (per phase, reactive, apparent, times)
    exist but wait to be enabled, as in core's dsmr: each would cost a recorder row every 10 s."""
    entry, _ = await set_up_with(hass, simulator, quiet_pty)
    entries = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    prefix = f"{simulator.serial}_"
    enabled = {e.unique_id.removeprefix(prefix) for e in entries if e.disabled_by is None}
    assert enabled == {
        "1-0:1.8.0",
        "1-0:2.8.0",
        "1-0:1.7.0",
        "1-0:2.7.0",
        "0-0:17.0.0",
        "1-1:31.4.0_import",
        "1-1:31.4.0_export",
        "0-0:96.3.10",
        "0-0:96.7.21",
        *(f"1-0:{code}.32.0" for code in (32, 52, 72)),
        *(f"1-0:{code}.36.0" for code in (32, 52, 72)),
        "0-0:96.13.0",
        "0-1:24.2.1",
        "0-1:24.4.0",
        "0-2:24.2.1",
        "0-2:24.4.0",
        "rejected_tag",
        "rejected_crc",
        "integrity",
    }
    disabled = {e.unique_id.removeprefix(prefix) for e in entries if e.disabled_by is not None}
    assert {"1-0:32.7.0", "1-0:21.7.0", "0-1:24.2.1_time"} <= disabled
    # Without an export the net power would repeat the import power: no such sensor.
    assert "1-0:2.7.0_net" not in enabled | disabled
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
    unique_id = f"{simulator.serial}_1-0:2.7.0_net"
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
    entry, coordinator = await set_up_with(hass, simulator, quiet_pty, telegram)
    registry = er.async_get(hass)
    entity_id = registry.async_get_entity_id("sensor", DOMAIN, f"{simulator.serial}_0-0:96.99.9")
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
    entry, _ = await set_up_with(hass, simulator, quiet_pty, telegram)
    registry = er.async_get(hass)
    serial = simulator.serial

    def state(suffix: str) -> str:
        return state_of(
            hass, registry.async_get_entity_id("sensor", DOMAIN, f"{serial}_{suffix}")
        ).state

    assert state("1-0:2.7.0") == STATE_UNKNOWN
    assert state("1-0:2.7.0_net") == STATE_UNKNOWN
    assert state("0-0:96.3.10") == STATE_UNKNOWN
    assert state("1-1:31.4.0_import") == "40"
    assert state("1-1:31.4.0_export") == STATE_UNKNOWN
    reading = state_of(hass, registry.async_get_entity_id("sensor", DOMAIN, f"{serial}_0-1:24.2.1"))
    assert reading.state == str(simulator.last_values["0-1:24.2.1"])
    assert reading.attributes["unit_of_measurement"] == "m³"
    assert "device_class" not in reading.attributes
    assert await hass.config_entries.async_unload(entry.entry_id)


# --- Unique ids: what identifies the value, never its description, device type or unit. ---


async def test_unique_ids_are_the_code_and_role(
    hass: HomeAssistant, meter_key: bytes, quiet_pty: PtyMeter
) -> None:
    """Every sensor's unique id, as users' registries keep it: any change here orphans history."""
    simulator = MeterSimulator(meter_key, pv=True, mbus=("gas", "water"), interval=INTERVAL)
    entry, _ = await set_up_with(hass, simulator, quiet_pty)
    entries = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    prefix = f"{simulator.serial}_"
    assert all(e.unique_id.startswith(prefix) for e in entries)
    phases = ("21", "41", "61", "22", "42", "62", "23", "43", "63", "24", "44", "64")
    assert {e.unique_id.removeprefix(prefix) for e in entries} == {
        *(f"1-0:{code}" for code in ("1.8.0", "2.8.0", "3.8.0", "4.8.0")),
        *(f"1-0:{code}.7.0" for code in ("1", "2", "3", "4", "9", "10", *phases)),
        "1-0:2.7.0_net",
        *(f"1-0:{line}.{kind}.0" for line in (32, 52, 72) for kind in (7, 32, 36)),
        *(f"1-0:{line}.7.0" for line in (31, 51, 71)),
        "0-0:17.0.0",
        "1-1:31.4.0_import",
        "1-1:31.4.0_export",
        "0-0:96.3.10",
        "0-1:96.3.10",
        "0-2:96.3.10",
        "0-0:96.7.21",
        *(f"0-0:96.13.{channel}" for channel in range(6) if channel != 1),
        "0-0:1.0.0",
        *(f"0-{channel}:{code}" for channel in (1, 2) for code in ("24.2.1", "24.4.0")),
        "0-1:24.2.1_time",
        "0-2:24.2.1_time",
        "last_telegram",
        "rejected_tag",
        "rejected_crc",
        "integrity",
    }
    assert await hass.config_entries.async_unload(entry.entry_id)


def test_roles_tell_the_sensors_of_a_code_apart() -> None:
    """One code, several sensors: their roles differ, so their unique ids do."""
    assert DESCRIPTIONS, "the table is read"
    for obis, descriptions in DESCRIPTIONS.items():
        roles = [description.role for description in descriptions]
        if generic_code(obis) == "0-x:24.2.1":
            # The reading itself (role None) is added per channel by its device type.
            roles.append(MBUS_OTHER.role)
            assert all(reading.role is None for reading in MBUS_READINGS.values())
        assert len(set(roles)) == len(roles), obis


async def test_an_mbus_reading_keeps_its_entity_when_its_type_or_unit_changes(
    hass: HomeAssistant, simulator: MeterSimulator, quiet_pty: PtyMeter
) -> None:
    """A gas meter that a firmware announces as another type, with another unit: the same
    entity (and its history) shows the new reading, no second entity appears."""
    entry, coordinator = await set_up_with(hass, simulator, quiet_pty)
    registry = er.async_get(hass)
    unique_id = f"{simulator.serial}_0-1:24.2.1"
    gas = registry.async_get_entity_id("sensor", DOMAIN, unique_id)
    assert state_of(hass, gas).attributes["device_class"] == "gas"
    line = re.search(rb"0-1:24\.2\.1\((\w+)\)\(([\d.]+)\*m3\)", simulator.last_telegram)
    assert line is not None
    capture, reading = line[1].decode(), line[2].decode()
    # The same reading (a total never goes backwards), in another unit, of another device type.
    changed = with_values(
        simulator.last_telegram, **{"0-1:24.1.0": "002", "0-1:24.2.1": f"{capture})({reading}*GJ"}
    )
    assert await hass.config_entries.async_reload(entry.entry_id)
    coordinator = entry.runtime_data
    quiet_pty.inject(encrypt(changed, 2))
    await wait_for(hass, lambda: coordinator.health.stats.telegrams == 1)
    readings = [
        e
        for e in er.async_entries_for_config_entry(registry, entry.entry_id)
        if e.unique_id.startswith(f"{simulator.serial}_0-1:24.2.1")
    ]
    assert {e.unique_id for e in readings} == {unique_id, f"{unique_id}_time"}
    state = state_of(hass, gas)
    assert state.state == str(Decimal(reading))
    assert state.attributes["unit_of_measurement"] == "GJ"
    assert "device_class" not in state.attributes
    assert await hass.config_entries.async_unload(entry.entry_id)


# --- Names. ---


async def test_two_meters_are_told_apart(hass: HomeAssistant) -> None:
    """Two meters in one home: devices named after their serials, no entity id with _2, and
    each M-Bus reading is named after its device alone ("Smarty 2345 gas meter 1")."""
    simulators = [
        MeterSimulator(KEY, serial=serial, interval=INTERVAL)
        for serial in ("SAG1030700012345", "SAG1030700067890")
    ]
    with PtyMeter(simulators[0]) as first, PtyMeter(simulators[1]) as second:
        entries = [
            make_entry(sim, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: path})
            for sim, path in zip(simulators, (first.path, second.path), strict=True)
        ]
        for entry in entries:
            coordinator = await setup(hass, entry)
            await wait_for(hass, lambda: coordinator.health.stats.telegrams >= 1)  # noqa: B023
        devices = dr.async_get(hass)
        registry = er.async_get(hass)
        for entry, digits in zip(entries, ("2345", "7890"), strict=True):
            serial = entry.unique_id
            names = {
                identifier: device.name
                for device in dr.async_entries_for_config_entry(devices, entry.entry_id)
                for _, identifier in device.identifiers
            }
            assert names == {
                serial: f"Smarty {digits}",
                f"{serial}_mbus_1": f"Smarty {digits} gas meter 1",
                f"{serial}_mbus_2": f"Smarty {digits} water meter 2",
            }
            energy = registry.async_get_entity_id("sensor", DOMAIN, f"{serial}_1-0:1.8.0")
            assert energy == f"sensor.smarty_{digits}_energy_imported"
            assert state_of(hass, energy).name == f"Smarty {digits} Energy imported"
            reading = registry.async_get_entity_id("sensor", DOMAIN, f"{serial}_0-1:24.2.1")
            assert reading == f"sensor.smarty_{digits}_gas_meter_1"
            assert state_of(hass, reading).name == f"Smarty {digits} gas meter 1"
        for entry, digits in zip(entries, ("2345", "7890"), strict=True):
            for entity in er.async_entries_for_config_entry(registry, entry.entry_id):
                # Named after its own meter, and no "_2" for a name another entity has.
                name = entity.original_name or ""
                device = devices.async_get(entity.device_id or "")
                assert device is not None
                full = f"{device.name} {name}".strip()
                assert full.startswith(f"Smarty {digits}"), full
                assert entity.entity_id == f"sensor.{slugify(full)}", full
        for entry in entries:
            assert await hass.config_entries.async_unload(entry.entry_id)


async def test_current_limit_and_threshold_have_their_own_names(
    hass: HomeAssistant, simulator: MeterSimulator, quiet_pty: PtyMeter
) -> None:
    """1-1:31.4.0 (the meters' limit) and 1-1:34.4.0 (the specification table's thresholds)
    in one telegram: four sensors with four names."""
    simulator.next_frame()
    telegram = simulator.last_telegram.replace(
        b"0-0:96.3.10(", b"1-1:34.4.0(100*A)(-063*A)\r\n0-0:96.3.10(", 1
    )
    entry, _ = await set_up_with(hass, simulator, quiet_pty, with_values(telegram))
    registry = er.async_get(hass)
    found = {}
    for obis in ("1-1:31.4.0", "1-1:34.4.0"):
        for role in ("import", "export"):
            entity_id = registry.async_get_entity_id(
                "sensor", DOMAIN, f"{simulator.serial}_{obis}_{role}"
            )
            state = state_of(hass, entity_id)
            found[state.name] = (entity_id, state.state)
    assert found == {
        "Smarty 2345 Current limit import": ("sensor.smarty_2345_current_limit_import", "40"),
        "Smarty 2345 Current limit export": ("sensor.smarty_2345_current_limit_export", "-40"),
        "Smarty 2345 Current threshold import": (
            "sensor.smarty_2345_current_threshold_import",
            "100",
        ),
        "Smarty 2345 Current threshold export": (
            "sensor.smarty_2345_current_threshold_export",
            "-63",
        ),
    }
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_counters_are_totals(
    hass: HomeAssistant, simulator: MeterSimulator, quiet_pty: PtyMeter
) -> None:
    """Counts the meter or the reader keep only grow: long-term statistics for them."""
    entry, _ = await set_up_with(hass, simulator, quiet_pty)
    registry = er.async_get(hass)
    serial = simulator.serial
    for suffix in ("0-0:96.7.21", "1-0:32.32.0", "1-0:72.36.0", "rejected_tag", "rejected_crc"):
        entity_id = registry.async_get_entity_id("sensor", DOMAIN, f"{serial}_{suffix}")
        assert state_of(hass, entity_id).attributes["state_class"] == "total_increasing", suffix
    # Not in the simulator's telegram: read from its description.
    (long_failures,) = DESCRIPTIONS["0-0:96.7.9"]
    assert long_failures.state_class is SensorStateClass.TOTAL_INCREASING
    assert await hass.config_entries.async_unload(entry.entry_id)
