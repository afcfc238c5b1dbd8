"""The MQTT bridge: a meter's frames, and with its key its telegrams, on an MQTT broker.

For a meter far from Home Assistant: a small computer at the meter reads the P1 port and
publishes, and Home Assistant reads the broker (the integration's MQTT source). Reading and
judging are the integration's own pieces (MeterSession, TelegramDecoder, TelegramGuard, through
MeterReader); paho-mqtt, the client Home Assistant itself uses, talks to the broker and
reconnects by itself. The topics, under a prefix (by default ``smarty/<serial>``):

- ``raw``: the frames exactly as the meter sent them (binary payloads), also without the key, so
  the key can stay in Home Assistant. With a key only frames that verified and that the guard
  accepted go out; without one the bridge cannot verify encrypted frames and passes on what it
  framed (the reader verifies it).
- ``telegram``: one JSON object per accepted telegram, the object ``read --json`` prints;
- ``values/<obis>`` (``per_value``): each value of that object on a topic of its own;
- ``status``: ``online`` while the meter is being read, else ``offline``; retained, and the
  broker's last will, so a bridge that is cut off or killed reads ``offline`` too.

Everything but the will goes out at QoS 0 and is never queued while the broker is away: a meter
sends all its registers every 10 s, and a reading held back for minutes is not news. What the
bridge cannot publish is dropped and counted, and its backlog towards a slow broker is bounded.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from .decoder import TelegramDecoder
from .errors import P1Error
from .frame import MAX_FRAME
from .integrity import FrameAuthenticator
from .reader import EXIT_WRONG_KEY, MeterReader
from .session import RECONNECT_MAX_DELAY, RECONNECT_MIN_DELAY, Items
from .sources import ByteSource
from .telegram import Telegram

DEFAULT_PREFIX = "smarty"
EXIT_NO_SERIAL = 2
ONLINE = "online"
OFFLINE = "offline"
# Messages handed to paho but not yet written to the broker: more than this and new ones drop.
QUEUE = 1000
# A broker that stops answering is noticed within about twice this.
KEEPALIVE = 30
# How long a stopping bridge waits for its last messages to reach the broker.
DRAIN_TIMEOUT = 5.0
_DRAIN_POLL = 0.02
# Whatever could break a topic level (wildcards, separators) in a serial number.
_NOT_TOPIC_SAFE = re.compile(r"[^0-9A-Za-z_.-]")


class BrokerError(Exception):
    """The broker settings cannot be used (unreadable TLS files, say)."""


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """How to reach the MQTT broker. The password is never shown."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str = ""
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(slots=True)
class BridgeStats:
    """What the bridge did with what it read."""

    # Messages written to the broker, by topic: raw, telegram, values, status.
    published: Counter[str] = field(default_factory=Counter)
    # Messages not published, by topic: the broker was away or too slow.
    dropped: Counter[str] = field(default_factory=Counter)
    # Raw messages held back because a frame in them failed verification or was refused.
    raw_withheld: int = 0
    broker_connections: int = 0

    def as_dict(self) -> dict[str, object]:
        """The bridge's part of the statistics line."""
        return {
            "published": {kind: self.published[kind] for kind in _KINDS},
            "dropped": {kind: self.dropped[kind] for kind in _KINDS},
            "raw_withheld": self.raw_withheld,
            "broker_connections": self.broker_connections,
        }


_KINDS = ("raw", "telegram", "values", "status")


def topic_prefix(serial: str) -> str:
    """The default prefix of a meter: ``smarty/<serial>``, its serial made safe as one level."""
    return f"{DEFAULT_PREFIX}/{_NOT_TOPIC_SAFE.sub('_', serial)}"


class _WireDecoder(TelegramDecoder):
    """A decoder that also gives back the wire bytes of what it was fed.

    With the key, the framer keeps only the stream's last ``pending`` bytes (it consumes a frame
    that verifies with the feed that completes it), so the bytes before those are the completed
    frames' wire bytes, with any line noise between them: ``wire`` holds them until the next
    feed. Without the key nothing can be verified: ``held`` keeps the line's bytes as they came
    for the bridge to pass on whole, at a pause of the line.
    """

    __slots__ = ("held", "wire")

    def __init__(self, authenticator: FrameAuthenticator | None, *, legacy_crc: bool) -> None:
        super().__init__(authenticator=authenticator, legacy_crc=legacy_crc)
        self.held = bytearray()
        self.wire = b""

    def feed(self, data: bytes | bytearray | memoryview) -> Items:
        held = self.held
        held += data
        items = super().feed(data)
        if self.authenticator is not None:
            done = len(held) - self.pending
            self.wire = bytes(held[:done]) if items else b""
            del held[:done]
        return items


# Without the key, the line's bytes are passed on once it pauses this long.
RAW_PAUSE = 0.05

type _Say = Callable[[str], None]


