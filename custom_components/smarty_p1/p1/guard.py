"""Judging verified telegrams before anyone shows them: another meter, replays, and cumulative
registers that cannot be right.

A telegram can verify (tag, CRC) and still be wrong to show: a bridge republishes a stale frame,
another meter's frames arrive on the same topic, a plaintext meter's line picks up a glitch that
CRC-16 misses, a register stored by an earlier run is above what the meter says now. The rules:

- A telegram of another meter (its serial) or older by both frame counter and meter time than
  the last accepted one is not shown at all.
- A cumulative register (energy, reactive energy, M-Bus readings) never goes below its last
  accepted reading, and rises at most by what the meter can count in the time between the two
  readings: its power limit (0-0:17.0.0, else its current limit 1-1:31.4.0 on three phases,
  else a generous fixed bound) for that long, plus one step of the register's resolution and one
  second of clock resolution. A reading outside that is held back (the last accepted reading is
  shown instead) and counted.
- A held rise is accepted once ``confirm_readings`` following readings confirm the new level
  (each plausible from the one before): the meter really is there.
- A register that stays below its accepted reading for ``re_anchor_after`` and at least
  ``re_anchor_readings`` telegrams (readings consistent among themselves) is re-anchored to the
  meter, and ``on_re_anchor`` is told: nothing stays frozen at a wrong level forever.

No Home Assistant here: the integration, the console reader and the MQTT bridge judge alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from .obis import describe
from .telegram import CosemObject, Telegram

_LOGGER = logging.getLogger(__name__)

# Registers that only ever count up.
CUMULATIVE: Final[tuple[str, ...]] = (
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
# A new M-Bus meter on a channel starts from its own reading: the old one's is forgotten.
_MBUS_IDS: Final[tuple[tuple[int, str], ...]] = tuple(
    (channel, f"0-{channel}:96.1.0") for channel in range(1, 5)
)
# How much more than its limit a meter may count: a breaker trips late, a limit is rounded.
LIMIT_MARGIN: Final = Decimal("1.5")
# A T210-D is connected directly, up to 100 A on each of three phases: about 76 kW.
FIXED_POWER_KW: Final = Decimal(100)
PHASE_VOLTAGE_KV: Final = Decimal("0.253")
# M-Bus meters by their unit: a G16 gas meter passes 25 m3/h at most, a 250 kW heat meter 0.9 GJ.
MBUS_RATE_PER_HOUR: Final[Mapping[str, Decimal]] = {"m3": Decimal(40), "GJ": Decimal(2)}
# Meter times and M-Bus capture times are given to the second.
CLOCK_RESOLUTION: Final = timedelta(seconds=1)
CONFIRM_READINGS: Final = 3
RE_ANCHOR_AFTER: Final = timedelta(minutes=15)
RE_ANCHOR_READINGS: Final = 30
_HOUR = Decimal(3600)


@dataclass(slots=True)
class GuardStats:
    """What the guard held back or refused since it was made."""

    foreign: int = 0
    stale: int = 0
    lower: int = 0
    implausible: int = 0
    confirmed_jumps: int = 0
    re_anchored: int = 0

    def as_dict(self) -> dict[str, int]:
        """The JSON view (diagnostics, the console reader's summary, the bridge)."""
        return {
            "foreign_telegrams": self.foreign,
            "stale_telegrams": self.stale,
            "lower_readings": self.lower,
            "implausible_rises": self.implausible,
            "confirmed_jumps": self.confirmed_jumps,
            "re_anchored": self.re_anchored,
        }


@dataclass(slots=True)
class _Register:
    """The last accepted reading of a cumulative register, and what is pending against it."""

    accepted: CosemObject
    time: datetime | None
    # A rise held back as implausible, and how many readings have confirmed it since.
    candidate: Decimal | None = None
    candidate_time: datetime | None = None
    confirmations: int = 0
    # Readings below the accepted one: since when, how many, the last of them.
    below_since: datetime | None = None
    below_count: int = 0
    below_last: Decimal | None = None
    below_time: datetime | None = None

    def settle(self) -> None:
        self.candidate = self.candidate_time = None
        self.confirmations = 0
        self.below_since = self.below_last = self.below_time = None
        self.below_count = 0


type ReAnchored = Callable[[str, Decimal, Decimal], None]


class TelegramGuard:
    """Judges each verified telegram of one meter; see the module docstring for the rules."""

    def __init__(
        self,
        serial: str | None = None,
        *,
        on_re_anchor: ReAnchored | None = None,
        confirm_readings: int = CONFIRM_READINGS,
        re_anchor_after: timedelta = RE_ANCHOR_AFTER,
        re_anchor_readings: int = RE_ANCHOR_READINGS,
    ) -> None:
        self.serial = serial
        self.stats = GuardStats()
        self._on_re_anchor = on_re_anchor
        self.confirm_readings = confirm_readings
        self.re_anchor_after = re_anchor_after
        self.re_anchor_readings = re_anchor_readings
        self._registers: dict[str, _Register] = {}
        self._mbus_ids: dict[int, object] = {}
        self._last_counter: int | None = None
        self._last_clock: datetime | None = None
        # Whether accepted registers changed since ``as_dict`` was last called (worth saving).
        self.dirty = False
        # Why the last telegram was refused (None: it was accepted).
        self.refused: str | None = None
        # Each kind of held reading is logged once per register; repeats are only counted.
        self._logged: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"TelegramGuard(serial={self.serial!r}, stats={self.stats!r})"

    def reset(self, serial: str | None) -> None:
        """Another meter from now on (a meter exchange): forget everything of the old one."""
        self.serial = serial
        self._registers.clear()
        self._mbus_ids.clear()
        self._last_counter = self._last_clock = None
        self.dirty = True

    def judge(self, telegram: Telegram, received: datetime) -> Telegram | None:
        """The telegram to show (registers held where needed), or None to show nothing.

        ``received`` (an aware datetime) stands in for the meter's clock when it sends none.
        """
        serial = telegram.serial
        if self.serial is None:
            self.serial = serial
        elif serial is not None and serial != self.serial:
            self.stats.foreign += 1
            self.refused = "foreign"
            return None
        if self._stale(telegram):
            self.stats.stale += 1
            self.refused = "stale"
            return None
        self.refused = None
        objects = telegram.objects
        self._follow_mbus_ids(objects)
        clock_obj = objects.get("0-0:1.0.0")
        clock = clock_obj.value if clock_obj is not None else None
        when = clock if isinstance(clock, datetime) else received
        held: dict[str, CosemObject] | None = None
        registers = self._registers
        for code in CUMULATIVE:
            obj = objects.get(code)
            if obj is None or not isinstance(obj.value, Decimal):
                continue
            register = registers.get(code)
            if register is None:
                registers[code] = _Register(obj, obj.timestamp or when)
                self.dirty = True
                continue
            if obj is register.accepted:
                # The same line as last time (the parser reuses the objects of repeated lines).
                if register.candidate is not None or register.below_since is not None:
                    register.settle()
                continue
            if not self._accept(code, register, obj, obj.timestamp or when, objects):
                if held is None:
                    held = dict(objects)
                held[code] = register.accepted
        if held is None:
            return telegram
        return replace(telegram, objects=held)

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

    def _follow_mbus_ids(self, objects: Mapping[str, CosemObject]) -> None:
        for channel, code in _MBUS_IDS:
            ident = objects.get(code)
            if ident is None:
                continue
            known = self._mbus_ids.setdefault(channel, ident.value)
            if known != ident.value:
                self._mbus_ids[channel] = ident.value
                prefix = f"0-{channel}:"
                for obis in [obis for obis in self._registers if obis.startswith(prefix)]:
                    del self._registers[obis]
                self.dirty = True

    def _accept(
        self,
        code: str,
        register: _Register,
        obj: CosemObject,
        when: datetime,
        objects: Mapping[str, CosemObject],
    ) -> bool:
        """Judge one changed reading; True when it becomes the accepted one."""
        value = obj.value
        assert isinstance(value, Decimal)
        last = register.accepted.value
        assert isinstance(last, Decimal)
        rate = self._rate_per_hour(code, obj, objects)
        if value >= last:
            register.below_since = register.below_last = register.below_time = None
            register.below_count = 0
            if _plausible(value, last, register.time, when, rate):
                return self._take(register, obj, when)
            candidate = register.candidate
            if candidate is not None and _plausible(
                value, candidate, register.candidate_time, when, rate
            ):
                register.confirmations += 1
                register.candidate, register.candidate_time = value, when
                if register.confirmations >= self.confirm_readings:
                    self.stats.confirmed_jumps += 1
                    _LOGGER.info("%s rose from %s to %s: confirmed by the meter", code, last, value)
                    return self._take(register, obj, when)
                return False
            self.stats.implausible += 1
            self._warn_once(
                "rise",
                code,
                "Holding back %s: %s rose to %s faster than the meter can count",
                last,
                value,
            )
            register.candidate, register.candidate_time = value, when
            register.confirmations = 0
            return False
        self.stats.lower += 1
        self._warn_once("lower", code, "Ignoring a lower reading of %s: %s after %s", value, last)
        register.candidate = register.candidate_time = None
        register.confirmations = 0
        below = register.below_last
        if (
            below is not None
            and value >= below
            and _plausible(value, below, register.below_time, when, rate)
        ):
            register.below_count += 1
        else:
            register.below_since, register.below_count = when, 1
        register.below_last, register.below_time = value, when
        since = register.below_since
        if (
            since is not None
            and register.below_count >= self.re_anchor_readings
            and when - since >= self.re_anchor_after
        ):
            self.stats.re_anchored += 1
            _LOGGER.warning(
                "%s has stayed below its last accepted reading (%s) since %s: following the "
                "meter again at %s",
                code,
                last,
                since.isoformat(),
                value,
            )
            self._take(register, obj, when)
            if self._on_re_anchor is not None:
                self._on_re_anchor(code, last, value)
            return True
        return False

    def _warn_once(self, kind: str, code: str, message: str, *args: object) -> None:
        if (kind, code) not in self._logged:
            self._logged.add((kind, code))
            _LOGGER.warning(message, code, *args)

    def _take(self, register: _Register, obj: CosemObject, when: datetime) -> bool:
        register.accepted, register.time = obj, when
        register.settle()
        self.dirty = True
        return True

    @staticmethod
    def _rate_per_hour(
        code: str, obj: CosemObject, objects: Mapping[str, CosemObject]
    ) -> Decimal | None:
        """The most the register can count in an hour, in its own unit; None if unknown."""
        info = describe(code)
        unit = obj.unit or (info.unit if info is not None else None)
        if code.startswith("0-"):
            return MBUS_RATE_PER_HOUR.get(unit or "")
        if unit is None:
            return None
        scale = {"kwh": Decimal(1), "kvarh": Decimal(1), "wh": Decimal(1000), "varh": Decimal(1000)}
        factor = scale.get(unit.lower())
        if factor is None:
            return None
        return _power_limit_kw(objects) * LIMIT_MARGIN * factor

    def as_dict(self) -> dict[str, Any]:
        """What to store, so that the rules hold across a restart."""
        self.dirty = False
        return {
            "registers": {
                code: {
                    "value": str(register.accepted.value),
                    "unit": register.accepted.unit,
                    "time": register.time.isoformat() if register.time else None,
                }
                for code, register in self._registers.items()
            },
            "mbus_ids": {str(channel): ident for channel, ident in self._mbus_ids.items()},
        }

    def restore(self, stored: Mapping[str, Any] | None) -> None:
        """Take back what ``as_dict`` gave (of the same meter)."""
        if not stored:
            return
        for code, reading in stored.get("registers", {}).items():
            moment = reading.get("time")
            self._registers[code] = _Register(
                CosemObject(code, (), Decimal(reading["value"]), reading.get("unit")),
                datetime.fromisoformat(moment) if moment else None,
            )
        for channel, ident in stored.get("mbus_ids", {}).items():
            self._mbus_ids[int(channel)] = ident


def _plausible(
    value: Decimal, start: Decimal, since: datetime | None, when: datetime, rate: Decimal | None
) -> bool:
    """Whether a register counting at most ``rate`` an hour can have risen from ``start`` (at
    ``since``) to ``value`` (at ``when``)."""
    if value < start:
        return False
    if since is None or rate is None:
        # An unknown time or unit bounds nothing but "never backwards".
        return True
    seconds = max((when - since + CLOCK_RESOLUTION).total_seconds(), 0.0)
    exponent = value.as_tuple().exponent
    step = Decimal(1).scaleb(exponent) if isinstance(exponent, int) else Decimal(0)
    return value - start <= rate * Decimal(seconds) / _HOUR + step


def _power_limit_kw(objects: Mapping[str, CosemObject]) -> Decimal:
    """The meter's power limit as it announces it, else the most a T210-D can carry."""
    smax = objects.get("0-0:17.0.0")
    if smax is not None and isinstance(smax.value, Decimal) and smax.value > 0:
        return smax.value
    limits = objects.get("1-1:31.4.0")
    if limits is not None:
        current = limits.value[0] if isinstance(limits.value, tuple) else limits.value
        if isinstance(current, Decimal) and current > 0:
            return abs(current) * 3 * PHASE_VOLTAGE_KV
    return FIXED_POWER_KW
