"""Serial ports of Home Assistant's own (ESPHome serial proxies), opened through serialx.

No ESPHome device runs here: the proxy source reads the simulated meter through serialx's own
``socket://`` transport, the same code path (serialx's handler lookup, its asyncio transport)
that an ``esphome-hass://`` URL takes once the ESPHome integration has registered its handler.
"""

from __future__ import annotations

import pytest
from homeassistant.core import HomeAssistant

from custom_components.smarty_p1.connection import CannotConnect, Endpoint, probe, source_for
from custom_components.smarty_p1.const import CONNECTION_SERIAL
from custom_components.smarty_p1.p1.simulator import MeterSimulator, TcpMeter
from custom_components.smarty_p1.p1.sources import SerialSource
from custom_components.smarty_p1.proxy_source import SerialProxySource

from .conftest import KEY

PROXY = "esphome-hass://esphome/01JQ5Z8ESPHOMEENTRY?port_name=P1"


def test_proxy_urls_go_to_serialx(hass: HomeAssistant) -> None:
    """pyserial cannot open an ESPHome proxy's URL: the source is serialx's; paths stay
    pyserial's."""
    proxy = source_for(hass, Endpoint(CONNECTION_SERIAL, device=PROXY))
    assert isinstance(proxy, SerialProxySource)
    assert str(proxy) == PROXY
    assert type(source_for(hass, Endpoint(CONNECTION_SERIAL, device="/dev/ttyUSB0"))) is (
        SerialSource
    )


async def test_reads_the_meter_through_serialx(
    tcp_meter: TcpMeter, simulator: MeterSimulator
) -> None:
    """Telegrams arrive through a serialx transport and the port is closed again."""
    source = SerialProxySource(f"socket://127.0.0.1:{tcp_meter.port}")
    telegram = await probe(source, KEY, 2)
    assert telegram.serial == simulator.serial
    # The bridge takes one client; the probe's is gone, so another session reads again.
    telegram = await probe(source, KEY, 2)
    assert telegram.serial == simulator.serial


async def test_no_handler_for_the_url() -> None:
    """Without the ESPHome integration nobody opens its URLs: cannot connect, saying why."""
    with pytest.raises(CannotConnect, match="No handler registered"):
        await probe(SerialProxySource(PROXY), KEY, 1)
