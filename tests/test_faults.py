"""Fault injection: every scenario ends with right values again and no wrong value in between.

Each scenario records every state written for the energy, power and voltage sensors and checks
each one against the values the simulated meter really sent; it prints frames sent, delivered
(published to the entities), lost, and wrong values (always 0). Time is compressed: the meter
sends every 50 ms and the 60 s silence rule is 2 s (conftest), the 60 s key window 0.3 s.
Deselect with ``-m "not faults"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from homeassistant.components.recorder import history
from homeassistant.components.repairs import repairs_flow_manager
from homeassistant.config_entries import (
    SOURCE_REAUTH,
    SOURCE_USER,
    ConfigEntry,
    ConfigFlowResult,
)
from homeassistant.const import CONF_DEVICE, CONF_HOST, CONF_PORT, STATE_UNAVAILABLE
from homeassistant.core import Event, EventStateChangedData, HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.recorder import get_instance
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.recorder.common import (
    async_wait_recording_done,
)

from custom_components.smarty_p1.const import (
    CONF_CONNECTION_TYPE,
    CONF_DECRYPTION_KEY,
    CONF_TOPIC,
    CONNECTION_MQTT,
    CONNECTION_NETWORK,
    CONNECTION_SERIAL,
    DOMAIN,
)
from custom_components.smarty_p1.coordinator import SmartyCoordinator, registers_store
from custom_components.smarty_p1.diagnostics import async_get_config_entry_diagnostics
from custom_components.smarty_p1.p1 import MAX_FRAME
from custom_components.smarty_p1.p1.simulator import PtyMeter
from custom_components.smarty_p1.p1.sources import TcpSource

from .conftest import (
    EVERY_TOTAL,
    INTERVAL,
    KEY,
    RecordingMeter,
    make_entry,
    setup,
    state_of,
    wait_for,
    with_options,
    with_values,
)
from .mqtt_broker import Broker, Dongle, broker, mqtt_entry, publish
from .test_translations import TRANSLATIONS

__all__ = ["broker", "mqtt_entry"]

pytestmark = pytest.mark.faults

# The sensors whose every state is checked: an energy register, a power, a voltage.
WATCHED = {
    "1-0:1.8.0": "1-0:1.8.0",
    "1-0:1.7.0": "1-0:1.7.0",
    "1-0:32.7.0": "1-0:32.7.0",
}
NEW_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
NEW_SERIAL = "SAG1030700067890"


class Watch:
    """Every state written for the WATCHED sensors, and every telegram published."""

    def __init__(self, hass: HomeAssistant, sim: RecordingMeter, coordinator: SmartyCoordinator):
        self.hass = hass
        self.sim = sim
        self.coordinator = coordinator
        self.states: list[tuple[str, str]] = []
        self.delivered = 0
        # Frames sent before the watch began are not the scenario's.
        self._first = len(sim.sent)
        self._data: object = None
        self._obis: dict[str, str | None] = {}
        hass.bus.async_listen("state_changed", self._state)
        coordinator.async_add_listener(self._update)

    def follow(self, coordinator: SmartyCoordinator) -> None:
        """Watch the coordinator of the entry set up again (after a reauth, an exchange)."""
        self.coordinator = coordinator
        self._data = None
        coordinator.async_add_listener(self._update)

    def _update(self) -> None:
        if self.coordinator.data is not self._data:
            self._data = self.coordinator.data
            self.delivered += 1

    def _state(self, event: Event[EventStateChangedData]) -> None:
        entity_id = event.data["entity_id"]
        if entity_id not in self._obis:
            entry = er.async_get(self.hass).async_get(entity_id)
            # After the serial: the same sensor before and after a meter exchange.
            unique = entry.unique_id.partition("_")[2] if entry else ""
            self._obis[entity_id] = WATCHED.get(unique)
        obis = self._obis[entity_id]
        new = event.data["new_state"]
        if obis is not None and new is not None:
            self.states.append((obis, new.state))

    async def caught_up(self) -> None:
        """Wait until the meter's last frame is what the entities show."""
        await wait_for(
            self.hass,
            lambda: (
                self.coordinator.data is not None
                and self.coordinator.data.telegram.raw == self.sim.last_telegram
            ),
        )

    async def delivers(self, count: int = 3, within: float = 10.0) -> None:
        """Wait until `count` more telegrams reach the entities."""
        target = self.delivered + count
        await wait_for(self.hass, lambda: self.delivered >= target, within)

    def report(self, scenario: str) -> dict[str, int]:
        """Check every recorded state; print and return the counts."""
        sent: dict[str, set[Decimal]] = {obis: set() for obis in WATCHED.values()}
        for values in self.sim.sent:
            for obis, known in sent.items():
                value = values.get(obis)
                if isinstance(value, Decimal):
                    known.add(value)
        wrong = 0
        energy = Decimal(-1)
        for obis, state in self.states:
            if state in (STATE_UNAVAILABLE, "unknown"):
                continue
            value = Decimal(state)
            if value not in sent[obis] or (obis == "1-0:1.8.0" and value < energy):
                wrong += 1
                print(f"[faults] wrong value: {obis} = {state}")
            if obis == "1-0:1.8.0":
                energy = value
        frames = len(self.sim.sent) - self._first
        counts = {
            "sent": frames,
            "delivered": self.delivered,
            "lost": frames - self.delivered,
            "wrong": wrong,
        }
        print(f"\n[faults] {scenario:<24} " + "  ".join(f"{k} {v:4d}" for k, v in counts.items()))
        assert self.states, "no state was recorded"
        assert wrong == 0, self.states
        # The last published telegram is the meter's, value for value.
        data = self.coordinator.data
        assert data is not None
        for obis in WATCHED.values():
            assert data.objects[obis].value in sent[obis]
        return counts


