"""The config flow, end to end: every probe reads a real pty or loopback TCP stream."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from unittest.mock import AsyncMock, patch

import pytest
from homeassistant.config_entries import SOURCE_USER, ConfigEntryState, ConfigFlowResult
from homeassistant.const import CONF_DEVICE, CONF_HOST, CONF_PORT
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import translation
from homeassistant.helpers.selector import SerialPortSelector
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.smarty_p1 import config_flow
from custom_components.smarty_p1.connection import probe
from custom_components.smarty_p1.const import (
    CONF_AUTH_KEY,
    CONF_CONNECTION_TYPE,
    CONF_DECRYPTION_KEY,
    CONF_MIN_INTERVAL,
    CONF_SERIAL_NUMBER,
    CONF_TOTAL_INTERVAL,
    CONNECTION_NETWORK,
    CONNECTION_SERIAL,
    DOMAIN,
)
from custom_components.smarty_p1.exchange import async_exchange_meter, moved_id
from custom_components.smarty_p1.p1 import crc16_arc
from custom_components.smarty_p1.p1.simulator import PtyMeter, TcpMeter
from custom_components.smarty_p1.p1.sources import PortInUse, SerialSource
from custom_components.smarty_p1.validation import vol

from .conftest import INTERVAL, KEY, wait_for

OTHER_KEY = bytes.fromhex("F0E0D0C0B0A090807060504030201000")
# The simulator's default serial number.
SERIAL = "SAG1030700012345"
# The meter that the simulator's replaced (a meter exchange) or that has an entry of its own.
OLD_SERIAL = "SAG0000000000001"


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
    """Every text the user can see exists in English, with the placeholders it needs given:
    titles, fields, menus, progress, errors, aborts."""
    strings = await translation.async_get_translations(hass, "en", flow, {DOMAIN})
    prefix = f"component.{DOMAIN}.{flow}"
    step = f"{prefix}.step.{result.get('step_id')}"
    given = result.get("description_placeholders") or {}
    if result["type"] is FlowResultType.FORM:
        assert f"{step}.title" in strings
        for field in schema(result).schema:
            assert f"{step}.data.{field}" in strings, field
            assert f"{step}.data_description.{field}" in strings, field
    if result["type"] is FlowResultType.MENU:
        assert f"{step}.title" in strings
        strings.get(f"{step}.description", "").format(**given)
        options = result["menu_options"]
        assert isinstance(options, list)
        for option in options:
            assert f"{step}.menu_options.{option}" in strings, option
    if result["type"] is FlowResultType.SHOW_PROGRESS:
        assert f"{step}.title" in strings
        strings[f"{prefix}.progress.{result['progress_action']}"].format(**given)
    for error in (result.get("errors") or {}).values():
        assert f"{prefix}.error.{error}" in strings, error
    if result["type"] is FlowResultType.ABORT and result.get("translation_domain") is None:
        strings[f"{prefix}.abort.{result['reason']}"].format(**given)


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


async def choose(
    hass: HomeAssistant,
    result: ConfigFlowResult,
    step: str,
    options: tuple[str, ...] = ("serial", "network", "mqtt_topic"),
) -> ConfigFlowResult:
    """Pick a menu entry (by default the connection type) and check the texts of both."""
    assert result["type"] is FlowResultType.MENU
    assert result["menu_options"] == list(options)
    await assert_translated(hass, result)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": step}
    )
    return await settle(hass, result)


async def submit(
    hass: HomeAssistant, result: ConfigFlowResult, data: dict[str, Any]
) -> ConfigFlowResult:
    """Submit a form; what comes back once the probe it starts has answered."""
    result = await hass.config_entries.flow.async_configure(result["flow_id"], data)
    return await settle(hass, result)


async def settle(hass: HomeAssistant, result: ConfigFlowResult) -> ConfigFlowResult:
    """Let what a step started finish (a probe shown as progress, a reload, the entry's save)
    and check the texts of what the user sees on the way."""
    await assert_translated(hass, result)
    if result["type"] is FlowResultType.SHOW_PROGRESS:
        assert result["step_id"] == "probe"
        # The probe's end moves the flow on; the frontend then asks for the next step.
        await hass.async_block_till_done()
        result = await hass.config_entries.flow.async_configure(result["flow_id"])
    await hass.async_block_till_done()
    await assert_translated(hass, result)
    return result


async def skip_tariff(hass: HomeAssistant, result: ConfigFlowResult) -> ConfigFlowResult:
    """The last step of adding a meter offers the reference-power tariff: leave it off."""
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "tariff"
    return await submit(hass, result, {})


async def submit_probing(
    hass: HomeAssistant, result: ConfigFlowResult, data: dict[str, Any]
) -> ConfigFlowResult:
    """Submit a form whose probe is still waiting when the answer comes: the progress."""
    result = await hass.config_entries.flow.async_configure(result["flow_id"], data)
    assert result["type"] is FlowResultType.SHOW_PROGRESS
    await assert_translated(hass, result)
    return result


async def close_dialog(hass: HomeAssistant, result: ConfigFlowResult) -> None:
    """The user closes the dialog; what the flow started to clean up is done."""
    hass.config_entries.flow.async_abort(result["flow_id"])
    await hass.async_block_till_done()


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


async def test_serial_port_then_key(
    hass: HomeAssistant, pty_meter: PtyMeter, no_entry_setup: AsyncMock
) -> None:
    """Home Assistant's serial port selector (its ports by-id, ESPHome serial proxies, or a
    path typed in); an encrypted meter then leads to the key step."""
    result = await start(hass, "serial")
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "serial"
    assert isinstance(schema(result).schema[CONF_DEVICE], SerialPortSelector)

    missing = "/dev/serial/by-id/usb-no-such-cable"
    result = await submit(hass, result, {CONF_DEVICE: missing})
    assert result["step_id"] == "serial"
    assert result["errors"] == {"base": "cannot_connect"}
    assert suggested(result, CONF_DEVICE) == missing

    result = await submit(hass, result, {CONF_DEVICE: f" {pty_meter.path} "})
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
        CONF_DEVICE: pty_meter.path,
        CONF_DECRYPTION_KEY: KEY.hex().upper(),
        CONF_SERIAL_NUMBER: SERIAL,
    }
    assert no_entry_setup.call_count == 1


async def test_serial_proxy_goes_to_serialx(
    hass: HomeAssistant, caplog: pytest.LogCaptureFixture
) -> None:
    """An ESPHome serial proxy (as the selector offers it) is opened by serialx, which pyserial
    cannot; here no ESPHome integration registered its handler, so it cannot connect."""
    caplog.set_level("DEBUG", "custom_components.smarty_p1")
    result = await start(hass, "serial")
    proxy = "esphome-hass://esphome/01JQ5Z8ESPHOMEENTRY?port_name=P1"
    result = await submit(hass, result, {CONF_DEVICE: proxy})
    assert result["step_id"] == "serial"
    assert result["errors"] == {"base": "cannot_connect"}
    assert suggested(result, CONF_DEVICE) == proxy
    # serialx's words, not pyserial's ("protocol 'esphome-hass' not known").
    assert "No handler registered for URI scheme 'esphome-hass://'" in caplog.text


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


async def test_known_meter_on_a_new_connection(
    hass: HomeAssistant, tcp_meter: TcpMeter, no_entry_setup: AsyncMock
) -> None:
    """Adding a meter that has an entry (its cable moved, its bridge got a new address) moves
    that entry to where the meter answered now, says so, and reloads it."""
    entry = flow_entry(on_serial("/dev/ttyUSB0"), key=OTHER_KEY)
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    result = await start(hass, "network")
    result = await submit(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: tcp_meter.port})
    result = await submit(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "connection_updated"
    assert result["description_placeholders"] == {"endpoint": f"127.0.0.1:{tcp_meter.port}"}
    assert dict(entry.data) == {
        **on_network(tcp_meter.port),
        # The serial port's field is cleared: an entry has one connection.
        CONF_DEVICE: None,
        CONF_DECRYPTION_KEY: KEY.hex().upper(),
        CONF_SERIAL_NUMBER: SERIAL,
    }
    assert entry.state is ConfigEntryState.LOADED
    assert no_entry_setup.call_count == 2
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1


async def test_same_connection_twice(hass: HomeAssistant, tcp_meter: TcpMeter) -> None:
    """A bridge that already feeds an entry is refused before probing it."""
    flow_entry(on_network(tcp_meter.port), serial=OLD_SERIAL).add_to_hass(hass)
    result = await start(hass, "network")
    result = await submit(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: tcp_meter.port})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert tcp_meter.frames_sent == 0


# --- The probe's progress ---


async def test_probe_shows_progress(hass: HomeAssistant, quiet_pty: PtyMeter) -> None:
    """The probe may wait 25 s for a telegram: the dialog says for what, then the answer."""
    result = await start(hass, "serial")
    with patch("custom_components.smarty_p1.const.PROBE_TIMEOUT", 0.3):
        result = await submit_probing(hass, result, {CONF_DEVICE: quiet_pty.path})
        assert result["step_id"] == "probe"
        assert result["progress_action"] == "probe"
        assert result["description_placeholders"] == {
            "endpoint": quiet_pty.path,
            "timeout": "0.3",
        }
        result = await settle(hass, result)
    assert result["step_id"] == "serial"
    assert result["errors"] == {"base": "no_data"}


async def test_closing_the_dialog_stops_the_probe(hass: HomeAssistant, quiet_pty: PtyMeter) -> None:
    """Closed while the probe waits: the probe stops at once and the port is free again."""
    result = await start(hass, "serial")
    with patch("custom_components.smarty_p1.const.PROBE_TIMEOUT", 60.0):
        result = await submit_probing(hass, result, {CONF_DEVICE: quiet_pty.path})
        await close_dialog(hass, result)
        # Opened exclusively, as the probe had it: free within moments, not after 60 s.
        deadline = time.monotonic() + 2
        port = SerialSource(quiet_pty.path)
        while True:
            try:
                await port.open(lambda data: None)
            except PortInUse:
                assert time.monotonic() < deadline, "the probe still holds the port"
                await asyncio.sleep(0.01)
            else:
                break
        await port.close()


async def test_closing_the_reauth_dialog_gives_the_port_back(
    hass: HomeAssistant, quiet_pty: PtyMeter, no_entry_setup: AsyncMock
) -> None:
    """The entry lets go of its port for the probe; closing the dialog gives it back."""
    entry = flow_entry(on_serial(quiet_pty.path), key=OTHER_KEY)
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    result = await entry.start_reauth_flow(hass)
    with patch("custom_components.smarty_p1.const.PROBE_TIMEOUT", 60.0):
        result = await submit_probing(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
        while_probing = entry.state
        await close_dialog(hass, result)
    assert while_probing is ConfigEntryState.NOT_LOADED
    assert entry.state is ConfigEntryState.LOADED
    assert no_entry_setup.call_count == 2
    assert entry.data[CONF_DECRYPTION_KEY] == OTHER_KEY.hex().upper()


async def test_entry_removed_while_probing(
    hass: HomeAssistant, quiet_pty: PtyMeter, no_entry_setup: AsyncMock
) -> None:
    """The entry is deleted while its reauth probes: its flow ends, nothing is set up again."""
    entry = flow_entry(on_serial(quiet_pty.path), key=OTHER_KEY)
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    result = await entry.start_reauth_flow(hass)
    with patch("custom_components.smarty_p1.const.PROBE_TIMEOUT", 60.0):
        await submit_probing(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
        await hass.config_entries.async_remove(entry.entry_id)
        await hass.async_block_till_done()
    assert not hass.config_entries.flow.async_progress()
    assert hass.config_entries.async_entries(DOMAIN) == []
    assert no_entry_setup.call_count == 1


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
    assert no_entry_setup.call_count == 1


@pytest.mark.parametrize(
    ("new_key", "kept"), [(KEY, True), (None, False)], ids=["same-key", "new-key"]
)
async def test_reauth_forgets_a_learned_key_with_a_new_key(
    hass: HomeAssistant,
    tcp_meter: TcpMeter,
    no_entry_setup: AsyncMock,
    new_key: bytes | None,
    kept: bool,
) -> None:
    """An authentication key learned under the old decryption key does not hold under a new
    one: a reauth with another key drops it; the same key (entered again) keeps it."""
    learned = {"key": "00" * 16, "block_counts": [40]}
    entry = flow_entry(on_network(tcp_meter.port), key=new_key or OTHER_KEY)
    entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(entry, data={**entry.data, CONF_AUTH_KEY: learned})
    result = await entry.start_reauth_flow(hass)
    result = await submit(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
    assert result["reason"] == "reauth_successful"
    assert (entry.data.get(CONF_AUTH_KEY) == learned) is kept
    if not kept:
        assert not entry.data.get(CONF_AUTH_KEY)


async def test_reauth_frees_the_port_while_probing(
    hass: HomeAssistant, pty_meter: PtyMeter, no_entry_setup: AsyncMock
) -> None:
    """A loaded entry lets go of its port for the probe and gets it back whatever the outcome."""
    entry = flow_entry(on_serial(pty_meter.path), key=OTHER_KEY)
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.LOADED
    states: list[ConfigEntryState] = []

    async def probe_alone(*args: Any, **kwargs: Any) -> Any:
        states.append(entry.state)
        return await probe(*args, **kwargs)

    result = await entry.start_reauth_flow(hass)
    with patch.object(config_flow, "probe", probe_alone):
        result = await submit(hass, result, {CONF_DECRYPTION_KEY: OTHER_KEY.hex()})
        assert result["errors"] == {"base": "invalid_key"}
        assert entry.state is ConfigEntryState.LOADED
        result = await submit(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
    assert result["reason"] == "reauth_successful"
    assert states == [ConfigEntryState.NOT_LOADED, ConfigEntryState.NOT_LOADED]
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

    assert entry.state is ConfigEntryState.LOADED
    await wait_for(hass, lambda: entry.runtime_data.data is not None)
    assert entry.runtime_data.data.telegram.serial == SERIAL
    assert await hass.config_entries.async_unload(entry.entry_id)


# --- A meter exchange: another meter answers for an entry ---


# Unique ids after the serial: a sensor in today's scheme and in the next one, a secondary
# sensor, a health sensor.
ENTITY_SUFFIXES = ("1-0:1.8.0_energy_import", "1-0:1.8.0", "1-0:21.7.0_phase_1", "last_telegram")


def exchanged_entry(hass: HomeAssistant, connection: dict[str, Any]) -> MockConfigEntry:
    """The entry of the meter OLD_SERIAL, which the simulated meter replaced: entities in both
    unique-id schemes, the meter's and an M-Bus device, stored registers, a learned auth key."""
    entry = flow_entry(connection, key=OTHER_KEY, serial=OLD_SERIAL)
    entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(
        entry, data={**entry.data, CONF_AUTH_KEY: "00112233445566778899AABBCCDDEEFF"}
    )
    entities = er.async_get(hass)
    for suffix in ENTITY_SUFFIXES:
        entities.async_get_or_create("sensor", DOMAIN, f"{OLD_SERIAL}_{suffix}", config_entry=entry)
    devices = dr.async_get(hass)
    devices.async_get_or_create(
        config_entry_id=entry.entry_id,
        identifiers={(DOMAIN, OLD_SERIAL)},
        serial_number=OLD_SERIAL,
        name="Smarty",
    )
    devices.async_get_or_create(
        config_entry_id=entry.entry_id,
        identifiers={(DOMAIN, f"{OLD_SERIAL}_mbus_1")},
        serial_number="G0012345678901",
        name="Gas meter",
    )
    # Another integration's entity whose id happens to start with the serial: not ours.
    other = MockConfigEntry(domain="other")
    other.add_to_hass(hass)
    entities.async_get_or_create("sensor", "other", f"{OLD_SERIAL}_x", config_entry=other)
    return entry


