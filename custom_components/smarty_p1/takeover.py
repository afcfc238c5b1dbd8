"""Taking over the entry of core ``dsmr`` (or of ``dsmr_encrypted``) that reads the same meter.

A serial port, or a single-client bridge, has one reader: while a dsmr entry reads the meter,
probing the same port gets a share of its bytes at best. The config flow therefore looks for such
an entry first (``async_entry_on``, ``entry_of_meter``) and offers to take it over. Taking over
keeps the user's history: every dsmr entity whose value this integration has too moves, with its
entity id and what the user set on it, onto the sensor of the same register here, so the
recorder's states and long-term statistics go on under the same statistic id, and dashboards,
automations and the energy dashboard keep working. The dsmr entry and its devices are removed
last, once this integration's entry exists; until then any failure sets dsmr up again as it was.

The moves have to happen after this integration's entry exists (they name it) and before its
sensors register (they would register under new entity ids): ``async_adopt`` does them at the
start of the entry's setup, from the plan the flow left behind (``async_plan``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from homeassistant.components.sensor import SensorEntityDescription, SensorStateClass
from homeassistant.config_entries import ConfigEntry, ConfigEntryState
from homeassistant.const import ATTR_FRIENDLY_NAME, CONF_DEVICE, CONF_HOST, CONF_PORT
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.typing import UNDEFINED
from homeassistant.util.hass_dict import HassKey

from .const import CONF_CONNECTION_TYPE, CONNECTION_NETWORK, CONNECTION_SERIAL, DOMAIN, LOGGER
from .entity import serial_device_identifier, value_unique_id
from .p1 import InvalidKeyFormatError, Telegram, generic_code, mbus_channel, normalize_key
from .p1.telegram import decode_text
from .sensor import DESCRIPTIONS, MBUS_READINGS

# Core's integration, and the custom integration it grew from (same data, same entities).
DSMR_DOMAINS: Final = ("dsmr", "dsmr_encrypted")
# Their config entry data (identical in both, and in Home Assistant 2026.8 to 2026.10).
DSMR_PORT: Final = "port"  # a device path or a URL such as socket://host:port
DSMR_HOST: Final = "host"  # older network entries: host here, TCP port under "port"
DSMR_KEY: Final = "encryption_key"
DSMR_SERIAL: Final = "serial_id"  # 0-0:42.0.0 as sent (hex-coded text), or None
DSMR_SERIAL_GAS: Final = "serial_id_gas"

# dsmr's sensor keys (the end of their unique ids, f"{serial_id}_{key}") and the OBIS code whose
# main value is the same register here. Those dsmr makes for a Smarty (MSn) and for the
# Luxembourg plaintext meter (5L); keys for other countries' meters do not occur.
DSMR_VALUES: Final[Mapping[str, str]] = {
    "timestamp": "0-0:1.0.0",
    "current_electricity_usage": "1-0:1.7.0",
    "current_electricity_delivery": "1-0:2.7.0",
    "electricity_imported_total": "1-0:1.8.0",
    "electricity_exported_total": "1-0:2.8.0",
    "electricity_used_tariff_1": "1-0:1.8.1",
    "electricity_used_tariff_2": "1-0:1.8.2",
    "electricity_delivered_tariff_1": "1-0:2.8.1",
    "electricity_delivered_tariff_2": "1-0:2.8.2",
    "instantaneous_active_power_l1_positive": "1-0:21.7.0",
    "instantaneous_active_power_l2_positive": "1-0:41.7.0",
    "instantaneous_active_power_l3_positive": "1-0:61.7.0",
    "instantaneous_active_power_l1_negative": "1-0:22.7.0",
    "instantaneous_active_power_l2_negative": "1-0:42.7.0",
    "instantaneous_active_power_l3_negative": "1-0:62.7.0",
    "instantaneous_voltage_l1": "1-0:32.7.0",
    "instantaneous_voltage_l2": "1-0:52.7.0",
    "instantaneous_voltage_l3": "1-0:72.7.0",
    "instantaneous_current_l1": "1-0:31.7.0",
    "instantaneous_current_l2": "1-0:51.7.0",
    "instantaneous_current_l3": "1-0:71.7.0",
    "short_power_failure_count": "0-0:96.7.21",
    "long_power_failure_count": "0-0:96.7.9",
    "voltage_sag_l1_count": "1-0:32.32.0",
    "voltage_sag_l2_count": "1-0:52.32.0",
    "voltage_sag_l3_count": "1-0:72.32.0",
    "voltage_swell_l1_count": "1-0:32.36.0",
    "voltage_swell_l2_count": "1-0:52.36.0",
    "voltage_swell_l3_count": "1-0:72.36.0",
}
# dsmr's gas reading from before its M-Bus devices: the reading of the gas meter's channel.
DSMR_LEGACY_GAS: Final = "hourly_gas_meter_reading"
MBUS_GAS_TYPE: Final = Decimal(3)
# Recorder statistics of these state classes are sums; of MEASUREMENT, means.
_SUMS = {SensorStateClass.TOTAL, SensorStateClass.TOTAL_INCREASING}
# Nothing to list in a result message.
NONE: Final = "-"

_PENDING: HassKey[dict[str, Takeover]] = HassKey(f"{DOMAIN}_takeover")


# --- Finding a dsmr entry of the meter ---


def _dsmr_entries(hass: HomeAssistant) -> list[ConfigEntry]:
    return [
        entry
        for domain in DSMR_DOMAINS
        for entry in hass.config_entries.async_entries(domain, include_ignore=False)
    ]


def _address(data: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Where entry data reads from, comparable between dsmr and this integration (blocking:
    a device path is resolved, so a by-id link and the device it points to are the same)."""
    if CONF_CONNECTION_TYPE in data:
        if data[CONF_CONNECTION_TYPE] == CONNECTION_NETWORK:
            return ("tcp", str(data[CONF_HOST]).lower(), str(int(data[CONF_PORT])))
        if data[CONF_CONNECTION_TYPE] == CONNECTION_SERIAL:
            return ("serial", os.path.realpath(data[CONF_DEVICE]))
        return None
    port = str(data.get(DSMR_PORT, ""))
    if DSMR_HOST in data:
        return ("tcp", str(data[DSMR_HOST]).lower(), port)
    if "://" not in port:
        return ("serial", os.path.realpath(port)) if port else None
    url = urlsplit(port)
    # Other URLs (esphome://, rfc2217://) reach the meter another way than this integration.
    if url.scheme != "socket" or url.hostname is None or url.port is None:
        return None
    return ("tcp", url.hostname.lower(), str(url.port))