@pytest.fixture(autouse=True)
def short_key_window() -> Iterator[None]:
    """Sixty seconds of failing frames before reauth become 0.3 s."""
    with patch("custom_components.smarty_p1.coordinator.AUTH_FAILURE_WINDOW", 0.3):
        yield


@pytest.fixture
def meter() -> RecordingMeter:
    """The simulated meter of a scenario: meter time moves 10 s per frame, as on a real meter
    (its clock has whole seconds), while frames go out every 50 ms."""
    return RecordingMeter(KEY, interval=10.0)


@pytest.fixture
def fast_meter() -> RecordingMeter:
    """A meter whose own thread or task sends (pty, MQTT dongle): every 50 ms of meter time."""
    return RecordingMeter(KEY, interval=INTERVAL)


# USB cable.


async def test_usb_unplug_and_replug(
    hass: HomeAssistant, fast_meter: RecordingMeter, tmp_path: Path
) -> None:
    """The pty vanishes; a new one appears at the same by-id path; reading resumes."""
    by_id = tmp_path / "usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0"
    meter = fast_meter
    first = PtyMeter(meter)
    by_id.symlink_to(first.path)
    entry = make_entry(
        meter, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: str(by_id)}
    )
    coordinator = await setup(hass, entry)
    watch = Watch(hass, meter, coordinator)
    second: PtyMeter | None = None
    try:
        await watch.delivers()
        first.close()
        by_id.unlink()
        await wait_for(hass, lambda: not coordinator.last_update_success)
        await asyncio.sleep(0.3)
        second = PtyMeter(meter)
        by_id.symlink_to(second.path)
        await watch.delivers()
    finally:
        first.close()
        if second is not None:
            second.close()
    watch.report("usb unplug/replug")
    assert coordinator.health.reconnects >= 1


# Byte-level faults on the line: the test writes every byte itself.


class Line:
    """A quiet pty: each `send` is one frame of the meter, changed by the scenario."""

    def __init__(self, pty: PtyMeter, sim: RecordingMeter) -> None:
        self.pty = pty
        self.sim = sim

    async def send(self, data: bytes | None = None) -> bytes:
        """Put bytes (default: the meter's next frame) on the line, then wait one interval."""
        frame = self.sim.next_frame() if data is None else data
        self.pty.inject(frame)
        await asyncio.sleep(INTERVAL)
        return frame


@contextlib.asynccontextmanager
async def quiet_line(
    hass: HomeAssistant, meter: RecordingMeter, stored: dict[str, Any] | None = None
) -> AsyncIterator[tuple[Line, Watch]]:
    """The meter on a pty that sends only what the scenario puts on it; ``stored``: what an
    earlier run left in the registers store."""
    with PtyMeter(meter, count=0) as pty:
        key = KEY if meter.encrypted else None
        # The scenarios judge every reading of the totals.
        entry = with_options(
            make_entry(
                meter, key, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: pty.path}
            ),
            EVERY_TOTAL,
        )
        if stored is None:
            coordinator = await setup(hass, entry)
        else:
            entry.add_to_hass(hass)
            await registers_store(hass, entry).async_save(stored)
            assert await hass.config_entries.async_setup(entry.entry_id)
            coordinator = entry.runtime_data
        watch = Watch(hass, meter, coordinator)
        wire = Line(pty, meter)
        if stored is None:
            for _ in range(3):
                await wire.send()
            await watch.caught_up()
        yield wire, watch
        await hass.config_entries.async_unload(entry.entry_id)


@pytest.fixture
async def line(hass: HomeAssistant, meter: RecordingMeter) -> AsyncIterator[tuple[Line, Watch]]:
    """The meter on a pty that sends only what the scenario puts on it."""
    async with quiet_line(hass, meter) as wired:
        yield wired


