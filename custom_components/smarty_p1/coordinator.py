"""The push coordinator: one reading session per meter, judged telegrams in, entity updates out.

Reading through cuts (p1/session.py) and judging telegrams (p1/guard.py) are the protocol
core's, shared with the console reader and the MQTT bridge; what is Home Assistant's is here:
availability, reauthentication, storage, the minimum update interval and the tariff.
"""

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
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator, UpdateFailed
from homeassistant.util import dt as dt_util

from . import issues
from .connection import Endpoint, source_for
from .const import (
    AUTH_FAILURE_WINDOW,
    CONF_AUTH_KEY,
    CONF_DECRYPTION_KEY,
    CONF_MIN_INTERVAL,
    CONF_SERIAL_NUMBER,
    CONF_TOTAL_INTERVAL,
    DEFAULT_MIN_INTERVAL,
    DEFAULT_TOTAL_INTERVAL,
    DOMAIN,
    LOGGER,
)
from .p1 import CosemObject, DecoderStats, P1Error, Telegram, TelegramDecoder, parse_key
from .p1.authkey import LearnedAuthKey
from .p1.guard import GuardStats, TelegramGuard
from .p1.integrity import FrameAuthenticator, Integrity
from .p1.session import (
    RECONNECT_MAX_DELAY,
    RECONNECT_MIN_DELAY,
    SILENCE_TIMEOUT,
    MeterSession,
)
from .p1.sources import ByteSource, CannotConnect
from .rebroadcast import Rebroadcaster
from .tariff_runtime import TariffRuntime

type SmartyConfigEntry = ConfigEntry[SmartyCoordinator]

# Rejections that prove the key wrong: only these start the key-failure window; and those of
# frames the key does decrypt (damaged on the line, altered, withheld while learning), which end
# it. The others (a bad CRC, plaintext injected, noise) say nothing about the key.
KEY_FAILURES: Final = frozenset({"wrong_key", "key_required"})
KEY_DECRYPTS: Final = frozenset({"damaged", "tag", "learning"})


def authenticator_for(data: Mapping[str, Any]) -> FrameAuthenticator:
    """The authenticator of entry data with a key: with the learned authentication key when
    the entry keeps one."""
    key = parse_key(data[CONF_DECRYPTION_KEY])
    stored = data.get(CONF_AUTH_KEY)
    if stored:
        return FrameAuthenticator(key, LearnedAuthKey.from_dict(stored))
    return FrameAuthenticator(key)


# Written at most this long after the registers change; Home Assistant's final write at
# shutdown flushes a pending one. A power cut loses at most this much of their progress, which
# only weakens the plausibility check for that short span.
REGISTERS_SAVE_DELAY: Final = 300.0


class RegistersStore(Store[dict[str, Any]]):
    """The judged state of the meter's registers (p1/guard.py), kept across restarts.

    1.1 kept ``[value, unit]`` per register; 1.2 adds the meter time of the reading, which the
    plausibility of the next rise is measured from (unknown for readings stored by 1.1).
    """

    async def _async_migrate_func(
        self, old_major_version: int, old_minor_version: int, old_data: dict[str, Any]
    ) -> dict[str, Any]:
        if old_minor_version < 2:
            old_data["registers"] = {
                code: {"value": value, "unit": unit, "time": None}
                for code, (value, unit) in old_data.get("registers", {}).items()
            }
        return old_data


def registers_store(hass: HomeAssistant, entry: ConfigEntry) -> RegistersStore:
    """Where an entry keeps its last accepted energy registers and M-Bus identifiers."""
    return RegistersStore(hass, 1, f"{DOMAIN}.{entry.entry_id}.registers", minor_version=2)


_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class SmartyData:
    """What the entities show.

    ``telegram`` is the judged telegram (an implausible register held at its last accepted
    reading); ``objects`` its objects, instantaneous values averaged over a minimum update
    interval. ``totals_due``: whether the meter's totals take their new value now (see
    CONF_TOTAL_INTERVAL); when not, they keep their state until a later telegram.
    """

    telegram: Telegram
    objects: Mapping[str, CosemObject]
    received: datetime
    totals_due: bool = True


