"""Sensors: one per value the meter sends, created when its OBIS code first appears."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import (
    CURRENCY_EURO,
    EntityCategory,
    UnitOfApparentPower,
    UnitOfElectricCurrent,
    UnitOfElectricPotential,
    UnitOfEnergy,
    UnitOfPower,
    UnitOfReactiveEnergy,
    UnitOfReactivePower,
    UnitOfVolume,
)
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .coordinator import Health, SmartyConfigEntry, SmartyCoordinator, SmartyData
from .entity import (
    MBUS_GAS,
    MBUS_HEAT,
    MBUS_WATER,
    SmartyEntity,
    mbus_device,
    mbus_type,
    meter_id,
    meter_unique_id,
    value_unique_id,
)
from .entity import meter_device as meter_device_info
from .p1 import CosemObject, generic_code, mbus_channel
from .p1.integrity import Integrity
from .tariff import QuarterHourTracker
from .tariff_runtime import TariffRuntime

# Push updates: Home Assistant has nothing to poll and nothing to serialise.
PARALLEL_UPDATES = 0

type SensorValue = Decimal | str | datetime | None
type Objects = Mapping[str, CosemObject]

# Home Assistant refuses longer states; meter messages may hold up to 2048 characters.
MAX_STATE = 255
CONTROL_STATES = ["disconnected", "connected", "ready_for_reconnection"]


def _number(objects: Objects, obis: str) -> SensorValue:
    obj = objects.get(obis)
    return obj.value if obj is not None and isinstance(obj.value, Decimal) else None


def _text(objects: Objects, obis: str) -> SensorValue:
    obj = objects.get(obis)
    return obj.value[:MAX_STATE] if obj is not None and isinstance(obj.value, str) else None


def _time(objects: Objects, obis: str) -> SensorValue:
    obj = objects.get(obis)
    return obj.value if obj is not None and isinstance(obj.value, datetime) else None


def _capture_time(objects: Objects, obis: str) -> SensorValue:
    obj = objects.get(obis)
    return obj.timestamp if obj is not None else None


def _control_state(objects: Objects, obis: str) -> SensorValue:
    value = _number(objects, obis)
    if not isinstance(value, Decimal) or value not in range(len(CONTROL_STATES)):
        return None
    return CONTROL_STATES[int(value)]


def _limit(index: int) -> Callable[[Objects, str], SensorValue]:
    def value(objects: Objects, obis: str) -> SensorValue:
        obj = objects.get(obis)
        if obj is None:
            return None
        # A line with a single value, (040*A), is parsed as a number: the import limit alone.
        items = obj.value if isinstance(obj.value, tuple) else (obj.value,)
        item = items[index] if index < len(items) else None
        return item if isinstance(item, Decimal) else None

    return value


def _net_power(objects: Objects, obis: str) -> SensorValue:
    imported = _number(objects, "1-0:1.7.0")
    exported = _number(objects, "1-0:2.7.0")
    if not isinstance(imported, Decimal) or not isinstance(exported, Decimal):
        return None
    return imported - exported


def _exports(objects: Objects) -> bool:
    """Whether the meter has ever sent energy to the grid: only then is net power worth a
    sensor (without solar it repeats the import, and costs a recorder row every telegram)."""
    exported = _number(objects, "1-0:2.8.0")
    return "1-0:1.7.0" in objects and isinstance(exported, Decimal) and exported > 0


def _raw(objects: Objects, obis: str) -> SensorValue:
    obj = objects.get(obis)
    return ")(".join(obj.raw)[:MAX_STATE] if obj is not None else None


@dataclass(frozen=True, kw_only=True)
class SmartyEntityDescription(SensorEntityDescription):
    """A sensor made from the OBIS code ``obis`` (``x`` for an M-Bus channel).

    ``role`` tells the sensors of one code apart in their unique ids (entity.value_unique_id):
    None for the code's main value, else what this one shows of it ("net", "import", "time").
    Once released, a role is part of users' unique ids: it never changes.
    """

    obis: str
    role: str | None = None
    value_fn: Callable[[Objects, str], SensorValue] = _number
    # Whether the telegram holds what the sensor needs besides ``obis`` itself.
    exists_fn: Callable[[Objects], bool] = lambda objects: True
    # The codes value_fn reads besides ``obis``.
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SmartyHealthDescription(SensorEntityDescription):
    """A sensor about the connection rather than the meter's values."""

    value_fn: Callable[[Health], SensorValue]


