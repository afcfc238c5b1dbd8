"""Re-broadcast, end to end: simulator -> pty -> integration -> TCP port -> a P1 reader.

What a client reads is decoded by our own plaintext decoder and compared with what the
simulated meter sent; sockets are real loopback sockets, the listening ones read from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.smarty_p1.const import (
    CONF_MIN_INTERVAL,
    CONF_REBROADCAST_ALL_INTERFACES,
    CONF_REBROADCAST_PORT,
    CONF_TOTAL_INTERVAL,
)
from custom_components.smarty_p1.coordinator import SmartyCoordinator
from custom_components.smarty_p1.diagnostics import async_get_config_entry_diagnostics
from custom_components.smarty_p1.p1 import Telegram, TelegramDecoder
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter
from custom_components.smarty_p1.rebroadcast import MAX_CLIENT_BUFFER, Rebroadcaster

from .conftest import (
    EVERY_TOTAL,
    INTERVAL,
    KEY,
    RecordingMeter,
    encrypt,
    setup,
    state_of,
    wait_for,
    with_values,
)
from .test_config_flow import assert_translated, schema
from .test_coordinator import sensor_id, warnings
from .test_simulator import _sent as sent_values
from .test_tariff_ha import tariff_entry as entry_with_options

LOCALHOST = "127.0.0.1"


# --- Helpers ---


def listening() -> set[tuple[str, int]]:
    """The TCP (IPv4) addresses this process listens on, as the kernel reports them."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    with open("/proc/self/net/tcp", encoding="ascii") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            # 0A: LISTEN.
            if fields[3] == "0A" and fields[9] in inodes:
                address, port = fields[1].split(":")
                host = socket.inet_ntoa(bytes.fromhex(address)[::-1])
                found.add((host, int(port, 16)))
    return found


def free_port() -> int:
    """A loopback port that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        sock.listen()
        port: int = sock.getsockname()[1]
        yield port


def broadcaster_of(coordinator: SmartyCoordinator) -> Rebroadcaster:
    """The running broadcaster of an entry that must have one."""
    assert coordinator.rebroadcast is not None
    return coordinator.rebroadcast


class P1Client:
    """A P1 reader (like DSMR-reader) on the re-broadcast port: it decodes plaintext only."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = TelegramDecoder(key=None)
        self.received = bytearray()

    @classmethod
    async def connect(cls, port: int, host: str = LOCALHOST) -> P1Client:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def telegram(self) -> Telegram:
        """The next telegram, within 5 s; anything else in the stream fails the test."""
        async with asyncio.timeout(5):
            while True:
                data = await self.reader.read(65536)
                assert data, "the re-broadcast closed the connection"
                self.received += data
                items = self.decoder.feed(data)
                assert all(isinstance(item, Telegram) for item in items), items
                if items:
                    assert len(items) == 1, "more telegrams than were accepted"
                    telegram = items[0]
                    assert isinstance(telegram, Telegram)
                    return telegram

    async def closed(self) -> bool:
        """Whether the server closed the connection (EOF or reset) within a second."""
        try:
            async with asyncio.timeout(1):
                while await self.reader.read(65536):
                    pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def clients() -> AsyncIterator[list[P1Client]]:
    """Clients to close at the end of a test, whatever it did."""
    opened: list[P1Client] = []
    yield opened
    for client in opened:
        client.close()


async def connect(
    hass: HomeAssistant, broadcaster: Rebroadcaster, clients: list[P1Client]
) -> P1Client:
    """A client connected and registered by the broadcaster."""
    count = broadcaster.clients
    client = await P1Client.connect(broadcaster.port)
    clients.append(client)
    await wait_for(hass, lambda: broadcaster.clients == count + 1)
    return client


async def send_frame(
    hass: HomeAssistant, meter: PtyMeter, coordinator: SmartyCoordinator, frame: bytes
) -> None:
    """Put one frame on the line and wait until the integration has decoded it."""
    seen = coordinator.health.stats.telegrams + sum(coordinator.health.stats.rejected.values())
    meter.inject(frame)
    await wait_for(
        hass,
        lambda: (
            coordinator.health.stats.telegrams + sum(coordinator.health.stats.rejected.values())
            > seen
        ),
    )


# --- End to end ---


