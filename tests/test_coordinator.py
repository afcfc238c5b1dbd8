"""The reader: reconnects, silence, reauth, glitch filters and state-write economy, end to end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from homeassistant.config_entries import SOURCE_REAUTH
from homeassistant.const import (
    CONF_DEVICE,
    EVENT_STATE_CHANGED,
    STATE_UNAVAILABLE,
)
from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.event import async_track_state_change_event
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.smarty_p1 import coordinator as coordinator_module
from custom_components.smarty_p1.const import (
    CONF_CONNECTION_TYPE,
    CONF_MIN_INTERVAL,
    CONNECTION_SERIAL,
    DOMAIN,
)
from custom_components.smarty_p1.coordinator import SmartyCoordinator
from custom_components.smarty_p1.p1.simulator import (
    MeterSimulator,
    PtyMeter,
    TcpMeter,
    meter_time,
)

from .conftest import (
    EVERY_TOTAL,
    KEY,
    encrypt,
    make_entry,
    setup,
    state_of,
    wait_for,
    with_options,
    with_values,
)

LOGGER_NAME = "custom_components.smarty_p1"


def sensor_id(hass: HomeAssistant, serial: str, suffix: str) -> str:
    """The entity id of a sensor by its unique id."""
    found = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"{serial}_{suffix}")
    assert found is not None, suffix
    return found


def warnings(caplog: pytest.LogCaptureFixture, text: str, level: int = logging.WARNING) -> int:
    """How many records of our logger at level or above contain text."""
    return sum(
        1
        for record in caplog.records
        if record.name.startswith(LOGGER_NAME)
        and record.levelno >= level
        and text in record.getMessage()
    )


# --- A meter that sends only what the test injects. ---


@pytest.fixture
def base_telegram(simulator: MeterSimulator) -> bytes:
    """A telegram of the simulated meter (plaintext), to modify and send."""
    simulator.next_frame()
    return simulator.last_telegram


@pytest.fixture
def send(quiet_pty: PtyMeter, simulator: MeterSimulator) -> Callable[..., None]:
    """Encrypt a telegram with the meter's key and put it on the line, its meter time a minute
    after the last one's (registers may rise by what a meter counts in a minute); a damaged
    telegram (``as_is``) goes as it is."""
    counter = iter(range(1000, 100_000))

    def send(telegram: bytes, *, as_is: bool = False) -> None:
        number = next(counter)
        if not as_is:
            moment = simulator.now + timedelta(minutes=number - 999)
            telegram = with_values(telegram, **{"0-0:1.0.0": meter_time(moment)})
        quiet_pty.inject(encrypt(telegram, number))

    return send


@pytest.fixture
def quiet_entry(simulator: MeterSimulator, quiet_pty: PtyMeter) -> MockConfigEntry:
    """The entry of the quiet meter, its totals shown at every telegram (the guard's tests
    look at each reading)."""
    return with_options(
        make_entry(
            simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: quiet_pty.path}
        ),
        EVERY_TOTAL,
    )


def power_and_energy(telegram: bytes, kw: str, kwh: str) -> bytes:
    """The telegram with its import power and import total (as sent: ``01.000*kW``)."""
    return with_values(telegram, **{"1-0:1.7.0": kw, "1-0:1.8.0": kwh})


async def published(hass: HomeAssistant, coordinator: SmartyCoordinator, count: int) -> None:
    """Wait until the coordinator has accepted count telegrams in total."""
    await wait_for(
        hass,
        lambda: coordinator.health.stats.telegrams + coordinator.health.guard.foreign >= count,
    )


# --- Connection loss and recovery. ---


async def test_pty_unplugged_and_back(
    hass: HomeAssistant,
    *,
    simulator: MeterSimulator,
    pty_meter: PtyMeter,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The cable is pulled (udev removes the by-id link), then plugged back: one line each way.

    The link goes with the device, as udev does it: a dangling link could meet another pty
    that the kernel gives the freed number."""
    link = tmp_path / "usb-meter"
    link.symlink_to(pty_meter.path)
    entry = make_entry(
        simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: str(link)}
    )
    coordinator = await setup(hass, entry)
    await wait_for(hass, lambda: coordinator.health.stats.telegrams >= 2)
    energy = sensor_id(hass, simulator.serial, "1-0:1.8.0")
    assert state_of(hass, energy).state != STATE_UNAVAILABLE

    pty_meter.close()
    link.unlink()
    await wait_for(hass, lambda: state_of(hass, energy).state == STATE_UNAVAILABLE)
    # Several reconnect attempts fail while the cable is out: none of them logs a warning.
    await asyncio.sleep(0.5)
    assert warnings(caplog, "Lost the connection", logging.INFO) == 1
    assert coordinator.health.as_dict()["connected"] is False

    with PtyMeter(simulator) as replugged:
        link.symlink_to(replugged.path)
        await wait_for(hass, lambda: state_of(hass, energy).state != STATE_UNAVAILABLE)
        assert coordinator.health.reconnects == 1
        assert coordinator.health.as_dict()["connected"] is True
        restored = [r for r in caplog.records if "restored" in r.getMessage()]
        assert len(restored) == 1
        assert warnings(caplog, "Lost the connection", logging.INFO) == 1
        assert await hass.config_entries.async_unload(entry.entry_id)


