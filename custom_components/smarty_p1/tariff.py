"""Luxembourg's reference-power grid tariff: energy per clock quarter hour, overruns, forecast.

Since 2025 the grid bills, in every clock quarter hour (:00, :15, :30, :45 local time), the
imported energy above ``reference power x 0.25 h`` at a higher rate. This module follows the
import register 1-0:1.8.0 telegram by telegram and tells how much each quarter took, whether the
current one is heading for an overrun, and what the overruns of the day and month cost.

No Home Assistant import: the coordinator feeds it and stores ``as_dict()``.

Semantics:
- Quarters are keyed by their start in UTC: Luxembourg's offsets are whole hours, so the UTC
  quarters are the local ones, and a DST day simply has 92 or 100 of them.
- The energy of a quarter is the register's increase over it; a boundary between two telegrams
  gets the register linearly interpolated to the boundary instant.
- A boundary crossed with no telegram for more than ``max_gap`` is a gap: the energy across it
  belongs to no quarter (it is reported in ``last_gap``), quarters inside it are not recorded,
  and the two quarters at its ends are flagged incomplete. Their measured energy and overrun
  are lower bounds of the real ones (the meter counted at least that much in them), and count.
- "Current power" is the meter's instantaneous import power (1-0:1.7.0) when given, as it reacts
  at once when a charger starts; otherwise the register's slope over the last minute.
- The "overrun expected" flag turns on when the projection (energy so far plus current power for
  the rest of the quarter) has stayed above the limit for ``CONFIRM``, or at once when the
  energy already exceeds it; it turns off when the projection falls below the limit less
  ``HYSTERESIS``. A single 10 s power spike therefore does not flip it, at any point of a quarter.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final
from zoneinfo import ZoneInfo

REFERENCE_POWERS: Final = (3, 7, 12, 17, 27, 43, 70, 100, 150, 200)  # kW, on the bill
LUXEMBOURG: Final = ZoneInfo("Europe/Luxembourg")
QUARTER: Final = timedelta(minutes=15)
HOUR: Final = timedelta(hours=1)
# Telegrams come every 10 s: up to two lost telegrams in a row are bridged by interpolation.
MAX_GAP: Final = timedelta(seconds=35)
# The register counts whole Wh: over a minute its slope is good to 60 W.
POWER_WINDOW: Final = timedelta(seconds=60)
CONFIRM: Final = timedelta(seconds=20)
HYSTERESIS: Final = 0.05
STATE_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Rates:
    """Grid-use rates in EUR/kWh, VAT excluded: within the reference, and for the overrun."""

    normal: float
    overrun: float


# Low-voltage grid-use rates, EUR/kWh excluding VAT, by the year they apply to.
# Sources: the grid operators (Creos, Sudstroum, Diekirch, Ettelbruck) propose the rates and the
# regulator, the Institut Luxembourgeois de Régulation (ILR), approves them for one calendar year
# (under ILR regulation E20/22 of 26 May 2020: proposals by 1 September, approved rates expire on
# 31 December; ILR consultations at https://web.ilr.lu/FR/Professionnels/Electricite/Commun/
# Consultations). The low-voltage structure, reference power and overrun, is ILR regulation
# E23/49 of 15 November 2023; the overrun costs the normal rate plus 50 % (the operators' draft
# of 15 October 2024, reported at https://en.paperjam.lu/article/electricity-consumption-overru),
# which both years below follow. The figures themselves could not be confirmed against the ILR
# decision or Creos's rate sheet from here: check them against a bill. Rates for 2027 were not
# found published. A year that is not listed is priced at the last listed year's rates, and the
# integration asks the user for that year's rates (a repair issue).
PUBLISHED_RATES: Final[Mapping[int, Rates]] = {
    2025: Rates(normal=0.0759, overrun=0.1139),
    2026: Rates(normal=0.0510, overrun=0.0765),
}


class RatesSource(StrEnum):
    """Where the rates that price a year's overruns come from."""

    PUBLISHED = "published"
    OPTIONS = "options"  # both rates are the user's
    PUBLISHED_AND_OPTIONS = "published_and_options"  # one of each


@dataclass(frozen=True, slots=True)
class AppliedRates:
    """The rates a year is priced at, and where they come from."""

    rates: Rates
    source: RatesSource
    # The year whose published figures are used; None when the user's rates replace both.
    published_year: int | None


