"""The energy dashboard accepts the meter's energy sensors as they are; statistics follow."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

import pytest
from homeassistant.components.energy import data as energy_data
from homeassistant.components.energy import validate as energy_validate
from homeassistant.components.recorder.core import Recorder
from homeassistant.components.recorder.models import StatisticMeanType, StatisticMetaData
from homeassistant.components.recorder.statistics import async_import_statistics, get_metadata
from homeassistant.const import CURRENCY_EURO
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.recorder.common import (
    async_wait_recording_done,
    do_adhoc_statistics,
)

from custom_components.smarty_p1.const import DOMAIN
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter

from .conftest import wait_for
from .test_migration import meter, register_as_1_1, stored_entry

__all__ = ["meter"]


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(
    recorder_mock: object,
    hass: HomeAssistant,
    enable_custom_integrations: None,
    socket_enabled: None,
) -> None:
    """As in conftest, with the recorder (statistics) set up before hass, as it must be."""


async def test_energy_dashboard_accepts_the_grid_sensors(
    hass: HomeAssistant,
    serial_entry: MockConfigEntry,
    simulator: MeterSimulator,
) -> None:
    """Configured as grid import and export, the energy sensors validate without an issue."""
    assert await async_setup_component(hass, "energy", {})
    serial_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(serial_entry.entry_id)
    coordinator = serial_entry.runtime_data
    await wait_for(hass, lambda: coordinator.health.stats.telegrams >= 2)
    registry = er.async_get(hass)
    imported = registry.async_get_entity_id("sensor", DOMAIN, f"{simulator.serial}_1-0:1.8.0")
    exported = registry.async_get_entity_id("sensor", DOMAIN, f"{simulator.serial}_1-0:2.8.0")
    gas = registry.async_get_entity_id("sensor", DOMAIN, f"{simulator.serial}_0-1:24.2.1")
    assert imported is not None
    assert exported is not None
    assert gas is not None
    grid: energy_data.GridSourceType = {
        "type": "grid",
        "stat_energy_from": imported,
        "stat_energy_to": exported,
        "stat_cost": None,
        "entity_energy_price": None,
        "number_energy_price": None,
        "stat_compensation": None,
        "entity_energy_price_export": None,
        "number_energy_price_export": None,
        "cost_adjustment_day": 0,
    }
    gas_source: energy_data.GasSourceType = {
        "type": "gas",
        "stat_energy_from": gas,
        "stat_cost": None,
        "entity_energy_price": None,
        "number_energy_price": None,
    }
    manager = await energy_data.async_get_manager(hass)
    await manager.async_update({"energy_sources": [grid, gas_source], "device_consumption": []})
    # The dashboard reads statistics: record the states and compile the current period.
    await async_wait_recording_done(hass)
    now = dt_util.utcnow()
    do_adhoc_statistics(
        hass, start=now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)
    )
    await async_wait_recording_done(hass)
    result = await energy_validate.async_validate(hass)
    assert result.as_dict() == {
        "energy_sources": [[], []],
        "device_consumption": [],
        "device_consumption_water": [],
    }
    assert await hass.config_entries.async_unload(serial_entry.entry_id)


async def test_cost_statistics_follow_the_euro_unit(
    recorder_mock: Recorder, hass: HomeAssistant, meter: tuple[MeterSimulator, PtyMeter]
) -> None:
    """1.1's cost sensor said "EUR", 1.2's says "€": its long-term statistics move with it, so
    the recorder goes on compiling them (no "units changed" repair)."""
    simulator, pty = meter
    entry = stored_entry(pty, simulator)
    entry.add_to_hass(hass)
    cost = register_as_1_1(
        hass, entry, "tariff_overrun_cost_month", "sensor.smarty_overrun_cost_this_month"
    )
    metadata = StatisticMetaData(
        mean_type=StatisticMeanType.NONE,
        has_sum=True,
        name=None,
        source="recorder",
        statistic_id=cost.entity_id,
        unit_class=None,
        unit_of_measurement="EUR",
    )
    start = dt_util.utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    async_import_statistics(hass, metadata, [{"start": start, "state": 1.5, "sum": 1.5}])
    await async_wait_recording_done(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await async_wait_recording_done(hass)
    stored = await recorder_mock.async_add_executor_job(
        partial(get_metadata, hass, statistic_ids={cost.entity_id})
    )
    assert stored[cost.entity_id][1]["unit_of_measurement"] == CURRENCY_EURO
    assert await hass.config_entries.async_unload(entry.entry_id)
