"""Every real Smarty works and stays authenticated, in Home Assistant, over a real pty.

A meter whose authentication key is not the specification's: its key is learned from its own
frames, kept with the entry (a secret) and used from the first frame after a restart. A meter
whose tags no 16-byte key explains: CRC-only, never silently (an entity, a repair issue,
diagnostics). And the console reader says the same on stderr.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from homeassistant.const import CONF_DEVICE, CONF_HOST, CONF_PORT
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import issue_registry as ir
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.smarty_p1.const import (
    CONF_AUTH_KEY,
    CONF_CONNECTION_TYPE,
    CONF_TOPIC,
    CONNECTION_MQTT,
    CONNECTION_NETWORK,
    CONNECTION_SERIAL,
    DOMAIN,
)
from custom_components.smarty_p1.coordinator import SmartyCoordinator
from custom_components.smarty_p1.diagnostics import async_get_config_entry_diagnostics
from custom_components.smarty_p1.p1.integrity import Integrity
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter, serve_tcp

from .conftest import INTERVAL, KEY, make_entry, setup, state_of, wait_for
from .mqtt_broker import broker, mqtt_entry, publish
from .p1_helpers import vector, vector_names

__all__ = ["broker", "mqtt_entry"]

OWN_AUTH_KEY = bytes.fromhex("C0FFEE00112233445566778899ABCDEF")


class VaryingMeter(MeterSimulator):
    """A meter whose telegrams are not all of one length (a long message every third one), as
    a real meter's vary: more than one block count is seen."""

    def next_frame(self) -> bytes:
        self.set_message("Coupure prevue le 12/01 de 08h a 12h" if self.frame_counter % 3 else "")
        return super().next_frame()


def meter(aad: bytes) -> MeterSimulator:
    """A meter whose frames authenticate ``aad``."""
    return VaryingMeter(KEY, interval=INTERVAL, aad=aad)


def integrity_entity(hass: HomeAssistant, entry: MockConfigEntry) -> str:
    found = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"{entry.unique_id}_integrity")
    assert found is not None
    return found


async def test_a_meter_with_its_own_authentication_key(hass: HomeAssistant) -> None:
    """Learned from its frames, confirmed by another, kept with the entry, redacted, and used
    from the first frame after a restart; nothing is shown before it is confirmed."""
    simulator = meter(b"\x30" + OWN_AUTH_KEY)
    with PtyMeter(simulator) as pty:
        entry = make_entry(
            simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: pty.path}
        )
        coordinator = await setup(hass, entry)
        await wait_for(hass, lambda: coordinator.data is not None)
        stats = coordinator.health.stats
        # The first frame taught the key; a later one confirmed it before anything was shown.
        assert stats.rejected["learning"] >= 1
        assert (coordinator.data.telegram.frame_counter or 0) > 1
        assert stats.rejected["wrong_key"] == stats.rejected["tag"] == 0
        assert state_of(hass, integrity_entity(hass, entry)).state == "authenticated"
        assert CONF_AUTH_KEY in entry.data
        text = json.dumps(await async_get_config_entry_diagnostics(hass, entry))
        assert OWN_AUTH_KEY.hex() not in text.lower()
        assert "authenticated" in text

        assert await hass.config_entries.async_reload(entry.entry_id)
        again = entry.runtime_data
        await wait_for(hass, lambda: again.data is not None)
        # Verified from the first frame: nothing to learn after a restart.
        assert again.health.stats.rejected["learning"] == 0
        assert await hass.config_entries.async_unload(entry.entry_id)


async def test_tags_no_key_explains_mean_crc_only_never_silently(hass: HomeAssistant) -> None:
    """AAD 0x30 alone: decrypted, CRC-checked, shown; an entity, a repair issue and the
    diagnostics say the telegrams are not authenticated."""
    simulator = meter(b"\x30")
    with PtyMeter(simulator) as pty:
        entry = make_entry(
            simulator, KEY, **{CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: pty.path}
        )
        coordinator = await setup(hass, entry)
        # One length alone is explained by some key; the next length contradicts it.
        await wait_for(hass, lambda: coordinator.integrity is Integrity.CRC_ONLY, within=10)
        before = coordinator.health.stats.telegrams
        await wait_for(hass, lambda: coordinator.health.stats.telegrams > before + 2)
        assert state_of(hass, integrity_entity(hass, entry)).state == "crc_only"
        issue = ir.async_get(hass).async_get_issue(DOMAIN, f"crc_only_{entry.entry_id}")
        assert issue is not None
        assert issue.translation_key == "crc_only"
        diagnostics = await async_get_config_entry_diagnostics(hass, entry)
        assert diagnostics["health"]["integrity"] == "crc_only"
        assert CONF_AUTH_KEY not in entry.data
        assert await hass.config_entries.async_unload(entry.entry_id)


