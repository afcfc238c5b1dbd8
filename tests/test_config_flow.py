"""The config flow, end to end: every probe reads a real pty or loopback TCP stream."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, patch

import pytest
from homeassistant.config_entries import SOURCE_USER, ConfigEntryState, ConfigFlowResult
from homeassistant.const import CONF_DEVICE, CONF_HOST, CONF_PORT
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import translation
from pytest_homeassistant_custom_component.common import MockConfigEntry
from serial.tools.list_ports_common import ListPortInfo

from custom_components.smarty_p1 import config_flow
from custom_components.smarty_p1.connection import probe
from custom_components.smarty_p1.const import (
    CONF_CONNECTION_TYPE,
    CONF_DECRYPTION_KEY,
    CONF_MIN_INTERVAL,
    CONF_SERIAL_NUMBER,
    CONNECTION_NETWORK,
    CONNECTION_SERIAL,
    DOMAIN,
)
from custom_components.smarty_p1.p1 import crc16_arc, sources
from custom_components.smarty_p1.p1.simulator import PtyMeter, TcpMeter
from custom_components.smarty_p1.validation import vol

from .conftest import INTERVAL, KEY, wait_for

OTHER_KEY = bytes.fromhex("F0E0D0C0B0A090807060504030201000")
# The simulator's default serial number.
SERIAL = "SAG1030700012345"


# --- The meters are conftest's simulator on a pty or loopback TCP; here, hand-made streams. ---


@pytest.fixture(autouse=True)
def short_probe_timeout() -> Iterator[None]:
    """A probe waits for 25 s on a real meter; here frames come every 50 ms."""
    with patch("custom_components.smarty_p1.const.PROBE_TIMEOUT", 2.0):
        yield


@pytest.fixture
def real_runtime() -> bool:
    """Whether entries are set up for real (parametrize to True) rather than counted."""
    return False


@pytest.fixture(autouse=True)
def no_entry_setup(real_runtime: bool) -> Iterator[AsyncMock | None]:
    """The runtime is tested elsewhere: here a created or reloaded entry only counts setups."""
    if real_runtime:
        yield None
        return
    with (
        patch("custom_components.smarty_p1.async_setup_entry", return_value=True) as setup,
        patch("custom_components.smarty_p1.async_unload_entry", return_value=True),
    ):
        yield setup


@pytest.fixture
def ports(tmp_path: Path) -> Iterator[list[ListPortInfo]]:
    """The serial ports the OS lists (empty unless a test adds some); by-id links in tmp_path."""
    listed: list[ListPortInfo] = []
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    with (
        patch.object(config_flow, "comports", return_value=listed),
        patch.object(sources, "SERIAL_BY_ID", str(by_id)),
    ):
        yield listed


def usb_port(device: str, **attributes: Any) -> ListPortInfo:
    """A port as pyserial describes a USB adapter."""
    port = ListPortInfo(device, skip_link_detection=True)
    for name, value in attributes.items():
        setattr(port, name, value)
    return port


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[bytes | None], Awaitable[int]]]:
    """Start loopback TCP servers that send fixed bytes (None: nothing) to each client."""
    servers: list[asyncio.Server] = []

    async def start(payload: bytes | None) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while not reader.at_eof():
                if payload is not None:
                    writer.write(payload)
                await asyncio.sleep(INTERVAL)
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def closed_port() -> int:
    """A loopback port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def plaintext_telegram(lines: str) -> bytes:
    """A plaintext telegram with a correct CRC."""
    body = f"/Lux5\\253663629_D\r\n\r\n{lines}\r\n!".encode()
    return body + f"{crc16_arc(body):04X}\r\n".encode()


# --- Flow helpers ---