async def async_entry_on(hass: HomeAssistant, connection: Mapping[str, Any]) -> ConfigEntry | None:
    """The dsmr entry that reads the port or bridge of a connection, if there is one."""
    entries = _dsmr_entries(hass)
    if not entries:
        return None

    def find() -> ConfigEntry | None:
        wanted = _address(connection)
        if wanted is None:
            return None
        return next((entry for entry in entries if _address(entry.data) == wanted), None)

    return await hass.async_add_executor_job(find)


def entry_of_meter(hass: HomeAssistant, serial: str) -> ConfigEntry | None:
    """The dsmr entry of the meter with this serial number (0-0:42.0.0), wherever it reads."""
    for entry in _dsmr_entries(hass):
        stored = entry.data.get(DSMR_SERIAL)
        if isinstance(stored, str) and serial in (stored, decode_text(stored)):
            return entry
    return None


def stored_key(entry: ConfigEntry) -> str | None:
    """The dsmr entry's decryption key, as this integration stores keys; None if it has none."""
    try:
        return normalize_key(str(entry.data.get(DSMR_KEY) or ""))
    except InvalidKeyFormatError:
        return None


def reads_port(entry: ConfigEntry) -> bool:
    """Whether the entry holds its port now, or is about to grab it again on a retry timer."""
    return entry.state in (ConfigEntryState.LOADED, ConfigEntryState.SETUP_RETRY)