# --- The derived vectors (tests/fixtures/derived_*.json), through every reader. ---

DERIVED = vector_names("derived_stream")


def _wires(name: str) -> list[bytes]:
    return [bytes.fromhex(entry["frame_hex"]) for entry in vector(name)["frames"]]


def _expected_telegrams(name: str) -> int:
    return sum(entry["expect"] == "telegram" for entry in vector(name)["frames"])


async def _feed_vector(
    hass: HomeAssistant,
    name: str,
    simulator: MeterSimulator,
    where: dict[str, Any],
    inject: Callable[[bytes], None],
    *,
    ready: Callable[[SmartyCoordinator], Awaitable[None]] | None = None,
) -> None:
    """Set up an entry on where, put the vector's frames on it, check what was published."""
    data = vector(name)
    entry = make_entry(simulator, bytes.fromhex(data["key_hex"]), **where)
    coordinator = await setup(hass, entry)
    if ready is not None:
        await ready(coordinator)
    frames = _wires(name)
    for frame in frames:
        inject(frame)
        await asyncio.sleep(INTERVAL)
    stats = coordinator.health.stats
    await wait_for(hass, lambda: stats.telegrams + sum(stats.rejected.values()) >= len(frames))
    assert stats.telegrams == _expected_telegrams(name)
    assert coordinator.integrity == data["integrity"]
    # Each telegram published is a genuine one of the vector (the guard refuses none).
    assert coordinator.health.guard.stale == coordinator.health.guard.foreign == 0
    assert await hass.config_entries.async_unload(entry.entry_id)


@pytest.mark.parametrize("name", DERIVED)
async def test_derived_vectors_over_a_serial_port(hass: HomeAssistant, name: str) -> None:
    """Another authentication key, a foreign AAD, tampered frames, plaintext injected: over a
    pty the vector's telegrams are published, nothing else; the integrity is the vector's."""
    simulator = MeterSimulator(bytes.fromhex(vector(name)["key_hex"]), interval=INTERVAL)
    with PtyMeter(simulator, count=0) as pty:
        where = {CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: pty.path}
        await _feed_vector(hass, name, simulator, where, pty.inject)


@pytest.mark.parametrize("name", DERIVED)
async def test_derived_vectors_over_a_tcp_bridge(hass: HomeAssistant, name: str) -> None:
    simulator = MeterSimulator(bytes.fromhex(vector(name)["key_hex"]), interval=INTERVAL)
    async with await serve_tcp(simulator, count=0) as bridge:
        where = {
            CONF_CONNECTION_TYPE: CONNECTION_NETWORK,
            CONF_HOST: "127.0.0.1",
            CONF_PORT: bridge.port,
        }

        async def connected(coordinator: SmartyCoordinator) -> None:
            await wait_for(hass, lambda: bridge.clients == 1)

        await _feed_vector(hass, name, simulator, where, bridge.inject, ready=connected)


@pytest.mark.parametrize("name", DERIVED)
async def test_derived_vectors_on_an_mqtt_topic(
    hass: HomeAssistant, mqtt_entry: MockConfigEntry, name: str
) -> None:
    simulator = MeterSimulator(bytes.fromhex(vector(name)["key_hex"]), interval=INTERVAL)
    where = {CONF_CONNECTION_TYPE: CONNECTION_MQTT, CONF_TOPIC: "smarty/vector"}

    def inject(frame: bytes) -> None:
        hass.async_create_task(publish(hass, "smarty/vector", frame))

    async def subscribed(coordinator: SmartyCoordinator) -> None:
        # A zero byte is line noise to the decoder: once one arrives, so will the frames.
        stats = coordinator.health.stats
        while not stats.bytes:
            await publish(hass, "smarty/vector", b"\x00")
            await asyncio.sleep(INTERVAL)
        stats.bytes = 0

    await _feed_vector(hass, name, simulator, where, inject, ready=subscribed)