async def test_line_noise_bursts(line: tuple[Line, Watch]) -> None:
    """Bursts of noise between and inside frames."""
    wire, watch = line
    noise = os.urandom(300)
    for index in range(10):
        frame = wire.sim.next_frame()
        if index % 2:
            await wire.send(noise + frame + noise[:50])
        else:
            cut = len(frame) // 2
            await wire.send(frame[:cut] + noise[:20] + frame[cut:])
    for _ in range(3):
        await wire.send()
    await watch.caught_up()
    counts = watch.report("line noise bursts")
    assert counts["lost"] >= 5


async def test_frame_cut_in_half(line: tuple[Line, Watch]) -> None:
    """A frame of which only the first half arrives: lost, the next one is read."""
    wire, watch = line
    for _ in range(5):
        frame = wire.sim.next_frame()
        await wire.send(frame[: len(frame) // 2])
        await wire.send()
    await watch.caught_up()
    counts = watch.report("frame cut in half")
    assert counts["lost"] >= 5


async def test_two_frames_glued(line: tuple[Line, Watch]) -> None:
    """Two frames in one write: both are read, in order."""
    wire, watch = line
    before = watch.delivered
    for _ in range(5):
        await wire.send(wire.sim.next_frame() + wire.sim.next_frame())
    await wait_for(watch.hass, lambda: watch.delivered >= before + 10)
    counts = watch.report("two frames glued")
    assert counts["lost"] == 0


async def test_bit_flips(line: tuple[Line, Watch]) -> None:
    """One flipped bit anywhere in a frame: the tag check rejects it, nothing wrong is shown."""
    wire, watch = line
    for index in range(20):
        frame = bytearray(wire.sim.next_frame())
        bit = (index * 997) % (len(frame) * 8)
        frame[bit // 8] ^= 1 << (bit % 8)
        await wire.send(bytes(frame))
    for _ in range(3):
        await wire.send()
    await watch.caught_up()
    counts = watch.report("bit flips")
    assert counts["lost"] >= 20
    assert watch.coordinator.health.stats.rejected.total() >= 10


async def test_oversized_length_field(line: tuple[Line, Watch]) -> None:
    """A header that announces a 65 kB frame: the reader gives it up and finds the next one."""
    wire, watch = line
    for _ in range(3):
        frame = bytearray(wire.sim.next_frame())
        # Header: 0xDB, 8, system title (8), 0x82, length (2 bytes, big-endian).
        frame[11:13] = b"\xff\xff"
        await wire.send(bytes(frame))
        await wire.send()
    await watch.caught_up()
    decoder = watch.coordinator.decoder
    assert decoder is not None
    assert decoder.pending <= MAX_FRAME
    watch.report("oversized length field")


async def test_frame_counter_backwards(hass: HomeAssistant, line: tuple[Line, Watch]) -> None:
    """The meter's frame counter restarts (firmware reset): flagged, telegrams still shown."""
    wire, watch = line
    wire.sim.frame_counter = 1
    for _ in range(5):
        await wire.send()
    await watch.caught_up()
    counts = watch.report("frame counter backwards")
    coordinator = watch.coordinator
    assert coordinator.health.stats.counter_regressions == 1
    diagnostics = await async_get_config_entry_diagnostics(hass, coordinator.config_entry)
    assert "counter_regressions': 1" in str(diagnostics)
    assert counts["lost"] <= 1


async def test_meter_clock_jumps(line: tuple[Line, Watch]) -> None:
    """The meter's clock jumps back an hour, then forward a day: every telegram is shown."""
    wire, watch = line
    before = watch.delivered
    sent = len(wire.sim.sent)
    for jump in (timedelta(hours=-1), timedelta(days=1)):
        wire.sim.now += jump
        for _ in range(3):
            await wire.send()
    await wait_for(watch.hass, lambda: watch.delivered - before == len(wire.sim.sent) - sent)
    watch.report("meter clock jumps")


async def test_dst_switch(hass: HomeAssistant) -> None:
    """Across the spring and autumn switches (S/W suffix changes), every telegram is shown and
    the meter time sensor never moves backwards."""
    switches = (datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC), datetime(2026, 10, 25, 0, 59, 59))
    for start in switches:
        sim = RecordingMeter(KEY, interval=0.5, start=start.replace(tzinfo=UTC))
        with PtyMeter(sim, count=0) as pty:
            entry = make_entry(
                sim, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: pty.path}
            )
            coordinator = await setup(hass, entry)
            watch = Watch(hass, sim, coordinator)
            wire = Line(pty, sim)
            times: list[datetime] = []
            for _ in range(12):
                await wire.send()
                if coordinator.data is not None:
                    value = coordinator.data.objects["0-0:1.0.0"].value
                    assert isinstance(value, datetime)
                    times.append(value)
            await watch.caught_up()
            assert times == sorted(times)
            # The meter's offset (S: UTC+2, W: UTC+1) changed on the way.
            assert times[0].utcoffset() != times[-1].utcoffset()
            watch.report(f"DST switch {start:%b}")
            assert await hass.config_entries.async_unload(entry.entry_id)


# Readings that cannot be right.


async def test_implausible_jump_on_a_plaintext_meter(hass: HomeAssistant) -> None:
    """A telegram with a valid CRC whose import register jumps by 50 000 kWh (a plaintext
    meter has no tag): never shown, never stored, and the true readings go on."""
    meter = RecordingMeter(None, interval=10.0)
    async with quiet_line(hass, meter) as (wire, watch):
        for _ in range(3):
            frame = wire.sim.next_frame()
            value = wire.sim.last_values["1-0:1.8.0"]
            assert isinstance(value, Decimal)
            await wire.send(with_values(frame, **{"1-0:1.8.0": f"{value + 50000:010.3f}*kWh"}))
            await wire.send()
        for _ in range(3):
            await wire.send()
        await watch.caught_up()
        watch.report("50 000 kWh jump")
        guard = watch.coordinator.guard
        assert guard.stats.implausible == 3
        assert guard.as_dict()["registers"]["1-0:1.8.0"]["value"] == str(
            wire.sim.last_values["1-0:1.8.0"]
        )


async def test_stored_total_above_the_meter_is_re_anchored(hass: HomeAssistant) -> None:
    """An old store holds 99 999 kWh, the meter far less: the total is held (never below what
    was recorded), then re-anchored to the meter after 15 minutes of meter time, with a repair
    issue that tells the user how to fix the statistics."""
    meter = RecordingMeter(KEY, interval=10.0)
    held = "99999.000"
    stored = {"registers": {"1-0:1.8.0": {"value": held, "unit": "kWh", "time": None}}}
    async with quiet_line(hass, meter, stored) as (wire, watch):
        for _ in range(95):
            await wire.send()
        await watch.caught_up()
        energy = [state for obis, state in watch.states if obis == "1-0:1.8.0"]
        sent = {str(values["1-0:1.8.0"]) for values in meter.sent}
        # Held first, then the meter's own readings, never anything else.
        first_real = next(index for index, state in enumerate(energy) if state != held)
        assert set(energy[:first_real]) == {held}
        assert set(energy[first_real:]) <= sent
        assert energy[-1] == str(meter.last_values["1-0:1.8.0"])
        issues = ir.async_get(hass).issues
        (issue,) = (issue for key, issue in issues.items() if key[0] == DOMAIN)
        assert issue.translation_key == "total_re_anchored"
        assert issue.translation_placeholders is not None
        assert issue.translation_placeholders["held"] == held
        print(f"\n[faults] {'stored total re-anchored':<24} held {first_real:4d}  wrong    0")


# Injected and altered frames (with a key set, only authenticated telegrams count).

INJECTED_KWH = "099999.999*kWh"


def injected(sim: RecordingMeter) -> bytes:
    """A plaintext telegram in the meter's name (its serial, a valid CRC), with a register the
    meter never sent: what anyone who can write to the line, the bridge or the topic can send."""
    return with_values(sim.last_telegram, **{"1-0:1.8.0": INJECTED_KWH})


def tampered(sim: RecordingMeter, frame: bytes) -> bytes:
    """The meter's frame with its import register changed through the counter-mode stream and
    the CRC fixed up: only the GCM tag can tell."""
    changed = with_values(sim.last_telegram, **{"1-0:1.8.0": INJECTED_KWH})
    assert len(changed) == len(sim.last_telegram)
    delta = bytes(a ^ b for a, b in zip(sim.last_telegram, changed, strict=True))
    start = 18
    body = bytes(a ^ b for a, b in zip(frame[start : start + len(delta)], delta, strict=True))
    return frame[:start] + body + frame[start + len(delta) :]


async def test_plaintext_injected_on_the_line_and_tampered_frames(
    line: tuple[Line, Watch],
) -> None:
    """Plaintext telegrams (valid CRC) and frames altered with their CRC fixed up, between the
    meter's frames: none is shown, each is counted under its own reason."""
    wire, watch = line
    for _ in range(3):
        frame = await wire.send()
        await wire.send(injected(wire.sim))
        await wire.send(tampered(wire.sim, wire.sim.next_frame()))
    for _ in range(3):
        await wire.send()
    await watch.caught_up()
    watch.report("plaintext/tampered, line")
    rejected = watch.coordinator.health.stats.rejected
    assert rejected["unencrypted"] == 3
    assert rejected["tag"] == 3
    assert frame


async def test_noise_longer_than_the_key_window_starts_no_reauth(
    hass: HomeAssistant, line: tuple[Line, Watch]
) -> None:
    """For longer than the key-failure window every frame arrives damaged (noise inside it):
    damaged frames prove nothing about the key, so no reauthentication is asked for."""
    wire, watch = line
    entry = watch.coordinator.config_entry
    noise = os.urandom(40)
    for index in range(20):
        frame = wire.sim.next_frame()
        # Anywhere in the frame after its header, its first bytes of ciphertext included.
        cut = 19 + index * 37 % (len(frame) - 40)
        await wire.send(frame[:cut] + noise + frame[cut:])
    assert watch.coordinator.health.stats.rejected["damaged"] >= 15
    assert not list(entry.async_get_active_flows(hass, {SOURCE_REAUTH}))
    for _ in range(3):
        await wire.send()
    await watch.caught_up()
    watch.report("noise for longer than the key window")
    assert not list(entry.async_get_active_flows(hass, {SOURCE_REAUTH}))


class Thief(threading.Thread):
    """Another program reading the same serial port (a second integration, an add-on): it takes
    whatever bytes it gets first, so both readers see broken frames."""

    def __init__(self, path: str) -> None:
        super().__init__(name="second reader", daemon=True)
        self._fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        self._stop = threading.Event()
        self.taken = 0

    def run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.05)
            # Small reads as fast as bytes come, as a reader on its own thread makes them.
            while ready and not self._stop.is_set():
                try:
                    data = os.read(self._fd, 16)
                except OSError:
                    break
                if not data:
                    break
                self.taken += len(data)

    def close(self) -> None:
        self._stop.set()
        self.join()
        os.close(self._fd)