class _Publisher:
    """One broker connection, kept up by paho's network thread; publishing is done on the event
    loop, and paho's callbacks come over to it.

    Messages published before the first connection wait for it (at most ``queue`` of them);
    after that, a message published while the broker is away is dropped and counted.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        stats: BridgeStats,
        say: _Say,
        on_ready: Callable[[], None],
        queue: int,
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.queue = queue
        self._say = say
        self._on_ready = on_ready
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[tuple[str, str, bytes, bool]] = []
        self._unsent: deque[tuple[str, mqtt.MQTTMessageInfo]] = deque()
        self._ready = False
        # The status topic, once the connection is started.
        self._status_topic: str | None = None
        self._closing = False
        # The last problem said, so a broker that stays away is reported once.
        self._problem: str | None = None
        client = self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=settings.client_id, protocol=mqtt.MQTTv311
        )
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            try:
                client.tls_set(
                    ca_certs=_name(settings.ca_file),
                    certfile=_name(settings.cert_file),
                    keyfile=_name(settings.key_file),
                )
            except OSError as err:
                # ssl.SSLError is an OSError too; neither message holds a secret.
                raise BrokerError(f"cannot use the TLS files: {err}") from err
        client.reconnect_delay_set(int(RECONNECT_MIN_DELAY), int(RECONNECT_MAX_DELAY))
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect

    def __repr__(self) -> str:
        return f"_Publisher({self.settings!r}, ready={self._ready})"

    def start(self, status_topic: str) -> None:
        """Connect in the background, with the last will ``offline`` on the status topic."""
        self._loop = asyncio.get_running_loop()
        self._status_topic = status_topic
        client = self._client
        client.will_set(status_topic, OFFLINE, qos=1, retain=True)
        client.connect_async(self.settings.host, self.settings.port, keepalive=KEEPALIVE)
        client.loop_start()

    def publish(self, kind: str, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 0, or wait for the first connection, or drop and count."""
        if not self._ready:
            if len(self._waiting) >= self.queue:
                self.stats.dropped[kind] += 1
            else:
                self._waiting.append((kind, topic, payload, retain))
            return
        self._send(kind, topic, payload, retain)

    def status(self, online: bool) -> None:
        """Say ``online`` or ``offline`` (retained), once the connection is started."""
        if self._status_topic is not None:
            payload = (ONLINE if online else OFFLINE).encode()
            self.publish("status", self._status_topic, payload, retain=True)

    def _send(self, kind: str, topic: str, payload: bytes, retain: bool) -> None:
        self._settle()
        # The status is never crowded out by readings: it changes once per cut, and it is the
        # one message a consumer must not miss.
        full = kind != "status" and len(self._unsent) >= self.queue
        client = self._client
        info = (
            None if full or not client.is_connected() else client.publish(topic, payload, 0, retain)
        )
        if info is None or info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.stats.dropped[kind] += 1
            return
        self._unsent.append((kind, info))

    def _settle(self) -> None:
        """Count what paho has written (or lost with a connection), oldest first."""
        unsent = self._unsent
        while unsent:
            kind, info = unsent[0]
            try:
                if not info.is_published():
                    return
            except RuntimeError:
                # Written to a connection that was cut first.
                self.stats.dropped[kind] += 1
            else:
                self.stats.published[kind] += 1
            unsent.popleft()

    async def close(self) -> None:
        """Say ``offline`` on the status topic, let the last messages go out, disconnect."""
        if self._status_topic is None:
            return
        self.status(online=False)
        deadline = asyncio.get_running_loop().time() + DRAIN_TIMEOUT
        while self._waiting or self._unsent:
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(_DRAIN_POLL)
            self._settle()
        self._closing = True
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        self._settle()
        self.stats.dropped.update(message[0] for message in self._waiting)
        self.stats.dropped.update(kind for kind, _ in self._unsent)
        self._waiting.clear()
        self._unsent.clear()

    # paho's network thread.

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _properties: Any,
    ) -> None:
        self._hand_over(self._connected, str(reason), reason.is_failure)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        # paho calls this while handling the OSError that failed the connection.
        self._hand_over(self._failed, str(sys.exception() or "connection failed"))

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _properties: Any,
    ) -> None:
        self._hand_over(self._disconnected, str(reason))

    def _hand_over(self, callback: Callable[..., None], *args: object) -> None:
        loop = self._loop
        assert loop is not None
        loop.call_soon_threadsafe(callback, *args)

    # Back on the event loop.

    def _connected(self, reason: str, refused: bool) -> None:
        if refused:
            self._failed(f"refused the connection: {reason}")
            return
        self._problem = None
        self.stats.broker_connections += 1
        self._say(f"connected to the MQTT broker {self.settings}")
        self._ready = True
        waiting, self._waiting = self._waiting, []
        for kind, topic, payload, retain in waiting:
            self._send(kind, topic, payload, retain)
        self._on_ready()

    def _failed(self, problem: str) -> None:
        if problem != self._problem:
            self._problem = problem
            self._say(f"MQTT broker {self.settings}: {problem}; retrying")

    def _disconnected(self, reason: str) -> None:
        if self._closing or self._problem is not None:
            return
        self._problem = f"connection lost ({reason})"
        self._say(f"MQTT broker {self.settings}: {self._problem}; reconnecting")