async def test_each_accepted_telegram_reaches_a_client_exactly(
    hass: HomeAssistant, simulator: MeterSimulator, quiet_pty: PtyMeter, clients: list[P1Client]
) -> None:
    """A reader gets the meter's plaintext telegrams, CRC included, and nothing else: not the
    replayed, damaged or foreign frames the integration refuses."""
    entry = entry_with_options(simulator, quiet_pty.path, **{CONF_REBROADCAST_PORT: 0})
    coordinator = await setup(hass, entry)
    broadcaster = broadcaster_of(coordinator)
    assert broadcaster.address.host == LOCALHOST
    assert (LOCALHOST, broadcaster.port) in listening()
    first, second = [await connect(hass, broadcaster, clients) for _ in range(2)]

    sent = bytearray()
    for _ in range(3):
        frame = simulator.next_frame()
        await send_frame(hass, quiet_pty, coordinator, frame)
        for client in (first, second):
            telegram = await client.telegram()
            assert sent_values(telegram) == simulator.last_values
            assert telegram.raw == simulator.last_telegram
            assert telegram.crc is not None
            assert not telegram.encrypted
        sent += simulator.last_telegram
        energy = sensor_id(hass, simulator.serial, "1-0:1.8.0")
        assert state_of(hass, energy).state == str(simulator.last_values["1-0:1.8.0"])

    # Refused by the integration, so never re-broadcast: a replay, a frame that fails its key
    # check, a damaged telegram, and another meter's telegram.
    other = with_values(
        simulator.last_telegram, **{"0-0:42.0.0": "53414731303330373939393939393939"}
    )
    refused = [
        frame,
        frame[:-20] + bytes(20),
        encrypt(simulator.last_telegram.replace(b"1-0:1.8.0(0", b"1-0:1.8.0(9"), 10_000),
        encrypt(other, 10_001),
    ]
    for bad in refused:
        await send_frame(hass, quiet_pty, coordinator, bad)
    assert coordinator.health.guard.stale == 1
    assert coordinator.health.guard.foreign == 1
    frame = simulator.next_frame()
    await send_frame(hass, quiet_pty, coordinator, frame)
    telegram = await first.telegram()
    assert sent_values(telegram) == simulator.last_values
    sent += simulator.last_telegram
    assert first.received == sent

    diagnostics = await async_get_config_entry_diagnostics(hass, entry)
    assert diagnostics["rebroadcast"] == {"port": broadcaster.port, "clients": 2, "dropped": 0}


async def test_off_by_default(
    hass: HomeAssistant, simulator: MeterSimulator, pty_meter: PtyMeter
) -> None:
    """Without the option no port is opened; the entry works as always."""
    before = listening()
    coordinator = await setup(hass, entry_with_options(simulator, pty_meter.path))
    await wait_for(hass, lambda: coordinator.data is not None)
    assert coordinator.rebroadcast is None
    assert listening() == before


async def test_all_interfaces_only_when_asked(
    hass: HomeAssistant, simulator: MeterSimulator, quiet_pty: PtyMeter, clients: list[P1Client]
) -> None:
    entry = entry_with_options(
        simulator,
        quiet_pty.path,
        **{CONF_REBROADCAST_PORT: 0, CONF_REBROADCAST_ALL_INTERFACES: True},
    )
    coordinator = await setup(hass, entry)
    broadcaster = broadcaster_of(coordinator)
    assert ("0.0.0.0", broadcaster.port) in listening()
    client = await connect(hass, broadcaster, clients)
    await send_frame(hass, quiet_pty, coordinator, simulator.next_frame())
    assert (await client.telegram()).raw == simulator.last_telegram


async def test_a_client_that_never_reads_is_dropped_not_waited_for(
    hass: HomeAssistant, simulator: MeterSimulator, quiet_pty: PtyMeter, clients: list[P1Client]
) -> None:
    """Its backlog is bounded; the other reader and the entities get every telegram meanwhile."""
    entry = entry_with_options(
        simulator, quiet_pty.path, **{CONF_REBROADCAST_PORT: 0, **EVERY_TOTAL}
    )
    coordinator = await setup(hass, entry)
    broadcaster = broadcaster_of(coordinator)
    stuck = socket.socket()
    # A small window, so the backlog builds up in the broadcaster rather than in the kernel.
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect((LOCALHOST, broadcaster.port))
    try:
        await wait_for(hass, lambda: broadcaster.clients == 1)
        reader = await connect(hass, broadcaster, clients)
        await send_frame(hass, quiet_pty, coordinator, simulator.next_frame())
        await reader.telegram()
        energy = sensor_id(hass, simulator.serial, "1-0:1.8.0")
        frames = 0
        backlog = 0
        while broadcaster.dropped == 0:
            assert frames < 2000, "the client that never reads was never dropped"
            await send_frame(hass, quiet_pty, coordinator, simulator.next_frame())
            frames += 1
            telegram = await reader.telegram()
            assert sent_values(telegram) == simulator.last_values
            assert state_of(hass, energy).state == str(simulator.last_values["1-0:1.8.0"])
            backlog = max(backlog, *_write_buffers(broadcaster))
        assert backlog <= MAX_CLIENT_BUFFER
        await wait_for(hass, lambda: broadcaster.clients == 1)
        assert broadcaster.dropped == 1
        # The dropped client's connection ends (after what the kernel had already queued).
        stuck.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            while stuck.recv(65536):
                pass
        # The reader goes on.
        await send_frame(hass, quiet_pty, coordinator, simulator.next_frame())
        assert (await reader.telegram()).raw == simulator.last_telegram
    finally:
        stuck.close()