async def test_tcp_bridge_restart(
    hass: HomeAssistant, network_entry: MockConfigEntry, tcp_meter: TcpMeter
) -> None:
    """The bridge drops its clients: the reader reconnects to the same port by itself."""
    coordinator = await setup(hass, network_entry)
    await wait_for(hass, lambda: coordinator.health.stats.telegrams >= 2)
    tcp_meter.drop_clients()
    await wait_for(hass, lambda: coordinator.health.reconnects == 1)
    before = coordinator.health.stats.telegrams
    await wait_for(hass, lambda: coordinator.health.stats.telegrams > before + 2)
    assert coordinator.last_update_success
    # One connection at a time: ser2net allows a single client by default.
    assert tcp_meter.clients == 1
    assert await hass.config_entries.async_unload(network_entry.entry_id)
    await wait_for(hass, lambda: tcp_meter.clients == 0)


async def test_silence_means_reconnect(
    hass: HomeAssistant,
    simulator: MeterSimulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A port that stays open but goes quiet is dropped and reopened; logged once."""
    with (
        patch("custom_components.smarty_p1.coordinator.SILENCE_TIMEOUT", 0.3),
        PtyMeter(simulator, count=6) as meter,
    ):
        entry = make_entry(
            simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: meter.path}
        )
        coordinator = await setup(hass, entry)
        # Frames sent before the port opened are flushed by the open: some arrive, then none.
        await wait_for(hass, lambda: coordinator.health.stats.telegrams >= 1)
        await wait_for(hass, lambda: not coordinator.last_update_success)
        assert meter.done
        await wait_for(hass, lambda: coordinator.health.reconnects >= 2)
        assert warnings(caplog, "no valid telegram for 0.3 s", logging.INFO) == 1
        assert warnings(caplog, "Lost the connection", logging.INFO) == 1
        assert await hass.config_entries.async_unload(entry.entry_id)


async def test_reauth_after_key_change(
    hass: HomeAssistant,
    serial_entry: MockConfigEntry,
    simulator: MeterSimulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A new key on the meter: after the window of tag failures, a reauth flow starts."""
    with patch("custom_components.smarty_p1.coordinator.AUTH_FAILURE_WINDOW", 0.3):
        coordinator = await setup(hass, serial_entry)
        await wait_for(hass, lambda: coordinator.health.stats.telegrams >= 2)
        simulator.set_key(bytes(range(16)))
        await wait_for(
            hass, lambda: any(serial_entry.async_get_active_flows(hass, {SOURCE_REAUTH}))
        )
        rejected = sensor_id(hass, simulator.serial, "rejected_tag")
        assert int(state_of(hass, rejected).state) >= 3
        # The counter entity stays available when the meter's values are not.
        await asyncio.sleep(0.2)
        assert len(list(serial_entry.async_get_active_flows(hass, {SOURCE_REAUTH}))) == 1
        assert warnings(caplog, "wrong key") == 1
        assert warnings(caplog, "asking for the new key") == 1
        assert await hass.config_entries.async_unload(serial_entry.entry_id)


async def test_no_reauth_for_a_single_bad_frame(
    hass: HomeAssistant,
    quiet_entry: MockConfigEntry,
    base_telegram: bytes,
    send: Callable[..., None],
    quiet_pty: PtyMeter,
) -> None:
    """A damaged frame between good ones resets nothing and starts no reauth."""
    with patch("custom_components.smarty_p1.coordinator.AUTH_FAILURE_WINDOW", 0.1):
        coordinator = await setup(hass, quiet_entry)
        quiet_pty.inject(encrypt(base_telegram, 5, bytes(16)))
        await wait_for(hass, lambda: coordinator.health.stats.rejected["wrong_key"] == 1)
        await asyncio.sleep(0.15)
        send(base_telegram)
        await published(hass, coordinator, 1)
        quiet_pty.inject(encrypt(base_telegram, 6, bytes(16)))
        await wait_for(hass, lambda: coordinator.health.stats.rejected["wrong_key"] == 2)
        assert not list(quiet_entry.async_get_active_flows(hass, {SOURCE_REAUTH}))
        assert await hass.config_entries.async_unload(quiet_entry.entry_id)


# --- What reaches the entities. ---


async def test_energy_never_goes_backwards(
    hass: HomeAssistant,
    *,
    quiet_entry: MockConfigEntry,
    simulator: MeterSimulator,
    base_telegram: bytes,
    send: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A lower register reading is not published (and logged once); a real 0 is a value."""
    coordinator = await setup(hass, quiet_entry)
    send(with_values(base_telegram, **{"1-0:1.8.0": "000100.000*kWh"}))
    await published(hass, coordinator, 1)
    energy = sensor_id(hass, simulator.serial, "1-0:1.8.0")
    export = sensor_id(hass, simulator.serial, "1-0:2.8.0")
    assert state_of(hass, energy).state == "100.000"
    assert state_of(hass, export).state == "0.000"

    for count, value in enumerate(("000099.999*kWh", "000000.000*kWh"), 2):
        send(with_values(base_telegram, **{"1-0:1.8.0": value}))
        await published(hass, coordinator, count)
        assert state_of(hass, energy).state == "100.000"
    assert coordinator.health.guard.lower == 2
    assert warnings(caplog, "lower reading") == 1

    send(with_values(base_telegram, **{"1-0:1.8.0": "000100.001*kWh"}))
    await published(hass, coordinator, 4)
    assert state_of(hass, energy).state == "100.001"
    assert await hass.config_entries.async_unload(quiet_entry.entry_id)


async def test_totals_take_a_new_state_once_a_minute(
    hass: HomeAssistant,
    *,
    simulator: MeterSimulator,
    quiet_pty: PtyMeter,
    base_telegram: bytes,
    send: Callable[..., None],
) -> None:
    """At the defaults power shows every telegram and an energy total at most once a minute
    (a sixth of its rows); the total's first reading and the option at 0 show it at once, and
    the reading of a telegram between two updates is not lost, only shown with the next."""
    clock = [1000.0]
    entry = make_entry(
        simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: quiet_pty.path}
    )
    changes: list[str] = []

    def telegram(kw: str, kwh: str) -> bytes:
        return power_and_energy(base_telegram, f"{kw}*kW", f"{kwh}*kWh")

    with patch("custom_components.smarty_p1.coordinator.monotonic", lambda: clock[0]):
        coordinator = await setup(hass, entry)
        send(telegram("01.000", "000100.000"))
        await published(hass, coordinator, 1)
        power = sensor_id(hass, simulator.serial, "1-0:1.7.0")
        energy = sensor_id(hass, simulator.serial, "1-0:1.8.0")
        assert state_of(hass, energy).state == "100.000"

        @callback
        def changed(event: Event[EventStateChangedData]) -> None:
            new_state = event.data["new_state"]
            assert new_state is not None
            changes.append(new_state.state)

        unsubscribe = async_track_state_change_event(hass, energy, changed)
        for count in range(2, 8):
            clock[0] += 10
            send(telegram(f"{count:02d}.000", f"{100 + count / 10:010.3f}"))
            await published(hass, coordinator, count)
            assert state_of(hass, power).state == f"{count}.000"
        # Six telegrams, 60 s: the total took the last one's reading only.
        assert changes == ["100.700"]
        hass.config_entries.async_update_entry(entry, options=EVERY_TOTAL)
        clock[0] += 10
        send(telegram("01.000", "000100.800"))
        await published(hass, coordinator, 8)
        assert changes == ["100.700", "100.800"]
        unsubscribe()
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_registers_survive_a_restart(
    hass: HomeAssistant,
    *,
    quiet_entry: MockConfigEntry,
    simulator: MeterSimulator,
    base_telegram: bytes,
    send: Callable[..., None],
    hass_storage: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a restart, a first reading below the last one recorded is still not published."""
    monkeypatch.setattr(coordinator_module, "REGISTERS_SAVE_DELAY", 0.0)
    quiet_entry.add_to_hass(hass)
    hass_storage[f"smarty_p1.{quiet_entry.entry_id}.registers"] = {
        "version": 1,
        "minor_version": 1,
        "key": f"smarty_p1.{quiet_entry.entry_id}.registers",
        "data": {"registers": {"1-0:1.8.0": ["100.000", "kWh"]}, "mbus_ids": {"1": "GAS-BEFORE"}},
    }
    coordinator = await setup(hass, quiet_entry)
    send(with_values(base_telegram, **{"1-0:1.8.0": "000042.000*kWh"}))
    await published(hass, coordinator, 1)
    energy = sensor_id(hass, simulator.serial, "1-0:1.8.0")
    assert state_of(hass, energy).state == "100.000"
    assert coordinator.health.guard.lower == 1

    send(with_values(base_telegram, **{"1-0:1.8.0": "000100.500*kWh"}))
    await published(hass, coordinator, 2)
    # Written while running (here the save interval is 0), not only at shutdown: a power cut
    # must not lose it.
    key = f"smarty_p1.{quiet_entry.entry_id}.registers"
    await wait_for(
        hass,
        lambda: hass_storage[key]["data"]["registers"]["1-0:1.8.0"]["value"] == "100.500",
    )
    saved = hass_storage[key]
    # Migrated to 1.2, which keeps the meter time the next rise is measured from.
    assert (saved["version"], saved["minor_version"]) == (1, 2)
    assert saved["data"]["registers"]["1-0:1.8.0"]["unit"] == "kWh"
    assert saved["data"]["registers"]["1-0:1.8.0"]["time"] is not None

    send(with_values(base_telegram, **{"1-0:1.8.0": "000100.600*kWh"}))
    await published(hass, coordinator, 3)
    assert await hass.config_entries.async_unload(quiet_entry.entry_id)
    stored = hass_storage[f"smarty_p1.{quiet_entry.entry_id}.registers"]["data"]
    assert stored["registers"]["1-0:1.8.0"]["value"] == "100.600"

    await hass.config_entries.async_remove(quiet_entry.entry_id)
    assert f"smarty_p1.{quiet_entry.entry_id}.registers" not in hass_storage


async def test_new_mbus_meter_starts_from_its_own_reading(
    hass: HomeAssistant,
    *,
    quiet_entry: MockConfigEntry,
    simulator: MeterSimulator,
    base_telegram: bytes,
    send: Callable[..., None],
) -> None:
    """A replaced gas meter (new equipment id) starts low: that is not a glitch."""
    coordinator = await setup(hass, quiet_entry)
    send(base_telegram)
    await published(hass, coordinator, 1)
    gas = sensor_id(hass, simulator.serial, "0-1:24.2.1")
    swapped = with_values(
        base_telegram,
        **{
            "0-1:96.1.0": "464C4F313131313131313131313131",
            "0-1:24.2.1": "260621085708S)(00000.012*m3",
        },
    )
    send(swapped)
    await published(hass, coordinator, 2)
    assert state_of(hass, gas).state == "0.012"
    assert coordinator.health.guard.lower == 0
    assert await hass.config_entries.async_unload(quiet_entry.entry_id)


async def test_state_written_only_on_change(
    hass: HomeAssistant,
    *,
    quiet_entry: MockConfigEntry,
    simulator: MeterSimulator,
    base_telegram: bytes,
    send: Callable[..., None],
) -> None:
    """An unchanged telegram writes no state; one changed value writes only what depends on it."""
    coordinator = await setup(hass, quiet_entry)
    # A household with solar panels: the net power sensor exists and depends on import power.
    solar = with_values(base_telegram, **{"1-0:2.8.0": "000321.000*kWh"})
    send(solar)
    await published(hass, coordinator, 1)
    written: list[str] = []

    def record(event: Event[EventStateChangedData]) -> None:
        if event.data["entity_id"].startswith("sensor."):
            written.append(event.data["entity_id"])

    unsub = hass.bus.async_listen(EVENT_STATE_CHANGED, record)
    for count in range(2, 7):
        send(solar)
        await published(hass, coordinator, count)
    assert written == []

    send(with_values(solar, **{"1-0:1.7.0": "09.999*kW"}))
    await published(hass, coordinator, 7)
    power = sensor_id(hass, simulator.serial, "1-0:1.7.0")
    net = sensor_id(hass, simulator.serial, "1-0:2.7.0_net")
    assert sorted(written) == sorted([power, net])
    assert state_of(hass, net).state == "9.999"
    unsub()
    assert await hass.config_entries.async_unload(quiet_entry.entry_id)


async def test_min_interval_averages_power(
    hass: HomeAssistant,
    *,
    simulator: MeterSimulator,
    quiet_pty: PtyMeter,
    base_telegram: bytes,
    send: Callable[..., None],
) -> None:
    """Within the window nothing is published; then power is the mean, energy the latest."""
    entry = make_entry(
        simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: quiet_pty.path}
    )
    entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(entry, options={CONF_MIN_INTERVAL: 0.4, **EVERY_TOTAL})
    coordinator = await setup(hass, entry)

    def telegram(kw: str, kwh: str) -> bytes:
        return power_and_energy(base_telegram, kw, kwh)

    send(telegram("01.000*kW", "000100.000*kWh"))
    await published(hass, coordinator, 1)
    power = sensor_id(hass, simulator.serial, "1-0:1.7.0")
    energy = sensor_id(hass, simulator.serial, "1-0:1.8.0")
    assert state_of(hass, power).state == "1.000"
    send(telegram("02.000*kW", "000100.100*kWh"))
    send(telegram("04.000*kW", "000100.200*kWh"))
    await published(hass, coordinator, 3)
    assert state_of(hass, power).state == "1.000"
    assert state_of(hass, energy).state == "100.000"
    await asyncio.sleep(0.45)
    send(telegram("03.500*kW", "000100.300*kWh"))
    await published(hass, coordinator, 4)
    # (2 + 4 + 3.5) / 3, with the meter's three decimals.
    assert state_of(hass, power).state == "3.167"
    assert state_of(hass, energy).state == "100.300"
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_other_meter_on_the_port_is_ignored(
    hass: HomeAssistant,
    *,
    quiet_entry: MockConfigEntry,
    simulator: MeterSimulator,
    base_telegram: bytes,
    send: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Telegrams with another serial never reach this meter's entities."""
    coordinator = await setup(hass, quiet_entry)
    send(base_telegram)
    await published(hass, coordinator, 1)
    energy = sensor_id(hass, simulator.serial, "1-0:1.8.0")
    before = state_of(hass, energy).state
    other = with_values(
        base_telegram,
        **{"0-0:42.0.0": "53414731303330373939393939393939", "1-0:1.8.0": "999999.999*kWh"},
    )
    send(other)
    send(other)
    await published(hass, coordinator, 3)
    assert coordinator.health.guard.foreign == 2
    assert state_of(hass, energy).state == before
    assert warnings(caplog, "another meter") == 1
    assert await hass.config_entries.async_unload(quiet_entry.entry_id)


async def test_crc_errors_counted_not_published(
    hass: HomeAssistant,
    *,
    quiet_entry: MockConfigEntry,
    simulator: MeterSimulator,
    base_telegram: bytes,
    send: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A telegram whose CRC is wrong is counted in its sensor; its values go nowhere."""
    coordinator = await setup(hass, quiet_entry)
    send(base_telegram)
    await published(hass, coordinator, 1)
    energy = sensor_id(hass, simulator.serial, "1-0:1.8.0")
    before = state_of(hass, energy).state
    damaged = base_telegram.replace(b"1-0:1.8.0(0", b"1-0:1.8.0(9")
    for _ in range(3):
        send(damaged, as_is=True)
    await wait_for(hass, lambda: coordinator.health.stats.rejected["crc"] == 3)
    assert state_of(hass, sensor_id(hass, simulator.serial, "rejected_crc")).state == "3"
    assert state_of(hass, energy).state == before
    assert warnings(caplog, "CRC") == 1
    assert await hass.config_entries.async_unload(quiet_entry.entry_id)