def _name(path: Path | None) -> str | None:
    return None if path is None else str(path)


class MqttBridge(MeterReader):
    """Reads a meter and publishes what it sends until stopped; see the module docstring.

    Without a ``prefix`` the meter's serial names it, so nothing is published (and the broker
    is not contacted) before the first accepted telegram.
    """

    def __init__(
        self,
        source: ByteSource,
        key: bytes | None,
        broker: BrokerSettings,
        *,
        prefix: str | None = None,
        per_value: bool = False,
        queue: int = QUEUE,
        legacy_crc: bool = False,
    ) -> None:
        super().__init__(source, key, reconnect=True, legacy_crc=legacy_crc)
        self.prefix = prefix
        self.per_value = per_value
        self.bridge_stats = BridgeStats()
        self.publisher = _Publisher(broker, self.bridge_stats, self._say, self._announce, queue)
        self._wire: _WireDecoder | None = None
        self._raw_timer: asyncio.TimerHandle | None = None
        # Whether every frame of the current feed verified and was accepted.
        self._clean = True
        # Kinds of failure already said since the last accepted telegram: a meter whose frames
        # all fail (a new key) is reported once, not every 10 s.
        self._said: set[str] = set()

    def __repr__(self) -> str:
        return f"MqttBridge({self.session.source}, prefix={self.prefix!r})"

    def summary(self) -> dict[str, object]:
        return {**super().summary(), **self.bridge_stats.as_dict()}

    def _new_decoder(self) -> TelegramDecoder:
        decoder = self._wire = _WireDecoder(self.authenticator, legacy_crc=self.legacy_crc)
        decoder.stats = self.stats
        return decoder

    def _topic(self, name: str) -> str:
        assert self.prefix is not None
        return f"{self.prefix}/{name}"

    def _started(self) -> None:
        if self.prefix is not None:
            self.publisher.start(self._topic("status"))

    async def _finish(self) -> None:
        self._flush_raw()
        await self.publisher.close()
        sys.stdout.write(json.dumps(self.summary()) + "\n")
        sys.stdout.flush()

    def _announce(self) -> None:
        """The status as it is now: on every connection to the broker and every change."""
        self.publisher.status(online=self.session.connected)

    def _connected(self) -> None:
        self._announce()

    def _lost(self, reason: str) -> None:
        super()._lost(reason)
        self._announce()

    def _receive(self, items: Items) -> None:
        self._clean = True
        super()._receive(items)
        decoder = self._wire
        if decoder is None or self.status is not None:
            return
        if self.key is None:
            self._raw_arrived(decoder)
            return
        if not decoder.wire:
            return
        if self.prefix is not None and self._clean:
            self.publisher.publish("raw", self._topic("raw"), decoder.wire)
        else:
            self.bridge_stats.raw_withheld += 1

    def _raw_arrived(self, decoder: _WireDecoder) -> None:
        """Without the key: the line's bytes go out at its next pause (a meter sends a frame in
        one burst, 10 s apart), or at a frame's size, as the ESP32 dongle does it."""
        if self._raw_timer is not None:
            self._raw_timer.cancel()
            self._raw_timer = None
        if len(decoder.held) >= MAX_FRAME:
            self._flush_raw()
        elif decoder.held:
            self._raw_timer = asyncio.get_running_loop().call_later(RAW_PAUSE, self._flush_raw)

    def _flush_raw(self) -> None:
        self._raw_timer = None
        decoder = self._wire
        if decoder is None or not decoder.held:
            return
        data = bytes(decoder.held)
        decoder.held.clear()
        if self.prefix is not None:
            self.publisher.publish("raw", self._topic("raw"), data)

    def _failed(self, error: P1Error) -> None:
        if error.reason == "key_required" and self.key is None:
            if self.prefix is None:
                self._say(
                    f"{error}: give the key, or a topic prefix to publish the raw frames "
                    "without decrypting them"
                )
                self.stop(EXIT_WRONG_KEY)
                return
            # Raw frames only: a frame that arrives whole is all the life sign there is.
            self.session.alive()
            return
        self._clean = False
        if error.reason not in self._said:
            self._said.add(error.reason)
            super()._failed(error)

    def _refused(self, why: str) -> None:
        self._clean = False
        if why not in self._said:
            self._said.add(why)
            super()._refused(why)

    def _accepted(self, telegram: Telegram) -> None:
        self._said.clear()
        if self.prefix is None:
            serial = telegram.serial
            if serial is None:
                self._say("the meter's telegrams carry no serial number: give a topic prefix")
                self.stop(EXIT_NO_SERIAL)
                return
            self.prefix = topic_prefix(serial)
            self._say(f"publishing under {self.prefix}")
            self.publisher.start(self._topic("status"))
        view = telegram.as_dict()
        self.publisher.publish("telegram", self._topic("telegram"), json.dumps(view).encode())
        if self.per_value:
            for obis, value in view["values"].items():
                self.publisher.publish(
                    "values", self._topic(f"values/{obis}"), json.dumps(value).encode()
                )
