"""Head to head in Home Assistant: smarty_p1 against core's dsmr integration (``scripts/bench ha``).

Run by scripts/bench.py as a pytest module, for the test harness's Home Assistant. Each run sets
up one integration on a loopback TCP bridge that sends the same simulated, encrypted Smarty
telegrams (the same seed and key for both), one at a time: a telegram is sent when the previous
one has been handled, as a meter's telegrams arrive 10 s apart. The event loop's thread CPU time
over the measured telegrams is what Home Assistant pays for them.

A simulated clock moves 10 s (with a little jitter, as a real line has) per telegram, for both
minimum update intervals (ours reads time.monotonic, core dsmr's Throttle reads utcnow), so that
feeding at full speed throttles exactly as a day at the meter's pace would, and the state
changes per telegram give the recorder rows per hour.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any
from unittest.mock import patch

import pytest
from homeassistant.const import (
    CONF_HOST,
    CONF_PORT,
    EVENT_STATE_CHANGED,
    EVENT_STATE_REPORTED,
)
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.entity import Entity
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.smarty_p1.const import (
    CONF_CONNECTION_TYPE,
    CONF_DECRYPTION_KEY,
    CONF_MIN_INTERVAL,
    CONF_SERIAL_NUMBER,
    CONNECTION_NETWORK,
)
from custom_components.smarty_p1.const import DOMAIN as SMARTY
from custom_components.smarty_p1.coordinator import SmartyCoordinator
from custom_components.smarty_p1.p1 import Telegram
from custom_components.smarty_p1.p1.simulator import MeterSimulator, serve_tcp

KEY = bytes.fromhex("5A3C9E17B2D4486F8A01C6E3D95B7F20")
SEED = 2026
# Telegrams before the measurement (entities are created by the first ones), and measured.
WARMUP = int(os.environ.get("BENCH_HA_WARMUP", "20"))
TELEGRAMS = int(os.environ.get("BENCH_HA_TELEGRAMS", "500"))
# "ours" or "dsmr": profile that side's event loop over the measured telegrams.
PROFILE = os.environ.get("BENCH_HA_PROFILE", "")
METER_INTERVAL = 10.0
JITTER = 0.05
HANDLED_TIMEOUT = 10.0
TELEGRAMS_PER_HOUR = 3600 / METER_INTERVAL

# Settings: (our min_update_interval, core dsmr's time_between_update); None: the default.
SETTINGS: dict[str, tuple[int | None, int | None]] = {
    "defaults": (None, None),
    "30 s": (30, 30),
    "every telegram": (0, 0),
}
SIDES = ("smarty_p1", "dsmr")


@dataclass(slots=True)
class Result:
    """One integration's figures under one setting."""

    cpu_ms: float
    reads: float
    writes: float
    changes: float
    reports: float
    entities: int
    enabled: int

    @property
    def rows_per_hour(self) -> float:
        """Recorder rows an hour at the meter's pace: one per state change."""
        return self.changes * TELEGRAMS_PER_HOUR


RESULTS: dict[tuple[str, str], Result] = {}


class Clock:
    """Simulated time, moved by the feeder after each handled telegram."""

    def __init__(self) -> None:
        self.seconds = 1000.0
        self._rng = random.Random(SEED)  # noqa: S311 (jitter, not cryptography)

    def tick(self) -> None:
        self.seconds += METER_INTERVAL + self._rng.uniform(-JITTER, JITTER)

    def monotonic(self) -> float:
        return self.seconds

    def utcnow(self) -> datetime:
        return datetime(2026, 6, 21, tzinfo=UTC) + timedelta(seconds=self.seconds)