@dataclass(slots=True)
class Health:
    """Counters of one coordinator's life, shown as diagnostic entities and in diagnostics."""

    stats: DecoderStats = field(default_factory=DecoderStats)
    guard: GuardStats = field(default_factory=GuardStats)
    reconnects: int = 0
    integrity: Integrity = Integrity.PLAINTEXT
    last_telegram: datetime | None = None
    connected: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The JSON view used by diagnostics."""
        return {
            **self.stats.as_dict(),
            **self.guard.as_dict(),
            "integrity": self.integrity.value,
            "reconnects": self.reconnects,
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
        key_text = entry.data.get(CONF_DECRYPTION_KEY)
        # What the meter's frames have shown (a learned authentication key): shared by the
        # decoders of every connection, kept with the entry (a secret) across restarts.
        self.authenticator = authenticator_for(entry.data) if key_text else None
        self._learned: LearnedAuthKey | None = (
            self.authenticator.learned_key if self.authenticator else None
        )
        self.serial: str | None = entry.unique_id or entry.data.get(CONF_SERIAL_NUMBER)
        self.health = Health(integrity=self.integrity)
        self.guard = TelegramGuard(self.serial, on_re_anchor=self._re_anchored)
        self.health.guard = self.guard.stats
        self.session = MeterSession(
            source_for(hass, self.endpoint),
            self._new_decoder,
            self._process,
            on_lost=self._lost,
            on_connected=self._connected,
            # Read here, not at import, so that tests can shorten them.
            silence_timeout=SILENCE_TIMEOUT,
            min_delay=RECONNECT_MIN_DELAY,
            max_delay=RECONNECT_MAX_DELAY,
        )
        self._task: asyncio.Task[None] | None = None
        # Auth failures: since when every frame has failed, and whether reauth is started.
        self._failing_since: float | None = None
        self._reauth_started = False
        # Another meter's telegrams: since when only they arrive, and whether a repair is up.
        self._foreign_since: float | None = None
        self._other_meter_raised = False
        self._logged: set[str] = set()
        # Min-interval window: sums and counts of instantaneous values since the last publish.
        self._sums: dict[str, Decimal] = {}
        self._counts: dict[str, int] = {}
        self._published_at: float | None = None
        # When the totals last took a new value: None writes them with the next telegram.
        self._totals_at: float | None = None
        self.tariff = TariffRuntime.for_entry(hass, entry)
        # The accepted registers survive a restart, so a glitch in the first telegram after one
        # cannot pull a total below what Home Assistant already recorded.
        self._registers_store = registers_store(hass, entry)
        self._save_pending = False
        # Set by the entry's setup when the re-broadcast option is on and its port could be bound.
        self.rebroadcast: Rebroadcaster | None = None

    @property
    def source(self) -> ByteSource:
        """The byte source of the meter."""
        return self.session.source

    @property
    def decoder(self) -> TelegramDecoder | None:
        """The decoder of the current connection."""
        return self.session.decoder

    @property
    def min_interval(self) -> float:
        """Seconds between state updates (0: every telegram); read live, so a changed option
        applies at the next telegram without a reload."""
        return float(self.config_entry.options.get(CONF_MIN_INTERVAL, DEFAULT_MIN_INTERVAL))

    @property
    def total_interval(self) -> float:
        """Seconds between state updates of the meter's totals (0: with the other values)."""
        return float(self.config_entry.options.get(CONF_TOTAL_INTERVAL, DEFAULT_TOTAL_INTERVAL))

    @property
    def integrity(self) -> Integrity:
        """How the meter's telegrams are protected."""
        authenticator = self.authenticator
        return Integrity.PLAINTEXT if authenticator is None else authenticator.integrity

    def _new_decoder(self) -> TelegramDecoder:
        decoder = TelegramDecoder(authenticator=self.authenticator)
        # One stats object across connections, so counters and frame-counter checks carry over.
        decoder.stats = self.health.stats
        return decoder

    async def async_start(self) -> None:
        """Open the connection and start reading; raises ConfigEntryNotReady."""
        if self.tariff is not None:
            await self.tariff.async_load()
        self.guard.restore(await self._registers_store.async_load())
        try:
            await self.session.open()
        except CannotConnect as err:
            raise ConfigEntryNotReady(
                translation_domain=DOMAIN,
                translation_key=err.error,
                translation_placeholders={"endpoint": self.endpoint.address},
            ) from err
        self._task = self.config_entry.async_create_background_task(
            self.hass, self.session.run(), f"{DOMAIN} reader {self.endpoint}"
        )

    async def async_shutdown(self) -> None:
        """Stop reading, close the port, write what is kept across restarts."""
        await super().async_shutdown()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.session.close()
        self.health.connected = False
        if self.tariff is not None:
            await self.tariff.async_save()
        await self._registers_store.async_save(self._stored_registers())

    async def _async_update_data(self) -> SmartyData:
        """Nothing to fetch from a meter that pushes: an update request gets the last telegram
        while the meter is connected."""
        if self.data is None or not self.session.connected or not self.last_update_success:
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key="no_telegram",
                translation_placeholders={"endpoint": self.endpoint.address},
            )
        return self.data

    def _connected(self) -> None:
        self.health.connected = True
        self.health.reconnects = self.session.reconnects

    def _lost(self, reason: str) -> None:
        self.health.connected = False
        # A new connection starts a new averaging window: its first telegram is published.
        self._reset_window()
        if self.last_update_success:
            LOGGER.info("Lost the connection to %s: %s", self.endpoint, reason)
            self.last_update_success = False
            self.async_update_listeners()
        else:
            LOGGER.debug("Still no connection to %s: %s", self.endpoint, reason)

    def _process(self, items: list[Telegram | P1Error]) -> None:
        rejected = False
        for item in items:
            if isinstance(item, Telegram):
                if self._accept(item):
                    continue
            else:
                self._rejected(item)
            rejected = True
        if (integrity := self.integrity) is not self.health.integrity:
            self._integrity_changed(integrity)
            rejected = True
        if (
            self.authenticator is not None
            and (learned := self.authenticator.learned_key) != self._learned
        ):
            self._learned = learned
            self._store_learned_key(learned)
        if rejected:
            # Only the health entities change; the others compare and write nothing.
            self.async_update_listeners()

    def _integrity_changed(self, integrity: Integrity) -> None:
        """Say so whenever the telegrams are not authenticated: a repair issue for CRC-only."""
        previous, self.health.integrity = self.health.integrity, integrity
        if integrity is Integrity.CRC_ONLY:
            LOGGER.warning(
                "No authentication key explains the tags of %s: its telegrams are checked by "
                "their CRC only",
                self.endpoint,
            )
            issues.async_raise_crc_only(self.hass, self.config_entry)
        elif previous is Integrity.CRC_ONLY:
            issues.async_clear_issue(self.hass, self.config_entry, issues.CRC_ONLY)
        if integrity is Integrity.LEARNING:
            LOGGER.info(
                "%s authenticates with an authentication key of its own: learning it from its "
                "frames",
                self.endpoint,
            )

    def _store_learned_key(self, learned: LearnedAuthKey | None) -> None:
        """Keep the learned authentication key with the entry, so a restart verifies from the
        first frame (never logged: it is a secret)."""
        data = {key: value for key, value in self.config_entry.data.items() if key != CONF_AUTH_KEY}
        if learned is not None:
            data[CONF_AUTH_KEY] = learned.as_dict()
            LOGGER.info("Learned the authentication key of %s from its frames", self.endpoint)
        self.hass.config_entries.async_update_entry(self.config_entry, data=data)

    def _rejected(self, error: P1Error) -> None:
        self._log_once(f"rejected:{error.reason}", "Rejected a frame from %s: %s", error)
        if error.reason in KEY_DECRYPTS:
            # The key decrypts the meter's frames (damaged or not): not a key problem.
            self._failing_since = None
            return
        if error.reason not in KEY_FAILURES:
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
        """Publish a verified telegram; False when the guard refuses it."""
        received = dt_util.utcnow()
        judged = self.guard.judge(telegram, received)
        if judged is None:
            if self.guard.refused == "foreign":
                self._log_once(
                    "foreign", "Ignoring telegrams of another meter on %s: %s", "meter swapped?"
                )
                self._other_meter(telegram)
            else:
                self._log_once("stale", "Ignoring a replayed telegram from %s: %s", "stale frame")
            return False
        if self.serial is None:
            self.serial = self.guard.serial
        if self.rebroadcast is not None and judged is telegram:
            # Only what is shown is passed on: a held register would reach the others' charts.
            self.rebroadcast.publish(telegram.raw)
        self.session.alive()
        self._failing_since = self._foreign_since = None
        if self._other_meter_raised:
            self._other_meter_raised = False
            issues.async_clear_issue(self.hass, self.config_entry, issues.OTHER_METER)
        self.health.last_telegram = received
        if self.guard.dirty and not self._save_pending:
            self._save_pending = True
            self._registers_store.async_delay_save(self._stored_registers, REGISTERS_SAVE_DELAY)
        objects: Mapping[str, CosemObject] = judged.objects
        if self.tariff is not None:
            # Every telegram, whatever the minimum update interval: quarters need each reading.
            self.tariff.feed(objects, received)
        if not self.last_update_success:
            LOGGER.info("Connection to %s restored", self.endpoint)
            self._reset_window()
        if self.min_interval > 0:
            averaged = self._average(objects)
            if averaged is None:
                return True
            objects = averaged
        now = monotonic()
        totals_due = self._totals_at is None or now - self._totals_at >= self.total_interval
        if totals_due:
            self._totals_at = now
        self.async_set_updated_data(SmartyData(judged, objects, received, totals_due))
        return True

    def _re_anchored(self, code: str, held: Decimal, reading: Decimal) -> None:
        """A total that was held above the meter follows it again: the statistics may need a
        hand (the drop reads as a new meter cycle), which only the user can give."""
        issues.async_raise_total_re_anchored(
            self.hass, self.config_entry, code, str(held), str(reading)
        )

    def _other_meter(self, telegram: Telegram) -> None:
        """Another meter's telegrams, and none of this one's, for the key-failure window: the
        meter was exchanged (a plaintext meter fails no key check) or the cable moved. A
        repair offers the exchange; the entry's own meter coming back withdraws it."""
        now = monotonic()
        if self._foreign_since is None:
            self._foreign_since = now
        elif not self._other_meter_raised and now - self._foreign_since >= AUTH_FAILURE_WINDOW:
            serial = telegram.serial
            if serial is not None:
                self._other_meter_raised = True
                issues.async_raise_other_meter(self.hass, self.config_entry, serial)

    def _stored_registers(self) -> dict[str, Any]:
        self._save_pending = False
        return self.guard.as_dict()

    def _reset_window(self) -> None:
        self._published_at = self._totals_at = None
        self._sums.clear()
        self._counts.clear()

    def _average(self, objects: Mapping[str, CosemObject]) -> Mapping[str, CosemObject] | None:
        """Objects to publish at the end of a min-interval window, else None (still inside).

        The first telegram of a window (after a start or a reconnect) is published at once.
        """
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

    def _log_once(self, topic: str, message: str, detail: object) -> None:
        """Warn about a kind of problem once per run; repeats only count (see Health)."""
        if topic in self._logged:
            return
        self._logged.add(topic)
        LOGGER.warning(message, self.endpoint, detail)
