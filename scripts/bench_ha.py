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
from contextlib import contextmanager, nullcontext
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
)
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.entity import Entity
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.smarty_p1.connection import _Receiving
from custom_components.smarty_p1.const import (
    CONF_CONNECTION_TYPE,
    CONF_DECRYPTION_KEY,
    CONF_MIN_INTERVAL,
    CONF_SERIAL_NUMBER,
    CONNECTION_NETWORK,
)
from custom_components.smarty_p1.const import DOMAIN as SMARTY
from custom_components.smarty_p1.coordinator import SmartyCoordinator
from custom_components.smarty_p1.entity import SmartyEntity
from custom_components.smarty_p1.p1 import Telegram
from custom_components.smarty_p1.p1.simulator import MeterSimulator, serve_tcp
from custom_components.smarty_p1.sensor import SmartySensor

KEY = bytes.fromhex("5A3C9E17B2D4486F8A01C6E3D95B7F20")
SEED = 2026
# Telegrams before the measurement (entities are created by the first ones), and measured.
WARMUP = int(os.environ.get("BENCH_HA_WARMUP", "20"))
TELEGRAMS = int(os.environ.get("BENCH_HA_TELEGRAMS", "1000"))
# The CPU time per telegram is the best round's: a busy moment of the machine does not count.
ROUNDS = 10
PER_ROUND = TELEGRAMS // ROUNDS
# "ours" or "dsmr": profile that side's event loop over the measured telegrams.
PROFILE = os.environ.get("BENCH_HA_PROFILE", "")
# Set: print which entities changed state, and how often, in each run.
BY_ENTITY = bool(os.environ.get("BENCH_HA_BY_ENTITY"))
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
# Ours with only the sensors core dsmr enables by default for this meter (power and energy in
# both directions, gas, water), against core at the same interval.
MATCHED = "30 s, 6 sensors"
MATCHED_KEYS = frozenset(
    {"power_import", "power_export", "energy_import", "energy_export", "mbus_gas", "mbus_water"}
)
RUNS = [
    *((side, setting) for setting in SETTINGS for side in SIDES),
    ("smarty_p1", MATCHED),
]


@dataclass(slots=True)
class Result:
    """One integration's figures under one setting."""

    cpu_ms: float
    reads: float
    writes: float
    changes: float
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
        self._rng = random.Random(SEED)

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
    """A TCP bridge in its own thread, so that its work is not the event loop's.

    It pauses after the warm-up and after each round until the test says go, so that the test
    reads the clocks and counters while nothing is in flight.
    """

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
        self.paused: asyncio.Queue[BaseException | None] = asyncio.Queue()
        self.go = threading.Semaphore(0)
        self.release = threading.Event()

    def run(self) -> None:
        pauses = {WARMUP + PER_ROUND * number for number in range(ROUNDS)}
        try:
            self.server.settimeout(HANDLED_TIMEOUT)
            conn, _ = self.server.accept()
            with conn:
                for index, frame in enumerate(self.frames):
                    if index in pauses:
                        self.loop.call_soon_threadsafe(self.paused.put_nowait, None)
                        if not self.go.acquire(timeout=HANDLED_TIMEOUT):
                            raise TimeoutError("the next round did not start")
                    conn.sendall(frame)
                    self.counters.wait_handled(index + 1)
                    self.clock.tick()
                self.loop.call_soon_threadsafe(self.paused.put_nowait, None)
                # Open until the entry unloads: a closed bridge would make both reconnect.
                self.release.wait(HANDLED_TIMEOUT)
        except Exception as err:
            self.loop.call_soon_threadsafe(self.paused.put_nowait, err)
        finally:
            self.server.close()

    async def pause(self) -> None:
        """Wait until the feeder has paused (after the warm-up or a round)."""
        if (error := await self.paused.get()) is not None:
            raise error


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