@dataclass(frozen=True, slots=True)
class RatePlan:
    """The published rates, with the rates the user set (EUR/kWh) replacing them in every year."""

    published: Mapping[int, Rates] = field(default_factory=lambda: PUBLISHED_RATES)
    normal: float | None = None
    overrun: float | None = None

    def _listed_year(self, year: int) -> int:
        """The listed year whose figures apply: the latest up to ``year`` (the earliest before)."""
        known = [listed for listed in self.published if listed <= year]
        return max(known) if known else min(self.published)

    def applied(self, year: int) -> AppliedRates:
        """The rates of a year and their source."""
        normal, overrun = self.normal, self.overrun
        if normal is not None and overrun is not None:
            return AppliedRates(Rates(normal, overrun), RatesSource.OPTIONS, None)
        listed = self._listed_year(year)
        published = self.published[listed]
        rates = Rates(
            normal=published.normal if normal is None else normal,
            overrun=published.overrun if overrun is None else overrun,
        )
        own = normal is not None or overrun is not None
        source = RatesSource.PUBLISHED_AND_OPTIONS if own else RatesSource.PUBLISHED
        return AppliedRates(rates, source, listed)

    def rates(self, year: int) -> Rates:
        """The rates a year's quarters are priced at."""
        return self.applied(year).rates

    def fallback_year(self, year: int) -> int | None:
        """The earlier year whose published figures price ``year`` for lack of its own.

        None when ``year`` is listed, or the user's rates replace both.
        """
        listed = self.applied(year).published_year
        return listed if listed is not None and listed < year else None


def quarter_start(moment: datetime) -> datetime:
    """The UTC start of the quarter hour holding an aware moment."""
    utc = moment.astimezone(UTC)
    return utc.replace(minute=utc.minute - utc.minute % 15, second=0, microsecond=0)


def quarters_in_day(day: date, zone: tzinfo = LUXEMBOURG) -> int:
    """How many quarter hours a local day has: 96, or 92 / 100 on a DST switch."""
    start = datetime.combine(day, time(), zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), zone).astimezone(UTC)
    return (end - start) // QUARTER


@dataclass(frozen=True, slots=True)
class Quarter:
    """A completed quarter hour."""

    start: datetime  # UTC
    energy: float  # kWh
    overrun: float  # kWh above the reference x 0.25 h
    reference: float  # kW
    complete: bool  # False: part of it fell in a gap, the values are lower bounds
    cost: float  # EUR: the overrun energy at the overrun rate
    extra_cost: float  # EUR: what the overrun cost beyond the normal rate

    @property
    def end(self) -> datetime:
        """The end of the quarter (UTC)."""
        return self.start + QUARTER

    @property
    def power(self) -> float:
        """Average power over the quarter, kW."""
        return self.energy * (HOUR / QUARTER)

    def as_dict(self) -> dict[str, Any]:
        """The JSON view, also the data of the overrun event."""
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "energy": self.energy,
            "overrun": self.overrun,
            "power": self.power,
            "reference": self.reference,
            "complete": self.complete,
            "cost": self.cost,
            "extra_cost": self.extra_cost,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Quarter:
        """The inverse of ``as_dict``."""
        return cls(
            start=datetime.fromisoformat(data["start"]),
            energy=float(data["energy"]),
            overrun=float(data["overrun"]),
            reference=float(data["reference"]),
            complete=bool(data["complete"]),
            cost=float(data["cost"]),
            extra_cost=float(data["extra_cost"]),
        )


@dataclass(frozen=True, slots=True)
class Gap:
    """A stretch without telegrams across a quarter boundary."""

    start: datetime  # UTC, the last telegram before
    end: datetime  # UTC, the first telegram after
    energy: float  # kWh imported meanwhile, attributed to no quarter
    missed: int  # quarters that fell entirely inside it

    def as_dict(self) -> dict[str, Any]:
        """The JSON view."""
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "energy": self.energy,
            "missed": self.missed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Gap:
        """The inverse of ``as_dict``."""
        return cls(
            start=datetime.fromisoformat(data["start"]),
            end=datetime.fromisoformat(data["end"]),
            energy=float(data["energy"]),
            missed=int(data["missed"]),
        )