def registry_view(hass: HomeAssistant, entry: MockConfigEntry) -> dict[str, Any]:
    """An entry's entities (entity id -> unique id) and devices (identifiers, serial)."""
    entities = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    devices = dr.async_entries_for_config_entry(dr.async_get(hass), entry.entry_id)
    return {
        "entities": {entity.entity_id: entity.unique_id for entity in entities},
        "devices": sorted(
            (sorted(device.identifiers), device.serial_number, device.name) for device in devices
        ),
    }


async def reauth_to_exchange(hass: HomeAssistant, entry: MockConfigEntry) -> ConfigFlowResult:
    """Reauth with the key of the meter that answers now: the exchange is offered."""
    result = await entry.start_reauth_flow(hass)
    result = await submit(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
    assert result["type"] is FlowResultType.MENU
    assert result["step_id"] == "exchange"
    assert result["description_placeholders"] == {"old": OLD_SERIAL, "new": SERIAL}
    return result


async def test_reauth_after_a_meter_exchange(
    hass: HomeAssistant,
    tcp_meter: TcpMeter,
    no_entry_setup: AsyncMock,
    hass_storage: dict[str, Any],
) -> None:
    """The new meter's key verifies, its serial is another: confirmed, the entry moves to it
    with its entities and devices, and forgets what was the old meter's."""
    entry = exchanged_entry(hass, on_network(tcp_meter.port))
    await hass.config_entries.async_setup(entry.entry_id)
    store = f"{DOMAIN}.{entry.entry_id}.registers"
    hass_storage[store] = {"version": 1, "minor_version": 2, "key": store, "data": {}}
    before = registry_view(hass, entry)

    result = await reauth_to_exchange(hass, entry)
    result = await choose(
        hass, result, "exchange_confirm", ("exchange_confirm", "exchange_decline")
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "meter_exchanged"
    assert result["description_placeholders"] == {"old": OLD_SERIAL, "new": SERIAL}

    assert entry.unique_id == SERIAL
    assert entry.title == f"Smarty {SERIAL}"
    assert dict(entry.data) == {
        **on_network(tcp_meter.port),
        CONF_DECRYPTION_KEY: KEY.hex().upper(),
        CONF_SERIAL_NUMBER: SERIAL,
    }
    assert store not in hass_storage
    after = registry_view(hass, entry)
    # The same entity ids, now with the new serial.
    assert after["entities"] == {
        entity_id: unique_id.replace(OLD_SERIAL, SERIAL)
        for entity_id, unique_id in before["entities"].items()
    }
    assert after["devices"] == [
        ([(DOMAIN, SERIAL)], SERIAL, "Smarty"),
        ([(DOMAIN, f"{SERIAL}_mbus_1")], "G0012345678901", "Gas meter"),
    ]
    assert er.async_get(hass).async_get_entity_id("sensor", "other", f"{OLD_SERIAL}_x")
    # Unloaded for the probe, set up again for the offer, and once more after the exchange.
    assert entry.state is ConfigEntryState.LOADED
    assert no_entry_setup.call_count == 3


@pytest.mark.parametrize("answer", ["exchange_decline", "close"])
async def test_exchange_declined(
    hass: HomeAssistant, tcp_meter: TcpMeter, no_entry_setup: AsyncMock, answer: str
) -> None:
    """Not an exchange after all (declined, or the dialog closed): everything stays as it was,
    and the entry runs again."""
    entry = exchanged_entry(hass, on_network(tcp_meter.port))
    await hass.config_entries.async_setup(entry.entry_id)
    data, before = dict(entry.data), registry_view(hass, entry)

    result = await reauth_to_exchange(hass, entry)
    assert entry.state is ConfigEntryState.LOADED
    if answer == "close":
        await close_dialog(hass, result)
    else:
        result = await choose(hass, result, answer, ("exchange_confirm", "exchange_decline"))
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == "exchange_declined"
        assert result["description_placeholders"] == {"old": OLD_SERIAL, "new": SERIAL}
    assert entry.unique_id == OLD_SERIAL
    assert dict(entry.data) == data
    assert registry_view(hass, entry) == before
    assert entry.state is ConfigEntryState.LOADED
    assert no_entry_setup.call_count == 2


async def test_reauth_finds_a_meter_with_an_entry_of_its_own(
    hass: HomeAssistant, tcp_meter: TcpMeter, no_entry_setup: AsyncMock
) -> None:
    """The meter that answers has its own entry: no exchange to offer, nothing changes."""
    flow_entry(on_serial("/dev/ttyUSB0")).add_to_hass(hass)
    entry = flow_entry(on_network(tcp_meter.port), key=OTHER_KEY, serial=OLD_SERIAL)
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    result = await entry.start_reauth_flow(hass)
    result = await submit(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "wrong_meter"
    assert result["description_placeholders"] == {"serial": SERIAL}
    assert entry.data[CONF_DECRYPTION_KEY] == OTHER_KEY.hex().upper()
    assert entry.state is ConfigEntryState.LOADED


async def test_exchange_of_an_entry_not_running(
    hass: HomeAssistant, no_entry_setup: AsyncMock
) -> None:
    """A repair of a plaintext meter calls the exchange alone: the entry's data stays but for
    the serial, and an entry that was not running is not started by it."""
    entry = exchanged_entry(hass, on_serial("/dev/ttyUSB0"))
    await async_exchange_meter(hass, entry, SERIAL)
    assert entry.unique_id == SERIAL
    assert dict(entry.data) == {
        **on_serial("/dev/ttyUSB0"),
        CONF_DECRYPTION_KEY: OTHER_KEY.hex().upper(),
        CONF_SERIAL_NUMBER: SERIAL,
    }
    assert sorted(registry_view(hass, entry)["entities"].values()) == sorted(
        f"{SERIAL}_{suffix}"
        for suffix in (
            "1-0:1.8.0_energy_import",
            "1-0:1.8.0",
            "1-0:21.7.0_phase_1",
            "last_telegram",
        )
    )
    assert entry.state is ConfigEntryState.NOT_LOADED
    assert no_entry_setup.call_count == 0


def test_moved_ids() -> None:
    """The serial is the whole id or its prefix up to an underscore, never just a start."""
    assert moved_id("SAG1", "SAG1", "SAG2") == "SAG2"
    assert moved_id("SAG1_mbus_1", "SAG1", "SAG2") == "SAG2_mbus_1"
    assert moved_id("SAG1_1-0:1.8.0", "SAG1", "SAG2") == "SAG2_1-0:1.8.0"
    assert moved_id("SAG12_1-0:1.8.0", "SAG1", "SAG2") is None
    assert moved_id("x_SAG1", "SAG1", "SAG2") is None


# --- Reconfigure: another port or bridge, the same meter ---


async def test_reconfigure_serial_to_network(hass: HomeAssistant, tcp_meter: TcpMeter) -> None:
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
        CONF_DEVICE: None,
        CONF_HOST: "127.0.0.1",
        CONF_PORT: tcp_meter.port,
        CONF_DECRYPTION_KEY: KEY.hex().upper(),
        CONF_SERIAL_NUMBER: SERIAL,
    }

    # Back to a serial port: the bridge's fields are cleared in turn, the port is offered empty.
    result = await entry.start_reconfigure_flow(hass)
    result = await choose(hass, result, "serial")
    assert suggested(result, CONF_DEVICE) is None


async def test_reconfigure_offers_the_entry_s_port(
    hass: HomeAssistant, pty_meter: PtyMeter
) -> None:
    """The entry's port is preselected, whether the selector lists it or it was typed."""
    entry = flow_entry(on_serial(pty_meter.path))
    entry.add_to_hass(hass)
    result = await entry.start_reconfigure_flow(hass)
    result = await choose(hass, result, "serial")
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


async def test_reconfigure_to_another_meter(
    hass: HomeAssistant, tcp_meter: TcpMeter, no_entry_setup: AsyncMock
) -> None:
    """Another meter on the new connection: the exchange is offered while the entry reads its
    old connection again; confirmed, the entry moves to the new meter and connection."""
    entry = exchanged_entry(hass, on_serial("/dev/ttyUSB0"))
    await hass.config_entries.async_setup(entry.entry_id)
    result = await entry.start_reconfigure_flow(hass)
    result = await choose(hass, result, "network")
    result = await submit(hass, result, {CONF_HOST: "127.0.0.1", CONF_PORT: tcp_meter.port})
    assert result["step_id"] == "key"
    result = await submit(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
    assert result["type"] is FlowResultType.MENU
    assert result["step_id"] == "exchange"
    assert entry.state is ConfigEntryState.LOADED
    assert entry.data[CONF_DEVICE] == "/dev/ttyUSB0"

    result = await choose(
        hass, result, "exchange_confirm", ("exchange_confirm", "exchange_decline")
    )
    assert result["reason"] == "meter_exchanged"
    assert entry.unique_id == SERIAL
    assert dict(entry.data) == {
        **on_network(tcp_meter.port),
        CONF_DEVICE: None,
        CONF_DECRYPTION_KEY: KEY.hex().upper(),
        CONF_SERIAL_NUMBER: SERIAL,
    }
    assert entry.state is ConfigEntryState.LOADED


# --- Options ---


async def test_options(hass: HomeAssistant, no_entry_setup: AsyncMock) -> None:
    """The minimum update intervals: 0 (every telegram) and 60 s (totals) by default, saved as
    whole seconds, no reconnect."""
    entry = flow_entry(on_serial("/dev/ttyUSB0"))
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)

    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    await assert_translated(hass, result, "options")
    assert schema(result)({})[CONF_MIN_INTERVAL] == 0
    assert schema(result)({})[CONF_TOTAL_INTERVAL] == 60
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_MIN_INTERVAL: 30.0, CONF_TOTAL_INTERVAL: 300.0}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert entry.options == {CONF_MIN_INTERVAL: 30, CONF_TOTAL_INTERVAL: 300}
    await hass.async_block_till_done()
    assert no_entry_setup.call_count == 1

    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert suggested(result, CONF_MIN_INTERVAL) == 30