@pytest.fixture
def expected_lingering_timers() -> bool:
    """Core dsmr leaves its 60 s keep-alive timer behind when it unloads."""
    return True


def _frames() -> list[bytes]:
    sim = MeterSimulator(KEY, seed=SEED, interval=METER_INTERVAL)
    return [sim.next_frame() for _ in range(WARMUP + PER_ROUND * ROUNDS)]


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


async def _entry(
    hass: HomeAssistant, side: str, port: int, interval: int | None
) -> MockConfigEntry:
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


@contextmanager
def _instrumented(clock: Clock, counters: Counters) -> Iterator[None]:
    """The simulated clock on both sides, and the counting wrappers."""
    from dsmr_parser.clients.protocol import (  # type: ignore[import-untyped]  # noqa: PLC0415
        DSMRProtocol,
    )

    process = SmartyCoordinator._process
    handle = DSMRProtocol.handle_telegram

    def process_counted(self: SmartyCoordinator, items: list[Any]) -> None:
        process(self, items)
        counters.handled(sum(isinstance(item, Telegram) for item in items))

    def handle_counted(self: Any, telegram: Any) -> None:
        handle(self, telegram)
        counters.handled(1)

    with (
        patch("custom_components.smarty_p1.coordinator.monotonic", clock.monotonic),
        patch("homeassistant.util.utcnow", clock.utcnow),
        patch.object(SmartyCoordinator, "_process", process_counted),
        patch.object(DSMRProtocol, "handle_telegram", handle_counted),
        patch.object(
            _Receiving, "data_received", _counting(counters, "reads", _Receiving.data_received)
        ),
        patch.object(
            DSMRProtocol,
            "data_received",
            _counting(counters, "reads", DSMRProtocol.data_received),
        ),
        patch.object(
            Entity,
            "async_write_ha_state",
            _counting(counters, "writes", Entity.async_write_ha_state),
        ),
    ):
        yield


def _matched_only(self: Entity) -> bool:
    description = getattr(self, "entity_description", None)
    return isinstance(self, SmartySensor) and getattr(description, "key", None) in MATCHED_KEYS


@pytest.mark.parametrize(("side", "setting"), RUNS)
async def test_side(hass: HomeAssistant, side: str, setting: str) -> None:
    """Set one integration up on the bridge, feed it, measure the measured telegrams."""
    # Core dsmr depends on usb, which would watch the machine's real USB ports.
    hass.config.components.add("usb")
    clock, counters = Clock(), Counters()
    feeder = Feeder(_frames(), clock, counters, asyncio.get_running_loop())
    ours, theirs = SETTINGS.get(setting, SETTINGS["30 s"])
    entry = await _entry(hass, side, feeder.port, ours if side == "smarty_p1" else theirs)

    @callback
    def changed(event: Event[Any]) -> None:
        counters.calls["changes"] += 1
        if BY_ENTITY:
            counters.calls[f"changes {event.data['entity_id']}"] += 1

    unsubscribe = hass.bus.async_listen(EVENT_STATE_CHANGED, changed)
    with (
        _instrumented(clock, counters),
        patch.object(SmartyEntity, "entity_registry_enabled_default", property(_matched_only))
        if setting == MATCHED
        else nullcontext(),
    ):
        feeder.start()
        entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(entry.entry_id)
        await feeder.pause()
        profiler = cProfile.Profile() if side == PROFILE else None
        before = Counter(counters.calls)
        best = float("inf")
        for _ in range(ROUNDS):
            await hass.async_block_till_done()
            start = time.thread_time()
            if profiler is not None:
                profiler.enable()
            feeder.go.release()
            await feeder.pause()
            await hass.async_block_till_done()
            if profiler is not None:
                profiler.disable()
            best = min(best, time.thread_time() - start)
        after = Counter(counters.calls)
        assert await hass.config_entries.async_unload(entry.entry_id)
    feeder.release.set()
    feeder.join(HANDLED_TIMEOUT)
    unsubscribe()
    done = after - before
    assert done["telegrams"] == PER_ROUND * ROUNDS, done
    registered = er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
    RESULTS[side, setting] = Result(
        cpu_ms=best * 1000 / PER_ROUND,
        reads=done["reads"] / done["telegrams"],
        writes=done["writes"] / done["telegrams"],
        changes=done["changes"] / done["telegrams"],
        entities=len(registered),
        enabled=sum(1 for item in registered if item.disabled_by is None),
    )
    if BY_ENTITY:
        print(f"\n--- state changes per telegram, {side}, {setting} ---")
        for name, count in sorted(done.items(), key=lambda item: -item[1]):
            if name.startswith("changes ") and count:
                print(f"{count / done['telegrams']:6.2f}  {name.removeprefix('changes ')}")
    if profiler is not None:
        print(f"\n--- profile of {side}, {setting}: {PER_ROUND * ROUNDS} telegrams ---")
        pstats.Stats(profiler).strip_dirs().sort_stats(
            os.environ.get("BENCH_HA_SORT", "tottime")
        ).print_stats(int(os.environ.get("BENCH_HA_LINES", "40")))