def _numbered(
    template: SmartyEntityDescription,
    codes: tuple[str, ...],
    placeholder: str = "phase",
    prefix: str = "L",
) -> list[SmartyEntityDescription]:
    """One sensor per phase (L1, L2, L3), tariff or relay."""
    return [
        replace(
            template,
            key=f"{template.key}_{number}",
            obis=code,
            translation_placeholders={placeholder: f"{prefix}{number}"},
        )
        for number, code in enumerate(codes, 1)
    ]


def _energy(key: str, obis: str) -> SmartyEntityDescription:
    return SmartyEntityDescription(
        key=key,
        obis=obis,
        translation_key=key,
        device_class=SensorDeviceClass.ENERGY,
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=UnitOfEnergy.KILO_WATT_HOUR,
        suggested_display_precision=3,
    )


def _reactive_energy(key: str, obis: str) -> SmartyEntityDescription:
    return SmartyEntityDescription(
        key=key,
        obis=obis,
        translation_key=key,
        device_class=SensorDeviceClass.REACTIVE_ENERGY,
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=UnitOfReactiveEnergy.KILO_VOLT_AMPERE_REACTIVE_HOUR,
        suggested_display_precision=3,
        entity_registry_enabled_default=False,
    )


def _measurement(
    key: str,
    obis: str,
    device_class: SensorDeviceClass,
    unit: str,
    precision: int,
    *,
    enabled: bool = True,
) -> SmartyEntityDescription:
    return SmartyEntityDescription(
        key=key,
        obis=obis,
        translation_key=key,
        device_class=device_class,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=unit,
        suggested_display_precision=precision,
        entity_registry_enabled_default=enabled,
    )


def _diagnostic(
    key: str,
    obis: str,
    value_fn: Callable[[Objects, str], SensorValue] = _number,
    *,
    enabled: bool = True,
    **kwargs: Any,
) -> SmartyEntityDescription:
    return SmartyEntityDescription(
        key=key,
        obis=obis,
        translation_key=key,
        value_fn=value_fn,
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=enabled,
        **kwargs,
    )


_POWER = SensorDeviceClass.POWER
_REACTIVE = SensorDeviceClass.REACTIVE_POWER
_APPARENT = SensorDeviceClass.APPARENT_POWER
_KW = UnitOfPower.KILO_WATT
_KVAR = UnitOfReactivePower.KILO_VOLT_AMPERE_REACTIVE
_KVA = UnitOfApparentPower.KILO_VOLT_AMPERE
_VOLTAGE = SensorDeviceClass.VOLTAGE
_V = UnitOfElectricPotential.VOLT
_CURRENT = SensorDeviceClass.CURRENT
_A = UnitOfElectricCurrent.AMPERE


def _control(key: str, obis: str, *, enabled: bool) -> SmartyEntityDescription:
    return _diagnostic(
        key,
        obis,
        _control_state,
        enabled=enabled,
        device_class=SensorDeviceClass.ENUM,
        options=CONTROL_STATES,
    )


def _counter(key: str, obis: str) -> SmartyEntityDescription:
    """A count the meter keeps (power failures, sags): it only grows, until a meter exchange."""
    return _diagnostic(key, obis, state_class=SensorStateClass.TOTAL_INCREASING)


