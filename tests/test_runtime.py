"""What a core reviewer found in the runtime: each test failed before its fix."""

from __future__ import annotations

import logging
from typing import Any
from unittest.mock import patch

import pytest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import (
    CONF_DEVICE,
    EVENT_HOMEASSISTANT_FINAL_WRITE,
    STATE_UNAVAILABLE,
)
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.smarty_p1.const import (
    CONF_CONNECTION_TYPE,
    CONF_MIN_INTERVAL,
    CONNECTION_SERIAL,
    DOMAIN,
)
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter, TcpMeter
from custom_components.smarty_p1.p1.sources import TcpSource

from .conftest import KEY, make_entry, setup, state_of, wait_for

LOGGER_NAME = "custom_components.smarty_p1"


def energy_entity(hass: HomeAssistant) -> str:
    for entry in er.async_get(hass).entities.values():
        if entry.platform == DOMAIN and "1-0:1.8.0" in entry.unique_id:
            return entry.entity_id
    raise AssertionError("no energy sensor")


async def test_first_telegram_after_a_reconnect_publishes(
    hass: HomeAssistant, network_entry: MockConfigEntry, tcp_meter: TcpMeter
) -> None:
    """With a minimum interval, a reconnect used to leave the entities unavailable until the
    window (here 30 s) ran out, though telegrams were accepted."""
    network_entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(network_entry, options={CONF_MIN_INTERVAL: 30})
    assert await hass.config_entries.async_setup(network_entry.entry_id)
    coordinator = network_entry.runtime_data
    await wait_for(hass, lambda: coordinator.data is not None)
    tcp_meter.drop_clients()
    await wait_for(hass, lambda: not coordinator.last_update_success)
    await wait_for(hass, lambda: coordinator.last_update_success)
    assert state_of(hass, energy_entity(hass)).state != STATE_UNAVAILABLE
    assert await hass.config_entries.async_unload(network_entry.entry_id)


async def test_an_unexpected_error_while_reconnecting_does_not_end_the_reading(
    hass: HomeAssistant, network_entry: MockConfigEntry, tcp_meter: TcpMeter
) -> None:
    """Any exception in the reconnect path (here Home Assistant's own error type, as an MQTT
    subscription raises it) used to end the reader task for good."""
    coordinator = await setup(hass, network_entry)
    await wait_for(hass, lambda: coordinator.health.stats.telegrams >= 1)
    real = TcpSource._connect
    failures = [HomeAssistantError("subscribe failed"), RuntimeError("a bug")]

    async def flaky(self: TcpSource, factory: Any) -> Any:
        if failures:
            raise failures.pop(0)
        return await real(self, factory)

    with patch.object(TcpSource, "_connect", flaky):
        tcp_meter.drop_clients()
        await wait_for(hass, lambda: not failures)
        before = coordinator.health.stats.telegrams
        await wait_for(hass, lambda: coordinator.health.stats.telegrams > before + 1)
    assert coordinator.last_update_success
    assert await hass.config_entries.async_unload(network_entry.entry_id)


async def test_update_entity_keeps_availability(
    hass: HomeAssistant,
    network_entry: MockConfigEntry,
    tcp_meter: TcpMeter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """homeassistant.update_entity used to log a NotImplementedError traceback, mark the
    meter unavailable, and hide the next real drop at debug level."""
    assert await async_setup_component(hass, "homeassistant", {})
    coordinator = await setup(hass, network_entry)
    await wait_for(hass, lambda: coordinator.data is not None)
    energy = energy_entity(hass)
    await hass.services.async_call(
        "homeassistant", "update_entity", {"entity_id": energy}, blocking=True
    )
    await hass.async_block_till_done()
    assert coordinator.last_update_success
    assert "NotImplementedError" not in caplog.text
    assert state_of(hass, energy).state != STATE_UNAVAILABLE
    tcp_meter.drop_clients()
    await wait_for(hass, lambda: not coordinator.last_update_success)
    lost = [
        record
        for record in caplog.records
        if record.name.startswith(LOGGER_NAME) and "Lost the connection" in record.getMessage()
    ]
    assert len(lost) == 1
    assert lost[0].levelno == logging.INFO
    assert await hass.config_entries.async_unload(network_entry.entry_id)


async def test_update_entity_while_disconnected_says_why(
    hass: HomeAssistant, network_entry: MockConfigEntry, tcp_meter: TcpMeter
) -> None:
    assert await async_setup_component(hass, "homeassistant", {})
    coordinator = await setup(hass, network_entry)
    await wait_for(hass, lambda: coordinator.data is not None)
    energy = energy_entity(hass)
    await tcp_meter.close()
    await wait_for(hass, lambda: not coordinator.last_update_success)
    await hass.services.async_call(
        "homeassistant", "update_entity", {"entity_id": energy}, blocking=True
    )
    assert not coordinator.last_update_success
    assert state_of(hass, energy).state == STATE_UNAVAILABLE
    assert await hass.config_entries.async_unload(network_entry.entry_id)


async def test_registers_are_written_when_home_assistant_stops(
    hass: HomeAssistant, hass_storage: dict[str, Any]
) -> None:
    """Entries are not unloaded at stop: the registers used to be written at most every 5
    minutes, so a restart lost up to that much. Home Assistant's final write flushes them."""
    sim = MeterSimulator(KEY, interval=10.0)
    with PtyMeter(sim, count=0) as pty:
        entry = make_entry(
            sim, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: pty.path}
        )
        coordinator = await setup(hass, entry)
        key = f"{DOMAIN}.{entry.entry_id}.registers"
        for sent in range(1, 6):
            pty.inject(sim.next_frame())
            await wait_for(hass, lambda: coordinator.health.stats.telegrams >= sent)  # noqa: B023
        hass.bus.async_fire(EVENT_HOMEASSISTANT_FINAL_WRITE)
        await hass.async_block_till_done()
        stored = hass_storage[key]["data"]["registers"]["1-0:1.8.0"]
        assert stored["value"] == str(sim.last_values["1-0:1.8.0"])
        assert await hass.config_entries.async_unload(entry.entry_id)


async def test_a_device_can_be_removed_while_the_entry_is_not_loaded(
    hass: HomeAssistant, hass_ws_client: Any, simulator: MeterSimulator
) -> None:
    """The removal hook read runtime_data, which an entry retrying its setup has not."""
    assert await async_setup_component(hass, "config", {})
    entry = make_entry(
        simulator,
        KEY,
        **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: "/dev/serial/by-id/gone"},
    )
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_RETRY
    devices = dr.async_get(hass)
    serial = simulator.serial
    gas = devices.async_get_or_create(
        config_entry_id=entry.entry_id, identifiers={(DOMAIN, f"{serial}_mbus_1")}
    )
    meter = devices.async_get_device_by_identifier((DOMAIN, serial), entry.entry_id)
    assert meter is not None
    client = await hass_ws_client(hass)
    for device, removable in ((meter, False), (gas, True)):
        await client.send_json_auto_id(
            {
                "type": "config/device_registry/remove_config_entry",
                "config_entry_id": entry.entry_id,
                "device_id": device.id,
            }
        )
        response = await client.receive_json()
        assert response["success"] is removable, response
    assert devices.async_get(gas.id) is None
    await hass.config_entries.async_unload(entry.entry_id)
