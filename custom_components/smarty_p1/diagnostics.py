"""Config entry diagnostics: connection, counters and the last telegram, secrets redacted."""

from __future__ import annotations

from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_HOST
from homeassistant.core import HomeAssistant

from .const import CONF_DECRYPTION_KEY, CONF_SERIAL_NUMBER
from .coordinator import SmartyConfigEntry

# The key decrypts everything; serials and the host identify a household.
TO_REDACT = {
    CONF_DECRYPTION_KEY,
    CONF_SERIAL_NUMBER,
    CONF_HOST,
    "unique_id",
    "title",
    "system_title",
    "serial",
    "0-0:42.0.0",
    "0-0:96.1.1",
    *(f"0-{channel}:96.1.{d}" for channel in range(1, 5) for d in (0, 1)),
}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: SmartyConfigEntry
) -> dict[str, Any]:
    """Everything needed to debug a meter, nothing that identifies or unlocks it."""
    coordinator = entry.runtime_data
    data = coordinator.data
    return async_redact_data(
        {
            "entry": {
                "title": entry.title,
                "unique_id": entry.unique_id,
                "data": dict(entry.data),
                "options": dict(entry.options),
            },
            "connection": {
                "type": coordinator.endpoint.connection_type,
                "device": coordinator.endpoint.device,
                "available": coordinator.last_update_success,
            },
            "health": coordinator.health.as_dict(),
            "min_interval": coordinator.min_interval,
            "rebroadcast": coordinator.rebroadcast.as_dict() if coordinator.rebroadcast else None,
            "last_telegram": data.telegram.as_dict() if data is not None else None,
        },
        TO_REDACT,
    )