def is_other_meter(entry: ConfigEntry, serial: str) -> bool:
    """Whether the dsmr entry knows its meter, and it is another one than ``serial``."""
    stored = entry.data.get(DSMR_SERIAL)
    return isinstance(stored, str) and serial not in (stored, decode_text(stored))


async def async_release(hass: HomeAssistant, entry: ConfigEntry) -> bool:
    """Unload the dsmr entry if it reads its port; whether it did (to set it up again)."""
    if not reads_port(entry):
        return False
    await hass.config_entries.async_unload(entry.entry_id)
    return True


async def async_restore(hass: HomeAssistant, entry: ConfigEntry, *, was_reading: bool) -> None:
    """Set the dsmr entry up again as it was before ``async_release``."""
    if was_reading and entry.state is ConfigEntryState.NOT_LOADED:
        await hass.config_entries.async_setup(entry.entry_id)


# --- The plan: which dsmr entity becomes which sensor here ---


@dataclass(frozen=True, slots=True)
class Move:
    """A dsmr entity that becomes the sensor of ``unique_id`` on the device of ``channel``."""

    entity_id: str
    unique_id: str
    channel: int | None


class _Device(Protocol):
    """A device registry entry (a DeviceEntry, or on newer releases a child device too)."""

    @property
    def area_id(self) -> str | None: ...
    @property
    def name_by_user(self) -> str | None: ...
    @property
    def labels(self) -> set[str]: ...
    @property
    def disabled_by(self) -> dr.DeviceEntryDisabler | None: ...


@dataclass(frozen=True, slots=True)
class DeviceSettings:
    """What the user set on a dsmr device, for the device here that replaces it."""

    area_id: str | None
    name_by_user: str | None
    labels: frozenset[str]
    disabled_by: dr.DeviceEntryDisabler | None

    @classmethod
    def of(cls, device: _Device) -> DeviceSettings:
        """A device's settings; disabled only where the user disabled it."""
        user = dr.DeviceEntryDisabler.USER
        disabled = device.disabled_by if device.disabled_by is user else None
        return cls(device.area_id, device.name_by_user, frozenset(device.labels), disabled)


@dataclass(slots=True)
class Takeover:
    """What taking over a dsmr entry does, and (once done) what it did."""

    source: ConfigEntry
    serial: str
    was_reading: bool
    moves: list[Move]
    # dsmr entities with no counterpart here (removed with the dsmr entry).
    left: list[str]
    # The devices here (None: the meter, else the M-Bus channel), with the dsmr device's
    # settings they take over.
    devices: dict[int | None, DeviceSettings]
    # Whether our entry's setup carried it out: only then may the dsmr entry go.
    done: bool = False


def _mbus_identifiers(telegram: Telegram) -> dict[str, int]:
    """The M-Bus devices' equipment ids, as dsmr keys them (text as sent, hex-coded): channel."""
    found: dict[str, int] = {}
    for obis, obj in telegram.objects.items():
        if generic_code(obis) == "0-x:96.1.0" and (channel := mbus_channel(obis)):
            found.update(dict.fromkeys({*obj.raw, str(obj.value)}, channel))
    return found


def _gas_channel(telegram: Telegram) -> int | None:
    return next(
        (
            mbus_channel(obis)
            for obis, obj in telegram.objects.items()
            if generic_code(obis) == "0-x:24.1.0" and obj.value == MBUS_GAS_TYPE
        ),
        None,
    )


