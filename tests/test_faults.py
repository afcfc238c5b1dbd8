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
import os
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from homeassistant.components.recorder import history
from homeassistant.config_entries import SOURCE_REAUTH, ConfigEntry, ConfigFlowResult
from homeassistant.const import CONF_DEVICE, CONF_HOST, CONF_PORT, STATE_UNAVAILABLE
from homeassistant.core import Event, EventStateChangedData, HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.recorder import get_instance
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
from custom_components.smarty_p1.coordinator import SmartyCoordinator
from custom_components.smarty_p1.diagnostics import async_get_config_entry_diagnostics
from custom_components.smarty_p1.p1 import MAX_FRAME
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter

from .conftest import INTERVAL, KEY, make_entry, setup, wait_for
from .mqtt_broker import Broker, Dongle, broker, mqtt_entry, publish

__all__ = ["broker", "mqtt_entry"]

pytestmark = pytest.mark.faults

# The sensors whose every state is checked: an energy register, a power, a voltage.
WATCHED = {
    "1-0:1.8.0_energy_import": "1-0:1.8.0",
    "1-0:1.7.0_power_import": "1-0:1.7.0",
    "1-0:32.7.0_voltage_phase_1": "1-0:32.7.0",
}
NEW_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
NEW_SERIAL = "SAG1030700067890"


class RecordingMeter(MeterSimulator):
    """The simulator, keeping the values of every frame it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[dict[str, Decimal | str]] = []

    def next_frame(self) -> bytes:
        frame = super().next_frame()
        self.sent.append(self.last_values)
        return frame


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


@pytest.fixture
async def line(hass: HomeAssistant, meter: RecordingMeter) -> AsyncIterator[tuple[Line, Watch]]:
    """The meter on a pty that sends only what the scenario puts on it."""
    with PtyMeter(meter, count=0) as pty:
        entry = make_entry(
            meter, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: pty.path}
        )
        coordinator = await setup(hass, entry)
        watch = Watch(hass, meter, coordinator)
        wire = Line(pty, meter)
        for _ in range(3):
            await wire.send()
        await watch.caught_up()
        yield wire, watch
        await hass.config_entries.async_unload(entry.entry_id)


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