async def assert_translated(
    hass: HomeAssistant, result: ConfigFlowResult, flow: str = "config"
) -> None:
    """Every text the user can see exists in English: titles, fields, menus, errors, aborts."""
    strings = await translation.async_get_translations(hass, "en", flow, {DOMAIN})
    prefix = f"component.{DOMAIN}.{flow}"
    step = f"{prefix}.step.{result.get('step_id')}"
    if result["type"] is FlowResultType.FORM:
        assert f"{step}.title" in strings
        for field in schema(result).schema:
            assert f"{step}.data.{field}" in strings, field
            assert f"{step}.data_description.{field}" in strings, field
    if result["type"] is FlowResultType.MENU:
        assert f"{step}.title" in strings
        for option in ("serial", "network"):
            assert option in result["menu_options"]
            assert f"{step}.menu_options.{option}" in strings, option
    for error in (result.get("errors") or {}).values():
        assert f"{prefix}.error.{error}" in strings, error
    if result["type"] is FlowResultType.ABORT and result.get("translation_domain") is None:
        assert f"{prefix}.abort.{result['reason']}" in strings, result["reason"]


def schema(result: ConfigFlowResult) -> vol.Schema:
    """The schema of a form."""
    assert result["type"] is FlowResultType.FORM
    data_schema = result["data_schema"]
    assert data_schema is not None
    return data_schema


def suggested(result: ConfigFlowResult, field: str) -> Any:
    """The value a form shows in a field (what the user tried, or the entry's value)."""
    for marker in schema(result).schema:
        if marker == field:
            return (marker.description or {}).get("suggested_value")
    raise KeyError(field)


async def start(hass: HomeAssistant, step: str) -> ConfigFlowResult:
    """Open the add flow and pick how the meter is connected."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    return await choose(hass, result, step)


async def choose(hass: HomeAssistant, result: ConfigFlowResult, step: str) -> ConfigFlowResult:
    """Pick a menu entry (the connection type) and check the texts of what comes back."""
    assert result["type"] is FlowResultType.MENU
    assert result["menu_options"] == ["serial", "network", "mqtt_topic"]
    await assert_translated(hass, result)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": step}
    )
    await assert_translated(hass, result)
    return result


async def submit(
    hass: HomeAssistant, result: ConfigFlowResult, data: dict[str, Any]
) -> ConfigFlowResult:
    """Submit a form and check the texts of what comes back."""
    result = await hass.config_entries.flow.async_configure(result["flow_id"], data)
    # Let what the step scheduled (a reload, the entry's save) finish.
    await hass.async_block_till_done()
    await assert_translated(hass, result)
    return result


async def skip_tariff(hass: HomeAssistant, result: ConfigFlowResult) -> ConfigFlowResult:
    """The last step of adding a meter offers the reference-power tariff: leave it off."""
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "tariff"
    return await submit(hass, result, {})


def on_network(port: int) -> dict[str, Any]:
    """Entry data of a loopback bridge."""
    return {CONF_CONNECTION_TYPE: CONNECTION_NETWORK, CONF_HOST: "127.0.0.1", CONF_PORT: port}


def on_serial(device: str) -> dict[str, Any]:
    """Entry data of a serial port."""
    return {CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: device}


def flow_entry(
    connection: dict[str, Any], key: bytes | None = KEY, serial: str = SERIAL
) -> MockConfigEntry:
    """An entry as the flow creates it, for the meter at connection."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=f"Smarty {serial}",
        unique_id=serial,
        data={
            **connection,
            CONF_DECRYPTION_KEY: key.hex().upper() if key else None,
            CONF_SERIAL_NUMBER: serial,
        },
    )


# --- Adding a meter ---