def _dsmr_value(entry: ConfigEntry, unique_id: str, telegram: Telegram) -> str | None:
    """The OBIS code of a dsmr entity's value, from its unique id as dsmr makes them."""
    # dsmr prefixes the meter's values with its serial (the entry id before it knew one), and
    # M-Bus readings without an equipment id with the gas serial or either of those.
    prefixes = {
        str(prefix)
        for prefix in (entry.data.get(DSMR_SERIAL), entry.data.get(DSMR_SERIAL_GAS), entry.entry_id)
        if prefix
    }
    if unique_id in (mbus := _mbus_identifiers(telegram)):
        return f"0-{mbus[unique_id]}:24.2.1"
    for known in prefixes:
        if not unique_id.startswith(f"{known}_"):
            continue
        key = unique_id.removeprefix(f"{known}_")
        if key in DSMR_VALUES:
            return DSMR_VALUES[key]
        if key == DSMR_LEGACY_GAS and (channel := _gas_channel(telegram)):
            return f"0-{channel}:24.2.1"
        if key.isdigit():
            return f"0-{int(key)}:24.2.1"
    return None


def _description(obis: str, telegram: Telegram) -> SensorEntityDescription | None:
    """The description of the sensor of an OBIS code's main value here."""
    if generic_code(obis) == "0-x:24.2.1":
        kind = telegram.objects.get(f"0-{mbus_channel(obis)}:24.1.0")
        return (
            MBUS_READINGS.get(int(kind.value)) if kind and isinstance(kind.value, Decimal) else None
        )
    found = DESCRIPTIONS.get(obis) or DESCRIPTIONS.get(generic_code(obis))
    return found[0] if found else None


def _statistics(state_class: str | None) -> str | None:
    """The kind of long-term statistics the recorder keeps for a state class."""
    if state_class in _SUMS:
        return "sum"
    return "mean" if state_class == SensorStateClass.MEASUREMENT else None


def _continues(dsmr: er.RegistryEntry, ours: SensorEntityDescription) -> bool:
    """Whether our sensor can go on with the dsmr entity's history: the same unit and device
    class, and the same kind of statistics (sums, means or none), so that the recorder raises
    no "unit changed" or "state class changed" issue and keeps one statistic."""
    # A display unit the user chose stays theirs (it is an entity option, and moves with it).
    options: Mapping[str, Any] = dsmr.options.get("sensor") or {}
    chosen = options.get("unit_of_measurement")
    return (
        dsmr.unit_of_measurement == (chosen or ours.native_unit_of_measurement)
        and dsmr.original_device_class == ours.device_class
        and _statistics((dsmr.capabilities or {}).get("state_class"))
        == _statistics(ours.state_class)
    )


def plan(
    hass: HomeAssistant, source: ConfigEntry, telegram: Telegram, *, was_reading: bool
) -> Takeover:
    """Which entities of the dsmr entry continue as which sensors of the meter of ``telegram``.

    Only values the meter sends count: a sensor here exists only for a line of the telegram.
    ``was_reading``: whether the dsmr entry read its port before the take-over unloaded it.
    """
    assert telegram.serial is not None, "the flow refuses a meter without a serial number"
    serial = telegram.serial
    moves: list[Move] = []
    left: list[str] = []
    devices: dict[int | None, DeviceSettings] = {}
    registry = dr.async_get(hass)
    for entity in er.async_entries_for_config_entry(er.async_get(hass), source.entry_id):
        obis = _dsmr_value(source, entity.unique_id, telegram)
        ours = (
            None if obis is None or obis not in telegram.objects else _description(obis, telegram)
        )
        if obis is None or ours is None or not _continues(entity, ours):
            left.append(entity.entity_id)
            continue
        channel = mbus_channel(obis) or None
        moves.append(Move(entity.entity_id, value_unique_id(serial, obis), channel))
        if entity.device_id and (device := registry.async_get(entity.device_id)):
            devices[channel] = DeviceSettings.of(device)
    return Takeover(source, serial, was_reading, moves, left, devices)


