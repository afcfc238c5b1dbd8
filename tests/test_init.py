"""Setup and unload through a real pty and a real TCP socket."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import CONF_DEVICE, CONF_HOST, CONF_PORT, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.smarty_p1.const import (
    CONF_CONNECTION_TYPE,
    CONF_MIN_INTERVAL,
    CONNECTION_NETWORK,
    CONNECTION_SERIAL,
    DOMAIN,
    LOGGER,
)
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter, TcpMeter, serve_tcp

from .conftest import KEY, make_entry, setup, state_of, wait_for


def entity_id(hass: HomeAssistant, serial: str, suffix: str) -> str:
    """The entity id of a sensor by its unique id."""
    found = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"{serial}_{suffix}")
    assert found is not None, suffix
    return found


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_setup_serial_values_and_unload(
    hass: HomeAssistant, simulator: MeterSimulator, quiet_pty: PtyMeter
) -> None:
    """Entities carry exactly what the meter sent; unloading closes the port."""
    entry = make_entry(
        simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: quiet_pty.path}
    )
    coordinator = await setup(hass, entry)
    # Frames put on the line by the test alone: the last one sent is the one shown (a meter
    # that sends by itself may have made a frame it had no time to write when it is closed).
    for _ in range(2):
        quiet_pty.inject(simulator.next_frame())
    await wait_for(hass, lambda: coordinator.health.stats.telegrams == 2)
    quiet_pty.close()
    await wait_for(hass, lambda: not coordinator.last_update_success)
    sent = simulator.last_values
    assert coordinator.data.telegram.raw == simulator.last_telegram
    serial = simulator.serial
    for obis in (
        "1-0:1.8.0",
        "1-0:2.8.0",
        "1-0:1.7.0",
        "1-0:32.7.0",
        "1-0:31.7.0",
        "1-0:61.7.0",
        "0-1:24.2.1",
        "0-2:24.2.1",
    ):
        # Unavailable now, the registry keeps the sensor; the value is checked on the entity.
        eid = entity_id(hass, serial, obis)
        assert state_of(hass, eid).state == STATE_UNAVAILABLE
        entity = hass.data["entity_components"]["sensor"].get_entity(eid)
        assert entity.native_value == sent[obis], obis
    assert await hass.config_entries.async_unload(entry.entry_id)
    assert entry.state is ConfigEntryState.NOT_LOADED
    assert not coordinator.health.connected
    assert coordinator._task is None


async def test_setup_network_states(
    hass: HomeAssistant,
    network_entry: MockConfigEntry,
    simulator: MeterSimulator,
    tcp_meter: TcpMeter,
) -> None:
    """Through a TCP bridge, states equal the values of the last telegram."""
    network_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(network_entry.entry_id)
    coordinator = network_entry.runtime_data
    await wait_for(hass, lambda: coordinator.health.stats.telegrams >= 3)
    await tcp_meter.close()
    await wait_for(hass, lambda: not coordinator.last_update_success)
    energy = er.async_get(hass).async_get_entity_id(
        "sensor", DOMAIN, f"{simulator.serial}_1-0:1.8.0"
    )
    assert energy is not None
    entity = hass.data["entity_components"]["sensor"].get_entity(energy)
    assert entity.native_value == simulator.last_values["1-0:1.8.0"]
    assert await hass.config_entries.async_unload(network_entry.entry_id)


async def test_states_follow_telegrams(
    hass: HomeAssistant, serial_entry: MockConfigEntry, simulator: MeterSimulator
) -> None:
    """The state machine shows the last telegram's values while the meter runs."""
    serial_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(serial_entry.entry_id)
    coordinator = serial_entry.runtime_data
    await wait_for(hass, lambda: coordinator.health.stats.telegrams >= 2)
    eid = entity_id(hass, simulator.serial, "1-0:1.8.0")
    state = hass.states.get(eid)
    assert state is not None
    assert state.attributes["unit_of_measurement"] == "kWh"
    assert state.attributes["device_class"] == "energy"
    assert state.attributes["state_class"] == "total_increasing"
    published = coordinator.data.objects["1-0:1.8.0"].value
    assert state.state == str(published)
    assert await hass.config_entries.async_unload(serial_entry.entry_id)


async def test_not_ready_when_port_missing(hass: HomeAssistant, simulator: MeterSimulator) -> None:
    """A serial path that does not exist: retry later."""
    entry = make_entry(
        simulator,
        None,
        **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: "/dev/does-not-exist"},
    )
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_RETRY
    assert "/dev/does-not-exist" in (entry.reason or "")