def test_report() -> None:
    """The table, the ratios and the verdict."""
    print(
        f"\n{PER_ROUND * ROUNDS} encrypted Smarty telegrams (simulated household, seed {SEED}), "
        "each handled before the next is sent; per telegram (CPU: best of "
        f"{ROUNDS} rounds):"
    )
    header = (
        f"{'setting':<15} {'integration':<10} {'entities':>9} {'loop CPU ms':>12} "
        f"{'reads':>6} {'writes':>7} {'changes':>8} {'rows/hour':>10}"
    )
    print(header)
    print("-" * len(header))
    verdicts: list[str] = []
    for setting, (ours, theirs) in [*SETTINGS.items(), (MATCHED, SETTINGS["30 s"])]:
        results = [
            ("smarty_p1", RESULTS.get(("smarty_p1", setting))),
            ("dsmr", RESULTS.get(("dsmr", "30 s" if setting == MATCHED else setting))),
        ]
        for side, result in results:
            if result is None:
                continue
            print(
                f"{setting:<15} {side:<10} {result.enabled:>4}/{result.entities:<4} "
                f"{result.cpu_ms:12.3f} {result.reads:6.2f} {result.writes:7.2f} "
                f"{result.changes:8.2f} {result.rows_per_hour:10.0f}"
            )
        mine, core = (result for _, result in results)
        if mine is None or core is None:
            continue
        cpu_ratio = core.cpu_ms / mine.cpu_ms
        rows_ratio = core.rows_per_hour / mine.rows_per_hour if mine.rows_per_hour else float("inf")
        print(
            f"{'':<15} {'dsmr/ours':<10} {'':>9} {cpu_ratio:11.1f}x {'':>6} "
            f"{core.writes / mine.writes if mine.writes else float('inf'):6.1f}x "
            f"{'':>8} {rows_ratio:9.2f}x"
        )
        verdicts.append(
            f"{setting}: CPU {cpu_ratio:.1f}x less (goal >= 5x: "
            f"{'met' if cpu_ratio >= 5 else 'NOT met'})"
        )
        if ours is not None and ours == theirs:
            verdicts.append(
                f"{setting}: rows/hour {mine.rows_per_hour:.0f} vs {core.rows_per_hour:.0f} "
                f"(goal no more: {'met' if mine.rows_per_hour <= core.rows_per_hour else 'NOT met'})"  # noqa: E501
            )
    print(
        "entities: enabled/registered. reads: data_received callbacks. writes: "
        "async_write_ha_state calls. changes: state_changed events (one recorder row each)."
    )
    print("rows/hour = changes per telegram x 360 (one telegram every 10 s).")
    for verdict in verdicts:
        print(verdict)
