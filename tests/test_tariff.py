"""The reference-power tariff engine, on hand-computed scenarios with explicit times."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

import pytest

from custom_components.smarty_p1.tariff import (
    CONFIRM,
    LUXEMBOURG,
    PUBLISHED_RATES,
    REFERENCE_POWERS,
    AppliedRates,
    Quarter,
    QuarterHourTracker,
    RatePlan,
    Rates,
    RatesSource,
    quarter_start,
    quarters_in_day,
)
from tests.p1_helpers import auto_enable_custom_integrations  # noqa: F401  (no hass needed)

STEP = timedelta(seconds=10)


def expected(tracker: QuarterHourTracker) -> bool:
    """The flag, read through a call so that type narrowing does not outlive a feed."""
    return tracker.expected


def lux(text: str) -> datetime:
    """A local Luxembourg time, e.g. "2026-03-10 12:00:00"."""
    return datetime.fromisoformat(text).replace(tzinfo=LUXEMBOURG)


class Meter:
    """A meter whose import register counts whole Wh, sending every 10 s."""

    def __init__(self, tracker: QuarterHourTracker, at: datetime, energy: float = 1000.0) -> None:
        self.tracker = tracker
        # Steps in UTC: local wall-clock arithmetic would skip or repeat the DST hour.
        self.at = at.astimezone(UTC)
        self.energy = energy
        self.completed: list[Quarter] = []

    def run(self, until: datetime, power: float, *, instantaneous: bool = True) -> None:
        """Telegrams from now (inclusive) to ``until`` (exclusive) at a steady power (kW)."""
        while self.at < until:
            self.send(power if instantaneous else None)
            self.at += STEP
            self.energy += power * STEP.total_seconds() / 3600

    def send(self, power: float | None) -> None:
        reading = Decimal(f"{self.energy:.3f}")
        kw = None if power is None else Decimal(f"{power:.3f}")
        self.completed.extend(self.tracker.feed(self.at, reading, kw))

    def skip(self, until: datetime, power: float) -> None:
        """No telegram until ``until`` (HA or the meter offline); the load goes on."""
        self.energy += power * (until - self.at).total_seconds() / 3600
        self.at = until


def test_reference_powers_and_helpers() -> None:
    assert REFERENCE_POWERS == (3, 7, 12, 17, 27, 43, 70, 100, 150, 200)
    assert quarter_start(lux("2026-03-10 12:14:59")) == datetime(2026, 3, 10, 11, 0, tzinfo=UTC)
    assert quarters_in_day(date(2026, 3, 10)) == 96
    assert quarters_in_day(date(2026, 3, 29)) == 92
    assert quarters_in_day(date(2026, 10, 25)) == 100


def test_published_rates_and_the_users() -> None:
    """A year is priced at its own published rates, else the last listed year's, else the user's."""
    published = RatePlan()
    assert published.rates(2025) == Rates(0.0759, 0.1139)
    assert published.rates(2026) == Rates(0.0510, 0.0765)
    # The overrun is the normal rate plus 50 % in every listed year.
    for rates in PUBLISHED_RATES.values():
        assert rates.overrun == pytest.approx(rates.normal * 1.5, abs=1e-4)
    # Later years keep the last listed rates until the table says otherwise; earlier ones the first.
    assert published.applied(2027) == AppliedRates(
        Rates(0.0510, 0.0765), RatesSource.PUBLISHED, published_year=2026
    )
    assert published.applied(2020) == AppliedRates(
        Rates(0.0759, 0.1139), RatesSource.PUBLISHED, published_year=2025
    )
    # A year that is not listed falls back on an earlier one: the user is asked for its rates.
    assert [published.fallback_year(year) for year in (2020, 2025, 2026, 2027, 2031)] == [
        None,
        None,
        None,
        2026,
        2026,
    ]
    overrun_only = RatePlan(overrun=0.2)
    assert overrun_only.applied(2025) == AppliedRates(
        Rates(0.0759, 0.2), RatesSource.PUBLISHED_AND_OPTIONS, published_year=2025
    )
    assert overrun_only.rates(2026) == Rates(0.0510, 0.2)
    assert overrun_only.fallback_year(2027) == 2026  # the normal rate of 2027 is still unknown
    own = RatePlan(normal=0.06, overrun=0.09)
    assert own.applied(2027) == AppliedRates(Rates(0.06, 0.09), RatesSource.OPTIONS, None)
    assert own.rates(2025) == Rates(0.06, 0.09)
    assert own.fallback_year(2027) is None


def test_nothing_known_before_the_first_telegram() -> None:
    tracker = QuarterHourTracker(3)
    assert tracker.limit == 0.75
    assert tracker.quarter_start is None
    assert not tracker.quarter_complete
    assert tracker.quarter_energy == 0.0
    assert tracker.average_power is None
    assert tracker.current_power is None
    assert tracker.remaining is None
    assert tracker.projected_energy is None
    assert tracker.headroom is None
    assert not expected(tracker)
    assert tracker.day.start() is None


def test_steady_load_under_the_reference() -> None:
    tracker = QuarterHourTracker(3)
    meter = Meter(tracker, lux("2026-03-10 11:59:30"))
    meter.run(lux("2026-03-10 12:15:10"), 2.4)
    # The first quarter began before the first telegram: incomplete. 12:00-12:15 is whole.
    first, second = meter.completed
    assert not first.complete
    assert second.complete
    assert second.start == datetime(2026, 3, 10, 11, 0, tzinfo=UTC)
    assert second.end == datetime(2026, 3, 10, 11, 15, tzinfo=UTC)
    assert second.energy == pytest.approx(0.6, abs=1e-3)  # 2.4 kW x 0.25 h
    assert second.power == pytest.approx(2.4, abs=4e-3)
    assert second.overrun == 0
    assert second.cost == 0
    assert tracker.month.overrun == 0
    assert tracker.month.overrun_quarters == 0
    assert tracker.month.max_power == pytest.approx(2.4, abs=4e-3)
    assert not expected(tracker)


def test_steady_load_over_the_reference() -> None:
    tracker = QuarterHourTracker(3)
    meter = Meter(tracker, lux("2026-03-10 11:59:50"))
    meter.run(lux("2026-03-10 12:30:10"), 4.8)
    _, first, second = meter.completed
    for quarter in (first, second):
        assert quarter.complete
        assert quarter.energy == pytest.approx(1.2, abs=1e-3)  # 4.8 kW x 0.25 h
        assert quarter.overrun == pytest.approx(0.45, abs=1e-3)  # 1.2 - 3 kW x 0.25 h
        assert quarter.cost == pytest.approx(0.45 * 0.0765, abs=1e-4)  # 2026 rates
        assert quarter.extra_cost == pytest.approx(0.45 * 0.0255, abs=1e-4)
    assert tracker.day.period == "2026-03-10"
    assert tracker.month.period == "2026-03"
    assert tracker.day.start() == lux("2026-03-10 00:00:00")
    assert tracker.month.start() == lux("2026-03-01 00:00:00")
    assert tracker.month.overrun_quarters == 2
    assert tracker.month.overrun == pytest.approx(0.45 * 2 + meter.completed[0].overrun)
    assert tracker.day.overrun == tracker.month.overrun
    assert tracker.month.cost == pytest.approx(tracker.month.overrun * 0.0765)
    assert tracker.month.max_power == pytest.approx(4.8, abs=4e-3)
    assert tracker.last_quarter == second
    assert expected(tracker)


def test_five_minute_burst_overruns_by_its_energy_not_its_power() -> None:
    """11 kW for 5 minutes at 3 kW: 0.917 kWh in the quarter, 0.167 kWh over 0.75 (not 0.667)."""
    tracker = QuarterHourTracker(3)
    meter = Meter(tracker, lux("2025-06-02 08:59:40"))
    meter.run(lux("2025-06-02 09:00:00"), 0.0)
    meter.run(lux("2025-06-02 09:05:00"), 11.0)
    meter.run(lux("2025-06-02 09:15:10"), 0.0)
    burst = meter.completed[-1]
    assert burst.complete
    assert burst.energy == pytest.approx(11 * 5 / 60, abs=1e-3)
    assert burst.overrun == pytest.approx(0.1667, abs=1e-3)
    assert burst.cost == pytest.approx(0.1667 * 0.1139, abs=1e-4)  # 2025 rates
    assert tracker.month.overrun == pytest.approx(0.1667, abs=1e-3)
    # After the burst the quarter still overran: the flag stays on until it ends.
    assert not expected(tracker)  # the new quarter, at 0 kW


def test_boundary_between_two_telegrams_is_interpolated() -> None:
    tracker = QuarterHourTracker(7)
    start = lux("2026-05-04 20:00:00")
    assert tracker.feed(start, Decimal("500.000")) == []
    assert tracker.quarter_complete
    assert tracker.average_power is None  # no time covered yet
    at = start
    reading = Decimal("500.000")
    while at < lux("2026-05-04 20:14:52"):
        at += timedelta(seconds=4)
        reading += Decimal("0.002")
        assert tracker.feed(at, reading) == []
    assert reading == Decimal("500.446")  # 223 telegrams of 2 Wh
    # The next telegram comes 10 s later, 8 s of them before the boundary: 8 of its 10 Wh.
    (quarter,) = tracker.feed(lux("2026-05-04 20:15:02"), Decimal("500.456"))
    assert quarter.complete
    assert quarter.energy == pytest.approx(0.454)
    assert tracker.quarter_start == datetime(2026, 5, 4, 18, 15, tzinfo=UTC)
    assert tracker.quarter_energy == pytest.approx(0.002)
    assert tracker.quarter_complete


def test_boundaries_crossed_by_one_interval_are_all_interpolated() -> None:
    """Two lost telegrams around a boundary stay under the gap threshold."""
    tracker = QuarterHourTracker(3)
    tracker.feed(lux("2026-05-04 20:14:40"), Decimal("10.000"))
    (quarter,) = tracker.feed(lux("2026-05-04 20:15:10"), Decimal("10.030"))
    assert not quarter.complete  # began before the first telegram
    assert quarter.energy == pytest.approx(0.020)
    assert tracker.quarter_energy == pytest.approx(0.010)
    assert tracker.last_gap is None


def test_current_quarter_figures() -> None:
    """At 12:05 with 0.2 kWh taken at 3 kW: 2.4 kW so far, 3.3 kW left for 10 minutes."""
    tracker = QuarterHourTracker(3)
    meter = Meter(tracker, lux("2026-03-10 12:00:00"))
    meter.run(lux("2026-03-10 12:05:10"), 2.4)
    assert tracker.quarter_energy == pytest.approx(0.2, abs=1e-3)
    assert tracker.average_power == pytest.approx(2.4, abs=0.02)
    assert tracker.current_power == 2.4
    assert tracker.remaining == timedelta(minutes=10)
    assert tracker.projected_energy == pytest.approx(0.6, abs=1e-3)  # 0.2 + 2.4 x 1/6 h
    assert tracker.headroom == pytest.approx(3.3, abs=0.01)  # (0.75 - 0.2) / (1/6 h)


def test_current_power_from_the_register_without_instantaneous_power() -> None:
    tracker = QuarterHourTracker(3)
    meter = Meter(tracker, lux("2026-03-10 12:00:00"))
    meter.run(lux("2026-03-10 12:00:10"), 3.6, instantaneous=False)
    assert tracker.current_power is None  # one telegram: no slope yet
    assert tracker.projected_energy is None
    meter.run(lux("2026-03-10 12:03:10"), 3.6, instantaneous=False)
    # 3.6 kW is 10 Wh every 10 s: the slope over the last minute is exact.
    assert tracker.current_power == pytest.approx(3.6)
    assert tracker.projected_energy == pytest.approx(0.9)
    assert expected(tracker)  # 0.9 > 0.75 for more than CONFIRM


def test_overrun_expected_turns_on_before_the_quarter_overruns() -> None:
    """2 kW for 5 min, then 5 kW: the projection is 1.0 kWh > 0.75 at 12:05:10, confirmed 20 s
    later; the energy only passes 0.75 kWh at 12:12:00."""
    tracker = QuarterHourTracker(3)
    meter = Meter(tracker, lux("2026-03-10 11:59:50"))
    assert timedelta(seconds=20) == CONFIRM
    meter.run(lux("2026-03-10 12:05:00"), 2.0)
    assert not expected(tracker)
    assert tracker.projected_energy == pytest.approx(0.5, abs=1e-3)
    meter.run(lux("2026-03-10 12:05:20"), 5.0)  # telegrams at 12:05:00 and 12:05:10
    assert tracker.projected_energy == pytest.approx(1.0, abs=2e-3)
    assert not expected(tracker)  # above the limit for 10 s only
    meter.run(lux("2026-03-10 12:05:30"), 5.0)
    assert expected(tracker)
    assert tracker.quarter_energy < tracker.limit / 2
    meter.run(lux("2026-03-10 12:12:00"), 5.0)
    assert tracker.quarter_energy < tracker.limit
    assert expected(tracker)
    meter.run(lux("2026-03-10 12:15:10"), 5.0)
    assert meter.completed[-1].overrun == pytest.approx(0.25 * 5 - 5 / 60 * 3 - 0.75, abs=2e-3)
    # At 0.5 kW the new quarter's projection is far below the limit: off at once.
    meter.run(lux("2026-03-10 12:15:30"), 0.5)
    assert not expected(tracker)


def test_overrun_expected_ignores_a_spike_and_has_hysteresis() -> None:
    tracker = QuarterHourTracker(3)
    steps = [
        # (time, register, power, projection in kWh, expected)
        ("12:00:00", "0.000", "3.2", 0.8, False),  # over the 0.75 kWh limit, not for long yet
        ("12:00:10", "0.009", "3.2", 0.009 + 3.2 * 890 / 3600, False),
        ("12:00:20", "0.018", "3.2", 0.018 + 3.2 * 880 / 3600, True),  # 20 s over: on
        ("12:00:30", "0.027", "2.9", 0.027 + 2.9 * 870 / 3600, True),  # 0.728: in the 5 % band
        ("12:00:40", "0.035", "2.8", 0.035 + 2.8 * 860 / 3600, False),  # 0.704 < 0.7125: off
        ("12:00:50", "0.043", "9.0", 0.043 + 9.0 * 850 / 3600, False),  # a kettle's spike
        ("12:01:00", "0.068", "1.0", 0.068 + 1.0 * 840 / 3600, False),
        ("12:01:10", "0.071", "3.1", 0.071 + 3.1 * 830 / 3600, False),  # the spike's 10 s do
        ("12:01:20", "0.080", "3.1", 0.080 + 3.1 * 820 / 3600, False),  # not count towards
        ("12:01:30", "0.089", "3.1", 0.089 + 3.1 * 810 / 3600, True),  # the 20 s
    ]
    for at, register, power, projection, flag in steps:
        tracker.feed(lux(f"2026-03-10 {at}"), Decimal(register), Decimal(power))
        assert tracker.projected_energy == pytest.approx(projection), at
        assert expected(tracker) is flag, at


def test_overrun_already_happened_turns_the_flag_on_at_once() -> None:
    tracker = QuarterHourTracker(3)
    tracker.feed(lux("2026-03-10 12:00:00"), Decimal("1.000"))
    tracker.feed(lux("2026-03-10 12:00:10"), Decimal("1.800"), Decimal("0"))
    assert expected(tracker)
    assert tracker.headroom == 0


def test_dst_spring_day_has_92_quarters() -> None:
    tracker = QuarterHourTracker(3)
    meter = Meter(tracker, lux("2026-03-28 23:59:50"))
    meter.run(lux("2026-03-29 00:00:10"), 1.0)
    day = tracker.day
    assert day.period == "2026-03-29"
    meter.run(lux("2026-03-30 00:00:10"), 4.0)
    assert tracker.day.period == "2026-03-30"
    assert day.quarters == 92
    assert day.incomplete == 0
    assert day.overrun == pytest.approx(92 * 0.25, abs=0.05)  # 1 kWh - 0.75 each
    starts = [q.start for q in meter.completed if q.start.astimezone(LUXEMBOURG).day == 29]
    assert len(starts) == len(set(starts)) == quarters_in_day(date(2026, 3, 29))
    # 02:00-03:00 local does not exist: 01:45 is followed by 03:00, 15 minutes later.
    local = [start.astimezone(LUXEMBOURG).strftime("%H:%M") for start in starts]
    assert local[7:9] == ["01:45", "03:00"]
    assert all(b - a == timedelta(minutes=15) for a, b in pairwise(starts))


def test_dst_autumn_day_has_100_quarters() -> None:
    tracker = QuarterHourTracker(3)
    meter = Meter(tracker, lux("2026-10-24 23:59:50"))
    meter.run(lux("2026-10-25 00:00:10"), 1.0)
    day = tracker.day
    meter.run(lux("2026-10-26 00:00:10"), 2.0)
    assert day.period == "2026-10-25"
    assert day.quarters == 100
    assert day.overrun == 0
    assert day.energy == pytest.approx(100 * 0.5, abs=0.05)
    local = [
        q.start.astimezone(LUXEMBOURG).strftime("%H:%M")
        for q in meter.completed
        if q.start.astimezone(LUXEMBOURG).day == 25
    ]
    # 02:00-03:00 local happens twice, as two sets of UTC quarters.
    assert local.count("02:15") == 2
    assert local.count("03:15") == 1


def test_data_gap_is_reported_not_spread() -> None:
    tracker = QuarterHourTracker(3)
    meter = Meter(tracker, lux("2026-03-10 11:59:50"))
    meter.run(lux("2026-03-10 12:07:00"), 7.0)  # last telegram at 12:06:50
    taken = 7.0 * (6 * 60 + 50) / 3600
    meter.skip(lux("2026-03-10 12:41:30"), 7.0)
    meter.run(lux("2026-03-10 12:45:10"), 7.0)
    first, cut, after = meter.completed
    assert not first.complete  # 11:45-12:00, from 11:59:50 only
    # 12:00-12:15: measured until 12:06:50 only, a lower bound, flagged.
    assert not cut.complete
    assert cut.start == datetime(2026, 3, 10, 11, 0, tzinfo=UTC)
    assert cut.energy == pytest.approx(taken, abs=1e-3)
    assert cut.overrun == pytest.approx(taken - 0.75, abs=1e-3)
    # 12:15-12:30 was not measured: no quarter for it. 12:30-12:45: from 12:41:30 on.
    assert after.start == datetime(2026, 3, 10, 11, 30, tzinfo=UTC)
    assert not after.complete
    assert after.energy == pytest.approx(7.0 * 210 / 3600, abs=1e-3)
    gap = tracker.last_gap
    assert gap is not None
    assert gap.start == lux("2026-03-10 12:06:50")
    assert gap.end == lux("2026-03-10 12:41:30")
    assert gap.missed == 1
    assert gap.energy == pytest.approx(7.0 * (34 * 60 + 40) / 3600, abs=1e-3)
    assert tracker.day.gaps == tracker.month.gaps == 1
    assert tracker.month.incomplete == 3
    assert tracker.month.quarters == 3
    assert tracker.month.energy == pytest.approx(sum(q.energy for q in meter.completed))


def test_gap_inside_a_quarter_loses_nothing() -> None:
    """Both ends of the gap are in the same quarter: the register difference is exact."""
    tracker = QuarterHourTracker(3)
    meter = Meter(tracker, lux("2026-03-10 11:59:50"))
    meter.run(lux("2026-03-10 12:05:00"), 2.0)
    meter.skip(lux("2026-03-10 12:09:00"), 2.0)
    assert tracker.current_power == 2.0
    meter.run(lux("2026-03-10 12:15:10"), 2.0, instantaneous=False)
    quarter = meter.completed[-1]
    assert quarter.complete
    assert quarter.energy == pytest.approx(0.5, abs=1e-3)
    assert tracker.last_gap is None


def test_month_and_year_rollover() -> None:
    tracker = QuarterHourTracker(3)
    meter = Meter(tracker, lux("2025-12-31 23:29:50"))
    meter.run(lux("2025-12-31 23:59:50"), 4.0)
    december = tracker.month
    meter.run(lux("2026-01-01 00:00:10"), 4.0)
    assert december.period == "2025-12"
    # 23:30 and 23:45: 1 kWh each, 0.25 over, at the 2025 rate; 23:15 began before the data.
    assert december.overrun == pytest.approx(2 * 0.25 + meter.completed[0].overrun, abs=1e-3)
    assert december.cost == pytest.approx(december.overrun * 0.1139, abs=1e-4)
    january = tracker.month
    assert january.period == "2026-01"
    assert january.overrun == 0
    assert tracker.day.period == "2026-01-01"
    assert tracker.day.overrun == 0
    meter.run(lux("2026-01-01 00:15:10"), 4.0)
    assert january.overrun == pytest.approx(0.25, abs=1e-3)
    assert january.cost == pytest.approx(0.25 * 0.0765, abs=1e-4)  # the 2026 rate


def test_restart_mid_month_keeps_the_totals() -> None:
    tracker = QuarterHourTracker(3, plan=RatePlan(overrun=0.2))
    meter = Meter(tracker, lux("2026-03-10 11:59:50"))
    meter.run(lux("2026-03-10 12:14:10"), 4.0)  # the last telegram at 12:14:00
    state = json.loads(json.dumps(tracker.as_dict()))
    month_before = tracker.month.overrun

    restarted = QuarterHourTracker(3, plan=RatePlan(overrun=0.2))
    assert restarted.restore(state)
    assert restarted.month == tracker.month
    assert restarted.day == tracker.day
    assert restarted.last_quarter == tracker.last_quarter
    assert restarted.quarter_start == tracker.quarter_start
    assert expected(restarted)
    # Home Assistant was down for 3 minutes across 12:15: both quarters become incomplete.
    meter.tracker = restarted
    meter.skip(lux("2026-03-10 12:17:10"), 4.0)
    meter.run(lux("2026-03-10 12:45:10"), 4.0)
    before, after, whole = meter.completed[-3:]
    assert (before.complete, after.complete, whole.complete) == (False, False, True)
    assert before.energy == pytest.approx(4.0 * 14 / 60, abs=1e-3)  # 12:00:00-12:14:00
    assert after.energy == pytest.approx(4.0 * (12 * 60 + 50) / 3600, abs=1e-3)  # from 12:17:10
    assert whole.cost == pytest.approx(0.25 * 0.2, abs=1e-3)
    overruns = before.energy - 0.75 + after.energy - 0.75 + 0.25
    assert restarted.month.overrun == pytest.approx(month_before + overruns, abs=1e-3)
    assert restarted.month.gaps == 1
    gap = restarted.last_gap
    assert gap is not None
    assert gap.missed == 0
    assert gap.energy == pytest.approx(4.0 * 190 / 3600, abs=1e-3)
    # The gap survives a restart too.
    again = QuarterHourTracker(3)
    assert again.restore(restarted.as_dict())
    assert again.last_gap == gap


def test_restore_of_a_fresh_tracker_and_bad_states() -> None:
    fresh = QuarterHourTracker(3)
    copy = QuarterHourTracker(3)
    assert copy.restore(fresh.as_dict())
    assert copy.quarter_start is None
    assert copy.last_quarter is None
    tracker = QuarterHourTracker(3)
    tracker.feed(lux("2026-03-10 12:00:00"), Decimal("1.000"))
    good = tracker.as_dict()
    for bad in (
        {},
        {**good, "version": 99},
        {**good, "last": ["not a time", 1.0]},
        {**good, "day": {"period": "2026-03-10", "unknown": 1}},
        {**good, "last": [good["last"][0]]},
    ):
        target = QuarterHourTracker(3)
        assert not target.restore(bad)
        assert target.quarter_start is None


def test_older_or_lower_telegrams_are_ignored() -> None:
    tracker = QuarterHourTracker(3)
    tracker.feed(lux("2026-03-10 12:00:00"), Decimal("5.000"))
    assert tracker.feed(lux("2026-03-10 12:00:00"), Decimal("5.001")) == []
    assert tracker.feed(lux("2026-03-10 11:59:50"), Decimal("5.001")) == []
    assert tracker.feed(lux("2026-03-10 12:00:10"), Decimal("4.999")) == []
    assert tracker.ignored == 3
    assert tracker.quarter_energy == 0
    tracker.feed(lux("2026-03-10 12:00:10"), Decimal("5.010"))
    assert tracker.quarter_energy == pytest.approx(0.010)


def test_quarter_record_round_trip() -> None:
    quarter = Quarter(
        start=datetime(2026, 3, 10, 11, 0, tzinfo=UTC),
        energy=1.0,
        overrun=0.25,
        reference=3.0,
        complete=True,
        cost=0.019125,
        extra_cost=0.006375,
    )
    data = quarter.as_dict()
    assert data["end"] == "2026-03-10T11:15:00+00:00"
    assert data["power"] == 4.0
    assert Quarter.from_dict(json.loads(json.dumps(data))) == quarter