def _write_buffers(broadcaster: Rebroadcaster) -> list[int]:
    return [transport.get_write_buffer_size() for transport in broadcaster._clients]


async def test_port_closes_on_unload(
    hass: HomeAssistant, simulator: MeterSimulator, pty_meter: PtyMeter, clients: list[P1Client]
) -> None:
    before = listening()
    entry = entry_with_options(simulator, pty_meter.path, **{CONF_REBROADCAST_PORT: 0})
    broadcaster = broadcaster_of(await setup(hass, entry))
    port = broadcaster.port
    client = await connect(hass, broadcaster, clients)
    await client.telegram()
    assert await hass.config_entries.async_unload(entry.entry_id)
    assert await client.closed()
    assert listening() == before
    with pytest.raises(ConnectionRefusedError):
        await P1Client.connect(port)


async def test_busy_port_at_setup_is_logged_once_and_the_meter_still_works(
    hass: HomeAssistant,
    simulator: MeterSimulator,
    pty_meter: PtyMeter,
    busy_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    entry = entry_with_options(simulator, pty_meter.path, **{CONF_REBROADCAST_PORT: busy_port})
    coordinator = await setup(hass, entry)
    assert entry.state is ConfigEntryState.LOADED
    assert coordinator.rebroadcast is None
    await wait_for(hass, lambda: coordinator.health.stats.telegrams >= 3)
    energy = sensor_id(hass, simulator.serial, "1-0:1.8.0")
    assert state_of(hass, energy).state not in ("unknown", "unavailable")
    assert warnings(caplog, f"Cannot re-broadcast telegrams on {LOCALHOST}:{busy_port}") == 1
    diagnostics = await async_get_config_entry_diagnostics(hass, entry)
    assert diagnostics["rebroadcast"] is None


# --- The option ---


async def options(hass: HomeAssistant, entry: MockConfigEntry, **user_input: Any) -> Any:
    """Open the options, check the form, submit user_input; the result (reloads awaited)."""
    result = await hass.config_entries.options.async_init(entry.entry_id)
    await assert_translated(hass, result, "options")
    # Off by default: no port, localhost.
    defaults = schema(result)({})
    assert CONF_REBROADCAST_PORT not in defaults
    assert defaults[CONF_REBROADCAST_ALL_INTERFACES] is False
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_MIN_INTERVAL: 0, **user_input}
    )
    await hass.async_block_till_done()
    await assert_translated(hass, result, "options")
    return result


async def test_options_turn_it_on_move_it_and_off(
    hass: HomeAssistant, busy_port: int, clients: list[P1Client]
) -> None:
    """A busy port is refused in the form; a new port or bind reloads the entry, the same
    one saved again does not (the running server holds it: that is no clash)."""
    simulator = RecordingMeter(KEY, interval=INTERVAL)
    with PtyMeter(simulator) as pty_meter:
        await _turn_it_on_move_it_and_off(hass, simulator, pty_meter, busy_port, clients)


async def _turn_it_on_move_it_and_off(
    hass: HomeAssistant,
    simulator: RecordingMeter,
    pty_meter: PtyMeter,
    busy_port: int,
    clients: list[P1Client],
) -> None:
    entry = entry_with_options(simulator, pty_meter.path)
    coordinator = await setup(hass, entry)
    before = listening()

    result = await options(hass, entry, **{CONF_REBROADCAST_PORT: busy_port})
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_REBROADCAST_PORT: "port_in_use"}
    assert entry.options == {}
    assert entry.runtime_data is coordinator

    port = free_port()
    result = await options(hass, entry, **{CONF_REBROADCAST_PORT: port})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {
        CONF_MIN_INTERVAL: 0,
        CONF_TOTAL_INTERVAL: 60,
        CONF_REBROADCAST_PORT: port,
        CONF_REBROADCAST_ALL_INTERFACES: False,
    }
    assert entry.runtime_data is not coordinator
    coordinator = entry.runtime_data
    assert listening() == before | {(LOCALHOST, port)}
    client = await connect(hass, broadcaster_of(coordinator), clients)
    # The meter goes on sending meanwhile: the telegram is one it sent, whichever.
    assert sent_values(await client.telegram()) in simulator.sent

    # Saved again unchanged: no reload, the client stays connected.
    result = await options(hass, entry, **{CONF_REBROADCAST_PORT: port})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.runtime_data is coordinator
    await client.telegram()

    # The same port on all interfaces: the running server's own port is no clash.
    result = await options(
        hass, entry, **{CONF_REBROADCAST_PORT: port, CONF_REBROADCAST_ALL_INTERFACES: True}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.runtime_data is not coordinator
    assert await client.closed()
    assert listening() == before | {("0.0.0.0", port)}

    # Emptied: off again, nothing listens.
    result = await options(hass, entry)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {CONF_MIN_INTERVAL: 0, CONF_TOTAL_INTERVAL: 60}
    assert entry.runtime_data.rebroadcast is None
    assert listening() == before
