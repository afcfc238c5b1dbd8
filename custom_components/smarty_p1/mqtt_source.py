"""Frames from an MQTT topic of Home Assistant's own MQTT integration (an ESP32 dongle)."""

from __future__ import annotations

import binascii
from collections.abc import Callable

from homeassistant.components import mqtt
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError

from .connection import ByteSource, CannotConnect, InvalidTopic, MqttNotSetUp
from .const import LOGGER
from .validation import vol

# Whitespace a dongle may put in hex text (line breaks every 32 bytes and the like).
_HEX_SPACE = b" \t\r\n"


def payload_bytes(payload: bytes | bytearray | str) -> bytes:
    """The meter's bytes in one message: binary as is, or hex text decoded.

    Decided per message: a raw frame starts with 0xDB or "/", which are not hex digits, so a
    payload of hex digits only is hex text (a raw fragment of hex digits only is the rare case
    left, when a dongle splits a plaintext telegram at such a place).
    """
    data = payload.encode("latin-1") if isinstance(payload, str) else bytes(payload)
    try:
        return binascii.unhexlify(data.translate(None, _HEX_SPACE))
    except binascii.Error, ValueError:
        return data


class MqttSource(ByteSource):
    """Subscribes to the topic while open; every message's bytes go to the decoder in order.

    A retained message is the last frame the broker kept, of unknown age: it is dropped, so a
    stale reading is never shown as new (live messages reach a subscriber without the flag).
    """

    def __init__(self, hass: HomeAssistant, topic: str) -> None:
        super().__init__()
        self.hass = hass
        self.topic = topic
        self.retained_dropped = 0
        self._unsubscribe: Callable[[], None] | None = None

    async def _start(self) -> None:
        """Subscribe to the topic; MqttNotSetUp when Home Assistant has no MQTT connection."""
        try:
            topic = mqtt.valid_subscribe_topic(self.topic)
        except vol.Invalid as err:
            raise InvalidTopic(f"{self.topic!r} is not a topic: {err}") from err
        if not await mqtt.async_wait_for_mqtt_client(self.hass):
            raise MqttNotSetUp("the MQTT integration is not set up")
        try:
            self._unsubscribe = await mqtt.async_subscribe(
                self.hass, topic, self._message, qos=0, encoding=None
            )
        except HomeAssistantError as err:
            # The broker went away between the check and the subscription: a cut like any other.
            raise CannotConnect(f"cannot subscribe to {topic}: {err}") from err

    def __str__(self) -> str:
        return f"MQTT topic {self.topic}"

    @callback
    def _message(self, message: mqtt.ReceiveMessage) -> None:
        if message.retain:
            self.retained_dropped += 1
            LOGGER.debug("Dropped a retained message of %s (a stale frame)", message.topic)
            return
        self.deliver(payload_bytes(message.payload))

    async def _stop(self) -> None:
        """Unsubscribe."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
