"""Diagnostics: useful for debugging, with the key and every serial redacted."""

from __future__ import annotations

import json

from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.smarty_p1.p1.simulator import MeterSimulator

from .conftest import KEY, SYSTEM_TITLE, wait_for


async def test_diagnostics_redacted(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    serial_entry: MockConfigEntry,
    simulator: MeterSimulator,
) -> None:
    """Counters and the last telegram are there; key, serials and system title are not."""
    serial_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(serial_entry.entry_id)
    coordinator = serial_entry.runtime_data
    await wait_for(hass, lambda: coordinator.health.stats.telegrams >= 2)
    result = await get_diagnostics_for_config_entry(hass, hass_client, serial_entry)
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