class UartMeter(PtyMeter):
    """Bytes at the pace of a 115200 baud line (a frame takes some 90 ms), not in one write:
    two readers of the port then take turns within every frame."""

    def inject(self, data: bytes) -> None:
        for start in range(0, len(data), 64):
            super().inject(data[start : start + 64])
            time.sleep(64 / 11_520)


async def test_another_reader_on_the_port_is_never_a_wrong_key(
    hass: HomeAssistant, fast_meter: RecordingMeter
) -> None:
    """Set up with the right key while another program reads the same port: the flow never says
    that the key is wrong. It says the frames arrive damaged, or, when the other reader took the
    start of every frame, that no telegram could be read; both texts name a second reader."""
    with (
        UartMeter(fast_meter) as pty,
        patch("custom_components.smarty_p1.const.PROBE_TIMEOUT", 2.0),
    ):
        thief = Thief(pty.path)
        thief.start()
        try:
            result = await hass.config_entries.flow.async_init(
                DOMAIN, context={"source": SOURCE_USER}
            )
            result = await hass.config_entries.flow.async_configure(
                result["flow_id"], {"next_step_id": "serial"}
            )
            assert result["step_id"] == "serial"
            seen: list[str] = []
            for _ in range(3):
                result = await hass.config_entries.flow.async_configure(
                    result["flow_id"],
                    {CONF_DECRYPTION_KEY: KEY.hex()}
                    if result["step_id"] == "key"
                    else {CONF_DEVICE: pty.path},
                )
                await hass.async_block_till_done()
                if result["type"] is FlowResultType.SHOW_PROGRESS:
                    result = await hass.config_entries.flow.async_configure(result["flow_id"])
                seen.append(str((result.get("errors") or {}).get("base")))
                if result["step_id"] not in ("key", "serial"):
                    break
        finally:
            thief.close()
    assert thief.taken > 0
    assert "invalid_key" not in seen, seen
    errors = [error for error in seen if error != "None"]
    assert errors, seen
    assert set(errors) <= {"damaged_frames", "not_a_meter"}, seen
    strings = json.loads((TRANSLATIONS / "en.json").read_text())["config"]["error"]
    for error in errors:
        assert "another program reads the same port" in strings[error], error
    print(f"\n[faults] {'second reader at setup':<24} flow said {seen}")
    if result["type"] is FlowResultType.FORM:
        hass.config_entries.flow.async_abort(result["flow_id"])


