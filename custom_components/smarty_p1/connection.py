"""Where an entry's meter is (Endpoint), its byte source, and the config flow's live probe."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from homeassistant.const import CONF_DEVICE, CONF_HOST, CONF_PORT

from . import const
from .const import (
    CONF_CONNECTION_TYPE,
    CONF_TOPIC,
    CONNECTION_MQTT,
    CONNECTION_NETWORK,
    CONNECTION_SERIAL,
)
from .p1 import MissingKeyError, Telegram, TelegramDecoder
from .p1.integrity import WRONG_KEY_PROOF, FrameAuthenticator
from .p1.sources import ByteSource, CannotConnect, SerialSource, SourceError, TcpSource

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant

__all__ = ["ByteSource", "CannotConnect", "SourceError"]

# Serial ports of Home Assistant's own (its serial port selector offers them): ESPHome serial
# proxies. Not pyserial's: proxy_source.py opens them.
SERIAL_PROXY_SCHEMES = ("esphome-hass://",)


class NoData(SourceError):  # noqa: N818 (the names the config flow uses)
    """The connection opened but nothing arrived."""

    error = "no_data"


class InvalidKey(SourceError):  # noqa: N818 (the names the config flow uses)
    """Frames arrive but their GCM tag does not verify with the key."""

    error = "invalid_key"


class DamagedFrames(SourceError):  # noqa: N818 (the names the config flow uses)
    """Frames arrive but damaged (bytes lost or changed on the way): not a key problem."""

    error = "damaged_frames"


class NotAMeter(SourceError):  # noqa: N818 (the names the config flow uses)
    """Bytes arrive but no telegram can be read from them."""

    error = "not_a_meter"


class KeyRequired(SourceError):  # noqa: N818 (the names the config flow uses)
    """The meter encrypts its telegrams but no key was given."""

    error = "key_required"


class MqttNotSetUp(CannotConnect):
    """The meter is on an MQTT topic but Home Assistant's MQTT integration is not set up."""

    error = "mqtt_not_setup"


class InvalidTopic(CannotConnect):
    """The MQTT topic cannot be subscribed to (a misplaced wildcard, an empty level...)."""

    error = "invalid_topic"


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


def source_for(hass: HomeAssistant, endpoint: Endpoint) -> ByteSource:
    """The byte source of an endpoint."""
    if endpoint.connection_type == CONNECTION_MQTT:
        # Only an MQTT entry loads Home Assistant's MQTT integration code (and paho).
        from .mqtt_source import MqttSource  # noqa: PLC0415

        assert endpoint.topic is not None, "an MQTT endpoint has a topic"
        return MqttSource(hass, endpoint.topic)
    if endpoint.connection_type == CONNECTION_NETWORK:
        assert endpoint.host is not None, "a bridge endpoint has a host and a port"
        assert endpoint.port is not None, "a bridge endpoint has a host and a port"
        return TcpSource(endpoint.host, endpoint.port)
    assert endpoint.device is not None, "a serial endpoint has a device"
    if endpoint.device.startswith(SERIAL_PROXY_SCHEMES):
        from .proxy_source import SerialProxySource  # noqa: PLC0415

        return SerialProxySource(endpoint.device)
    return SerialSource(endpoint.device)


async def probe(
    source: ByteSource,
    key: bytes | None,
    timeout: float | None = None,  # noqa: ASYNC109 (the flow and its tests set it)
    *,
    authenticator: FrameAuthenticator | None = None,
) -> Telegram:
    """Open the source and return the first verified telegram.

    The key is called wrong only when frames prove it; damaged frames (another reader on the
    port, a bad cable) say so instead. While the meter's own authentication key is being learned
    (``authenticator`` then holds it, for the caller to store), and when the one frame that
    arrived did not decrypt, the wait is extended once. ``timeout`` defaults to
    ``const.PROBE_TIMEOUT``, read at call time so tests can shorten it.
    """
    if timeout is None:
        timeout = const.PROBE_TIMEOUT
    if authenticator is None and key is not None:
        authenticator = FrameAuthenticator(key)
    decoder = TelegramDecoder(authenticator=authenticator)
    found: list[Telegram] = []
    seen: Counter[str] = Counter()

    def received(data: bytes) -> None:
        for item in decoder.feed(data):
            if isinstance(item, Telegram):
                found.append(item)
                source.finish()
                return
            if isinstance(item, MissingKeyError):
                raise KeyRequired("the meter encrypts its telegrams: a key is needed")
            seen[item.reason] += 1
            if seen["wrong_key"] >= WRONG_KEY_PROOF and not seen["damaged"] + seen["learning"]:
                raise InvalidKey("the decryption key does not decrypt the meter's frames")

    await source.open(received)
    ended = asyncio.ensure_future(source.wait_ended())
    try:
        done, _ = await asyncio.wait((ended,), timeout=timeout)
        if not done and (seen["learning"] or seen["wrong_key"]):
            done, _ = await asyncio.wait((ended,), timeout=timeout)
        if not done:
            raise _silent_verdict(source, decoder, seen, timeout)
        try:
            ended.result()
        except OSError as err:
            if "multiple access" in str(err) and await _still_there(source):
                # pyserial's word for another reader taking the bytes it was told were there,
                # or for a cable pulled: the device is still there, so the former.
                raise DamagedFrames(f"{source} is read by another program too") from err
            raise CannotConnect(f"reading {source} failed: {err}") from err
    finally:
        ended.cancel()
        await source.close()
    if found:
        return found[0]
    if decoder.stats.bytes:
        raise NotAMeter(f"{source} closed without sending a telegram")
    raise CannotConnect(f"{source} closed the connection")


async def _still_there(source: ByteSource) -> bool:
    return isinstance(source, SerialSource) and await asyncio.to_thread(
        os.path.exists, source.device
    )


def _silent_verdict(
    source: ByteSource, decoder: TelegramDecoder, seen: Counter[str], timeout: float
) -> SourceError:
    """Why no telegram came within the timeout, as far as the frames tell."""
    if seen["wrong_key"] and not seen["damaged"] + seen["learning"]:
        return InvalidKey("the decryption key does not decrypt the meter's frames")
    if seen["damaged"] or seen["crc"]:
        return DamagedFrames(f"frames from {source} arrive damaged")
    if decoder.stats.bytes:
        return NotAMeter(f"no telegram from {source} within {timeout:g} s")
    return NoData(f"nothing received from {source} within {timeout:g} s")