@callback
def async_plan(hass: HomeAssistant, takeover: Takeover) -> None:
    """Leave the plan for the setup of the entry of its meter (``async_adopt``)."""
    hass.data.setdefault(_PENDING, {})[takeover.serial] = takeover


async def async_abandon(hass: HomeAssistant, takeover: Takeover) -> bool:
    """Forget a plan that our entry's setup did not carry out, and set the dsmr entry up again
    as it was; whether it was abandoned (False: it was carried out)."""
    if hass.data.get(_PENDING, {}).get(takeover.serial) is takeover:
        del hass.data[_PENDING][takeover.serial]
    if takeover.done:
        return False
    await async_restore(hass, takeover.source, was_reading=takeover.was_reading)
    return True


@callback
def async_adopt(hass: HomeAssistant, entry: ConfigEntry) -> None:
    """Carry out the plan for this entry's meter, if the flow that created it left one.

    Runs at the start of the entry's setup: the dsmr entry is unloaded (its entities may move
    only then) and no sensor of ours has registered yet.
    """
    takeover = hass.data.get(_PENDING, {}).pop(entry.unique_id or "", None)
    if takeover is None:
        return
    devices = dr.async_get(hass)
    entities = er.async_get(hass)
    # Our devices (the meter first: M-Bus devices are reached through it), with what the user
    # set on the dsmr devices they replace.
    ours: dict[int | None, str] = {}
    channels = {None, *(move.channel for move in takeover.moves)}
    for channel in sorted(channels, key=lambda channel: channel or 0):
        device = devices.async_get_or_create(
            config_entry_id=entry.entry_id,
            identifiers={serial_device_identifier(takeover.serial, channel)},
            via_device_id=UNDEFINED if channel is None else ours[None],
        )
        ours[channel] = device.id
        if (settings := takeover.devices.get(channel)) is not None:
            devices.async_update_device(
                device.id,
                area_id=settings.area_id,
                name_by_user=settings.name_by_user,
                labels=set(settings.labels),
                disabled_by=settings.disabled_by,
            )
    for move in takeover.moves:
        # Disabled with a disabled dsmr entry, an entity is enabled with ours (the registry
        # does that on a change of entry); disabled or hidden by the user, it stays so.
        entities.async_update_entity_platform(
            move.entity_id,
            DOMAIN,
            new_config_entry_id=entry.entry_id,
            new_unique_id=move.unique_id,
            new_device_id=ours[move.channel],
        )
    takeover.done = True
    LOGGER.info(
        "Took over %d entities of %s entry %s",
        len(takeover.moves),
        takeover.source.domain,
        takeover.source.title,
    )


def _named(hass: HomeAssistant, entity_ids: set[str]) -> str:
    """Entity ids with their names, for a result message."""
    names = []
    for entity_id in sorted(entity_ids):
        state = hass.states.get(entity_id)
        name = state.attributes.get(ATTR_FRIENDLY_NAME) if state else None
        names.append(f"{name} ({entity_id})" if name else entity_id)
    return ", ".join(names) or NONE


async def async_finish(hass: HomeAssistant, takeover: Takeover) -> dict[str, str]:
    """Remove the dsmr entry and its devices; what was taken over, as message placeholders."""
    # Loaded only for a take-over (and setting up neither: without them, nothing refers to
    # a device).
    from homeassistant.components.automation import automations_with_device  # noqa: PLC0415
    from homeassistant.components.script import scripts_with_device  # noqa: PLC0415

    targeting = {
        found
        for device in dr.async_entries_for_config_entry(
            dr.async_get(hass), takeover.source.entry_id
        )
        for found in (
            *automations_with_device(hass, device.id),
            *scripts_with_device(hass, device.id),
        )
    }
    await hass.config_entries.async_remove(takeover.source.entry_id)
    return {
        "integration": takeover.source.domain,
        "moved": str(len(takeover.moves)),
        "left": ", ".join(sorted(takeover.left)) or NONE,
        "automations": _named(hass, targeting),
    }