async def test_plaintext_meter_exchanged_repair(hass: HomeAssistant) -> None:
    """A plaintext meter exchanged on the same cable fails no key check: after the key window of
    only the new meter's telegrams, a repair offers the exchange; confirmed, the same entities
    show the new meter's values."""
    meter = RecordingMeter(None, interval=10.0)
    async with quiet_line(hass, meter) as (wire, watch):
        coordinator = watch.coordinator
        entry = coordinator.config_entry
        energy = next(
            item.entity_id
            for item in er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
            if item.unique_id.endswith("_1-0:1.8.0")
        )
        old = meter.serial
        meter.serial = "SAG1030700067890"
        for _ in range(10):
            await wire.send()
        issue = ir.async_get(hass).async_get_issue(DOMAIN, f"other_meter_{entry.entry_id}")
        assert issue is not None
        assert issue.translation_placeholders == {
            "title": entry.title,
            "old": old,
            "new": meter.serial,
        }
        assert await async_setup_component(hass, "repairs", {})
        flows = repairs_flow_manager(hass)
        assert flows is not None
        result = await flows.async_init(DOMAIN, data={"issue_id": issue.issue_id})
        assert result["step_id"] == "confirm"
        result = await flows.async_configure(result["flow_id"], {})
        assert result["type"] is FlowResultType.CREATE_ENTRY
        await hass.async_block_till_done()
        assert entry.unique_id == meter.serial
        exchanged = entry.runtime_data
        await wire.send()
        await wait_for(hass, lambda: exchanged.data is not None)
        # The same entity, now the new meter's register.
        assert state_of(hass, energy).state == str(meter.last_values["1-0:1.8.0"])
        assert ir.async_get(hass).async_get_issue(DOMAIN, issue.issue_id) is None
        assert exchanged.health.guard.foreign == 0
        print(f"\n[faults] {'plaintext meter exchanged':<24} repaired, same entity ids")


