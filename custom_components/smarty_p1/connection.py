"""The byte source of a meter (a serial port or a TCP bridge) and the live probe of the flow."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import serial_asyncio_fast
from homeassistant.const import CONF_DEVICE, CONF_HOST, CONF_PORT

from . import const
from .const import BAUDRATE, CONF_CONNECTION_TYPE, CONNECTION_NETWORK, CONNECTION_SERIAL
from .p1 import DecryptionError, MissingKeyError, Telegram, TelegramDecoder

# A telegram is about 1.5 kB; one read usually returns a whole one, never a byte at a time.
READ_CHUNK = 4096
# Opening a TCP connection must not hang a flow or a reconnect for minutes.
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0


class ProbeError(Exception):
    """A connection or probe failure; ``error`` is the translation key shown to the user."""

    error = "unknown"


class CannotConnect(ProbeError):  # noqa: N818 (the names the config flow uses)
    """The port cannot be opened or the host refuses the connection."""

    error = "cannot_connect"


class NoData(ProbeError):  # noqa: N818 (the names the config flow uses)
    """The connection opened but nothing arrived."""

    error = "no_data"


class InvalidKey(ProbeError):  # noqa: N818 (the names the config flow uses)
    """Frames arrive but their GCM tag does not verify with the key."""

    error = "invalid_key"


class NotAMeter(ProbeError):  # noqa: N818 (the names the config flow uses)
    """Bytes arrive but no telegram can be read from them."""

    error = "not_a_meter"


class KeyRequired(ProbeError):  # noqa: N818 (the names the config flow uses)
    """The meter encrypts its telegrams but no key was given."""

    error = "key_required"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a meter is: a serial device path, or the host and port of a TCP bridge."""

    connection_type: str
    device: str | None = None
    host: str | None = None
    port: int | None = None

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Endpoint:
        """The endpoint of config entry data (extra keys, such as the key, are ignored)."""
        if data[CONF_CONNECTION_TYPE] == CONNECTION_NETWORK:
            return cls(CONNECTION_NETWORK, host=data[CONF_HOST], port=int(data[CONF_PORT]))
        return cls(CONNECTION_SERIAL, device=data[CONF_DEVICE])

    def __str__(self) -> str:
        if self.connection_type == CONNECTION_NETWORK:
            return f"{self.host}:{self.port}"
        return str(self.device)


async def open_stream(endpoint: Endpoint) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open the meter's byte stream; raises CannotConnect."""
    try:
        if endpoint.connection_type == CONNECTION_NETWORK:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
            sock = writer.get_extra_info("socket")
            if sock is not None:
                # A bridge that vanishes without a FIN is otherwise only noticed by silence.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            return reader, writer
        return await serial_asyncio_fast.open_serial_connection(
            url=endpoint.device,
            baudrate=BAUDRATE,
            bytesize=8,
            parity="N",
            stopbits=1,
        )
    except (OSError, TimeoutError, ValueError) as err:
        # pyserial's SerialException is an OSError; ValueError is a malformed path or port.
        raise CannotConnect(f"cannot open {endpoint}: {err}") from err


async def close_stream(writer: asyncio.StreamWriter) -> None:
    """Close a stream, whatever state the other end left it in."""
    writer.close()
    with suppress(OSError, TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await writer.wait_closed()


async def probe(
    endpoint: Endpoint,
    key: bytes | None,
    timeout: float | None = None,  # noqa: ASYNC109 (the flow and its tests set it)
) -> Telegram:
    """Open the endpoint and return the first verified telegram.

    ``timeout`` defaults to ``const.PROBE_TIMEOUT``, read at call time so tests can shorten it.
    """
    if timeout is None:
        timeout = const.PROBE_TIMEOUT
    reader, writer = await open_stream(endpoint)
    decoder = TelegramDecoder(key)
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    data = await reader.read(READ_CHUNK)
                except OSError as err:
                    raise CannotConnect(f"reading {endpoint} failed: {err}") from err
                if not data:
                    if decoder.stats.bytes:
                        raise NotAMeter(f"{endpoint} closed without sending a telegram")
                    raise CannotConnect(f"{endpoint} closed the connection")
                for item in decoder.feed(data):
                    if isinstance(item, Telegram):
                        return item
                    if isinstance(item, DecryptionError):
                        raise InvalidKey("the decryption key does not verify")
                    if isinstance(item, MissingKeyError):
                        raise KeyRequired("the meter encrypts its telegrams: a key is needed")
    except TimeoutError:
        if decoder.stats.bytes:
            raise NotAMeter(f"no telegram from {endpoint} within {timeout:g} s") from None
        raise NoData(f"nothing received from {endpoint} within {timeout:g} s") from None
    finally:
        await close_stream(writer)
