"""Diagnostics: useful for debugging, with the key and every serial redacted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from homeassistant.const import CONF_DEVICE
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.smarty_p1.const import (
    CONF_CONNECTION_TYPE,
    CONF_TOPIC,
    CONNECTION_MQTT,
    CONNECTION_SERIAL,
)
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter

from .conftest import KEY, SYSTEM_TITLE, make_entry, setup, wait_for
from .mqtt_broker import Dongle, broker, mqtt_entry

__all__ = ["broker", "mqtt_entry"]


async def diagnostics_of(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    entry: MockConfigEntry,
    telegrams: int = 1,
) -> dict[str, Any]:
    """Set the entry up, wait for its telegrams, download its diagnostics."""
    coordinator = await setup(hass, entry)
    await wait_for(hass, lambda: coordinator.health.stats.telegrams >= telegrams)
    result: dict[str, Any] = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    return result


async def test_diagnostics_redacted(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    serial_entry: MockConfigEntry,
    simulator: MeterSimulator,
) -> None:
    """Counters and the last telegram are there; key, serials and system title are not."""
    result = await diagnostics_of(hass, hass_client, serial_entry, telegrams=2)
    text = json.dumps(result)

    assert result["health"]["telegrams"] >= 2
    assert result["health"]["rejected"]["tag"] == 0
    assert result["health"]["last_frame_counter"] >= 2
    assert result["connection"]["type"] == "serial"
    values = result["last_telegram"]["values"]
    assert values["1-0:1.8.0"]["unit"] == "kWh"
    assert values["0-0:42.0.0"] == "**REDACTED**"
    assert result["entry"]["data"]["decryption_key"] == "**REDACTED**"
    for secret in (
        KEY.hex(),
        simulator.serial,
        simulator.last_values["0-1:96.1.0"],
        simulator.last_values["0-2:96.1.0"],
        SYSTEM_TITLE.hex(),
    ):
        assert str(secret).lower() not in text.lower(), secret
    assert await hass.config_entries.async_unload(serial_entry.entry_id)


async def test_diagnostics_redact_the_adapter_serial_of_a_by_id_path(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    simulator: MeterSimulator,
    pty_meter: PtyMeter,
    tmp_path: Path,
) -> None:
    """A by-id name holds the USB adapter's serial number: only its folder is shown."""
    by_id = tmp_path / "serial" / "by-id"
    by_id.mkdir(parents=True)
    name = "usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0"
    (by_id / name).symlink_to(pty_meter.path)
    entry = make_entry(
        simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: str(by_id / name)}
    )
    result = await diagnostics_of(hass, hass_client, entry)
    assert "A10K1234" not in json.dumps(result)
    assert result["entry"]["data"]["device"] == f"{by_id}/**REDACTED**"
    assert result["connection"]["device"] == f"{by_id}/**REDACTED**"
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_diagnostics_keep_a_plain_device_path(
    hass: HomeAssistant, hass_client: ClientSessionGenerator, serial_entry: MockConfigEntry
) -> None:
    """/dev/pts/3 or /dev/ttyUSB0 identify nothing and tell which port is read."""
    result = await diagnostics_of(hass, hass_client, serial_entry)
    assert result["connection"]["device"] == serial_entry.data[CONF_DEVICE]
    assert await hass.config_entries.async_unload(serial_entry.entry_id)


async def test_diagnostics_redact_the_mqtt_topic(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    mqtt_entry: MockConfigEntry,
    simulator: MeterSimulator,
) -> None:
    """A dongle's topic often holds its serial number or the meter's."""
    topic = f"p1/{simulator.serial}/raw"
    entry = make_entry(simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_MQTT, CONF_TOPIC: topic})
    async with Dongle(hass, simulator, topic):
        result = await diagnostics_of(hass, hass_client, entry)
    assert result["entry"]["data"][CONF_TOPIC] == "**REDACTED**"
    assert topic not in json.dumps(result)
    assert await hass.config_entries.async_unload(entry.entry_id)
