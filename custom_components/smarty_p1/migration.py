"""Config entry versions: each change of stored data or ids is a version, brought up to date here.

1.2: a value sensor's unique id is its code and role (entity.value_unique_id); the monthly
overrun cost is in Home Assistant's euro unit, its long-term statistics with it.
"""

from __future__ import annotations

import re
from typing import Any

from homeassistant.const import CURRENCY_EURO, Platform
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.recorder import get_instance

from .const import DOMAIN, LOGGER
from .coordinator import SmartyConfigEntry
from .entity import value_unique_id

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

    Home Assistant refuses a later major version itself; a later minor one is compatible by
    definition and stays as it is.
    """
    if entry.minor_version < 2:
        await _async_migrate_unique_ids_to_1_2(hass, entry)
        _migrate_cost_unit_to_1_2(hass, entry)
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


# Up to 1.1 the overrun cost said "EUR"; Home Assistant's unit is "€". The recorder compiles no
# statistics for a sensor whose unit no longer matches its statistics' (a repair would ask the
# user), so the statistics move to the new unit with it: the amounts are the same.
_OLD_COST_UNIT = "EUR"


@callback
def _migrate_cost_unit_to_1_2(hass: HomeAssistant, entry: SmartyConfigEntry) -> None:
    if "recorder" not in hass.config.components or entry.unique_id is None:
        return
    entity_id = er.async_get(hass).async_get_entity_id(
        Platform.SENSOR, DOMAIN, f"{entry.unique_id}_tariff_overrun_cost_month"
    )
    if entity_id is None:
        return
    get_instance(hass).async_update_statistics_metadata(
        entity_id, new_unit_class=None, new_unit_of_measurement=CURRENCY_EURO
    )
    LOGGER.debug("Statistics of %s now in %s (were %s)", entity_id, CURRENCY_EURO, _OLD_COST_UNIT)
