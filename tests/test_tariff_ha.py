"""The reference-power tariff in Home Assistant: real coordinator, telegrams on a pty, frozen time.

Every scenario is hand-computed: the meter's clock (0-0:1.0.0) and import register (1-0:1.8.0)
are set per telegram; telegrams come every 30 s (under the 35 s gap threshold) to keep it fast.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import (
    ATTR_DEVICE_CLASS,
    ATTR_UNIT_OF_MEASUREMENT,
    CONF_DEVICE,
    STATE_OFF,
    STATE_ON,
    STATE_UNKNOWN,
)
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry  # type: ignore[import-untyped]

from custom_components.smarty_p1.const import (
    CONF_CONNECTION_TYPE,
    CONF_MIN_INTERVAL,
    CONF_RATE_NORMAL,
    CONF_RATE_OVERRUN,
    CONF_REFERENCE_POWER,
    CONNECTION_SERIAL,
    DOMAIN,
)
from custom_components.smarty_p1.coordinator import SmartyCoordinator
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter, meter_time
from custom_components.smarty_p1.tariff import LUXEMBOURG

from .conftest import KEY, encrypt, entry_data, setup, state_of, wait_for, with_values

STEP = timedelta(seconds=30)


def lux(text: str) -> datetime:
    """A local Luxembourg time, e.g. "2026-03-10 12:00:00"."""
    return datetime.fromisoformat(text).replace(tzinfo=LUXEMBOURG)


class Meter:
    """Puts telegrams of a given time, register and power on the quiet pty."""

    def __init__(
        self,
        hass: HomeAssistant,
        pty: PtyMeter,
        base: bytes,
        freezer: FrozenDateTimeFactory,
        at: datetime,
        energy: float = 1000.0,
    ) -> None:
        self.hass = hass
        self.pty = pty
        self.base = base
        self.freezer = freezer
        self.at = at.astimezone(UTC)
        self.energy = energy
        self.sent = 0
        self.counter = 5000
        self.coordinator: SmartyCoordinator | None = None
        freezer.move_to(self.at)

    def telegram(self, power: float) -> bytes:
        values = {
            "0-0:1.0.0": meter_time(self.at),
            "1-0:1.8.0": f"{self.energy:010.3f}*kWh",
            "1-0:1.7.0": f"{power:06.3f}*kW",
        }
        return with_values(self.base, **values)

    async def run(self, until: datetime, power: float) -> None:
        """Telegrams from now (inclusive) to ``until`` (exclusive) at a steady power (kW)."""
        frames = []
        while self.at < until:
            self.counter += 1
            frames.append(encrypt(self.telegram(power), self.counter))
            self.at += STEP
            self.energy += power * STEP.total_seconds() / 3600
        self.sent += len(frames)
        self.pty.inject(b"".join(frames))
        self.freezer.move_to(self.at)
        coordinator = self.coordinator
        assert coordinator is not None
        await wait_for(self.hass, lambda: coordinator.health.stats.telegrams >= self.sent)

    def skip(self, until: datetime, power: float) -> None:
        """No telegram until ``until``; the load goes on."""
        self.energy += power * (until.astimezone(UTC) - self.at).total_seconds() / 3600
        self.at = until.astimezone(UTC)
        self.freezer.move_to(self.at)


@pytest.fixture
def base_telegram(simulator: MeterSimulator) -> bytes:
    """A telegram of the simulated meter, to modify and send."""
    simulator.next_frame()
    return simulator.last_telegram


def tariff_entry(simulator: MeterSimulator, pty: PtyMeter, **options: Any) -> MockConfigEntry:
    """The entry of the quiet meter, with options."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=f"Smarty {simulator.serial}",
        unique_id=simulator.serial,
        data=entry_data(
            simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: pty.path}
        ),
        options=options,
    )


def entity(hass: HomeAssistant, serial: str, key: str, domain: str = "sensor") -> str:
    found = er.async_get(hass).async_get_entity_id(domain, DOMAIN, f"{serial}_tariff_{key}")
    assert found is not None, key
    return found


def value(hass: HomeAssistant, serial: str, key: str) -> float:
    return float(state_of(hass, entity(hass, serial, key)).state)


@pytest.fixture
async def meter(
    hass: HomeAssistant,
    simulator: MeterSimulator,
    quiet_pty: PtyMeter,
    base_telegram: bytes,
    freezer: FrozenDateTimeFactory,
) -> Callable[..., Any]:
    """Set up the entry with a reference power; a Meter starting at a given local time."""

    async def start(at: datetime, **options: Any) -> Meter:
        line = Meter(hass, quiet_pty, base_telegram, freezer, at)
        options.setdefault(CONF_REFERENCE_POWER, 3.0)
        entry = tariff_entry(simulator, quiet_pty, **options)
        line.coordinator = await setup(hass, entry)
        return line

    return start


async def test_steady_load_over_the_reference(
    hass: HomeAssistant, meter: Callable[..., Any], simulator: MeterSimulator
) -> None:
    """4.8 kW at 3 kW: 1.2 kWh per quarter, 0.45 kWh over, 2026 overrun rate 7.65 ct/kWh."""
    events: list[dict[str, Any]] = []
    line: Meter = await meter(lux("2026-03-10 11:59:30"))
    serial = simulator.serial
    await line.run(lux("2026-03-10 12:00:30"), 4.8)
    assert value(hass, serial, "quarter_energy") == pytest.approx(0.04, abs=1e-3)
    await line.run(lux("2026-03-10 12:15:30"), 4.8)
    assert value(hass, serial, "last_quarter_overrun") == pytest.approx(0.45, abs=1e-3)
