"""The Smarty P1 integration: Luxembourg's Smarty meter through its P1 port."""

from __future__ import annotations

import re
from typing import Any

from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er

from .const import DOMAIN, LOGGER
from .coordinator import SmartyConfigEntry, SmartyCoordinator, SmartyData, registers_store
from .entity import device_identifier, meter_device, value_unique_id
from .p1 import mbus_channel
from .rebroadcast import async_start as async_start_rebroadcast
from .tariff_runtime import async_remove_store

PLATFORMS: list[Platform] = [Platform.BINARY_SENSOR, Platform.EVENT, Platform.SENSOR]

# Up to 1.1 a value sensor's unique id was "{serial}_{obis}_{key}", its description's key; the
# key of an M-Bus reading or an unknown code followed the device type and the unit.
_UNIQUE_ID_1_1 = re.compile(r"(?P<serial>.+)_(?P<obis>\d+-\d+:\d+\.\d+\.\d+)_(?P<key>\w+)")
# The keys of 1.1 that were not their code's main value, and the role that replaces them.
_ROLES_OF_1_1 = {
    "net_power": "net",
    "current_limit_import": "import",
    "current_limit_export": "export",
    "mbus_reading_time": "time",
}


async def async_migrate_entry(hass: HomeAssistant, entry: SmartyConfigEntry) -> bool:
    """Bring an entry, and the ids of its entities, to the version this code writes.

    1.2: a value sensor's unique id is its code and role (entity.value_unique_id).
    Home Assistant refuses a later major version itself; a later minor one is compatible by
    definition and stays as it is.
    """
    if entry.minor_version < 2:
        await _async_migrate_unique_ids_to_1_2(hass, entry)
        hass.config_entries.async_update_entry(entry, minor_version=2)
        LOGGER.debug("Migrated %s to version 1.2", entry.entry_id)
    return True


async def _async_migrate_unique_ids_to_1_2(hass: HomeAssistant, entry: SmartyConfigEntry) -> None:
    """Give the sensors of 1.1 their unique id of 1.2; the entity ids (and history) stay."""
    registry = er.async_get(hass)

    @callback
    def new_unique_id(entity: er.RegistryEntry) -> dict[str, Any] | None:
        old = _UNIQUE_ID_1_1.fullmatch(entity.unique_id)
        if entity.domain != Platform.SENSOR or old is None:
            # Health and tariff entities: "{serial}_{key}", as before.
            return None
        if old["key"] in _ROLES_OF_1_1.values():
            # Already of 1.2 (a role, not a key of 1.1).
            return None
        unique_id = value_unique_id(old["serial"], old["obis"], _ROLES_OF_1_1.get(old["key"]))
        if registry.async_get_entity_id(Platform.SENSOR, DOMAIN, unique_id) is not None:
            # A code whose key changed under 1.1 (a new unit for an M-Bus reading) left two
            # entities for one value: the older keeps the history, the other stays orphaned.
            LOGGER.info(
                "Not migrating %s: another entity has its new unique id %s",
                entity.entity_id,
                unique_id,
            )
            return None
        return {"new_unique_id": unique_id}

    await er.async_migrate_entries(hass, entry.entry_id, new_unique_id)


async def async_setup_entry(hass: HomeAssistant, entry: SmartyConfigEntry) -> bool:
    """Connect to the meter and start reading; ConfigEntryNotReady when it can't be reached."""
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
