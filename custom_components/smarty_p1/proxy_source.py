"""Serial ports that Home Assistant provides itself: an ESPHome device's UART on the P1 port.

Home Assistant's serial port selector offers them as ``esphome-hass://`` URLs, which pyserial
cannot open; serialx (Home Assistant's serial library) opens them through the handler that the
ESPHome integration registers. Only an entry on such a port imports serialx.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from homeassistant.exceptions import HomeAssistantError
from serialx import SerialException, create_serial_connection

from .p1.sources import BAUDRATE, CannotConnect, _Receiving, _TransportSource


class SerialProxySource(_TransportSource):
    """A serial port behind a URL that one of Home Assistant's serialx handlers opens."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def __str__(self) -> str:
        return self.url

    async def _connect(
        self, factory: Callable[[], _Receiving]
    ) -> tuple[asyncio.BaseTransport, _Receiving]:
        try:
            transport, protocol = await create_serial_connection(
                asyncio.get_running_loop(), factory, self.url, baudrate=BAUDRATE
            )
        except (OSError, SerialException, HomeAssistantError) as err:
            # HomeAssistantError: ConfigEntryNotReady, until the ESPHome integration is loaded.
            raise CannotConnect(f"cannot open {self}: {err}") from err
        assert isinstance(protocol, _Receiving)
        return transport, protocol
