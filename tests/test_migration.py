"""Entries of 1.1 become 1.2: their sensors' unique ids change, their entity ids and history stay.

The registry is filled as 1.1 left it ("{serial}_{obis}_{key}"), then the entry is set up on a
simulated meter on a pty, as after an update of the integration.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import CONF_DEVICE
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.smarty_p1.config_flow import SmartyConfigFlow
from custom_components.smarty_p1.const import CONF_CONNECTION_TYPE, CONNECTION_SERIAL, DOMAIN
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter

from .conftest import INTERVAL, KEY, entry_data, state_of, wait_for

SERIAL = "SAG1030700012345"
# Unique ids (after the serial) of 1.1, their entity ids, and the unique ids of 1.2.
MIGRATED = [
    ("1-0:1.8.0_energy_import", "sensor.smarty_energy_imported", "1-0:1.8.0"),
    ("1-0:2.7.0_power_export", "sensor.smarty_power_exported", "1-0:2.7.0"),
    ("1-0:2.7.0_net_power", "sensor.smarty_net_power", "1-0:2.7.0_net"),
    ("1-0:32.7.0_voltage_phase_1", "sensor.smarty_voltage_l1", "1-0:32.7.0"),
    ("1-1:31.4.0_current_limit_import", "sensor.smarty_current_limit_import", "1-1:31.4.0_import"),
    ("1-1:31.4.0_current_limit_export", "sensor.smarty_current_limit_export", "1-1:31.4.0_export"),
    ("0-0:96.7.21_power_failures", "sensor.smarty_power_failures", "0-0:96.7.21"),
    ("0-1:24.2.1_mbus_gas", "sensor.gas_meter_gas", "0-1:24.2.1"),
    ("0-1:24.2.1_mbus_reading_time", "sensor.gas_meter_reading_time", "0-1:24.2.1_time"),
    ("0-1:24.4.0_valve_position", "sensor.gas_meter_valve", "0-1:24.4.0"),
    ("0-2:24.2.1_mbus_water", "sensor.water_meter_water", "0-2:24.2.1"),
    # Health entities had no code: their ids stay.
    ("rejected_tag", "sensor.smarty_frames_rejected_key_check", "rejected_tag"),
]


@pytest.fixture
def meter() -> Iterator[tuple[MeterSimulator, PtyMeter]]:
    """A meter with solar panels (net power) and gas and water, on a pty."""
    simulator = MeterSimulator(KEY, serial=SERIAL, pv=True, interval=INTERVAL)
    with PtyMeter(simulator) as pty:
        yield simulator, pty


def stored_entry(
    pty: PtyMeter, simulator: MeterSimulator, version: int = 1, minor_version: int = 1
) -> MockConfigEntry:
    """An entry as the flow of a version (1.1 by default) stored it."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=f"Smarty {SERIAL}",
        unique_id=SERIAL,
        version=version,
        minor_version=minor_version,
        data=entry_data(
            simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: pty.path}
        ),
    )


def register_as_1_1(
    hass: HomeAssistant, entry: MockConfigEntry, suffix: str, entity_id: str
) -> er.RegistryEntry:
    """A registry entry as 1.1 made it, at the entity id it chose then; enabled (as a user who
    enabled the ones 1.1 made disabled), so that every state can be seen."""
    registry = er.async_get(hass)
    made = registry.async_get_or_create(
        "sensor",
        DOMAIN,
        f"{SERIAL}_{suffix}",
        config_entry=entry,
        suggested_object_id=entity_id.removeprefix("sensor."),
    )
    assert made.entity_id == entity_id
    return made


