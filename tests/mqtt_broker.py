"""A real mosquitto broker on a free loopback port, and Home Assistant's MQTT integration on it.

Import the fixtures into a test module to use them. mosquitto comes from Debian (scripts/setup
installs it); without it the tests are skipped locally and fail in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from unittest.mock import patch

import pytest
from homeassistant.components import mqtt
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import CONF_PORT
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.smarty_p1.p1.simulator import MeterSimulator

from .conftest import wait_for

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A loopback port nobody listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Broker:
    """mosquitto as a child process; ``restart()`` keeps the port, as a broker's reboot does."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.config = directory / "mosquitto.conf"
        # No persistence: a restart forgets retained messages and sessions.
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "log_dest none\n"
        )
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        self._process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            except OSError:
                assert self._process.poll() is None, "mosquitto exited"
                assert time.monotonic() < deadline, "mosquitto did not start"
                time.sleep(0.02)
            else:
                return

    def stop(self) -> None:
        """Stop it (its clients see the connection drop)."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            process.wait(10)

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A running broker of this test only."""
    if not os.access(MOSQUITTO, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail("mosquitto is not installed: run scripts/setup")
        pytest.skip("mosquitto is not installed: run scripts/setup")
    server = Broker(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def mqtt_entry(hass: HomeAssistant, broker: Broker) -> AsyncIterator[MockConfigEntry]:
    """Home Assistant's MQTT integration, connected to the broker, reconnecting fast."""
    entry = MockConfigEntry(
        domain=mqtt.DOMAIN,
        data={mqtt.CONF_BROKER: "127.0.0.1", CONF_PORT: broker.port},
        options={mqtt.CONF_BIRTH_MESSAGE: {}, mqtt.CONF_WILL_MESSAGE: {}},
    )
    entry.add_to_hass(hass)
    with (
        patch("homeassistant.components.mqtt.client.RECONNECT_INTERVAL_SECONDS", 0.2),
        # MQTT reads configuration.yaml for its YAML entities; the test harness has none.
        patch("homeassistant.config.load_yaml_config_file", return_value={}),
    ):
        assert await hass.config_entries.async_setup(entry.entry_id)
        await wait_for(hass, lambda: mqtt.is_connected(hass))
        yield entry
        if entry.state is ConfigEntryState.LOADED:
            assert await hass.config_entries.async_unload(entry.entry_id)
            await hass.async_block_till_done()


async def publish(
    hass: HomeAssistant, topic: str, payload: bytes | str, *, retain: bool = False
) -> None:
    """Publish through the broker, as a dongle on the meter does."""
    await mqtt.async_publish(hass, topic, payload, qos=0, retain=retain)


class Dongle:
    """An ESP32 dongle: publishes the simulator's frames on a topic every ``sim.interval``.

    ``encode`` turns a frame into the payloads of one or more messages (binary, hex text,
    split). ``sent`` keeps every frame's values, as the meter sent them.
    """

    def __init__(
        self,
        hass: HomeAssistant,
        sim: MeterSimulator,
        topic: str,
        encode: Callable[[int, bytes], list[bytes | str]] | None = None,
    ) -> None:
        self.hass = hass
        self.sim = sim
        self.topic = topic
        self.encode = encode or (lambda _index, frame: [frame])
        self.sent: list[dict[str, Decimal | str]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Dongle:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.sim.interval)
            frame = self.sim.next_frame()
            self.sent.append(self.sim.last_values)
            for payload in self.encode(len(self.sent), frame):
                # While the broker is down the dongle's frames are lost, as in real life.
                with contextlib.suppress(HomeAssistantError):
                    await publish(self.hass, self.topic, payload)
