"""A meter exchange: the entry of the old meter moves to the one that replaced it.

The grid operator swaps a meter for a new one with its own serial number and key. What the user
built on the old one stays (entity ids and their history, device names, areas, dashboards); what
belonged to the old meter goes: its registers' high-water marks (the new meter counts from its
own readings) and the authentication key learned from its frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeassistant.config_entries import ConfigEntry, ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er

from .const import CONF_AUTH_KEY, CONF_SERIAL_NUMBER, DOMAIN, LOGGER
from .coordinator import registers_store

# States in which the entry reads the meter, or will again on its own (a retry timer).
_RUNNING = (ConfigEntryState.LOADED, ConfigEntryState.SETUP_RETRY)


def moved_id(identifier: str, old: str, new: str) -> str | None:
    """An entity unique id or device identifier of the old meter with the new serial instead.

    None for one that is not the old meter's: the serial is the whole id (the meter's device) or
    its prefix up to an underscore (sensors, M-Bus devices), never just the start of a word.
    """
    if identifier == old:
        return new
    if identifier.startswith(f"{old}_"):
        return new + identifier[len(old) :]
    return None


async def async_exchange_meter(
    hass: HomeAssistant,
    entry: ConfigEntry,
    serial: str,
    data: Mapping[str, Any] | None = None,
) -> None:
    """Move an entry to the meter with this serial, which replaced the entry's own meter.

    ``data`` is what else changes in the entry's data (the new meter's key, a new connection);
    None keeps the entry's (a plaintext meter exchanged on the same cable). The entry is set up
    again if it was running.
    """
    old = entry.unique_id or entry.data[CONF_SERIAL_NUMBER]
    running = entry.state in _RUNNING
    if running:
        # Unloaded first: its shutdown writes the registers, which are forgotten below.
        await hass.config_entries.async_unload(entry.entry_id)
    await registers_store(hass, entry).async_remove()
    _move_registries(hass, entry, old, serial)
    new_data = {**entry.data, **(data or {}), CONF_SERIAL_NUMBER: serial}
    new_data.pop(CONF_AUTH_KEY, None)
    hass.config_entries.async_update_entry(
        entry,
        unique_id=serial,
        title=entry.title.replace(old, serial),
        data=new_data,
    )
    # Serials identify a household: not in the log.
    LOGGER.info("%s: the meter was exchanged, its entities show the new one", entry.entry_id)
    if running:
        await hass.config_entries.async_setup(entry.entry_id)


def _move_registries(hass: HomeAssistant, entry: ConfigEntry, old: str, new: str) -> None:
    """Give the entry's entities and devices the ids of the new meter; nothing else changes."""
    entities = er.async_get(hass)
    for entity in er.async_entries_for_config_entry(entities, entry.entry_id):
        if (unique_id := moved_id(entity.unique_id, old, new)) is not None:
            entities.async_update_entity(entity.entity_id, new_unique_id=unique_id)
    devices = dr.async_get(hass)
    for device in dr.async_entries_for_config_entry(devices, entry.entry_id):
        identifiers = {
            (domain, moved_id(value, old, new) or value) if domain == DOMAIN else (domain, value)
            for domain, value in device.identifiers
        }
        if identifiers == device.identifiers:
            continue
        if (DOMAIN, old) in device.identifiers:
            # The meter's own device also shows the serial (M-Bus devices show their meter's).
            devices.async_update_device(device.id, new_identifiers=identifiers, serial_number=new)
        else:
            devices.async_update_device(device.id, new_identifiers=identifiers)
