"""Frames from an MQTT topic, through a real mosquitto broker and Home Assistant's MQTT client."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from unittest.mock import patch

import pytest
from homeassistant.config_entries import SOURCE_USER, ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.smarty_p1.connection import Endpoint, InvalidTopic, probe, source_for
from custom_components.smarty_p1.const import (
    CONF_CONNECTION_TYPE,
    CONF_DECRYPTION_KEY,
    CONF_TOPIC,
    CONNECTION_MQTT,
    DOMAIN,
)
from custom_components.smarty_p1.coordinator import SmartyCoordinator
from custom_components.smarty_p1.mqtt_source import MqttSource, payload_bytes
from custom_components.smarty_p1.p1.simulator import MeterSimulator

from .conftest import KEY, encrypt, make_entry, setup, state_of, wait_for, with_values
from .mqtt_broker import Broker, Dongle, broker, mqtt_entry, publish

# The probe is shown as progress: these wait for its answer.
from .test_config_flow import skip_tariff, submit

__all__ = ["broker", "mqtt_entry"]

TOPIC = "smarty/p1/raw"


@pytest.fixture(autouse=True)
def short_probe_timeout() -> Iterator[None]:
    """A probe waits 25 s for a real meter; here frames come every 50 ms."""
    with patch("custom_components.smarty_p1.const.PROBE_TIMEOUT", 3.0):
        yield


def mqtt_meter_entry(simulator: MeterSimulator) -> MockConfigEntry:
    """The entry of the simulated meter on TOPIC."""
    return make_entry(simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_MQTT, CONF_TOPIC: TOPIC})


def energy_id(hass: HomeAssistant, simulator: MeterSimulator) -> str:
    """The entity id of the imported-energy sensor."""
    found = er.async_get(hass).async_get_entity_id(
        "sensor", DOMAIN, f"{simulator.serial}_1-0:1.8.0"
    )
    assert found is not None
    return found


def mixed(index: int, frame: bytes) -> list[bytes | str]:
    """Binary, hex text, and a frame split over three messages, in turn."""
    match index % 3:
        case 0:
            return [frame]
        case 1:
            return [frame.hex().upper()]
        case _:
            third = len(frame) // 3
            return [frame[:third], frame[third : 2 * third], frame[2 * third :]]


def test_payload_bytes() -> None:
    """Binary payloads pass as they are; hex text, in any case and with line breaks, decodes."""
    frame = b"\xdb\x08SAGgp\x00\x12\x34\x82\x01\x0a\x30\x00\x00\x00\x01"
    assert payload_bytes(frame) == frame
    assert payload_bytes(frame.hex()) == frame
    assert payload_bytes(frame.hex().upper().encode()) == frame
    assert payload_bytes(f"{frame.hex()[:10]}\r\n{frame.hex()[10:]} ") == frame
    assert payload_bytes(b"/Lux5\\253833635_D\r\n") == b"/Lux5\\253833635_D\r\n"
    # An odd number of hex digits is not hex text.
    assert payload_bytes(b"abc") == b"abc"


async def test_mqtt_entry_shows_the_meter(
    hass: HomeAssistant, mqtt_entry: MockConfigEntry, simulator: MeterSimulator
) -> None:
    """Binary, hex and split messages all reach the sensors with the values the meter sent."""
    entry = mqtt_meter_entry(simulator)
    async with Dongle(hass, simulator, TOPIC, mixed) as dongle:
        coordinator = await setup(hass, entry)
        await wait_for(hass, lambda: coordinator.health.stats.telegrams >= 9)
        energy = state_of(hass, energy_id(hass, simulator))
        sent = {values["1-0:1.8.0"] for values in dongle.sent}
        assert Decimal(energy.state) in sent
    assert coordinator.health.stats.rejected.total() == 0
    assert isinstance(coordinator.source, MqttSource)
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_retained_frame_is_not_news(
    hass: HomeAssistant, mqtt_entry: MockConfigEntry, simulator: MeterSimulator
) -> None:
    """A retained frame (hours old, maybe) is dropped; only live frames reach the sensors."""
    # A frame from long ago, with a reading the meter no longer has.
    simulator.next_frame()
    stale_energy = Decimal("1.000")
    old = with_values(simulator.last_telegram, **{"1-0:1.8.0": "000001.000*kWh"})
    await publish(hass, TOPIC, encrypt(old, 1), retain=True)
    entry = mqtt_meter_entry(simulator)
    coordinator = await setup(hass, entry)
    source = coordinator.source
    assert isinstance(source, MqttSource)
    await wait_for(hass, lambda: source.retained_dropped == 1)
    assert coordinator.health.stats.telegrams == 0
    async with Dongle(hass, simulator, TOPIC) as dongle:
        await wait_for(hass, lambda: coordinator.health.stats.telegrams >= 2)
    entity = energy_id(hass, simulator)
    assert Decimal(state_of(hass, entity).state) != stale_energy
    assert Decimal(state_of(hass, entity).state) in {v["1-0:1.8.0"] for v in dongle.sent}
    assert coordinator.health.stats.telegrams == len(dongle.sent)
    assert await hass.config_entries.async_unload(entry.entry_id)
    await publish(hass, TOPIC, b"", retain=True)
    await hass.async_block_till_done()


async def test_replayed_frame_is_not_news(
    hass: HomeAssistant, mqtt_entry: MockConfigEntry, simulator: MeterSimulator
) -> None:
    """An old frame sent again without the retained flag (a bridge replaying its last frame)
    verifies, but its counter and its meter time are both old: not published."""
    entry = mqtt_meter_entry(simulator)
    coordinator = await setup(hass, entry)
    old = simulator.next_frame()
    await wait_for(hass, lambda: True)
    async with Dongle(hass, simulator, TOPIC):
        await wait_for(hass, lambda: coordinator.health.stats.telegrams >= 2)
    before = state_of(hass, energy_id(hass, simulator)).state
    await publish(hass, TOPIC, old)
    await wait_for(hass, lambda: coordinator.health.guard.stale == 1)
    assert state_of(hass, energy_id(hass, simulator)).state == before


async def test_flow_adds_an_mqtt_meter(
    hass: HomeAssistant, mqtt_entry: MockConfigEntry, simulator: MeterSimulator
) -> None:
    """Menu, topic, key: the key is checked on a live frame from the topic."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.MENU
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": "mqtt_topic"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "mqtt_topic"
    async with Dongle(hass, simulator, TOPIC):
        result = await submit(hass, result, {CONF_TOPIC: f" {TOPIC} "})
        assert result["type"] is FlowResultType.FORM
        assert result["step_id"] == "key"
        result = await submit(hass, result, {CONF_DECRYPTION_KEY: KEY.hex()})
    result = await skip_tariff(hass, result)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_TOPIC] == TOPIC
    assert result["data"][CONF_CONNECTION_TYPE] == CONNECTION_MQTT
    entry = result["result"]
    assert entry.unique_id == simulator.serial
    await hass.async_block_till_done()
    assert isinstance(entry.runtime_data, SmartyCoordinator)
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_mqtt_not_set_up(hass: HomeAssistant, simulator: MeterSimulator) -> None:
    """Without Home Assistant's MQTT integration: a clear error in the flow, retry on setup."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": "mqtt_topic"}
    )
    result = await submit(hass, result, {CONF_TOPIC: TOPIC})
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "mqtt_not_setup"}
    entry = mqtt_meter_entry(simulator)
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_RETRY
    # Home Assistant drops the message's final full stop.
    assert str(entry.reason) == (
        f"The meter is on the MQTT topic {TOPIC}, but Home Assistant's MQTT integration is not "
        "set up"
    )


async def test_probe_over_mqtt_and_subscribe_failure(
    hass: HomeAssistant, mqtt_entry: MockConfigEntry, broker: Broker, simulator: MeterSimulator
) -> None:
    """The probe reads the topic like a port; a topic with a misplaced wildcard is refused."""
    source = source_for(hass, Endpoint(CONNECTION_MQTT, topic=TOPIC))
    assert str(source) == f"MQTT topic {TOPIC}"
    async with Dongle(hass, simulator, TOPIC):
        telegram = await probe(source, KEY, 3)
    assert telegram.serial == simulator.serial
    bad = source_for(hass, Endpoint(CONNECTION_MQTT, topic="smarty/#/raw"))
    with pytest.raises(InvalidTopic):
        await bad.open(lambda data: None)
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"next_step_id": "mqtt_topic"}
    )
    result = await submit(hass, result, {CONF_TOPIC: "smarty/p1+"})
    assert result["errors"] == {"base": "invalid_topic"}
