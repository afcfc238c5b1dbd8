"""The Smarty P1 integration: Luxembourg's Smarty meter through its P1 port."""

from __future__ import annotations

from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr

from .coordinator import SmartyConfigEntry, SmartyCoordinator
from .entity import meter_device

PLATFORMS: list[Platform] = [Platform.SENSOR]


async def async_setup_entry(hass: HomeAssistant, entry: SmartyConfigEntry) -> bool:
    """Connect to the meter and start reading; ConfigEntryNotReady when it can't be reached."""
    coordinator = SmartyCoordinator(hass, entry)
    # M-Bus devices link to the meter's device by its id, so it exists before any entity.
    dr.async_get(hass).async_get_or_create(
        config_entry_id=entry.entry_id, **meter_device(coordinator)
    )
    await coordinator.async_start()
    entry.runtime_data = coordinator
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: SmartyConfigEntry) -> bool:
    """Remove the entities; the coordinator's shutdown (registered on unload) closes the port."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