# TCP bridges.


class Bridge:
    """A ser2net-like TCP bridge in front of the meter: one client at a time (a second one is
    told the port is in use and closed), and faults on demand."""

    def __init__(self, sim: RecordingMeter) -> None:
        self.sim = sim
        self.mode = "normal"
        self.active = 0
        self.most_active = 0
        self.connections = 0
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        """Listen; the port."""
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self._ticker = asyncio.create_task(self._tick())
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        """Stop listening and sending."""
        self._ticker.cancel()
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _tick(self) -> None:
        # The meter sends whether or not anyone listens.
        while True:
            await asyncio.sleep(INTERVAL)
            frame = self.sim.next_frame()
            for writer in list(self._writers):
                await self._send(writer, frame)

    def inject(self, data: bytes) -> None:
        """Bytes from someone else, to every client, between the meter's frames."""
        for writer in list(self._writers):
            writer.write(data)

    async def _send(self, writer: asyncio.StreamWriter, frame: bytes) -> None:
        mode = self.mode
        with contextlib.suppress(ConnectionError):
            if mode == "normal":
                writer.write(frame)
            elif mode == "slow":
                # A trickle: bytes keep coming, a whole frame never does.
                writer.write(frame[:1])
            elif mode == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                self.mode = "normal"
            elif mode == "flood":
                garbage = os.urandom(1 << 20)
                for _ in range(10):
                    writer.write(garbage)
                    await writer.drain()
                self.mode = "normal"
            # "mute": the peer is gone without a FIN, nothing arrives any more.

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._writers:
            self.refused += 1
            writer.write(b"Port already in use\r\n")
            writer.close()
            return
        self._writers = {writer}
        self.most_active = max(self.most_active, len(self._writers))
        try:
            while await reader.read(4096):
                pass
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


@pytest.fixture
async def bridge(hass: HomeAssistant, meter: RecordingMeter) -> AsyncIterator[tuple[Bridge, Watch]]:
    """The meter behind a single-client bridge, read by a loaded entry."""
    server = Bridge(meter)
    port = await server.start()
    entry = make_entry(
        meter,
        KEY,
        **{CONF_CONNECTION_TYPE: CONNECTION_NETWORK, CONF_HOST: "127.0.0.1", CONF_PORT: port},
    )
    coordinator = await setup(hass, entry)
    watch = Watch(hass, meter, coordinator)
    await watch.delivers()
    yield server, watch
    await hass.config_entries.async_unload(entry.entry_id)
    await server.close()
    # Never two connections at once: ser2net would refuse the second.
    assert server.most_active == 1


@pytest.mark.parametrize("mode", ["mute", "slow"])
async def test_tcp_peer_silent_or_trickling(bridge: tuple[Bridge, Watch], mode: str) -> None:
    """The peer vanishes without a FIN (or accepts and never sends), or sends a byte at a time:
    the silence rule (no valid telegram) closes and reopens, one connection at a time."""
    server, watch = bridge
    server.mode = mode
    await wait_for(watch.hass, lambda: not watch.coordinator.last_update_success, 5)
    await asyncio.sleep(0.5)
    server.mode = "normal"
    await watch.delivers()
    watch.report(f"tcp peer {mode}")
    assert watch.coordinator.health.reconnects >= 1


async def test_tcp_peer_resets(bridge: tuple[Bridge, Watch]) -> None:
    """A reset (RST) from the bridge: reconnect at once."""
    server, watch = bridge
    connections = server.connections
    server.mode = "reset"
    await wait_for(watch.hass, lambda: server.connections > connections)
    await watch.delivers()
    watch.report("tcp peer resets")