def _current_limit(key: str, obis: str, index: int, role: str) -> SmartyEntityDescription:
    return _diagnostic(
        key,
        obis,
        _limit(index),
        role=role,
        device_class=_CURRENT,
        native_unit_of_measurement=_A,
        suggested_display_precision=0,
    )


_TABLE: list[SmartyEntityDescription] = [
    _energy("energy_import", "1-0:1.8.0"),
    _energy("energy_export", "1-0:2.8.0"),
    _reactive_energy("reactive_energy_import", "1-0:3.8.0"),
    _reactive_energy("reactive_energy_export", "1-0:4.8.0"),
    *_numbered(_energy("energy_import_tariff", ""), ("1-0:1.8.1", "1-0:1.8.2"), "tariff", ""),
    *_numbered(_energy("energy_export_tariff", ""), ("1-0:2.8.1", "1-0:2.8.2"), "tariff", ""),
    _measurement("power_import", "1-0:1.7.0", _POWER, _KW, 3),
    _measurement("power_export", "1-0:2.7.0", _POWER, _KW, 3),
    SmartyEntityDescription(
        key="net_power",
        obis="1-0:2.7.0",
        translation_key="net_power",
        device_class=_POWER,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=_KW,
        suggested_display_precision=3,
        value_fn=_net_power,
        exists_fn=_exports,
        inputs=("1-0:1.7.0",),
        role="net",
    ),
    _measurement("reactive_power_import", "1-0:3.7.0", _REACTIVE, _KVAR, 3, enabled=False),
    _measurement("reactive_power_export", "1-0:4.7.0", _REACTIVE, _KVAR, 3, enabled=False),
    _measurement("apparent_power_import", "1-0:9.7.0", _APPARENT, _KVA, 3, enabled=False),
    _measurement("apparent_power_export", "1-0:10.7.0", _APPARENT, _KVA, 3, enabled=False),
    *_numbered(
        _measurement("power_import_phase", "", _POWER, _KW, 3, enabled=False),
        ("1-0:21.7.0", "1-0:41.7.0", "1-0:61.7.0"),
    ),
    *_numbered(
        _measurement("power_export_phase", "", _POWER, _KW, 3, enabled=False),
        ("1-0:22.7.0", "1-0:42.7.0", "1-0:62.7.0"),
    ),
    *_numbered(
        _measurement("reactive_power_import_phase", "", _REACTIVE, _KVAR, 3, enabled=False),
        ("1-0:23.7.0", "1-0:43.7.0", "1-0:63.7.0"),
    ),
    *_numbered(
        _measurement("reactive_power_export_phase", "", _REACTIVE, _KVAR, 3, enabled=False),
        ("1-0:24.7.0", "1-0:44.7.0", "1-0:64.7.0"),
    ),
    *_numbered(
        _measurement("voltage_phase", "", _VOLTAGE, _V, 1, enabled=False),
        ("1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0"),
    ),
    *_numbered(
        _measurement("current_phase", "", _CURRENT, _A, 0, enabled=False),
        ("1-0:31.7.0", "1-0:51.7.0", "1-0:71.7.0"),
    ),
    _diagnostic(
        "power_limit",
        "0-0:17.0.0",
        device_class=_APPARENT,
        native_unit_of_measurement=_KVA,
        suggested_display_precision=1,
    ),
    # Table 3.1 of the Luxembourg specification lists the thresholds of the current limiter as
    # 1-1:34.4.0; its example telegram, and every meter seen, send them as 1-1:31.4.0. The names
    # differ, so that a meter sending both shows which is which.
    *(
        _current_limit(f"{name}_{role}", obis, index, role)
        for obis, name in (("1-1:31.4.0", "current_limit"), ("1-1:34.4.0", "current_threshold"))
        for index, role in enumerate(("import", "export"))
    ),
    _control("breaker_state", "0-0:96.3.10", enabled=True),
    *_numbered(
        _control("relay_state", "", enabled=False), ("0-1:96.3.10", "0-2:96.3.10"), "relay", ""
    ),
    _counter("power_failures", "0-0:96.7.21"),
    _counter("long_power_failures", "0-0:96.7.9"),
    *_numbered(_counter("voltage_sags", ""), ("1-0:32.32.0", "1-0:52.32.0", "1-0:72.32.0")),
    *_numbered(_counter("voltage_swells", ""), ("1-0:32.36.0", "1-0:52.36.0", "1-0:72.36.0")),
    _diagnostic("message", "0-0:96.13.0", _text),
    _diagnostic("message_channel", "0-0:96.13.x", _text, enabled=False),
    _diagnostic(
        "meter_time",
        "0-0:1.0.0",
        _time,
        enabled=False,
        device_class=SensorDeviceClass.TIMESTAMP,
    ),
    _diagnostic(
        "mbus_reading_time",
        "0-x:24.2.1",
        _capture_time,
        enabled=False,
        role="time",
        device_class=SensorDeviceClass.TIMESTAMP,
    ),
    _control("valve_position", "0-x:24.4.0", enabled=True),
]
DESCRIPTIONS: dict[str, list[SmartyEntityDescription]] = {}
for _description in _TABLE:
    DESCRIPTIONS.setdefault(_description.obis, []).append(_description)


