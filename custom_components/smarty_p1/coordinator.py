"""The push coordinator: one reader task per meter, telegrams in, entity updates out."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from time import monotonic
from typing import Any, Final

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryNotReady
from homeassistant.helpers.storage import Store
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator
from homeassistant.util import dt as dt_util

from .connection import CannotConnect, Endpoint, source_for
from .const import (
    AUTH_FAILURE_WINDOW,
    CONF_DECRYPTION_KEY,
    CONF_MIN_INTERVAL,
    CONF_SERIAL_NUMBER,
    DEFAULT_MIN_INTERVAL,
    DOMAIN,
    LOGGER,
    RECONNECT_MAX_DELAY,
    RECONNECT_MIN_DELAY,
    SILENCE_TIMEOUT,
)
from .p1 import CosemObject, DecoderStats, P1Error, Telegram, TelegramDecoder, parse_key
from .rebroadcast import Rebroadcaster
from .tariff_runtime import TariffRuntime

type SmartyConfigEntry = ConfigEntry[SmartyCoordinator]

# Registers that only ever count up: a lower reading is a glitch and is never published.
_MONOTONIC: tuple[str, ...] = (
    "1-0:1.8.0",
    "1-0:2.8.0",
    "1-0:3.8.0",
    "1-0:4.8.0",
    "1-0:1.8.1",
    "1-0:1.8.2",
    "1-0:2.8.1",
    "1-0:2.8.2",
    *(f"0-{channel}:24.2.{d}" for channel in range(1, 5) for d in (1, 3)),
)
# A new M-Bus meter on a channel starts from its own reading: forget the old one's.
_MBUS_IDS: tuple[tuple[int, str], ...] = tuple(
    (channel, f"0-{channel}:96.1.0") for channel in range(1, 5)
)


# Written at most this often while telegrams arrive (and at every shutdown): a restart loses at
# most this much of the registers' progress, which only weakens the check for that short span.
REGISTERS_SAVE_INTERVAL: Final = 300.0


def registers_store(hass: HomeAssistant, entry: ConfigEntry) -> Store[dict[str, Any]]:
    """Where an entry keeps its last accepted energy registers and M-Bus identifiers."""
    return Store(hass, 1, f"{DOMAIN}.{entry.entry_id}.registers")


_ZERO = Decimal(0)


class _SilenceError(Exception):
    """No valid telegram for SILENCE_TIMEOUT seconds."""


@dataclass(frozen=True, slots=True)
class SmartyData:
    """What the entities show.

    ``objects`` is the telegram's objects, with a glitching energy register held at its last
    accepted reading and, over a minimum update interval, instantaneous values averaged.
    """

    telegram: Telegram
    objects: Mapping[str, CosemObject]
    received: datetime


@dataclass(slots=True)
class Health:
    """Counters of one coordinator's life, shown as diagnostic entities and in diagnostics."""

    stats: DecoderStats = field(default_factory=DecoderStats)
    reconnects: int = 0
    foreign_telegrams: int = 0
    energy_regressions: int = 0
    stale_telegrams: int = 0
    last_telegram: datetime | None = None
    connected: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The JSON view used by diagnostics."""
        return {
            **self.stats.as_dict(),
            "reconnects": self.reconnects,
            "foreign_telegrams": self.foreign_telegrams,
            "energy_regressions": self.energy_regressions,
            "stale_telegrams": self.stale_telegrams,
            "last_telegram": self.last_telegram.isoformat() if self.last_telegram else None,
            "connected": self.connected,
        }


@lru_cache(maxsize=256)
def _instantaneous(obis: str) -> bool:
    """``1-0:C.7.E`` codes are instantaneous values (power, voltage, current): averaged.

    Asked for every object of every telegram inside a min-interval window: remembered.
    """
    if not obis.startswith("1-"):
        return False
    parts = obis.partition(":")[2].split(".")
    return len(parts) == 3 and parts[1] == "7"


class SmartyCoordinator(DataUpdateCoordinator[SmartyData]):
    """Reads one meter's byte stream and publishes every telegram it verifies."""

    config_entry: SmartyConfigEntry

    def __init__(self, hass: HomeAssistant, entry: SmartyConfigEntry) -> None:
        super().__init__(hass, LOGGER, config_entry=entry, name=f"{DOMAIN} {entry.title}")
        self.endpoint = Endpoint.from_data(entry.data)
        self.source = source_for(hass, self.endpoint)
        key_text = entry.data.get(CONF_DECRYPTION_KEY)
        self._key = parse_key(key_text) if key_text else None
        self.serial: str | None = entry.unique_id or entry.data.get(CONF_SERIAL_NUMBER)
        self.health = Health()
        self._task: asyncio.Task[None] | None = None
        # The decoder of the current connection (a new one per connection: no stale half frame).
        self.decoder: TelegramDecoder | None = None
        self._delay = RECONNECT_MIN_DELAY
        self._last_valid = 0.0
        # Auth failures: since when every frame has failed, and whether reauth is started.
        self._failing_since: float | None = None
        self._reauth_started = False
        # Energy registers' last accepted objects, and M-Bus equipment ids per channel.
        self._accepted: dict[str, CosemObject] = {}
        self._mbus_ids: dict[int, object] = {}
        self._logged: set[str] = set()
        # Frame counter and meter time of the last accepted telegram: a replay is not news.
        self._last_counter: int | None = None
        self._last_clock: datetime | None = None
        # Min-interval window: sums and counts of instantaneous values since the last publish.
        self._sums: dict[str, Decimal] = {}
        self._counts: dict[str, int] = {}
        self._published_at: float | None = None
        self.tariff = TariffRuntime.for_entry(hass, entry)
        # The accepted registers survive a restart, so a glitch in the first telegram after one
        # cannot pull a total below what Home Assistant already recorded.
        self._registers_store = registers_store(hass, entry)
        # Store.async_delay_save postpones a pending write on every call, and the registers change
        # every 10 s: the interval is kept here, so the write really happens.
        self._registers_due = 0.0
        # Set by the entry's setup when the re-broadcast option is on and its port could be bound.
        self.rebroadcast: Rebroadcaster | None = None

    @property
    def min_interval(self) -> float:
        """Seconds between state updates (0: every telegram); read live, so a changed option
        applies at the next telegram without a reload."""
        return float(self.config_entry.options.get(CONF_MIN_INTERVAL, DEFAULT_MIN_INTERVAL))

    async def async_start(self) -> None:
        """Open the connection and start reading; raises ConfigEntryNotReady."""
        if self.tariff is not None:
            await self.tariff.async_load()
        self._restore_registers(await self._registers_store.async_load())
        try:
            await self._open()
        except CannotConnect as err:
            raise ConfigEntryNotReady(
                translation_domain=DOMAIN,
                translation_key=err.error,
                translation_placeholders={"endpoint": self.endpoint.address},
            ) from err
        self.health.connected = True
        self._task = self.config_entry.async_create_background_task(
            self.hass, self._run(), f"{DOMAIN} reader {self.endpoint}"
        )

    async def async_shutdown(self) -> None:
        """Stop reading and close the port."""
        await super().async_shutdown()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self._close()
        if self.tariff is not None:
            await self.tariff.async_save()
        await self._registers_store.async_save(self._stored_registers())

    async def _close(self) -> None:
        self.health.connected = False
        await self.source.close()

    async def _run(self) -> None:
        while True:
            try:
                await self._read()
                reason = "the connection was closed"
            except _SilenceError:
                reason = f"no valid telegram for {SILENCE_TIMEOUT:g} s"
            except OSError as err:
                reason = str(err) or type(err).__name__
            except Exception:
                # A bug must not end the reading for good: log it, start over with a new decoder.
                LOGGER.exception("Unexpected error reading %s", self.endpoint)
                reason = "unexpected error"
            await self._close()
            self._set_unavailable(reason)
            await self._reconnect()

    async def _reconnect(self) -> None:
        while True:
            await asyncio.sleep(self._delay)
            self._delay = min(self._delay * 2, RECONNECT_MAX_DELAY)
            try:
                await self._open()
            except CannotConnect as err:
                LOGGER.debug("Reconnecting to %s failed: %s", self.endpoint, err)
                continue
            self.health.reconnects += 1
            self.health.connected = True
            LOGGER.debug("Reconnected to %s", self.endpoint)
            return

    async def _open(self) -> None:
        """Open the source with a new decoder (no stale half frame); raises CannotConnect."""
        decoder = self.decoder = TelegramDecoder(self._key)
        # One stats object across connections, so counters and frame-counter checks carry over.
        decoder.stats = self.health.stats

        def received(data: bytes) -> None:
            self._process(decoder.feed(data))

        await self.source.open(received)

    async def _read(self) -> None:
        """Wait while telegrams arrive: return at EOF, raise OSError or _SilenceError."""
        self._last_valid = monotonic()
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle

        def watch() -> None:
            # One timer for the whole connection, pushed back as telegrams arrive.
            nonlocal timer
            remaining = self._last_valid + SILENCE_TIMEOUT - monotonic()
            if remaining > 0:
                timer = loop.call_later(remaining, watch)
            else:
                self.source.finish(_SilenceError())

        timer = loop.call_later(SILENCE_TIMEOUT, watch)
        try:
            await self.source.wait_ended()
        finally:
            timer.cancel()

    def _process(self, items: list[Telegram | P1Error]) -> None:
        rejected = False
        for item in items:
            if isinstance(item, Telegram):
                if self._accept(item):
                    continue
            else:
                self._rejected(item)
            rejected = True
        if rejected:
            # Only the health entities change; the others compare and write nothing.
            self.async_update_listeners()

    def _rejected(self, error: P1Error) -> None:
        self._log_once(f"rejected:{error.reason}", "Rejected a frame from %s: %s", error)
        if error.reason not in ("tag", "key_required"):
            return
        now = monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif not self._reauth_started and now - self._failing_since >= AUTH_FAILURE_WINDOW:
            self._reauth_started = True
            LOGGER.warning(
                "Every frame from %s has failed the key check for %g s: asking for the new key",
                self.endpoint,
                AUTH_FAILURE_WINDOW,
            )
            self.config_entry.async_start_reauth(self.hass)

    def _accept(self, telegram: Telegram) -> bool:
        """Publish a verified telegram; False when it belongs to another meter."""
        serial = telegram.serial
        if self.serial is None:
            self.serial = serial
        elif serial is not None and serial != self.serial:
            self.health.foreign_telegrams += 1
            self._log_once(
                "foreign", "Ignoring telegrams of another meter on %s: %s", "meter swapped?"
            )
            return False
        if self._stale(telegram):
            self.health.stale_telegrams += 1
            self._log_once("stale", "Ignoring a replayed telegram from %s: %s", "stale frame")
            return False
        if self.rebroadcast is not None:
            self.rebroadcast.publish(telegram.raw)
        self._last_valid = monotonic()
        self._failing_since = None
        self._delay = RECONNECT_MIN_DELAY
        self.health.last_telegram = dt_util.utcnow()
        objects = self._hold_energy(telegram.objects)
        if self.tariff is not None:
            # Every telegram, whatever the minimum update interval: quarters need each reading.
            self.tariff.feed(objects, self.health.last_telegram)
        if self.min_interval > 0:
            averaged = self._average(objects)
            if averaged is None:
                return True
            objects = averaged
        if not self.last_update_success:
            LOGGER.info("Connection to %s restored", self.endpoint)
        self.async_set_updated_data(SmartyData(telegram, objects, self.health.last_telegram))
        return True

    def _stale(self, telegram: Telegram) -> bool:
        """Whether both the frame counter and the meter time are no newer than last accepted.

        Either alone moves backwards in real life (a new key restarts the counter, the meter
        clock is set back): only a frame old by both is a replay, such as a stale retained MQTT
        message republished by a bridge.
        """
        counter = telegram.frame_counter
        clock = telegram.get("0-0:1.0.0")
        moment = clock.value if clock is not None and isinstance(clock.value, datetime) else None
        last_counter, last_clock = self._last_counter, self._last_clock
        if (
            counter is not None
            and moment is not None
            and last_counter is not None
            and last_clock is not None
            and counter <= last_counter
            and moment <= last_clock
        ):
            return True
        self._last_counter, self._last_clock = counter, moment
        return False

    def _hold_energy(self, objects: dict[str, CosemObject]) -> Mapping[str, CosemObject]:
        for channel, code in _MBUS_IDS:
            ident = objects.get(code)
            if ident is not None and self._mbus_ids.setdefault(channel, ident.value) != (
                ident.value
            ):
                self._mbus_ids[channel] = ident.value
                prefix = f"0-{channel}:"
                for obis in [obis for obis in self._accepted if obis.startswith(prefix)]:
                    del self._accepted[obis]
        held: dict[str, CosemObject] | None = None
        accepted = self._accepted
        changed = False
        for code in _MONOTONIC:
            obj = objects.get(code)
            last = accepted.get(code)
            # The same object: the line is unchanged (the parser reuses repeated lines).
            if obj is last or obj is None or not isinstance(obj.value, Decimal):
                continue
            if last is not None and isinstance(last.value, Decimal) and obj.value < last.value:
                self.health.energy_regressions += 1
                self._log_once(
                    f"energy:{code}",
                    "Ignoring a lower reading from %s: %s",
                    f"{code} {obj.value} < {last.value}",
                )
                if held is None:
                    held = dict(objects)
                held[code] = last
            else:
                accepted[code] = obj
                changed = True
        if changed and (now := monotonic()) >= self._registers_due:
            self._registers_due = now + REGISTERS_SAVE_INTERVAL
            self._registers_store.async_delay_save(self._stored_registers)
        return objects if held is None else held

    def _stored_registers(self) -> dict[str, Any]:
        return {
            "registers": {
                code: [str(obj.value), obj.unit]
                for code, obj in self._accepted.items()
                if isinstance(obj.value, Decimal)
            },
            "mbus_ids": {str(channel): ident for channel, ident in self._mbus_ids.items()},
        }

    def _restore_registers(self, stored: Mapping[str, Any] | None) -> None:
        if not stored:
            return
        for code, (value, unit) in stored.get("registers", {}).items():
            self._accepted[code] = CosemObject(code, (), Decimal(value), unit)
        for channel, ident in stored.get("mbus_ids", {}).items():
            self._mbus_ids[int(channel)] = ident

    def _average(self, objects: Mapping[str, CosemObject]) -> Mapping[str, CosemObject] | None:
        """Objects to publish at the end of a min-interval window, else None (still inside)."""
        sums, counts = self._sums, self._counts
        for obis, obj in objects.items():
            if _instantaneous(obis) and isinstance(value := obj.value, Decimal):
                sums[obis] = sums.get(obis, _ZERO) + value
                counts[obis] = counts.get(obis, 0) + 1
        now = monotonic()
        if self._published_at is not None and now - self._published_at < self.min_interval:
            return None
        self._published_at = now
        averaged = dict(objects)
        for obis, total in sums.items():
            latest = objects.get(obis)
            if latest is None or not isinstance(latest.value, Decimal):
                continue
            mean = (total / counts[obis]).quantize(latest.value)
            averaged[obis] = CosemObject(obis, latest.raw, mean, latest.unit, latest.timestamp)
        sums.clear()
        counts.clear()
        return averaged

    def _set_unavailable(self, reason: str) -> None:
        if self.last_update_success:
            LOGGER.warning("Lost the connection to %s: %s", self.endpoint, reason)
            self.last_update_success = False
            self.async_update_listeners()
        else:
            LOGGER.debug("Still no connection to %s: %s", self.endpoint, reason)

    def _log_once(self, topic: str, message: str, detail: object) -> None:
        """Warn about a kind of problem once per run; repeats only count (see Health)."""
        if topic in self._logged:
            return
        self._logged.add(topic)
        LOGGER.warning(message, self.endpoint, detail)
