"""Event of the reference-power tariff: fired when a quarter hour has overrun."""

from __future__ import annotations

from homeassistant.components.event import EventEntity
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .coordinator import SmartyConfigEntry, SmartyCoordinator
from .entity import meter_device, meter_unique_id
from .tariff import Quarter
from .tariff_runtime import TariffRuntime

PARALLEL_UPDATES = 0
OVERRUN = "overrun"


async def async_setup_entry(
    hass: HomeAssistant,
    entry: SmartyConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the overrun event when the tariff is on (a reference power is set)."""
    coordinator = entry.runtime_data
    if coordinator.tariff is not None:
        async_add_entities([QuarterOverrunEvent(coordinator, coordinator.tariff)])


class QuarterOverrunEvent(EventEntity):
    """Fires at the end of every quarter hour that overran, with its energy and overrun."""

    _attr_has_entity_name = True
    _attr_translation_key = "quarter_overrun"

    def __init__(self, coordinator: SmartyCoordinator, tariff: TariffRuntime) -> None:
        self._attr_event_types = [OVERRUN]
        self._tariff = tariff
        self._attr_unique_id = meter_unique_id(coordinator, "tariff_quarter_overrun")
        self._attr_device_info = meter_device(coordinator)

    async def async_added_to_hass(self) -> None:
        """Listen to the completed quarters."""
        await super().async_added_to_hass()
        self.async_on_remove(self._tariff.async_add_overrun_listener(self._overrun))

    @callback
    def _overrun(self, quarter: Quarter) -> None:
        data = {
            key: round(value, 4) if isinstance(value, float) else value
            for key, value in quarter.as_dict().items()
        }
        self._trigger_event(OVERRUN, data)
        self.async_write_ha_state()