def _mbus_description(
    kind: str, device_class: SensorDeviceClass, unit: str
) -> SmartyEntityDescription:
    return SmartyEntityDescription(
        key=f"mbus_{kind}",
        obis="0-x:24.2.1",
        # The reading is what the device is: it bears the device's name ("... gas meter 1").
        name=None,
        device_class=device_class,
        state_class=SensorStateClass.TOTAL_INCREASING,
        native_unit_of_measurement=unit,
        suggested_display_precision=3,
    )


# The M-Bus reading, by the device type the meter announces on the channel.
MBUS_READINGS: dict[int, SmartyEntityDescription] = {
    MBUS_GAS: _mbus_description("gas", SensorDeviceClass.GAS, UnitOfVolume.CUBIC_METERS),
    MBUS_WATER: _mbus_description("water", SensorDeviceClass.WATER, UnitOfVolume.CUBIC_METERS),
    MBUS_HEAT: _mbus_description("heat", SensorDeviceClass.ENERGY, UnitOfEnergy.GIGA_JOULE),
}
# Units as meters write them, as Home Assistant writes them.
_MBUS_UNITS = {MBUS_GAS: "m3", MBUS_WATER: "m3", MBUS_HEAT: "GJ"}
_UNIT_NAMES = {"m3": UnitOfVolume.CUBIC_METERS, "GJ": UnitOfEnergy.GIGA_JOULE}
MBUS_OTHER = SmartyEntityDescription(
    key="mbus_reading",
    obis="0-x:24.2.1",
    name=None,
    state_class=SensorStateClass.TOTAL_INCREASING,
)
UNKNOWN = _diagnostic("unknown_obis", "", _raw, enabled=False)
# Codes that describe the meter rather than measure: they go into the device registry.
DEVICE_CODES = frozenset(
    {"1-3:0.2.8", "0-0:42.0.0", "0-0:96.1.1", "0-x:96.1.0", "0-x:96.1.1", "0-x:24.1.0"}
)

# The rejections each health counter counts: frames that failed (or went around) the key check,
# and frames damaged on the line.
AUTHENTICATION_FAILURES: Final = ("wrong_key", "tag", "unencrypted", "security")
DAMAGE: Final = ("damaged", "crc", "malformed")


def _count(health: Health, reasons: tuple[str, ...]) -> Decimal:
    rejected = health.stats.rejected
    return Decimal(sum(rejected[reason] for reason in reasons))


