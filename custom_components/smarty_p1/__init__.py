"""The Smarty P1 integration: Luxembourg's Smarty meter through its P1 port."""

from __future__ import annotations

from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr

from .const import DOMAIN
from .coordinator import SmartyConfigEntry, SmartyCoordinator, SmartyData, registers_store
from .entity import device_identifier, meter_device
from .migration import async_migrate_entry
from .p1 import mbus_channel
from .rebroadcast import async_start as async_start_rebroadcast
from .takeover import async_adopt as async_adopt_takeover
from .tariff_runtime import async_remove_store

__all__ = ["async_migrate_entry"]

PLATFORMS: list[Platform] = [Platform.BINARY_SENSOR, Platform.EVENT, Platform.SENSOR]


async def async_setup_entry(hass: HomeAssistant, entry: SmartyConfigEntry) -> bool:
    """Connect to the meter and start reading; ConfigEntryNotReady when it can't be reached."""
    # A dsmr entry's entities move onto ours before any of ours registers (takeover.py).
    async_adopt_takeover(hass, entry)
    coordinator = SmartyCoordinator(hass, entry)
    # M-Bus devices link to the meter's device by its id, so it exists before any entity.
    dr.async_get(hass).async_get_or_create(
        config_entry_id=entry.entry_id, **meter_device(coordinator)
    )
    await coordinator.async_start()
    coordinator.rebroadcast = broadcaster = await async_start_rebroadcast(entry.options)
    if broadcaster is not None:
        entry.async_on_unload(broadcaster.close)
    entry.runtime_data = coordinator
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: SmartyConfigEntry) -> bool:
    """Remove the entities; the coordinator's shutdown (registered on unload) closes the port."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)


async def async_remove_entry(hass: HomeAssistant, entry: SmartyConfigEntry) -> None:
    """Delete what the entry stored besides itself: the tariff state and the registers."""
    await async_remove_store(hass, entry)
    await registers_store(hass, entry).async_remove()


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: SmartyConfigEntry, device: dr.DeviceEntry
) -> bool:
    """Let the user delete an M-Bus meter's device once its channel is gone from the telegram.

    The meter's own device stays while the entry exists. While the entry is not loaded (its
    port missing, say) nothing tells which channels report, so an M-Bus device may go: it comes
    back with its channel's next reading.
    """
    meter = (DOMAIN, entry.unique_id or entry.entry_id)
    if entry.state is not ConfigEntryState.LOADED:
        return meter not in device.identifiers
    coordinator = entry.runtime_data
    # None until the first telegram, whatever the coordinator's type says.
    data: SmartyData | None = coordinator.data
    if data is None:
        return meter not in device.identifiers
    channels = {mbus_channel(obis) for obis in data.telegram.objects if obis.endswith(":24.1.0")}
    reported = {device_identifier(coordinator, channel) for channel in channels | {None}}
    return reported.isdisjoint(device.identifiers)
