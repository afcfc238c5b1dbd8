"""The Smarty P1 integration: Luxembourg's Smarty meter through its P1 port."""

from __future__ import annotations

from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr

from .const import CONF_REFERENCE_POWER
from .coordinator import SmartyConfigEntry, SmartyCoordinator, registers_store
from .entity import meter_device
from .tariff_runtime import async_remove_store

PLATFORMS: list[Platform] = [Platform.BINARY_SENSOR, Platform.EVENT, Platform.SENSOR]


async def async_setup_entry(hass: HomeAssistant, entry: SmartyConfigEntry) -> bool:
    """Connect to the meter and start reading; ConfigEntryNotReady when it can't be reached."""
    coordinator = SmartyCoordinator(hass, entry)
    # M-Bus devices link to the meter's device by its id, so it exists before any entity.
    dr.async_get(hass).async_get_or_create(
        config_entry_id=entry.entry_id, **meter_device(coordinator)
    )
    await coordinator.async_start()
    entry.runtime_data = coordinator
    entry.async_on_unload(entry.add_update_listener(_async_tariff_toggled))
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


async def _async_tariff_toggled(hass: HomeAssistant, entry: SmartyConfigEntry) -> None:
    # Options are read live; only switching the tariff on or off adds or removes entities.
    if (CONF_REFERENCE_POWER in entry.options) != (entry.runtime_data.tariff is not None):
        hass.config_entries.async_schedule_reload(entry.entry_id)


async def async_unload_entry(hass: HomeAssistant, entry: SmartyConfigEntry) -> bool:
    """Remove the entities; the coordinator's shutdown (registered on unload) closes the port."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)


async def async_remove_entry(hass: HomeAssistant, entry: SmartyConfigEntry) -> None:
    """Delete what the entry stored besides itself: the tariff state and the registers."""
    await async_remove_store(hass, entry)
    await registers_store(hass, entry).async_remove()