class Counters:
    """What the event loop did, counted by wrappers around the calls that do it."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._handled = threading.Event()

    def handled(self, telegrams: int) -> None:
        self.calls["telegrams"] += telegrams
        self._handled.set()

    def wait_handled(self, count: int) -> None:
        """Block the feeder until ``count`` telegrams have been handled in all."""
        while self.calls["telegrams"] < count:
            if not self._handled.wait(HANDLED_TIMEOUT):
                raise TimeoutError(f"telegram {count} was not handled")
            self._handled.clear()


class Feeder(threading.Thread):
    """A TCP bridge in its own thread, so that its work is not the event loop's."""

    def __init__(
        self, frames: list[bytes], clock: Clock, counters: Counters, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(name="bench feeder", daemon=True)
        self.frames = frames
        self.clock = clock
        self.counters = counters
        self.loop = loop
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.warmed: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.go = threading.Event()
        self.error: BaseException | None = None

    def _signal(self, future: asyncio.Future[None]) -> None:
        self.loop.call_soon_threadsafe(future.set_result, None)

    def run(self) -> None:
        try:
            self.server.settimeout(HANDLED_TIMEOUT)
            conn, _ = self.server.accept()
            with conn:
                for index, frame in enumerate(self.frames, 1):
                    if index == WARMUP + 1:
                        self._signal(self.warmed)
                        if not self.go.wait(HANDLED_TIMEOUT):
                            raise TimeoutError("the measurement did not start")
                    conn.sendall(frame)
                    self.counters.wait_handled(index)
                    self.clock.tick()
                self._signal(self.finished)
                # Open until the entry unloads: a closed bridge would make both reconnect.
                self.go.clear()
                self.go.wait(HANDLED_TIMEOUT)
        except BaseException as err:  # noqa: BLE001 (reported by the test, in the loop thread)
            self.error = err
            for future in (self.warmed, self.finished):
                self.loop.call_soon_threadsafe(
                    lambda f=future: f.done() or f.set_exception(RuntimeError(repr(err)))
                )
        finally:
            self.server.close()


def _counting(counters: Counters, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        counters.calls[name] += 1
        return method(*args, **kwargs)

    return wrapper


@pytest.fixture(autouse=True)
def harness(hass: HomeAssistant, enable_custom_integrations: None, socket_enabled: None) -> None:
    """Our integration loadable, loopback sockets allowed."""


@pytest.fixture(autouse=True)
async def enable_event_loop_debug() -> None:
    """Home Assistant runs without asyncio's debug mode: so does the benchmark."""
    asyncio.get_running_loop().set_debug(False)


def _frames() -> list[bytes]:
    sim = MeterSimulator(KEY, seed=SEED, interval=METER_INTERVAL)
    return [sim.next_frame() for _ in range(WARMUP + TELEGRAMS)]


async def _dsmr_entry_data(hass: HomeAssistant) -> dict[str, Any]:
    """Entry data as core dsmr's own config flow stores it, for the simulated meter."""
    from homeassistant.components.dsmr.const import (  # noqa: PLC0415 (needs dsmr_parser)
        CONF_DSMR_VERSION,
        CONF_ENCRYPTION_KEY,
    )
    from homeassistant.components.dsmr.const import DOMAIN as DSMR  # noqa: PLC0415

    sim = MeterSimulator(KEY, seed=SEED, interval=0.05)
    async with await serve_tcp(sim) as meter:
        url = f"socket://127.0.0.1:{meter.port}"
        result = await hass.config_entries.flow.async_init(DSMR, context={"source": "user"})
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {CONF_PORT: url, CONF_DSMR_VERSION: "MSn"}
        )
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {CONF_ENCRYPTION_KEY: KEY.hex()}
        )
    assert result["type"] == "create_entry", result
    entry = result["result"]
    data = dict(entry.data)
    await hass.config_entries.async_remove(entry.entry_id)
    await hass.async_block_till_done()
    return data


async def _entry(hass: HomeAssistant, side: str, port: int, interval: int | None) -> MockConfigEntry:
    if side == "smarty_p1":
        options = {} if interval is None else {CONF_MIN_INTERVAL: interval}
        return MockConfigEntry(
            domain=SMARTY,
            title="Smarty",
            unique_id="SAG1030700012345",
            data={
                CONF_CONNECTION_TYPE: CONNECTION_NETWORK,
                CONF_HOST: "127.0.0.1",
                CONF_PORT: port,
                CONF_DECRYPTION_KEY: KEY.hex().upper(),
                CONF_SERIAL_NUMBER: "SAG1030700012345",
            },
            options=options,
        )
    from homeassistant.components.dsmr.const import (  # noqa: PLC0415
        CONF_TIME_BETWEEN_UPDATE,
    )

    data = await _dsmr_entry_data(hass)
    data[CONF_PORT] = f"socket://127.0.0.1:{port}"
    options = {} if interval is None else {CONF_TIME_BETWEEN_UPDATE: interval}
    return MockConfigEntry(domain="dsmr", title=data[CONF_PORT], data=data, options=options)


@contextmanager_patches := None  # placeholder removed below
