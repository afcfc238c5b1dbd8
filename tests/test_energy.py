"""The energy dashboard accepts the meter's energy sensors as they are; statistics follow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from unittest.mock import patch

import pytest
from freezegun import freeze_time
from homeassistant.components.energy import data as energy_data
from homeassistant.components.energy import validate as energy_validate
from homeassistant.components.recorder import history
from homeassistant.components.recorder.core import Recorder
from homeassistant.components.recorder.models import StatisticMeanType, StatisticMetaData
from homeassistant.components.recorder.statistics import async_import_statistics, get_metadata
from homeassistant.const import CONF_DEVICE, CURRENCY_EURO
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.recorder.common import (
    async_wait_recording_done,
    do_adhoc_statistics,
)

from custom_components.smarty_p1.const import CONF_CONNECTION_TYPE, CONNECTION_SERIAL, DOMAIN
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter

from .conftest import KEY, RecordingMeter, make_entry, setup, wait_for
from .test_coordinator import sensor_id
from .test_migration import meter, register_as_1_1, stored_entry
from .test_takeover import compiled

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


async def test_totals_once_a_minute_keep_the_statistics(hass: HomeAssistant) -> None:
    """Five minutes of telegrams at the meter's pace with the real recorder: the export total
    is recorded once a minute, not 30 times, and the period's statistics end at the reading of
    its last minute: its last telegrams' energy goes to the next period, none is lost."""
    sim = RecordingMeter(KEY, pv=True, interval=10.0)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    period = now + timedelta(minutes=5 - now.minute % 5)
    # The clock jumps 10 s a telegram: the tests' short silence timeout would see a cut.
    with (
        patch("custom_components.smarty_p1.coordinator.SILENCE_TIMEOUT", 60.0),
        PtyMeter(sim, count=0) as pty,
        freeze_time(period + timedelta(seconds=5), tick=True) as clock,
    ):
        entry = make_entry(
            sim, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: pty.path}
        )
        coordinator = await setup(hass, entry)
        stats = coordinator.health.stats
        for count in range(1, 31):
            pty.inject(sim.next_frame())
            await wait_for(hass, partial(lambda count: stats.telegrams >= count, count))
            clock.tick(timedelta(seconds=10))
        await async_wait_recording_done(hass)
        exported = sensor_id(hass, sim.serial, "1-0:2.8.0")
        changes = await hass.async_add_executor_job(
            partial(
                history.state_changes_during_period,
                hass,
                period,
                period + timedelta(minutes=5),
                exported,
            )
        )
        recorded = [state.state for state in changes[exported]]
        sent = [str(values["1-0:2.8.0"]) for values in sim.sent]
        # One row a minute (the first telegram's, then every sixth), each a reading the meter sent.
        assert len(recorded) == 5, recorded
        assert set(recorded) <= set(sent)
        assert len(set(sent)) > 20
        do_adhoc_statistics(hass, start=period)
        await async_wait_recording_done(hass)
        row = await compiled(hass, exported, period)
        # The period ends at its last recorded reading, within the last minute of telegrams.
        assert f"{row['state']:.3f}" == recorded[-1]
        assert recorded[-1] in sent[-7:]
        assert await hass.config_entries.async_unload(entry.entry_id)
