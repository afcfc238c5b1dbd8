"""The probe of the config flow and the stream opener, against real sockets and a pty."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from unittest.mock import patch

import pytest
from homeassistant.const import CONF_DEVICE, CONF_HOST, CONF_PORT

from custom_components.smarty_p1.connection import (
    CannotConnect,
    Endpoint,
    InvalidKey,
    KeyRequired,
    NoData,
    NotAMeter,
    probe,
)
from custom_components.smarty_p1.const import (
    CONF_CONNECTION_TYPE,
    CONF_DECRYPTION_KEY,
    CONNECTION_NETWORK,
    CONNECTION_SERIAL,
)
from custom_components.smarty_p1.p1 import sources
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter, TcpMeter
from custom_components.smarty_p1.p1.sources import SerialSource, TcpSource

from .conftest import KEY

type Serve = Callable[[bytes, bool], Awaitable[TcpSource]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Loopback servers that send fixed bytes to each client, then close or stay open."""
    servers: list[asyncio.Server] = []

    async def start(payload: bytes, close: bool) -> TcpSource:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(payload)
            await writer.drain()
            if not close:
                await reader.read()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return TcpSource("127.0.0.1", server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def test_endpoint_from_entry_data() -> None:
    """Entry data name a serial device or a host and port; the key is no part of it."""
    serial = Endpoint.from_data(
        {
            CONF_CONNECTION_TYPE: CONNECTION_SERIAL,
            CONF_DEVICE: "/dev/ttyUSB0",
            CONF_DECRYPTION_KEY: "X",
        }
    )
    assert serial == Endpoint(CONNECTION_SERIAL, device="/dev/ttyUSB0")
    assert str(serial) == "/dev/ttyUSB0"
    network = Endpoint.from_data(
        {CONF_CONNECTION_TYPE: CONNECTION_NETWORK, CONF_HOST: "bridge.local", CONF_PORT: "2001"}
    )
    assert network.port == 2001
    assert str(network) == "bridge.local:2001"


async def test_probe_tcp_meter(tcp_meter: TcpMeter, simulator: MeterSimulator) -> None:
    """The first telegram from a bridge, with the right key."""
    telegram = await probe(TcpSource("127.0.0.1", tcp_meter.port), KEY, 2)
    assert telegram.serial == simulator.serial


async def test_probe_errors_on_pty(pty_meter: PtyMeter) -> None:
    """Wrong key, no key: specific errors, with no key material in the message."""
    endpoint = SerialSource(pty_meter.path)
    wrong = bytes(range(16))
    with pytest.raises(InvalidKey) as err:
        await probe(endpoint, wrong, 2)
    assert wrong.hex() not in str(err.value).lower()
    assert err.value.error == "invalid_key"
    with pytest.raises(KeyRequired):
        await probe(endpoint, None, 2)


async def test_probe_stream_errors(serve: Serve) -> None:
    """Closed at once, closed after noise, noise only, silence."""
    with pytest.raises(CannotConnect):
        await probe(await serve(b"", True), None, 2)
    with pytest.raises(NotAMeter):
        await probe(await serve(b"port in use\r\n", True), None, 2)
    with pytest.raises(NotAMeter):
        await probe(await serve(b"\x00garbage" * 10, False), None, 0.2)
    with pytest.raises(NoData) as err:
        await probe(await serve(b"", False), None, 0.2)
    assert err.value.error == "no_data"


async def test_probe_unplugged_during_read(simulator: MeterSimulator) -> None:
    """The cable pulled while the probe reads: cannot_connect."""
    meter = PtyMeter(simulator, count=0)
    endpoint = SerialSource(meter.path)
    task = asyncio.create_task(probe(endpoint, KEY, 2))
    await asyncio.sleep(0.1)
    meter.close()
    with pytest.raises(CannotConnect):
        await task


async def test_a_receiver_error_ends_the_session(serve: Serve) -> None:
    """Whatever the receiver raises ends the session with that error; bytes that arrive after
    the end reach no one."""
    source = await serve(b"first chunk", False)
    received: list[bytes] = []

    def receiver(data: bytes) -> None:
        received.append(data)
        raise RuntimeError("a bug in the receiver")

    await source.open(receiver)
    with pytest.raises(RuntimeError, match="a bug in the receiver"):
        async with asyncio.timeout(5):
            await source.wait_ended()
    source.deliver(b"late bytes")
    assert received == [b"first chunk"]
    await source.close()
    # Closing twice, or a source never opened, is harmless.
    await source.close()
    await TcpSource("127.0.0.1", 9).close()


async def test_cancelled_while_opening_lets_go_of_the_port(quiet_pty: PtyMeter) -> None:
    """Cancelled while it opens (the flow's dialog closed, the entry unloaded): the port it had
    opened already is closed again, not left locked until Home Assistant restarts."""
    looking_up = threading.Event()
    release = threading.Event()

    def slow_by_id(device: str) -> str | None:
        # The by-id lookup runs after the port is open: hold it there.
        looking_up.set()
        release.wait(5)
        return None

    with patch.object(sources, "serial_by_id", slow_by_id):
        opening = asyncio.create_task(SerialSource(quiet_pty.path).open(lambda data: None))
        await asyncio.to_thread(looking_up.wait, 5)
        opening.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await opening
    again = SerialSource(quiet_pty.path)
    await again.open(lambda data: None)
    await again.close()