async def test_garbage_flood(bridge: tuple[Bridge, Watch]) -> None:
    """10 MB of garbage at full speed: memory stays bounded, the next frames are read."""
    server, watch = bridge
    decoder = watch.coordinator.decoder
    assert decoder is not None
    most_pending = 0

    async def sample() -> None:
        nonlocal most_pending
        while True:
            most_pending = max(most_pending, decoder.pending)
            await asyncio.sleep(0)

    sampler = asyncio.create_task(sample())
    server.mode = "flood"
    await wait_for(watch.hass, lambda: decoder.stats.bytes > 10_000_000, 30)
    await watch.delivers(within=30)
    sampler.cancel()
    # Between two chunks the decoder keeps at most the start of one frame.
    assert most_pending <= MAX_FRAME
    watch.report("10 MB garbage flood")


async def test_exception_in_the_reconnect_path(bridge: tuple[Bridge, Watch]) -> None:
    """Reconnecting fails with errors nobody expected (Home Assistant's own error type, a
    bug): the reading resumes all the same; nothing but unloading ends it."""
    server, watch = bridge
    real = TcpSource._connect
    failures: list[Exception] = [HomeAssistantError("subscribe failed"), RuntimeError("a bug")]

    async def flaky(self: TcpSource, factory: Any) -> Any:
        if failures:
            raise failures.pop(0)
        return await real(self, factory)

    with patch.object(TcpSource, "_connect", flaky):
        server.mode = "reset"
        await wait_for(watch.hass, lambda: not failures)
        await watch.delivers()
    watch.report("error while reconnecting")


async def test_plaintext_injected_on_the_bridge(bridge: tuple[Bridge, Watch]) -> None:
    """Anyone who can reach the bridge's port can send a plaintext telegram: refused."""
    server, watch = bridge
    for _ in range(5):
        server.inject(injected(server.sim))
        await asyncio.sleep(INTERVAL)
    await watch.delivers()
    watch.report("plaintext injected, tcp")
    assert watch.coordinator.health.stats.rejected["unencrypted"] == 5


# The key.


async def test_key_rotation(hass: HomeAssistant, bridge: tuple[Bridge, Watch]) -> None:
    """A new key on the meter: frames fail, reauth is asked for, nothing wrong is shown; with
    the new key entered, reading resumes."""
    server, watch = bridge
    entry = watch.coordinator.config_entry
    server.sim.set_key(NEW_KEY)
    result = await answer_reauth(hass, entry, NEW_KEY)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    old = watch.coordinator
    await wait_for(hass, lambda: getattr(entry, "runtime_data", old) is not old)
    watch.follow(entry.runtime_data)
    await watch.delivers()
    watch.report("key rotation")


async def answer_reauth(hass: HomeAssistant, entry: ConfigEntry, key: bytes) -> ConfigFlowResult:
    """Wait for the reauth flow the coordinator starts, enter the key; what the probe found."""
    await wait_for(hass, lambda: list(entry.async_get_active_flows(hass, {SOURCE_REAUTH})))
    flow = next(iter(entry.async_get_active_flows(hass, {SOURCE_REAUTH})))
    result = await hass.config_entries.flow.async_configure(
        flow["flow_id"], {CONF_DECRYPTION_KEY: key.hex()}
    )
    if result["type"] is FlowResultType.SHOW_PROGRESS:
        # The probe waits for a verified telegram; its end moves the flow on.
        await hass.async_block_till_done()
        result = await hass.config_entries.flow.async_configure(flow["flow_id"])
    return result


def registered(hass: HomeAssistant, entry: ConfigEntry) -> tuple[dict[str, str], list[list[str]]]:
    """Every entity of the integration (entity id -> unique id) and the entry's devices' ids."""
    entities = {
        entity.entity_id: entity.unique_id
        for entity in er.async_get(hass).entities.values()
        if entity.platform == DOMAIN
    }
    devices = [
        sorted(value for domain, value in device.identifiers if domain == DOMAIN)
        for device in dr.async_entries_for_config_entry(dr.async_get(hass), entry.entry_id)
    ]
    return entities, sorted(devices)


