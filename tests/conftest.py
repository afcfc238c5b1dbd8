"""Shared fixtures: a simulated meter on a pty or loopback TCP, and config entries for them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest.mock import PropertyMock, patch

import pytest
from homeassistant.const import CONF_DEVICE, CONF_HOST, CONF_PORT
from homeassistant.core import HomeAssistant, State
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.syrupy import HomeAssistantSnapshotExtension
from syrupy.assertion import SnapshotAssertion

from custom_components.smarty_p1.const import (
    CONF_CONNECTION_TYPE,
    CONF_DECRYPTION_KEY,
    CONF_SERIAL_NUMBER,
    CONF_TOTAL_INTERVAL,
    CONNECTION_NETWORK,
    CONNECTION_SERIAL,
    DOMAIN,
)
from custom_components.smarty_p1.coordinator import SmartyCoordinator
from custom_components.smarty_p1.p1 import FrameCipher, crc16_arc
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter, TcpMeter, serve_tcp

FIXTURES = Path(__file__).parent / "fixtures"
KEY = bytes.fromhex("5A3C9E17B2D4486F8A01C6E3D95B7F20")
SYSTEM_TITLE = b"SAGgp\x00\x12\x34"
# Frames every 50 ms: a test sees dozens of telegrams in a second.
INTERVAL = 0.05


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(
    hass: HomeAssistant, enable_custom_integrations: None, socket_enabled: None
) -> None:
    """Load custom_components/smarty_p1; allow loopback sockets (the TCP meters)."""


@pytest.fixture(autouse=True)
def fast_reconnect() -> Iterator[None]:
    """Backoff of 1 s doubling to 60 s becomes 50 ms to 200 ms; silence 60 s becomes 2 s."""
    with (
        patch("custom_components.smarty_p1.coordinator.RECONNECT_MIN_DELAY", 0.05),
        patch("custom_components.smarty_p1.coordinator.RECONNECT_MAX_DELAY", 0.2),
        patch("custom_components.smarty_p1.coordinator.SILENCE_TIMEOUT", 2.0),
    ):
        yield


@pytest.fixture
def snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """Snapshots without the ids and times that change on every run."""
    return snapshot.use_extension(HomeAssistantSnapshotExtension)


@pytest.fixture
def entity_registry_enabled_by_default() -> Iterator[None]:
    """Every entity enabled, as for a snapshot of all of them."""
    with patch(
        "homeassistant.helpers.entity.Entity.entity_registry_enabled_default",
        new_callable=PropertyMock,
        return_value=True,
    ):
        yield


def load_fixture(name: str) -> dict[str, Any]:
    """A test vector of tests/fixtures."""
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


@pytest.fixture
def meter_key() -> bytes:
    """The key of the simulated meter."""
    return KEY


@pytest.fixture
def simulator(meter_key: bytes) -> MeterSimulator:
    """An encrypted three-phase meter with gas and water, sending every 50 ms."""
    return MeterSimulator(meter_key, interval=INTERVAL)


@pytest.fixture
def pty_meter(simulator: MeterSimulator) -> Iterator[PtyMeter]:
    """The simulator on a pseudo-terminal, like a meter on a USB P1 cable."""
    with PtyMeter(simulator) as meter:
        yield meter


@pytest.fixture
def quiet_pty(simulator: MeterSimulator) -> Iterator[PtyMeter]:
    """A pty whose meter sends only what a test injects."""
    with PtyMeter(simulator, count=0) as meter:
        yield meter


@pytest.fixture
async def tcp_meter(simulator: MeterSimulator) -> AsyncIterator[TcpMeter]:
    """The simulator behind a loopback TCP bridge."""
    async with await serve_tcp(simulator) as meter:
        yield meter


class RecordingMeter(MeterSimulator):
    """The simulator, keeping the values of every frame it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[dict[str, Decimal | str]] = []

    def next_frame(self) -> bytes:
        frame = super().next_frame()
        self.sent.append(self.last_values)
        return frame


def entry_data(simulator: MeterSimulator, key: bytes | None, **connection: Any) -> dict[str, Any]:
    """Config entry data as the flow stores it."""
    return {
        **connection,
        CONF_DECRYPTION_KEY: key.hex().upper() if key else None,
        CONF_SERIAL_NUMBER: simulator.serial,
    }


def make_entry(simulator: MeterSimulator, key: bytes | None, **connection: Any) -> MockConfigEntry:
    """A config entry for the simulated meter (not yet added to hass)."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=f"Smarty {simulator.serial}",
        unique_id=simulator.serial,
        data=entry_data(simulator, key, **connection),
    )


# For tests that look at every reading of a meter total, not only one a minute.
EVERY_TOTAL = {CONF_TOTAL_INTERVAL: 0}


def with_options(entry: MockConfigEntry, options: dict[str, Any]) -> MockConfigEntry:
    """The same entry (not yet added to hass) with options."""
    return MockConfigEntry(
        domain=entry.domain,
        title=entry.title,
        unique_id=entry.unique_id,
        data=dict(entry.data),
        options=options,
    )


@pytest.fixture
def serial_entry(
    simulator: MeterSimulator, meter_key: bytes, pty_meter: PtyMeter
) -> MockConfigEntry:
    """The entry of the meter on the pty."""
    return make_entry(
        simulator,
        meter_key if simulator.encrypted else None,
        **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: pty_meter.path},
    )


@pytest.fixture
def network_entry(
    simulator: MeterSimulator, meter_key: bytes, tcp_meter: TcpMeter
) -> MockConfigEntry:
    """The entry of the meter behind the TCP bridge."""
    return make_entry(
        simulator,
        meter_key if simulator.encrypted else None,
        **{
            CONF_CONNECTION_TYPE: CONNECTION_NETWORK,
            CONF_HOST: "127.0.0.1",
            CONF_PORT: tcp_meter.port,
        },
    )


def state_of(hass: HomeAssistant, entity_id: str | None) -> State:
    """The state of an entity that must exist."""
    assert entity_id is not None
    state = hass.states.get(entity_id)
    assert state is not None, entity_id
    return state


async def setup(hass: HomeAssistant, entry: MockConfigEntry) -> SmartyCoordinator:
    """Add and set up an entry; its coordinator."""
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    coordinator: SmartyCoordinator = entry.runtime_data
    return coordinator


async def wait_for(
    hass: HomeAssistant, condition: Callable[[], object], within: float = 5.0
) -> None:
    """Let the event loop run until condition() holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
    await hass.async_block_till_done()


def with_values(telegram: bytes, **values: str) -> bytes:
    """A telegram with some lines' bracket contents replaced and its CRC made right again.

    OBIS codes are not identifiers: ``with_values(t, **{"1-0:1.8.0": "000100.000*kWh"})``.
    """
    body = telegram[: telegram.rindex(b"!") + 1].decode("ascii")
    lines = body.split("\r\n")
    for index, line in enumerate(lines):
        obis = line.partition("(")[0]
        if obis in values:
            lines[index] = f"{obis}({values[obis]})"
    body = "\r\n".join(lines)
    return f"{body}{crc16_arc(body.encode('ascii')):04X}\r\n".encode("ascii")


def encrypt(telegram: bytes, counter: int, key: bytes = KEY) -> bytes:
    """The wire frame of a telegram, as the meter sends it."""
    return FrameCipher(key).encrypt(telegram, SYSTEM_TITLE, counter)