async def test_serial_port_by_id_then_key(
    hass: HomeAssistant,
    pty_meter: PtyMeter,
    ports: list[ListPortInfo],
    no_entry_setup: AsyncMock,
) -> None:
    """The port list offers the stable by-id name; an encrypted meter leads to the key step."""
    by_id = Path(sources.SERIAL_BY_ID) / "usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0"
    by_id.symlink_to(pty_meter.path)
    ports.append(
        usb_port(
            pty_meter.path,
            description="FT232R USB UART",
            manufacturer="FTDI",
            serial_number="A10K1234",
        )
    )
    # Listed, but unplugged since (or never there: this one does not exist).
    ports.append(usb_port("/dev/ttyUSB7", description="n/a"))

    result = await start(hass, "serial")
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "serial"
    selector = schema(result).schema[CONF_DEVICE].config
    assert selector["options"] == [
        {"value": str(by_id), "label": f"{by_id} (FT232R USB UART, FTDI, s/n A10K1234)"},
        {"value": "/dev/ttyUSB7", "label": "/dev/ttyUSB7"},
        {"value": "manual", "label": "Enter the path manually"},
    ]
    assert selector["translation_key"] == "serial_port"
    assert schema(result)({})[CONF_DEVICE] == str(by_id)

    result = await submit(hass, result, {CONF_DEVICE: "/dev/ttyUSB7"})
    assert result["step_id"] == "serial"
    assert result["errors"] == {"base": "cannot_connect"}
    assert suggested(result, CONF_DEVICE) == "/dev/ttyUSB7"

    result = await submit(hass, result, {CONF_DEVICE: str(by_id)})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "key"
    assert result["errors"] == {}

    # As users paste it: lower case, in groups.
    typed = " ".join(KEY.hex()[i : i + 4] for i in range(0, 32, 4))
    result = await submit(hass, result, {CONF_DECRYPTION_KEY: typed})
    result = await skip_tariff(hass, result)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == f"Smarty {SERIAL}"
    assert result["result"].unique_id == SERIAL
    assert result["data"] == {
        CONF_CONNECTION_TYPE: CONNECTION_SERIAL,
        CONF_DEVICE: str(by_id),
        CONF_DECRYPTION_KEY: KEY.hex().upper(),
        CONF_SERIAL_NUMBER: SERIAL,
    }
    await hass.async_block_till_done()
    assert no_entry_setup.call_count == 1


@pytest.mark.parametrize("listed", [False, True])
async def test_serial_path_typed_by_hand(
    hass: HomeAssistant, pty_meter: PtyMeter, ports: list[ListPortInfo], listed: bool
) -> None:
    """No port found leads straight to the path field; "manual" in the list leads there too."""
    if listed:
        ports.append(usb_port("/dev/ttyS0"))
    result = await start(hass, "serial")
    if listed:
        result = await submit(hass, result, {CONF_DEVICE: "manual"})
    assert result["step_id"] == "serial_manual"

    result = await submit(hass, result, {CONF_DEVICE: "/dev/serial/by-id/usb-no-such-cable"})
    assert result["step_id"] == "serial_manual"
    assert result["errors"] == {"base": "cannot_connect"}

    result = await submit(hass, result, {CONF_DEVICE: f" {pty_meter.path} "})
    assert result["step_id"] == "key"
    result = await submit(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
    result = await skip_tariff(hass, result)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_DEVICE] == pty_meter.path


@pytest.mark.parametrize("meter_key", [None])
async def test_plaintext_meter_needs_no_key(hass: HomeAssistant, tcp_meter: TcpMeter) -> None:
    """A meter in plaintext mode is set up at once, without a key question."""
    result = await start(hass, "network")
    assert result["step_id"] == "network"
    result = await submit(
        hass, result, {CONF_HOST: " 127.0.0.1 ", CONF_PORT: float(tcp_meter.port)}
    )
    result = await skip_tariff(hass, result)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {
        CONF_CONNECTION_TYPE: CONNECTION_NETWORK,
        CONF_HOST: "127.0.0.1",
        CONF_PORT: tcp_meter.port,
        CONF_DECRYPTION_KEY: None,
        CONF_SERIAL_NUMBER: SERIAL,
    }