class TestMeterExchange:
    """The grid operator exchanges the meter; the recorder keeps what the old one showed."""

    @pytest.fixture(autouse=True)
    def auto_enable_custom_integrations(
        self,
        recorder_mock: object,
        hass: HomeAssistant,
        enable_custom_integrations: None,
        socket_enabled: None,
    ) -> None:
        """As in conftest, with the recorder set up before hass, as it must be."""

    async def test_meter_exchange(self, hass: HomeAssistant, fast_meter: RecordingMeter) -> None:
        """A new meter on the cable (its own serial, key and lower registers): reauth starts by
        itself, the new key is entered and the exchange confirmed. The same entities show the
        new meter's values at once (the old registers' marks are forgotten), their history is
        kept, and nothing of the old meter is left in the registries."""
        old_meter = fast_meter
        with PtyMeter(old_meter) as pty:
            entry = make_entry(
                old_meter, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: pty.path}
            )
            watch = Watch(hass, old_meter, await setup(hass, entry))
            await watch.delivers()
            watch.report("old meter")
            entities, devices = registered(hass, entry)
            assert devices
            (energy,) = [
                entity_id
                for entity_id, unique_id in entities.items()
                if unique_id.startswith(f"{old_meter.serial}_1-0:1.8.0")
            ]
            shown_before = hass.states.get(energy)
            assert shown_before is not None

            new_meter = RecordingMeter(NEW_KEY, serial=NEW_SERIAL, seed=1, interval=INTERVAL)
            watch = Watch(hass, new_meter, entry.runtime_data)
            pty.sim = new_meter
            result = await answer_reauth(hass, entry, NEW_KEY)
            assert result["type"] is FlowResultType.MENU
            assert result["step_id"] == "exchange"
            assert result["description_placeholders"] == {
                "old": old_meter.serial,
                "new": NEW_SERIAL,
            }
            result = await hass.config_entries.flow.async_configure(
                result["flow_id"], {"next_step_id": "exchange_confirm"}
            )
            assert result["type"] is FlowResultType.ABORT
            assert result["reason"] == "meter_exchanged"

            watch.follow(entry.runtime_data)
            await watch.delivers()
            await watch.caught_up()
            watch.report("meter exchange")
            assert entry.runtime_data.data.telegram.serial == NEW_SERIAL
            # Lower than the old meter's last reading, and shown: no mark of the old one held it.
            shown = hass.states.get(energy)
            assert shown is not None
            assert Decimal(shown.state) < Decimal(shown_before.state)

            # The same entity ids and devices, under the new serial; none of the old meter's.
            assert registered(hass, entry) == (
                {
                    entity_id: unique_id.replace(old_meter.serial, NEW_SERIAL)
                    for entity_id, unique_id in entities.items()
                },
                [[value.replace(old_meter.serial, NEW_SERIAL) for value in ids] for ids in devices],
            )

            await async_wait_recording_done(hass)
            states = await get_instance(hass).async_add_executor_job(
                history.state_changes_during_period,
                hass,
                dt_util.utcnow() - timedelta(hours=1),
                None,
                energy,
            )
            recorded = {state.state for state in states[energy]}
            assert shown_before.state in recorded
            assert shown.state in recorded
            assert await hass.config_entries.async_unload(entry.entry_id)


# MQTT.


async def test_broker_restart(
    hass: HomeAssistant, mqtt_entry: MockConfigEntry, broker: Broker, fast_meter: RecordingMeter
) -> None:
    """The broker restarts: MQTT reconnects and resubscribes, frames flow again."""
    meter = fast_meter
    entry = make_entry(
        meter, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_MQTT, CONF_TOPIC: "smarty/raw"}
    )
    async with Dongle(hass, meter, "smarty/raw") as dongle:
        coordinator = await setup(hass, entry)
        watch = Watch(hass, meter, coordinator)
        await watch.delivers()
        await hass.async_add_executor_job(broker.restart)
        await watch.delivers(within=15)
    assert dongle.sent
    watch.report("broker restart")
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_plaintext_injected_on_the_topic(
    hass: HomeAssistant, mqtt_entry: MockConfigEntry, broker: Broker, fast_meter: RecordingMeter
) -> None:
    """Anyone who can publish to the broker can send a plaintext telegram: refused."""
    meter = fast_meter
    entry = make_entry(
        meter, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_MQTT, CONF_TOPIC: "smarty/raw"}
    )
    async with Dongle(hass, meter, "smarty/raw"):
        coordinator = await setup(hass, entry)
        watch = Watch(hass, meter, coordinator)
        await watch.delivers()
        for _ in range(5):
            await publish(hass, "smarty/raw", injected(meter))
        await watch.delivers()
    watch.report("plaintext injected, mqtt")
    assert coordinator.health.stats.rejected["unencrypted"] == 5
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_retained_stale_frame(
    hass: HomeAssistant, mqtt_entry: MockConfigEntry, fast_meter: RecordingMeter
) -> None:
    """A retained frame from before: never shown, live frames are."""
    meter = fast_meter
    stale = meter.next_frame()
    meter.sent.clear()
    await publish(hass, "smarty/raw", stale, retain=True)
    entry = make_entry(
        meter, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_MQTT, CONF_TOPIC: "smarty/raw"}
    )
    async with Dongle(hass, meter, "smarty/raw"):
        coordinator = await setup(hass, entry)
        watch = Watch(hass, meter, coordinator)
        await watch.delivers()
    watch.report("retained stale frame")
    await publish(hass, "smarty/raw", b"", retain=True)
    assert await hass.config_entries.async_unload(entry.entry_id)
