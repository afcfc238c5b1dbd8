"""The byte source of a meter (a serial port, a TCP bridge, an MQTT topic) and the live probe."""

from __future__ import annotations

import asyncio
import socket
from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import serial_asyncio_fast
from homeassistant.const import CONF_DEVICE, CONF_HOST, CONF_PORT

from . import const
from .const import (
    BAUDRATE,
    CONF_CONNECTION_TYPE,
    CONF_TOPIC,
    CONNECTION_MQTT,
    CONNECTION_NETWORK,
    CONNECTION_SERIAL,
)
from .p1 import DecryptionError, MissingKeyError, Telegram, TelegramDecoder

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant

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


class MqttNotSetUp(CannotConnect):
    """The meter is on an MQTT topic but Home Assistant's MQTT integration is not set up."""

    error = "mqtt_not_setup"


class InvalidTopic(CannotConnect):
    """The MQTT topic cannot be subscribed to (a misplaced wildcard, an empty level...)."""

    error = "invalid_topic"


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
    """Where a meter is: a serial device path, the host and port of a TCP bridge, or an MQTT
    topic."""

    connection_type: str
    device: str | None = None
    host: str | None = None
    port: int | None = None
    topic: str | None = None

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Endpoint:
        """The endpoint of config entry data (extra keys, such as the key, are ignored)."""
        if data[CONF_CONNECTION_TYPE] == CONNECTION_NETWORK:
            return cls(CONNECTION_NETWORK, host=data[CONF_HOST], port=int(data[CONF_PORT]))
        if data[CONF_CONNECTION_TYPE] == CONNECTION_MQTT:
            return cls(CONNECTION_MQTT, topic=data[CONF_TOPIC])
        return cls(CONNECTION_SERIAL, device=data[CONF_DEVICE])

    def __str__(self) -> str:
        if self.connection_type == CONNECTION_NETWORK:
            return f"{self.host}:{self.port}"
        if self.connection_type == CONNECTION_MQTT:
            return f"MQTT topic {self.topic}"
        return str(self.device)


class ByteSource(ABC):
    """A meter's byte stream, opened and closed again and again by the coordinator's one loop
    (silence timeout, reconnect backoff, key-failure window), whatever carries the bytes."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def __str__(self) -> str:
        return str(self.endpoint)

    @abstractmethod
    async def open(self) -> None:
        """Start receiving; raises CannotConnect."""

    @abstractmethod
    async def read(self) -> bytes:
        """The next bytes (as many as are there); b"" when the other end closed; OSError."""

    @abstractmethod
    async def close(self) -> None:
        """Stop receiving; safe to call when not open."""


class StreamSource(ByteSource):
    """A serial port or a TCP bridge."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        """Open the port or connect to the bridge."""
        self._reader, self._writer = await open_stream(self.endpoint)

    async def read(self) -> bytes:
        """Up to READ_CHUNK bytes, whatever has arrived."""
        assert self._reader is not None
        return await self._reader.read(READ_CHUNK)

    async def close(self) -> None:
        """Close the port or the connection (one connection at a time: ser2net allows one)."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            await close_stream(writer)


def source_for(hass: HomeAssistant, endpoint: Endpoint) -> ByteSource:
    """The byte source of an endpoint."""
    if endpoint.connection_type == CONNECTION_MQTT:
        # Only an MQTT entry loads Home Assistant's MQTT integration code (and paho).
        from .mqtt_source import MqttSource  # noqa: PLC0415

        return MqttSource(hass, endpoint)
    return StreamSource(endpoint)


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
    source: ByteSource,
    key: bytes | None,
    timeout: float | None = None,  # noqa: ASYNC109 (the flow and its tests set it)
) -> Telegram:
    """Open the source and return the first verified telegram.

    ``timeout`` defaults to ``const.PROBE_TIMEOUT``, read at call time so tests can shorten it.
    """
    if timeout is None:
        timeout = const.PROBE_TIMEOUT
    await source.open()
    decoder = TelegramDecoder(key)
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    data = await source.read()
                except OSError as err:
                    raise CannotConnect(f"reading {source} failed: {err}") from err
                if not data:
                    if decoder.stats.bytes:
                        raise NotAMeter(f"{source} closed without sending a telegram")
                    raise CannotConnect(f"{source} closed the connection")
                for item in decoder.feed(data):
                    if isinstance(item, Telegram):
                        return item
                    if isinstance(item, DecryptionError):
                        raise InvalidKey("the decryption key does not verify")
                    if isinstance(item, MissingKeyError):
                        raise KeyRequired("the meter encrypts its telegrams: a key is needed")
    except TimeoutError:
        if decoder.stats.bytes:
            raise NotAMeter(f"no telegram from {source} within {timeout:g} s") from None
        raise NoData(f"nothing received from {source} within {timeout:g} s") from None
    finally:
        await source.close()