async def test_network_errors_then_success(
    hass: HomeAssistant,
    tcp_meter: TcpMeter,
    serve: Callable[[bytes | None], Awaitable[int]],
) -> None:
    """Each way a bridge can fail has its own error; the form then works with the right port."""
    silent = await serve(None)
    garbage = await serve(os.urandom(512))
    result = await start(hass, "network")

    result = await submit(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: closed_port()})
    assert result["errors"] == {"base": "cannot_connect"}

    with patch("custom_components.smarty_p1.const.PROBE_TIMEOUT", 0.3):
        result = await submit(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: silent})
        assert result["step_id"] == "network"
        assert result["errors"] == {"base": "no_data"}

        result = await submit(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: garbage})
        assert result["errors"] == {"base": "not_a_meter"}
    # The form shows back what was tried.
    assert suggested(result, CONF_PORT) == garbage

    result = await submit(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: tcp_meter.port})
    assert result["step_id"] == "key"
    result = await submit(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
    result = await skip_tariff(hass, result)
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_key_errors(hass: HomeAssistant, tcp_meter: TcpMeter) -> None:
    """A malformed key is refused before probing; a wrong one by the meter's tag."""
    result = await start(hass, "network")
    result = await submit(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: tcp_meter.port})

    result = await submit(hass, result, {CONF_DECRYPTION_KEY: "0001020304 not hex"})
    assert result["step_id"] == "key"
    assert result["errors"] == {CONF_DECRYPTION_KEY: "invalid_key_format"}

    result = await submit(hass, result, {CONF_DECRYPTION_KEY: OTHER_KEY.hex()})
    assert result["step_id"] == "key"
    assert result["errors"] == {"base": "invalid_key"}

    result = await submit(hass, result, {CONF_DECRYPTION_KEY: KEY.hex().upper()})
    result = await skip_tariff(hass, result)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_DECRYPTION_KEY] == KEY.hex().upper()


async def test_telegram_without_serial(
    hass: HomeAssistant, serve: Callable[[bytes | None], Awaitable[int]]
) -> None:
    """A meter that does not send its serial cannot be told apart from another: refused."""
    port = await serve(plaintext_telegram("1-0:1.8.0(000123.456*kWh)"))
    result = await start(hass, "network")
    result = await submit(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: port})
    assert result["step_id"] == "network"
    assert result["errors"] == {"base": "no_serial"}


async def test_unexpected_error(hass: HomeAssistant, caplog: pytest.LogCaptureFixture) -> None:
    """A bug in the probe is logged with its traceback and shown as unknown, not a crash."""
    result = await start(hass, "network")
    with patch.object(config_flow, "probe", side_effect=RuntimeError("boom")):
        result = await submit(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: 1})
    assert result["errors"] == {"base": "unknown"}
    assert "Unexpected error while probing 127.0.0.1:1" in caplog.text


async def test_same_meter_twice(hass: HomeAssistant, tcp_meter: TcpMeter) -> None:
    """The meter's serial is the unique id: a second entry for it aborts."""
    flow_entry(on_serial("/dev/ttyUSB0")).add_to_hass(hass)
    result = await start(hass, "network")
    result = await submit(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: tcp_meter.port})
    result = await submit(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_same_connection_twice(hass: HomeAssistant, tcp_meter: TcpMeter) -> None:
    """A bridge that already feeds an entry is refused before probing it."""
    flow_entry(on_network(tcp_meter.port), serial="SAG0000000000001").add_to_hass(hass)
    result = await start(hass, "network")
    result = await submit(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: tcp_meter.port})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert tcp_meter.frames_sent == 0


# --- Reauth: a new key for the same meter ---


