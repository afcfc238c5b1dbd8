"""The byte source of a meter (a serial port, a TCP bridge, an MQTT topic) and the live probe."""

from __future__ import annotations

import asyncio
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
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

    @property
    def address(self) -> str:
        """The device path, host:port or topic alone (translated messages say which it is)."""
        if self.connection_type == CONNECTION_NETWORK:
            return f"{self.host}:{self.port}"
        if self.connection_type == CONNECTION_MQTT:
            return str(self.topic)
        return str(self.device)

    def __str__(self) -> str:
        if self.connection_type == CONNECTION_MQTT:
            return f"MQTT topic {self.topic}"
        return self.address


type Receiver = Callable[[bytes], None]


class ByteSource(ABC):
    """A meter's byte stream, opened and closed again and again by the coordinator's one loop
    (silence timeout, reconnect backoff, key-failure window), whatever carries the bytes.

    Bytes are pushed to the receiver as they arrive, in the transport's own callback: no task
    wakes up per chunk. A session ends at EOF, on a read error, when the receiver raises, or
    when ``finish`` is called; ``wait_ended`` says how it ended.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._receiver: Receiver | None = None
        self._ended: asyncio.Future[None] | None = None

    def __str__(self) -> str:
        return str(self.endpoint)

    async def open(self, receiver: Receiver) -> None:
        """Start a session that hands every chunk of bytes to receiver; raises CannotConnect."""
        self._receiver = receiver
        self._ended = asyncio.get_running_loop().create_future()
        await self._start()

    @abstractmethod
    async def _start(self) -> None:
        """Connect and start delivering; raises CannotConnect."""

    def deliver(self, data: bytes) -> None:
        """Hand bytes to the receiver (nothing after the session ended)."""
        ended, receiver = self._ended, self._receiver
        if ended is None or ended.done() or receiver is None:
            return
        try:
            receiver(data)
        except Exception as err:
            # Whatever went wrong ends the session, and wait_ended raises it.
            self.finish(err)

    def finish(self, error: BaseException | None = None) -> None:
        """End the session: normally (None), or with the error wait_ended raises."""
        ended = self._ended
        if ended is None or ended.done():
            return
        if error is None:
            ended.set_result(None)
        else:
            ended.set_exception(error)

    async def wait_ended(self) -> None:
        """Return when the session ends normally (EOF, finish()); raise what else ended it."""
        assert self._ended is not None, "not open"
        await self._ended

    async def close(self) -> None:
        """Stop receiving; safe to call when not open."""
        ended = self._ended
        if ended is not None and ended.done() and not ended.cancelled():
            # Retrieved, so an error nobody waited for is not reported as never retrieved.
            ended.exception()
        self.finish()
        self._receiver = None
        await self._stop()

    @abstractmethod
    async def _stop(self) -> None:
        """Disconnect; safe to call when not connected."""


class _Receiving(asyncio.Protocol):
    """The transport's callbacks, passed on to the source."""

    def __init__(self, source: StreamSource) -> None:
        self._source = source
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._source.deliver(data)

    def eof_received(self) -> bool:
        self._source.finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._source.finish(exc)
        if not self.lost.done():
            self.lost.set_result(None)


class StreamSource(ByteSource):
    """A serial port or a TCP bridge."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self._transport: asyncio.BaseTransport | None = None
        self._protocol: _Receiving | None = None

    async def _start(self) -> None:
        """Open the port or connect to the bridge; raises CannotConnect."""
        endpoint = self.endpoint
        loop = asyncio.get_running_loop()
        transport: asyncio.BaseTransport
        protocol: asyncio.BaseProtocol
        try:
            if endpoint.connection_type == CONNECTION_NETWORK:
                assert endpoint.host is not None, "a bridge endpoint has a host and a port"
                assert endpoint.port is not None, "a bridge endpoint has a host and a port"
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    transport, protocol = await loop.create_connection(
                        lambda: _Receiving(self), endpoint.host, endpoint.port
                    )
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    # A bridge that vanishes without a FIN is otherwise only noticed by silence.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            else:
                transport, protocol = await serial_asyncio_fast.create_serial_connection(
                    loop,
                    lambda: _Receiving(self),
                    url=endpoint.device or "",
                    baudrate=BAUDRATE,
                    bytesize=8,
                    parity="N",
                    stopbits=1,
                )
        except (OSError, TimeoutError, ValueError) as err:
            # pyserial's SerialException is an OSError; ValueError is a malformed path or port.
            raise CannotConnect(f"cannot open {endpoint}: {err}") from err
        assert isinstance(protocol, _Receiving)
        self._transport, self._protocol = transport, protocol

    async def _stop(self) -> None:
        """Close the port or the connection and wait until it is closed (one connection at a
        time: ser2net allows one)."""
        transport, protocol = self._transport, self._protocol
        self._transport = self._protocol = None
        if transport is None or protocol is None:
            return
        transport.close()
        with suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await protocol.lost


def source_for(hass: HomeAssistant, endpoint: Endpoint) -> ByteSource:
    """The byte source of an endpoint."""
    if endpoint.connection_type == CONNECTION_MQTT:
        # Only an MQTT entry loads Home Assistant's MQTT integration code (and paho).
        from .mqtt_source import MqttSource  # noqa: PLC0415

        return MqttSource(hass, endpoint)
    return StreamSource(endpoint)


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
    decoder = TelegramDecoder(key)
    found: list[Telegram] = []

    def received(data: bytes) -> None:
        for item in decoder.feed(data):
            if isinstance(item, Telegram):
                found.append(item)
                source.finish()
                return
            if isinstance(item, DecryptionError):
                raise InvalidKey("the decryption key does not verify")
            if isinstance(item, MissingKeyError):
                raise KeyRequired("the meter encrypts its telegrams: a key is needed")

    await source.open(received)
    try:
        async with asyncio.timeout(timeout):
            try:
                await source.wait_ended()
            except OSError as err:
                raise CannotConnect(f"reading {source} failed: {err}") from err
    except TimeoutError:
        if decoder.stats.bytes:
            raise NotAMeter(f"no telegram from {source} within {timeout:g} s") from None
        raise NoData(f"nothing received from {source} within {timeout:g} s") from None
    finally:
        await source.close()
    if found:
        return found[0]
    if decoder.stats.bytes:
        raise NotAMeter(f"{source} closed without sending a telegram")
    raise CannotConnect(f"{source} closed the connection")