HEALTH: tuple[SmartyHealthDescription, ...] = (
    SmartyHealthDescription(
        key="last_telegram",
        translation_key="last_telegram",
        device_class=SensorDeviceClass.TIMESTAMP,
        entity_category=EntityCategory.DIAGNOSTIC,
        # It changes with every telegram: recording it would cost a row every 10 s.
        entity_registry_enabled_default=False,
        value_fn=lambda health: health.last_telegram,
    ),
    SmartyHealthDescription(
        key="rejected_tag",
        translation_key="rejected_tag",
        entity_category=EntityCategory.DIAGNOSTIC,
        # Counted since Home Assistant started: a restart is a reset, as for any meter.
        state_class=SensorStateClass.TOTAL_INCREASING,
        value_fn=lambda health: _count(health, AUTHENTICATION_FAILURES),
    ),
    SmartyHealthDescription(
        key="rejected_crc",
        translation_key="rejected_crc",
        entity_category=EntityCategory.DIAGNOSTIC,
        state_class=SensorStateClass.TOTAL_INCREASING,
        value_fn=lambda health: _count(health, DAMAGE),
    ),
    SmartyHealthDescription(
        key="integrity",
        translation_key="integrity",
        entity_category=EntityCategory.DIAGNOSTIC,
        device_class=SensorDeviceClass.ENUM,
        options=[integrity.value for integrity in Integrity],
        value_fn=lambda health: health.integrity.value,
    ),
)


def descriptions_for(
    coordinator: SmartyCoordinator, obis: str, objects: Objects
) -> list[tuple[SmartyEntityDescription, DeviceInfo]]:
    """The sensors an OBIS code makes, with their device; [] when it only describes a device."""
    generic = generic_code(obis)
    channel = mbus_channel(obis)
    device = mbus_device(coordinator, channel) if channel else meter_device_info(coordinator)
    if generic in DEVICE_CODES:
        return []
    found = DESCRIPTIONS.get(obis) or DESCRIPTIONS.get(generic)
    if found is None:
        found = [replace(UNKNOWN, key="unknown", translation_placeholders={"obis": obis})]
    elif generic == "0-0:96.13.x":
        found = [replace(found[0], translation_placeholders={"channel": obis.rpartition(".")[2]})]
    if generic == "0-x:24.2.1" and channel:
        found = [_mbus_reading(coordinator, channel, objects[obis]), *found]
    return [(description, device) for description in found]


def _mbus_reading(
    coordinator: SmartyCoordinator, channel: int, obj: CosemObject
) -> SmartyEntityDescription:
    kind = mbus_type(coordinator, channel)
    if kind in MBUS_READINGS and (obj.unit is None or obj.unit == _MBUS_UNITS[kind]):
        return MBUS_READINGS[kind]
    # A device type the specification does not name, or a unit that contradicts it: show the
    # reading as sent rather than guess what it measures.
    return replace(MBUS_OTHER, native_unit_of_measurement=_UNIT_NAMES.get(obj.unit or "", obj.unit))