async def test_reauth(hass: HomeAssistant, tcp_meter: TcpMeter, no_entry_setup: AsyncMock) -> None:
    """Only the key is asked; a wrong one is refused live; the right one reloads the entry."""
    entry = flow_entry(on_network(tcp_meter.port), key=OTHER_KEY)
    entry.add_to_hass(hass)
    result = await entry.start_reauth_flow(hass)
    assert result["step_id"] == "reauth_confirm"
    assert list(schema(result).schema) == [CONF_DECRYPTION_KEY]

    result = await submit(hass, result, {CONF_DECRYPTION_KEY: "F0E0"})
    assert result["errors"] == {CONF_DECRYPTION_KEY: "invalid_key_format"}
    result = await submit(hass, result, {CONF_DECRYPTION_KEY: OTHER_KEY.hex()})
    assert result["step_id"] == "reauth_confirm"
    assert result["errors"] == {"base": "invalid_key"}

    result = await submit(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert entry.data[CONF_DECRYPTION_KEY] == KEY.hex().upper()
    assert entry.data[CONF_PORT] == tcp_meter.port
    await hass.async_block_till_done()
    assert no_entry_setup.call_count == 1


async def test_reauth_other_meter(hass: HomeAssistant, tcp_meter: TcpMeter) -> None:
    """A key that verifies on another meter on that port does not become this entry's key."""
    entry = flow_entry(on_network(tcp_meter.port), key=OTHER_KEY, serial="SAG0000000000001")
    entry.add_to_hass(hass)
    result = await entry.start_reauth_flow(hass)
    result = await submit(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "wrong_meter"
    assert result["description_placeholders"] == {"serial": SERIAL}
    assert entry.data[CONF_DECRYPTION_KEY] == OTHER_KEY.hex().upper()


async def test_reauth_frees_the_port_while_probing(
    hass: HomeAssistant, pty_meter: PtyMeter, no_entry_setup: AsyncMock
) -> None:
    """A loaded entry lets go of its port for the probe and gets it back whatever the outcome."""
    entry = flow_entry(on_serial(pty_meter.path), key=OTHER_KEY)
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.LOADED
    states: list[ConfigEntryState] = []

    async def probe_alone(*args: Any) -> Any:
        states.append(entry.state)
        return await probe(*args)

    result = await entry.start_reauth_flow(hass)
    with patch.object(config_flow, "probe", probe_alone):
        result = await submit(hass, result, {CONF_DECRYPTION_KEY: OTHER_KEY.hex()})
        assert result["errors"] == {"base": "invalid_key"}
        assert entry.state is ConfigEntryState.LOADED
        result = await submit(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
    assert result["reason"] == "reauth_successful"
    assert states == [ConfigEntryState.NOT_LOADED, ConfigEntryState.NOT_LOADED]
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert no_entry_setup.call_count == 3


@pytest.mark.parametrize("real_runtime", [True])
async def test_reauth_with_the_runtime(hass: HomeAssistant, pty_meter: PtyMeter) -> None:
    """End to end: an entry reading the pty with a stale key takes the new one and reads on."""
    entry = flow_entry(on_serial(pty_meter.path), key=OTHER_KEY)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_for(hass, lambda: entry.runtime_data.health.stats.rejected["wrong_key"] > 0)

    result = await entry.start_reauth_flow(hass)
    result = await submit(hass, result, {CONF_DECRYPTION_KEY: OTHER_KEY.hex()})
    assert result["errors"] == {"base": "invalid_key"}
    assert entry.state is ConfigEntryState.LOADED
    result = await submit(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
    assert result["reason"] == "reauth_successful"
    await hass.async_block_till_done()

    assert entry.state is ConfigEntryState.LOADED
    await wait_for(hass, lambda: entry.runtime_data.data is not None)
    assert entry.runtime_data.data.telegram.serial == SERIAL
    assert await hass.config_entries.async_unload(entry.entry_id)


# --- Reconfigure: another port or bridge, the same meter ---


async def test_reconfigure_serial_to_network(
    hass: HomeAssistant, tcp_meter: TcpMeter, ports: list[ListPortInfo]
) -> None:
    """The stored key is tried first: it still verifies, so no key question."""
    entry = flow_entry(on_serial("/dev/ttyUSB0"))
    entry.add_to_hass(hass)
    result = await entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.MENU
    result = await choose(hass, result, "network")
    assert result["step_id"] == "network"
    result = await submit(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: tcp_meter.port})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert dict(entry.data) == {
        CONF_CONNECTION_TYPE: CONNECTION_NETWORK,
        CONF_HOST: "127.0.0.1",
        CONF_PORT: tcp_meter.port,
        CONF_DECRYPTION_KEY: KEY.hex().upper(),
        CONF_SERIAL_NUMBER: SERIAL,
    }


async def test_reconfigure_keeps_a_typed_path_on_offer(
    hass: HomeAssistant, pty_meter: PtyMeter, ports: list[ListPortInfo]
) -> None:
    """The entry's path is offered (and preselected) even when the OS does not list it."""
    ports.append(usb_port("/dev/ttyS0"))
    entry = flow_entry(on_serial(pty_meter.path))
    entry.add_to_hass(hass)
    result = await entry.start_reconfigure_flow(hass)
    result = await choose(hass, result, "serial")
    options = schema(result).schema[CONF_DEVICE].config["options"]
    assert [option["value"] for option in options] == [pty_meter.path, "/dev/ttyS0", "manual"]
    assert suggested(result, CONF_DEVICE) == pty_meter.path

    result = await submit(hass, result, {CONF_DEVICE: pty_meter.path})
    assert result["reason"] == "reconfigure_successful"


async def test_reconfigure_asks_for_the_key_when_it_no_longer_verifies(
    hass: HomeAssistant, tcp_meter: TcpMeter
) -> None:
    """After a key change the connection step leads to the key step, saying why."""
    entry = flow_entry(on_network(tcp_meter.port), key=OTHER_KEY)
    entry.add_to_hass(hass)
    result = await entry.start_reconfigure_flow(hass)
    result = await choose(hass, result, "network")
    assert suggested(result, CONF_PORT) == tcp_meter.port
    result = await submit(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: tcp_meter.port})
    assert result["step_id"] == "key"
    assert result["errors"] == {"base": "invalid_key"}
    result = await submit(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
    assert result["reason"] == "reconfigure_successful"
    assert entry.data[CONF_DECRYPTION_KEY] == KEY.hex().upper()


async def test_reconfigure_to_another_meter(hass: HomeAssistant, tcp_meter: TcpMeter) -> None:
    """Another meter on the new connection is refused; the entry is left as it was."""
    entry = flow_entry(on_serial("/dev/ttyUSB0"), serial="SAG0000000000001")
    entry.add_to_hass(hass)
    before = dict(entry.data)
    result = await entry.start_reconfigure_flow(hass)
    result = await choose(hass, result, "network")
    result = await submit(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: tcp_meter.port})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "wrong_meter"
    assert dict(entry.data) == before


async def test_reconfigure_loaded_entry_to_another_meter(
    hass: HomeAssistant, tcp_meter: TcpMeter, no_entry_setup: AsyncMock
) -> None:
    """The entry is set up again on its old connection when the new one is another meter."""
    entry = flow_entry(on_network(closed_port()), serial="SAG0000000000001")
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    result = await entry.start_reconfigure_flow(hass)
    result = await choose(hass, result, "network")
    result = await submit(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: tcp_meter.port})
    assert result["reason"] == "wrong_meter"
    assert entry.state is ConfigEntryState.LOADED
    assert no_entry_setup.call_count == 2


# --- Options ---


async def test_options(hass: HomeAssistant, no_entry_setup: AsyncMock) -> None:
    """The minimum update interval: 0 by default, saved as whole seconds, no reconnect."""
    entry = flow_entry(on_serial("/dev/ttyUSB0"))
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)

    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    await assert_translated(hass, result, "options")
    assert schema(result)({})[CONF_MIN_INTERVAL] == 0
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_MIN_INTERVAL: 30.0}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {CONF_MIN_INTERVAL: 30}
    await hass.async_block_till_done()
    assert no_entry_setup.call_count == 1

    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert suggested(result, CONF_MIN_INTERVAL) == 30
