"""The base entity: device info, unique ids, and state writes only on change."""

from __future__ import annotations

from decimal import Decimal

from homeassistant.core import callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .const import DOMAIN, MANUFACTURER, MODEL
from .coordinator import SmartyCoordinator

# M-Bus device types (0-x:24.1.0) that the Luxembourg specification names.
MBUS_GAS = 3
MBUS_HEAT = 4
MBUS_WATER = 7
_MBUS_DEVICE_KEYS = {MBUS_GAS: "mbus_gas", MBUS_HEAT: "mbus_heat", MBUS_WATER: "mbus_water"}


def mbus_type(coordinator: SmartyCoordinator, channel: int) -> int | None:
    """The device type the meter announces on an M-Bus channel, if it does."""
    data = coordinator.data
    obj = data.telegram.objects.get(f"0-{channel}:24.1.0") if data else None
    if obj is None or not isinstance(obj.value, Decimal):
        return None
    return int(obj.value)


def value_unique_id(serial: str, obis: str, role: str | None = None) -> str:
    """The unique id of a sensor made from the OBIS code ``obis`` of the meter ``serial``.

    The code alone names its main value ("SAG1030700012345_1-0:1.8.0", an M-Bus reading
    "..._0-1:24.2.1" whatever it measures and in whatever unit); where a code makes several
    sensors, the others add their role ("..._1-0:2.7.0_net"). Nothing else goes in: a
    unique id that changed with a description, a device type or a unit would orphan the
    entity's history.
    """
    return f"{serial}_{obis}" if role is None else f"{serial}_{obis}_{role}"


def meter_id(coordinator: SmartyCoordinator) -> str:
    """What the meter's device and entity ids start with: its serial number."""
    # An entry always has the serial (the flow refuses a meter without one); the entry id
    # only keeps ids unique should one lack it.
    return coordinator.serial or coordinator.config_entry.entry_id


def meter_unique_id(coordinator: SmartyCoordinator, key: str) -> str:
    """The unique id of an entity that is not a value the meter sends (health, tariff)."""
    return f"{meter_id(coordinator)}_{key}"


def meter_name(serial: str | None) -> str:
    """The default name of a meter's device: "Smarty" and the last digits of its serial.

    Four digits tell the meters of one home apart, are printed on the meter's label, and keep
    the full serial, which identifies a household, out of every entity id and friendly name.
    """
    return f"Smarty {serial[-4:]}" if serial else "Smarty"


def device_identifier(
    coordinator: SmartyCoordinator, channel: int | None = None
) -> tuple[str, str]:
    """The device registry identifier of the meter (channel None) or of an M-Bus channel."""
    return serial_device_identifier(meter_id(coordinator), channel)


def serial_device_identifier(serial: str, channel: int | None = None) -> tuple[str, str]:
    """The device registry identifier of a meter's device (channel None) or of its M-Bus
    channel's, by the meter's serial.

    M-Bus devices are keyed by channel, not by the M-Bus meter's own id: a replaced gas meter
    keeps its history.
    """
    return (DOMAIN, serial if channel is None else f"{serial}_mbus_{channel}")


def meter_device(coordinator: SmartyCoordinator) -> DeviceInfo:
    """The electricity meter itself."""
    info = DeviceInfo(
        identifiers={device_identifier(coordinator)},
        manufacturer=MANUFACTURER,
        model=MODEL,
        name=meter_name(coordinator.serial),
        serial_number=coordinator.serial,
    )
    if (data := coordinator.data) is not None:
        version = data.telegram.get("1-3:0.2.8")
        info["sw_version"] = (
            f"P1 {version.value}" if version is not None and version.value else None
        ) or data.telegram.header
    return info


def mbus_device(coordinator: SmartyCoordinator, channel: int) -> DeviceInfo:
    """A gas, water or heat meter on an M-Bus channel, reached through the electricity meter.

    The electricity meter's device must be registered already (setup does it first).
    """
    info = DeviceInfo(
        identifiers={device_identifier(coordinator, channel)},
        via_device_id=dr.async_get_device_id_by_identifier(
            coordinator.hass,
            device_identifier(coordinator),
            config_entry_id=coordinator.config_entry.entry_id,
        ),
        translation_key=_MBUS_DEVICE_KEYS.get(mbus_type(coordinator, channel) or 0, "mbus"),
        # Named after its meter ("Smarty 2574 gas meter 1"): two meters' gas meters differ.
        translation_placeholders={"meter": meter_name(coordinator.serial), "channel": str(channel)},
    )
    data = coordinator.data
    ident = data.telegram.get(f"0-{channel}:96.1.0") if data else None
    if ident is not None and isinstance(ident.value, str) and ident.value:
        info["serial_number"] = ident.value
    return info


class SmartyEntity(CoordinatorEntity[SmartyCoordinator]):
    """An entity of one meter that writes its state only when what it shows changed.

    A meter sends every 10 s and most values do not move between telegrams; skipping the
    unchanged writes keeps the recorder and the event bus quiet.
    """

    _attr_has_entity_name = True
    _written: tuple[object, bool] | None = None
    # A register the meter counts up (energy, gas, water): updated at most every
    # total_interval seconds, whatever the minimum update interval.
    _meter_total = False

    def __init__(self, coordinator: SmartyCoordinator, *, unique_id: str) -> None:
        super().__init__(coordinator)
        self._attr_unique_id = unique_id

    def _refresh(self) -> object:
        """Set the entity's attributes from the coordinator; return what its state depends on."""
        raise NotImplementedError

    async def async_added_to_hass(self) -> None:
        """Take the current value before the first state is written."""
        await super().async_added_to_hass()
        self._written = (self._refresh(), self.available)

    @callback
    def _handle_coordinator_update(self) -> None:
        current = (self._refresh(), self.available)
        written = self._written
        if current == written:
            return
        if (
            self._meter_total
            and written is not None
            and current[1] == written[1]
            and not self.coordinator.data.totals_due
        ):
            # A new reading of a total between its updates: a later telegram writes it.
            return
        self._written = current
        self.async_write_ha_state()
