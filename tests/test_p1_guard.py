"""The telegram guard: another meter, replays, and cumulative registers that cannot be right."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from custom_components.smarty_p1.p1 import Telegram, parse_telegram
from custom_components.smarty_p1.p1.guard import TelegramGuard
from custom_components.smarty_p1.p1.simulator import MeterSimulator, meter_time

from .conftest import with_values
from .p1_helpers import auto_enable_custom_integrations  # noqa: F401 (no Home Assistant)

START = datetime(2026, 6, 21, 7, 0, tzinfo=UTC)


class Meter:
    """Telegrams of a simulated plaintext meter, with registers and meter time set by the test."""

    def __init__(self, **kwargs: Any) -> None:
        self.sim = MeterSimulator(None, start=START, **kwargs)
        self.sim.next_frame()
        self.base = self.sim.last_telegram
        self.now = START
        self.counter = 0

    def telegram(self, seconds: float = 10, /, **values: str) -> Telegram:
        """The next telegram, ``seconds`` of meter time after the last one."""
        self.now += timedelta(seconds=seconds)
        self.counter += 1
        text = with_values(self.base, **{"0-0:1.0.0": meter_time(self.now), **values})
        return parse_telegram(text, frame_counter=self.counter)

    def energy(self, kwh: str, seconds: float = 10, /, **values: str) -> Telegram:
        return self.telegram(seconds, **{"1-0:1.8.0": f"{kwh}*kWh", **values})


def shown(guard: TelegramGuard, telegram: Telegram, code: str = "1-0:1.8.0") -> Decimal | None:
    judged = guard.judge(telegram, datetime.now(UTC))
    if judged is None:
        return None
    value = judged.objects[code].value
    assert isinstance(value, Decimal)
    return value


def test_a_50000_kwh_jump_is_held_and_nothing_freezes() -> None:
    """The spike is never shown; the true readings after it are, as they come."""
    meter, guard = Meter(), TelegramGuard()
    assert shown(guard, meter.energy("001000.000")) == Decimal("1000.000")
    assert shown(guard, meter.energy("051000.000")) == Decimal("1000.000")
    assert guard.stats.implausible == 1
    for kwh in ("001000.010", "001000.020", "001000.030"):
        assert shown(guard, meter.energy(kwh)) == Decimal(kwh)
    assert guard.stats.confirmed_jumps == 0


def test_a_rise_within_the_power_limit_is_accepted() -> None:
    """27.6 kVA (the simulator's limit) for 10 s is 0.0767 kWh; x1.5 and one step is the bound."""
    meter, guard = Meter(), TelegramGuard()
    shown(guard, meter.energy("001000.000"))
    # 0.110 kWh in 10 s = 39.6 kW: within 1.5 x 27.6 kVA (41.4 kW), with the clock's 1 s.
    assert shown(guard, meter.energy("001000.110")) == Decimal("1000.110")
    # 0.200 kWh in 10 s = 72 kW: more than the meter can count.
    assert shown(guard, meter.energy("001000.310")) == Decimal("1000.110")


@pytest.mark.parametrize(
    ("limits", "seconds", "rise", "accepted"),
    [
        # No power limit (0-0:17.0.0 empty): the current limit, 40 A on three phases, 30 kW.
        ({"0-0:17.0.0": ""}, 60, "000.700", True),
        ({"0-0:17.0.0": ""}, 60, "000.800", False),
        # Neither: the most a T210-D can carry, 100 kW (x1.5).
        ({"0-0:17.0.0": "", "1-1:31.4.0": ""}, 60, "002.400", True),
        ({"0-0:17.0.0": "", "1-1:31.4.0": ""}, 60, "002.600", False),
    ],
)
def test_the_bound_follows_the_limits_the_meter_sends(
    limits: dict[str, str], seconds: int, rise: str, accepted: bool
) -> None:
    meter, guard = Meter(), TelegramGuard()
    shown(guard, meter.energy("001000.000", **limits))
    reading = Decimal(1000) + Decimal(rise)
    expected = reading if accepted else Decimal("1000.000")
    assert shown(guard, meter.energy(f"{reading:010.3f}", seconds, **limits)) == expected


def test_a_real_jump_is_accepted_once_readings_confirm_it() -> None:
    """Readings that go on from the new level, as a meter does, make it the accepted one."""
    meter, guard = Meter(), TelegramGuard()
    shown(guard, meter.energy("001000.000"))
    assert shown(guard, meter.energy("002000.000")) == Decimal("1000.000")
    assert shown(guard, meter.energy("002000.010")) == Decimal("1000.000")
    assert shown(guard, meter.energy("002000.020")) == Decimal("1000.000")
    assert shown(guard, meter.energy("002000.030")) == Decimal("2000.030")
    assert guard.stats.confirmed_jumps == 1


def test_a_lower_reading_is_held_and_counted() -> None:
    meter, guard = Meter(), TelegramGuard()
    shown(guard, meter.energy("001000.000"))
    assert shown(guard, meter.energy("000999.999")) == Decimal("1000.000")
    assert shown(guard, meter.energy("000000.000")) == Decimal("1000.000")
    assert shown(guard, meter.energy("001000.001")) == Decimal("1000.001")
    assert guard.stats.lower == 2


def test_a_stored_mark_above_the_meter_is_re_anchored() -> None:
    """An earlier run stored 50 000 kWh; the meter says 1 000 and goes on from there: after 15
    minutes and 30 telegrams the meter is followed again, and the owner told."""
    meter, told = Meter(), []
    guard = TelegramGuard(on_re_anchor=lambda *change: told.append(change))
    guard.restore({"registers": {"1-0:1.8.0": {"value": "50000.000", "unit": "kWh", "time": None}}})
    kwh = Decimal(1000)
    for _ in range(29):
        assert shown(guard, meter.energy(f"{kwh:010.3f}", 40)) == Decimal("50000.000")
        kwh += Decimal("0.01")
    assert not told
    assert shown(guard, meter.energy(f"{kwh:010.3f}", 40)) == kwh
    assert told == [("1-0:1.8.0", Decimal("50000.000"), kwh)]
    assert guard.stats.re_anchored == 1
    # From then on the meter's readings are accepted as usual.
    assert shown(guard, meter.energy(f"{kwh + 1:010.3f}", 300)) == kwh + 1


def test_one_glitch_below_does_not_re_anchor() -> None:
    """Lower readings that are not consistent among themselves start the count again."""
    meter, guard = Meter(), TelegramGuard(re_anchor_readings=3, re_anchor_after=timedelta())
    shown(guard, meter.energy("001000.000"))
    shown(guard, meter.energy("000500.000"))
    shown(guard, meter.energy("000100.000"))
    shown(guard, meter.energy("000600.000"))
    assert shown(guard, meter.energy("001000.000")) == Decimal("1000.000")
    assert guard.stats.re_anchored == 0


def test_another_meter_and_replays_are_refused() -> None:
    meter, guard = Meter(), TelegramGuard("SAG1030700012345")
    first = meter.energy("001000.000")
    assert guard.judge(first, START) is not None
    assert guard.judge(first, START) is None
    assert guard.refused == "stale"
    other = Meter(serial="SAG1030799999999").energy("000001.000")
    assert guard.judge(other, START) is None
    assert guard.refused == "foreign"
    assert (guard.stats.stale, guard.stats.foreign) == (1, 1)
    guard.reset("SAG1030799999999")
    assert guard.judge(other, START) is not None


def test_mbus_readings_by_their_capture_time() -> None:
    """Gas may rise by 40 m3 an hour of capture time; a new gas meter starts from its own."""
    meter, guard = Meter(mbus=("gas",)), TelegramGuard()
    code = "0-1:24.2.1"

    def gas(capture: datetime, m3: str, ident: str | None = None) -> Telegram:
        values = {code: f"{meter_time(capture)})({m3}*m3"}
        if ident is not None:
            values["0-1:96.1.0"] = ident.encode().hex().upper()
        return meter.telegram(**values)

    assert shown(guard, gas(START, "01000.000"), code) == Decimal("1000.000")
    five = START + timedelta(minutes=5)
    assert shown(guard, gas(five, "01003.000"), code) == Decimal("1003.000")
    assert shown(guard, gas(five + timedelta(minutes=5), "01500.000"), code) == Decimal("1003.000")
    assert shown(guard, gas(START, "00010.000", "FLO999999999999"), code) == Decimal("10.000")


def test_unknown_units_and_times_bound_nothing_but_backwards() -> None:
    """A register stored without its time: any rise is plausible, a fall is not."""
    meter, guard = Meter(), TelegramGuard()
    guard.restore({"registers": {"1-0:1.8.0": {"value": "1000.000", "unit": "kWh", "time": None}}})
    assert shown(guard, meter.energy("009000.000")) == Decimal("9000.000")
    assert shown(guard, meter.energy("008000.000")) == Decimal("9000.000")


def test_what_is_stored_comes_back() -> None:
    meter, guard = Meter(), TelegramGuard()
    shown(guard, meter.energy("001000.000"))
    was_dirty = guard.dirty
    stored = guard.as_dict()
    assert (was_dirty, guard.dirty) == (True, False)
    assert stored["registers"]["1-0:1.8.0"]["value"] == "1000.000"
    again = TelegramGuard()
    again.restore(stored)
    assert shown(again, meter.energy("000999.000")) == Decimal("1000.000")
    # Measured from the stored meter time: a minute later, 0.2 kWh is plausible, 2 kWh not.
    assert shown(again, meter.energy("001000.200", 60)) == Decimal("1000.200")
    assert shown(again, meter.energy("001002.200", 10)) == Decimal("1000.200")
