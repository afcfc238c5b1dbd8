"""Every real Smarty works and stays authenticated, in Home Assistant, over a real pty.

A meter whose authentication key is not the specification's: its key is learned from its own
frames, kept with the entry (a secret) and used from the first frame after a restart. A meter
whose tags no 16-byte key explains: CRC-only, never silently (an entity, a repair issue,
diagnostics). And the console reader says the same on stderr.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from homeassistant.const import CONF_DEVICE
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import issue_registry as ir
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.smarty_p1.const import (
    CONF_AUTH_KEY,
    CONF_CONNECTION_TYPE,
    CONNECTION_SERIAL,
    DOMAIN,
)
from custom_components.smarty_p1.diagnostics import async_get_config_entry_diagnostics
from custom_components.smarty_p1.p1.cli import main
from custom_components.smarty_p1.p1.integrity import Integrity
from custom_components.smarty_p1.p1.simulator import MeterSimulator, PtyMeter

from .conftest import INTERVAL, KEY, make_entry, setup, state_of, wait_for

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


@pytest.mark.parametrize(
    ("aad", "said"),
    [
        (b"\x30" + OWN_AUTH_KEY, "learned from its frames"),
        (b"\x30", "CRC only"),
    ],
    ids=["own-key", "crc-only"],
)
def test_the_console_reader_says_how_telegrams_are_protected(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], aad: bytes, said: str
) -> None:
    simulator = VaryingMeter(KEY, aad=aad)
    capture = tmp_path / "capture.bin"
    capture.write_bytes(b"".join(simulator.next_frame() for _ in range(12)))
    assert main(["read", "--key", KEY.hex(), "--file", str(capture), "--json"]) == 0
    captured = capsys.readouterr()
    integrity = [line for line in captured.err.splitlines() if line.startswith("integrity:")]
    assert any(said in line for line in integrity), captured.err
    assert len(captured.out.splitlines()) >= 3