async def test_unique_ids_move_entity_ids_and_history_stay(
    hass: HomeAssistant, meter: tuple[MeterSimulator, PtyMeter]
) -> None:
    """Each sensor of 1.1 keeps its entity id under its new unique id and shows the meter's
    values again; none is left without an entity, none is made twice."""
    simulator, pty = meter
    entry = stored_entry(pty, simulator)
    entry.add_to_hass(hass)
    made = {
        entity_id: register_as_1_1(hass, entry, old, entity_id).id for old, entity_id, _ in MIGRATED
    }
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert (entry.version, entry.minor_version) == (1, SmartyConfigFlow.MINOR_VERSION) == (1, 2)
    coordinator = entry.runtime_data
    await wait_for(hass, lambda: coordinator.health.stats.telegrams >= 2)
    registry = er.async_get(hass)
    for _, entity_id, new in MIGRATED:
        assert registry.async_get_entity_id("sensor", DOMAIN, f"{SERIAL}_{new}") == entity_id
        entity = registry.async_get(entity_id)
        assert entity is not None
        # The same registry entry, not a new one at the same entity id.
        assert entity.id == made[entity_id]
        state = state_of(hass, entity_id)
        # An entity id that no entity claims is shown "restored" (an orphan).
        assert "restored" not in state.attributes, entity_id
    published = coordinator.data.objects
    assert state_of(hass, "sensor.smarty_energy_imported").state == str(
        published["1-0:1.8.0"].value
    )
    assert state_of(hass, "sensor.gas_meter_gas").state == str(published["0-1:24.2.1"].value)
    exported = published["1-0:2.7.0"].value
    assert state_of(hass, "sensor.smarty_power_exported").state == str(exported)
    net = published["1-0:1.7.0"].value - exported
    assert state_of(hass, "sensor.smarty_net_power").state == str(net)
    # The migration ran once: nothing of 1.1 is left, and no value got a second entity.
    unique_ids = [e.unique_id for e in er.async_entries_for_config_entry(registry, entry.entry_id)]
    assert len(unique_ids) == len(set(unique_ids))
    assert not [uid for uid in unique_ids if uid.endswith(("_energy_import", "_mbus_gas"))]
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_two_entities_of_one_value(
    hass: HomeAssistant, meter: tuple[MeterSimulator, PtyMeter]
) -> None:
    """1.1 made a second entity when an M-Bus reading's unit changed: the older one takes the
    value's unique id (and its history continues), the other is left as it was."""
    simulator, pty = meter
    entry = stored_entry(pty, simulator)
    entry.add_to_hass(hass)
    register_as_1_1(hass, entry, "0-1:24.2.1_mbus_gas", "sensor.gas_meter_gas")
    register_as_1_1(hass, entry, "0-1:24.2.1_mbus_reading", "sensor.gas_meter_reading")
    # An id that is of 1.2 already (a role, not a key of 1.1) is not read as one of 1.1.
    register_as_1_1(hass, entry, "1-0:2.7.0_net", "sensor.smarty_net_power")
    assert await hass.config_entries.async_setup(entry.entry_id)
    coordinator = entry.runtime_data
    await wait_for(hass, lambda: coordinator.health.stats.telegrams >= 1)
    registry = er.async_get(hass)
    gas = f"{SERIAL}_0-1:24.2.1"
    assert registry.async_get_entity_id("sensor", DOMAIN, gas) == "sensor.gas_meter_gas"
    left = registry.async_get("sensor.gas_meter_reading")
    assert left is not None
    assert left.unique_id == f"{gas}_mbus_reading"
    net = registry.async_get("sensor.smarty_net_power")
    assert net is not None
    assert net.unique_id == f"{SERIAL}_1-0:2.7.0_net"
    assert "restored" not in state_of(hass, "sensor.gas_meter_gas").attributes
    assert await hass.config_entries.async_unload(entry.entry_id)


@pytest.mark.parametrize(
    ("version", "minor_version", "state"),
    [(2, 1, ConfigEntryState.MIGRATION_ERROR), (1, 3, ConfigEntryState.LOADED)],
    ids=["later-major", "later-minor"],
)
async def test_an_entry_of_a_later_version_is_not_migrated(
    hass: HomeAssistant,
    meter: tuple[MeterSimulator, PtyMeter],
    version: int,
    minor_version: int,
    state: ConfigEntryState,
) -> None:
    """A downgrade: an entry of a later release is not read as one of 1.1. A later major
    version is not set up at all; a later minor one (compatible) is, as it is."""
    simulator, pty = meter
    entry = stored_entry(pty, simulator, version, minor_version)
    entry.add_to_hass(hass)
    register_as_1_1(hass, entry, "1-0:1.8.0_energy_import", "sensor.smarty_energy_imported")
    await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is state
    assert (entry.version, entry.minor_version) == (version, minor_version)
    entity = er.async_get(hass).async_get("sensor.smarty_energy_imported")
    assert entity is not None
    assert entity.unique_id == f"{SERIAL}_1-0:1.8.0_energy_import"
    if state is ConfigEntryState.LOADED:
        assert await hass.config_entries.async_unload(entry.entry_id)