async def async_setup_entry(
    hass: HomeAssistant,
    entry: SmartyConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the health sensors now and a sensor for each value when it first arrives."""
    coordinator = entry.runtime_data
    device = meter_device_info(coordinator)
    async_add_entities(SmartyHealthSensor(coordinator, desc, device) for desc in HEALTH)
    if (tariff := coordinator.tariff) is not None:
        async_add_entities(
            TariffSensor(coordinator, tariff, desc, device) for desc in TARIFF_SENSORS
        )
    seen: set[str] = set()
    # Sensors that wait for a value the meter has not sent yet (net power: a first export).
    waiting: list[tuple[str, SmartyEntityDescription, DeviceInfo]] = []

    @callback
    def add_new_sensors() -> None:
        data: SmartyData | None = coordinator.data
        if data is None:
            return
        objects = data.telegram.objects
        if seen.issuperset(objects) and not any(
            description.exists_fn(objects) for _, description, _ in waiting
        ):
            return
        candidates = [
            *waiting,
            *(
                (obis, description, device_info)
                for obis in objects
                if obis not in seen
                for description, device_info in descriptions_for(coordinator, obis, objects)
            ),
        ]
        seen.update(objects)
        waiting.clear()
        sensors = []
        for obis, description, device_info in candidates:
            if description.exists_fn(objects):
                sensors.append(SmartySensor(coordinator, description, obis, device_info))
            else:
                waiting.append((obis, description, device_info))
        if sensors:
            async_add_entities(sensors)

    add_new_sensors()
    entry.async_on_unload(coordinator.async_add_listener(add_new_sensors))


# The registers whose states the totals' interval spaces out.
_METER_TOTALS = frozenset(
    {
        SensorDeviceClass.ENERGY,
        SensorDeviceClass.REACTIVE_ENERGY,
        SensorDeviceClass.GAS,
        SensorDeviceClass.WATER,
    }
)


class SmartySensor(SmartyEntity, SensorEntity):
    """A value the meter sends."""

    entity_description: SmartyEntityDescription
    # The object the state was last made from, and the value made from it.
    _cached: tuple[CosemObject, SensorValue] | None = None

    def __init__(
        self,
        coordinator: SmartyCoordinator,
        description: SmartyEntityDescription,
        obis: str,
        device_info: DeviceInfo,
    ) -> None:
        super().__init__(
            coordinator,
            unique_id=value_unique_id(meter_id(coordinator), obis, description.role),
        )
        self.entity_description = description
        self._obis = obis
        self._attr_device_info = device_info
        self._meter_total = description.device_class in _METER_TOTALS

    def _refresh(self) -> SensorValue:
        # Sensors are made from a telegram: the data is never None here.
        data = self.coordinator.data
        source = data.objects.get(self._obis)
        cached = self._cached
        description = self.entity_description
        if cached is not None and cached[0] is source and not description.inputs:
            # The same line as last time (the parser reuses the object of a repeated line).
            return cached[1]
        value = description.value_fn(data.objects, self._obis)
        self._attr_native_value = value
        self._cached = None if source is None else (source, value)
        return value


class SmartyHealthSensor(SmartyEntity, SensorEntity):
    """How the connection is doing; available even when the meter is not."""

    entity_description: SmartyHealthDescription

    def __init__(
        self,
        coordinator: SmartyCoordinator,
        description: SmartyHealthDescription,
        device_info: DeviceInfo,
    ) -> None:
        super().__init__(coordinator, unique_id=meter_unique_id(coordinator, description.key))
        self.entity_description = description
        self._attr_device_info = device_info

    @property
    def available(self) -> bool:
        """Counters matter most when the meter is silent or the key is wrong."""
        return True

    def _refresh(self) -> SensorValue:
        value = self.entity_description.value_fn(self.coordinator.health)
        self._attr_native_value = value
        return value


# --- The reference-power tariff (only when the user set a reference power). ---


@dataclass(frozen=True, kw_only=True)
class TariffDescription(SensorEntityDescription):
    """A figure of the quarter-hour tracker."""

    value_fn: Callable[[QuarterHourTracker], float | None]
    # The start of the cycle a TOTAL sensor counts over (quarter, day, month).
    last_reset_fn: Callable[[QuarterHourTracker], datetime | None] | None = None
    # Floats of interpolated readings carry noise far below what a meter resolves.
    digits: int = 3
    attributes_fn: Callable[[QuarterHourTracker], dict[str, object]] | None = None


def _tariff_energy(
    key: str,
    value_fn: Callable[[QuarterHourTracker], float | None],
    last_reset_fn: Callable[[QuarterHourTracker], datetime | None] | None,
) -> TariffDescription:
    return TariffDescription(
        key=key,
        translation_key=key,
        device_class=SensorDeviceClass.ENERGY,
        # A projection is not an amount counted over a cycle: no statistics for it.
        state_class=SensorStateClass.TOTAL if last_reset_fn else None,
        native_unit_of_measurement=UnitOfEnergy.KILO_WATT_HOUR,
        suggested_display_precision=3,
        value_fn=value_fn,
        last_reset_fn=last_reset_fn,
    )


def _tariff_power(
    key: str, value_fn: Callable[[QuarterHourTracker], float | None]
) -> TariffDescription:
    return TariffDescription(
        key=key,
        translation_key=key,
        device_class=SensorDeviceClass.POWER,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=UnitOfPower.KILO_WATT,
        suggested_display_precision=2,
        value_fn=value_fn,
    )


def _last_quarter_start(tracker: QuarterHourTracker) -> datetime | None:
    return tracker.last_quarter.start if tracker.last_quarter else None


def _month_rates(tracker: QuarterHourTracker) -> dict[str, object]:
    """Which rates price the month: a year's published ones (which year), or the user's."""
    start = tracker.month.start(tracker.zone)
    if start is None:
        return {}
    applied = tracker.plan.applied(start.year)
    return {"rates_year": applied.published_year, "rates_source": applied.source.value}


TARIFF_SENSORS: tuple[TariffDescription, ...] = (
    _tariff_energy(
        "quarter_energy",
        lambda tracker: tracker.quarter_energy if tracker.quarter_start else None,
        lambda tracker: tracker.quarter_start,
    ),
    _tariff_power("quarter_average_power", lambda tracker: tracker.average_power),
    _tariff_energy("quarter_projected_energy", lambda tracker: tracker.projected_energy, None),
    _tariff_power("quarter_headroom", lambda tracker: tracker.headroom),
    _tariff_energy(
        "last_quarter_overrun",
        lambda tracker: tracker.last_quarter.overrun if tracker.last_quarter else None,
        _last_quarter_start,
    ),
    _tariff_energy(
        "overrun_today",
        lambda tracker: tracker.day.overrun if tracker.day.period else None,
        lambda tracker: tracker.day.start(tracker.zone),
    ),
    _tariff_energy(
        "overrun_month",
        lambda tracker: tracker.month.overrun if tracker.month.period else None,
        lambda tracker: tracker.month.start(tracker.zone),
    ),
    TariffDescription(
        key="overrun_cost_month",
        translation_key="overrun_cost_month",
        device_class=SensorDeviceClass.MONETARY,
        state_class=SensorStateClass.TOTAL,
        native_unit_of_measurement=CURRENCY_EURO,
        suggested_display_precision=2,
        digits=4,
        value_fn=lambda tracker: tracker.month.cost if tracker.month.period else None,
        last_reset_fn=lambda tracker: tracker.month.start(tracker.zone),
        attributes_fn=_month_rates,
    ),
    _tariff_power("max_quarter_power_month", lambda tracker: tracker.month.max_power),
)


class TariffSensor(SmartyEntity, SensorEntity):
    """A figure of the reference-power tariff."""

    entity_description: TariffDescription

    def __init__(
        self,
        coordinator: SmartyCoordinator,
        tariff: TariffRuntime,
        description: TariffDescription,
        device_info: DeviceInfo,
    ) -> None:
        super().__init__(
            coordinator, unique_id=meter_unique_id(coordinator, f"tariff_{description.key}")
        )
        self.entity_description = description
        self._tariff = tariff
        self._attr_device_info = device_info

    def _refresh(self) -> object:
        description = self.entity_description
        tracker = self._tariff.tracker
        value = description.value_fn(tracker)
        self._attr_native_value = None if value is None else round(value, description.digits)
        reset = description.last_reset_fn
        self._attr_last_reset = reset(tracker) if reset else None
        if (attributes := description.attributes_fn) is not None:
            self._attr_extra_state_attributes = attributes(tracker)
        return self._attr_native_value, self._attr_last_reset, self.extra_state_attributes
