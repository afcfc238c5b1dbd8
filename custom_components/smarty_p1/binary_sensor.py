"""Binary sensor of the reference-power tariff: whether this quarter hour will overrun."""

from __future__ import annotations

from homeassistant.components.binary_sensor import BinarySensorEntity
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .coordinator import SmartyConfigEntry, SmartyCoordinator
from .entity import SmartyEntity, meter_device, meter_unique_id
from .tariff_runtime import TariffRuntime

# Push updates: Home Assistant has nothing to poll and nothing to serialise.
PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: SmartyConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the forecast when the tariff is on (a reference power is set)."""
    coordinator = entry.runtime_data
    if coordinator.tariff is not None:
        async_add_entities([OverrunExpectedSensor(coordinator, coordinator.tariff)])


class OverrunExpectedSensor(SmartyEntity, BinarySensorEntity):
    """On while the current quarter hour is heading above the reference power.

    Confirmed over 20 s and with a 5 % hysteresis (tariff.py), so an automation can act on it.
    """

    _attr_translation_key = "overrun_expected"

    def __init__(self, coordinator: SmartyCoordinator, tariff: TariffRuntime) -> None:
        super().__init__(
            coordinator, unique_id=meter_unique_id(coordinator, "tariff_overrun_expected")
        )
        self._tariff = tariff
        self._attr_device_info = meter_device(coordinator)

    def _refresh(self) -> object:
        tracker = self._tariff.tracker
        self._attr_is_on = tracker.expected if tracker.quarter_start is not None else None
        return self._attr_is_on