async def test_not_ready_when_host_refuses(hass: HomeAssistant, simulator: MeterSimulator) -> None:
    """A bridge that refuses the connection: retry later."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    entry = make_entry(
        simulator,
        None,
        **{CONF_CONNECTION_TYPE: CONNECTION_NETWORK, CONF_HOST: "127.0.0.1", CONF_PORT: port},
    )
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_RETRY


async def test_options_apply_without_reload(
    hass: HomeAssistant, serial_entry: MockConfigEntry
) -> None:
    """Changing the minimum interval takes effect on the running coordinator."""
    serial_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(serial_entry.entry_id)
    coordinator = serial_entry.runtime_data
    hass.config_entries.async_update_entry(serial_entry, options={CONF_MIN_INTERVAL: 30})
    await hass.async_block_till_done()
    assert serial_entry.runtime_data is coordinator
    assert coordinator.min_interval == 30
    assert await hass.config_entries.async_unload(serial_entry.entry_id)


async def test_only_a_vanished_mbus_device_can_be_removed(
    hass: HomeAssistant,
    hass_ws_client: Any,
    serial_entry: MockConfigEntry,
    simulator: MeterSimulator,
    pty_meter: PtyMeter,
) -> None:
    """The meter and the M-Bus meters it reports stay; a channel gone from the telegram goes."""
    assert await async_setup_component(hass, "config", {})
    serial_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(serial_entry.entry_id)
    await wait_for(hass, lambda: serial_entry.runtime_data.data is not None)
    devices = dr.async_get(hass)
    serial = simulator.serial
    gone = devices.async_get_or_create(
        config_entry_id=serial_entry.entry_id, identifiers={(DOMAIN, f"{serial}_mbus_4")}
    )
    by_identifier = {
        identifier[1]: device
        for device in dr.async_entries_for_config_entry(devices, serial_entry.entry_id)
        for identifier in device.identifiers
    }
    meter, gas = by_identifier[serial], by_identifier[f"{serial}_mbus_1"]
    client = await hass_ws_client(hass)
    for device, removable in ((meter, False), (gas, False), (gone, True)):
        await client.send_json_auto_id(
            {
                "type": "config/device_registry/remove_config_entry",
                "config_entry_id": serial_entry.entry_id,
                "device_id": device.id,
            }
        )
        response = await client.receive_json()
        assert response["success"] is removable, device.identifiers
    assert devices.async_get(gone.id) is None
    assert devices.async_get(gas.id) is not None
    assert await hass.config_entries.async_unload(serial_entry.entry_id)


async def test_unavailable_and_back_are_logged_once_each(
    hass: HomeAssistant,
    network_entry: MockConfigEntry,
    simulator: MeterSimulator,
    tcp_meter: TcpMeter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The bridge goes down for several reconnect attempts, then comes back: one info line when
    the entities become unavailable, one when they are back, and no line per attempt."""
    caplog.set_level(logging.DEBUG, logger=LOGGER.name)
    coordinator = await setup(hass, network_entry)
    await wait_for(hass, lambda: coordinator.health.stats.telegrams >= 1)
    energy = entity_id(hass, simulator.serial, "1-0:1.8.0")
    port = tcp_meter.port
    await tcp_meter.close()
    await wait_for(hass, lambda: state_of(hass, energy).state == STATE_UNAVAILABLE)
    await wait_for(hass, lambda: len(ours(caplog, logging.DEBUG, "failed")) >= 3)
    async with await serve_tcp(simulator, port=port):
        await wait_for(hass, lambda: state_of(hass, energy).state != STATE_UNAVAILABLE)
        records = ours(caplog, logging.INFO, "")
        info = [r.getMessage() for r in records if r.levelno == logging.INFO]
        assert len(info) == 2, info
        assert info[0].startswith(f"Lost the connection to 127.0.0.1:{port}: ")
        assert info[1] == f"Connection to 127.0.0.1:{port} restored"
        # Of the failed attempts in between only the first is above debug: p1/session.py warns
        # once per outage that it cannot reconnect.
        assert len([r for r in records if r.levelno > logging.INFO]) <= 1
        assert await hass.config_entries.async_unload(network_entry.entry_id)


def ours(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[logging.LogRecord]:
    """This integration's records at level or above that contain text."""
    return [
        record
        for record in caplog.records
        if record.name.startswith(LOGGER.name)
        and record.levelno >= level
        and text in record.getMessage()
    ]