@dataclass(slots=True)
class Totals:
    """The completed quarters of a local day ("2026-03-29") or month ("2026-03")."""

    period: str
    energy: float = 0.0
    overrun: float = 0.0
    cost: float = 0.0
    extra_cost: float = 0.0
    quarters: int = 0
    incomplete: int = 0
    overrun_quarters: int = 0
    max_power: float | None = None  # kW, highest quarter average
    gaps: int = 0

    def start(self, zone: tzinfo = LUXEMBOURG) -> datetime | None:
        """The local midnight the period began at; None before the first telegram."""
        if not self.period:
            return None
        year, month, *day = (int(part) for part in self.period.split("-"))
        return datetime(year, month, day[0] if day else 1, tzinfo=zone)

    def add(self, quarter: Quarter) -> None:
        """Count a completed quarter."""
        self.energy += quarter.energy
        self.overrun += quarter.overrun
        self.cost += quarter.cost
        self.extra_cost += quarter.extra_cost
        self.quarters += 1
        self.incomplete += not quarter.complete
        self.overrun_quarters += quarter.overrun > 0
        if self.max_power is None or quarter.power > self.max_power:
            self.max_power = quarter.power


class QuarterHourTracker:
    """Follows the import register telegram by telegram; see the module's semantics."""

    def __init__(
        self,
        reference: float,
        *,
        plan: RatePlan | None = None,
        zone: tzinfo = LUXEMBOURG,
        max_gap: timedelta = MAX_GAP,
    ) -> None:
        self.reference = reference
        self.plan = RatePlan() if plan is None else plan
        self.zone = zone
        self.max_gap = max_gap
        self.day = Totals("")
        self.month = Totals("")
        self.last_quarter: Quarter | None = None
        self.last_gap: Gap | None = None
        self.expected = False
        self.ignored = 0  # telegrams older than the last one, or with a lower register
        self._last: tuple[datetime, float] | None = None
        self._start: datetime | None = None  # UTC start of the current quarter
        self._start_energy = 0.0  # the register at the start (or at the first telegram in it)
        self._covered_from: datetime | None = None  # the start, or the first telegram after a gap
        self._power: float | None = None
        self._recent: deque[tuple[datetime, float]] = deque()
        self._over_since: datetime | None = None

    @property
    def limit(self) -> float:
        """kWh a quarter may take without overrun."""
        return self.reference * (QUARTER / HOUR)

    def feed(
        self, moment: datetime, energy: Decimal | float, power: Decimal | float | None = None
    ) -> list[Quarter]:
        """Take a telegram: its time (aware), import register (kWh), import power (kW, optional).

        Returns the quarters it completed, oldest first.
        """
        now = moment.astimezone(UTC)
        reading = float(energy)
        last = self._last
        if last is not None and (now <= last[0] or reading < last[1]):
            self.ignored += 1
            return []
        completed: list[Quarter] = []
        if last is None or self._start is None:
            self._open(now, reading)
        elif now >= self._start + QUARTER:
            then, before = last
            if now - then > self.max_gap:
                completed.append(self._close(before, reached_end=False))
                self._note_gap(then, now, reading - before)
                self._open(now, reading)
            else:
                boundary = self._start + QUARTER
                while boundary <= now:
                    at_boundary = before + (reading - before) * ((boundary - then) / (now - then))
                    completed.append(self._close(at_boundary, reached_end=True))
                    self._open(boundary, at_boundary)
                    boundary += QUARTER
        self._last = (now, reading)
        self._power = None if power is None else float(power)
        recent = self._recent
        if recent and now - recent[-1][0] > self.max_gap:
            recent.clear()
        recent.append((now, reading))
        while now - recent[0][0] > POWER_WINDOW:
            recent.popleft()
        self._update_expected(now)
        return completed

    def _open(self, moment: datetime, reading: float) -> None:
        """Start the quarter holding ``moment``, measured from there."""
        self._start = quarter_start(moment)
        self._start_energy = reading
        self._covered_from = moment
        self._totals(self._start)

    def _close(self, reading: float, *, reached_end: bool) -> Quarter:
        """End the current quarter with the register at its end, or at its last telegram."""
        assert self._start is not None
        start = self._start
        energy = max(0.0, reading - self._start_energy)
        overrun = max(0.0, energy - self.limit)
        rates = self.plan.rates(start.astimezone(self.zone).year)
        quarter = Quarter(
            start=start,
            energy=energy,
            overrun=overrun,
            reference=self.reference,
            complete=reached_end and self._covered_from == start,
            cost=overrun * rates.overrun,
            extra_cost=overrun * (rates.overrun - rates.normal),
        )
        for totals in self._totals(start):
            totals.add(quarter)
        self.last_quarter = quarter
        return quarter

    def _note_gap(self, start: datetime, end: datetime, energy: float) -> None:
        missed = (quarter_start(end) - quarter_start(start)) // QUARTER - 1
        self.last_gap = Gap(start=start, end=end, energy=energy, missed=missed)
        for totals in self._totals(quarter_start(end)):
            totals.gaps += 1

    def _totals(self, start: datetime) -> tuple[Totals, Totals]:
        """The day and month totals for a quarter, starting new ones when it opens a period."""
        local = start.astimezone(self.zone)
        day, month = local.date().isoformat(), local.strftime("%Y-%m")
        if self.day.period != day:
            self.day = Totals(day)
        if self.month.period != month:
            self.month = Totals(month)
        return self.day, self.month

    def _update_expected(self, now: datetime) -> None:
        projected = self.projected_energy
        if projected is None:
            return
        if projected > self.limit:
            if self._over_since is None:
                self._over_since = now
            if now - self._over_since >= CONFIRM or self.quarter_energy > self.limit:
                self.expected = True
        else:
            self._over_since = None
            if projected <= self.limit * (1 - HYSTERESIS):
                self.expected = False

    # The current quarter, as of the last telegram.

    @property
    def quarter_start(self) -> datetime | None:
        """UTC start of the current quarter; None before the first telegram."""
        return self._start

    @property
    def quarter_complete(self) -> bool:
        """Whether the current quarter is measured from its start (no gap in it)."""
        return self._start is not None and self._covered_from == self._start

    @property
    def quarter_energy(self) -> float:
        """kWh imported in the current quarter so far (since the gap, if it is incomplete)."""
        return 0.0 if self._last is None else self._last[1] - self._start_energy

    @property
    def average_power(self) -> float | None:
        """kW averaged over the measured part of the current quarter."""
        if self._last is None or self._covered_from is None:
            return None
        covered = self._last[0] - self._covered_from
        if not covered:
            return None
        return self.quarter_energy * (HOUR / covered)

    @property
    def current_power(self) -> float | None:
        """kW now: the meter's instantaneous import power, else the register's recent slope."""
        if self._power is not None:
            return self._power
        recent = self._recent
        if len(recent) < 2:
            return None
        (first, start), (last, end) = recent[0], recent[-1]
        return (end - start) * (HOUR / (last - first))

    @property
    def remaining(self) -> timedelta | None:
        """Time left in the current quarter after the last telegram."""
        if self._last is None or self._start is None:
            return None
        return self._start + QUARTER - self._last[0]

    @property
    def projected_energy(self) -> float | None:
        """kWh the quarter will take if the current power holds until its end."""
        power, remaining = self.current_power, self.remaining
        if power is None or remaining is None:
            return None
        return self.quarter_energy + power * (remaining / HOUR)

    @property
    def headroom(self) -> float | None:
        """kW that may still be drawn on average until the quarter ends without overrun."""
        remaining = self.remaining
        if remaining is None:
            return None
        return max(0.0, self.limit - self.quarter_energy) * (HOUR / remaining)

    # Persistence.

    def as_dict(self) -> dict[str, Any]:
        """The state that must survive a restart, JSON-able."""
        last, start, covered = self._last, self._start, self._covered_from
        return {
            "version": STATE_VERSION,
            "last": None if last is None else [last[0].isoformat(), last[1]],
            "start": None if start is None else start.isoformat(),
            "start_energy": self._start_energy,
            "covered_from": None if covered is None else covered.isoformat(),
            "day": asdict(self.day),
            "month": asdict(self.month),
            "last_quarter": None if self.last_quarter is None else self.last_quarter.as_dict(),
            "last_gap": None if self.last_gap is None else self.last_gap.as_dict(),
            "expected": self.expected,
        }

    def restore(self, data: Mapping[str, Any]) -> bool:
        """Take back a state of ``as_dict``; False (and nothing changed) if it is unusable."""
        try:
            if data["version"] != STATE_VERSION:
                return False
            last = data["last"]
            restored = (
                None if last is None else (datetime.fromisoformat(last[0]), float(last[1])),
                _time(data["start"]),
                float(data["start_energy"]),
                _time(data["covered_from"]),
                Totals(**data["day"]),
                Totals(**data["month"]),
                None if data["last_quarter"] is None else Quarter.from_dict(data["last_quarter"]),
                None if data["last_gap"] is None else Gap.from_dict(data["last_gap"]),
                bool(data["expected"]),
            )
        except KeyError, TypeError, ValueError, IndexError:
            return False
        (
            self._last,
            self._start,
            self._start_energy,
            self._covered_from,
            self.day,
            self.month,
            self.last_quarter,
            self.last_gap,
            self.expected,
        ) = restored
        return True


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
