"""Config entry diagnostics: connection, counters and the last telegram, secrets redacted."""

from __future__ import annotations

from typing import Any

from homeassistant.components.diagnostics import REDACTED, async_redact_data
from homeassistant.const import CONF_DEVICE, CONF_HOST
from homeassistant.core import HomeAssistant

from .const import CONF_AUTH_KEY, CONF_DECRYPTION_KEY, CONF_SERIAL_NUMBER, CONF_TOPIC
from .coordinator import SmartyConfigEntry

# The keys decrypt and authenticate everything; serials, the host and the topic (often named
# after the meter or the dongle's serial) identify a household.
TO_REDACT = {
    CONF_AUTH_KEY,
    CONF_DECRYPTION_KEY,
    CONF_SERIAL_NUMBER,
    CONF_HOST,
    CONF_TOPIC,
    "unique_id",
    "title",
    "system_title",
    "serial",
    "0-0:42.0.0",
    "0-0:96.1.1",
    *(f"0-{channel}:96.1.{d}" for channel in range(1, 5) for d in (0, 1)),
}
BY_ID = "/by-id/"


def redact_device(path: str | None) -> str | None:
    """A serial device path without the USB adapter's serial number that a by-id name holds.

    /dev/ttyUSB0 stays as it is; /dev/serial/by-id/usb-FTDI_..._A10K1234-if00-port0 keeps only
    its folder, which still tells that the stable name is used.
    """
    if path is None or BY_ID not in path:
        return path
    return f"{path.partition(BY_ID)[0]}{BY_ID}{REDACTED}"


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: SmartyConfigEntry
) -> dict[str, Any]:
    """Everything needed to debug a meter, nothing that identifies or unlocks it."""
    coordinator = entry.runtime_data
    data = coordinator.data
    entry_data = dict(entry.data)
    if CONF_DEVICE in entry_data:
        entry_data[CONF_DEVICE] = redact_device(entry_data[CONF_DEVICE])
    return async_redact_data(
        {
            "entry": {
                "title": entry.title,
                "unique_id": entry.unique_id,
                "data": entry_data,
                "options": dict(entry.options),
            },
            "connection": {
                "type": coordinator.endpoint.connection_type,
                "device": redact_device(coordinator.endpoint.device),
                "available": coordinator.last_update_success,
            },
            "health": coordinator.health.as_dict(),
            "min_interval": coordinator.min_interval,
            "rebroadcast": coordinator.rebroadcast.as_dict() if coordinator.rebroadcast else None,
            "last_telegram": data.telegram.as_dict() if data is not None else None,
        },
        TO_REDACT,
    )
