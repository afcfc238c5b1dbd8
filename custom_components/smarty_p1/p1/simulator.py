"""A simulated Smarty meter (Sagemcom T210-D) for tests, the console and demos.

It builds telegrams laid out like a real 2026 Luxembourg readout, with registers that move like a
household's (base load, appliances switching on and off, optional solar export), and sends them
the way the meter does: encrypted with AES-128-GCM, or as plaintext. Everything it does follows
from its seed, so a test sees the same telegrams on every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import threading
import tty
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Self
from zoneinfo import ZoneInfo

from .crc import crc16_arc
from .crypto import FrameCipher
from .telegram import decode_text

LUXEMBOURG = ZoneInfo("Europe/Luxembourg")
HEADER = "/Lux5\\253663629_D"
# A summer morning: solar, when enabled, is already producing.
DEFAULT_START = datetime(2026, 6, 21, 7, 0, tzinfo=UTC)
# M-Bus devices report a reading every five minutes (P1 specification, 0-x:24.2.1).
MBUS_PERIOD = 300
# Output the pty or a TCP client cannot take is dropped, as on a real serial line.
_MAX_BACKLOG = 64 * 1024


@dataclass(frozen=True, slots=True)
class _Appliance:
    watts: float
    phases: tuple[int, ...]
    minutes: float  # mean running time
    per_day: float  # mean number of starts a day


_APPLIANCES = (
    _Appliance(2000, (0,), 3, 6),  # kettle
    _Appliance(1200, (1,), 2, 4),  # microwave
    _Appliance(3300, (0, 1, 2), 45, 0.7),  # oven
    _Appliance(2100, (1,), 90, 0.5),  # washing machine
    _Appliance(1900, (2,), 100, 0.7),  # dishwasher
    _Appliance(2400, (0, 1, 2), 35, 6),  # heat pump
    _Appliance(11000, (0, 1, 2), 150, 0.25),  # car charger
)


@dataclass(frozen=True, slots=True)
class _MbusKind:
    device_type: str
    unit: str
    maker: str  # prefix of the equipment identifier
    per_hour: float  # mean consumption in the unit per hour
    start: tuple[int, int]  # range of the register at start


_MBUS_KINDS = {
    "gas": _MbusKind("003", "m3", "FLO", 0.12, (500, 20000)),
    "water": _MbusKind("007", "m3", "ELS", 0.006, (50, 900)),
    "heat": _MbusKind("004", "GJ", "KAM", 0.004, (10, 300)),
}


@dataclass(slots=True)
class _Channel:
    number: int
    kind: _MbusKind
    identifier: str
    offset: int  # seconds past each five-minute mark at which the device reports
    total: float  # the device's own register, in milli-units
    captured: int
    capture_time: datetime


@dataclass(slots=True)
class _Phase:
    voltage_drift: float = 0.0
    values: dict[str, float] = field(default_factory=dict)


def meter_time(moment: datetime) -> str:
    """``YYMMDDhhmmss`` in Luxembourg local time, ``S`` in summer time and ``W`` in winter."""
    local = moment.astimezone(LUXEMBOURG)
    return local.strftime("%y%m%d%H%M%S") + ("S" if local.dst() else "W")


def _capture_time(moment: datetime, offset: int) -> datetime:
    """The last time at or before moment when a device reporting at offset sent a reading."""
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - (epoch - offset) % MBUS_PERIOD, UTC)


def _kilo(watts: float) -> str:
    return f"{max(watts, 0.0) / 1000:06.3f}"


def _register(milli: int) -> str:
    return f"{milli // 1000:06d}.{milli % 1000:03d}"


class MeterSimulator:
    """A Smarty meter: ``next_frame()`` returns the next frame exactly as the P1 port sends it.

    ``last_values`` maps each OBIS code of the last telegram to its value as sent: a Decimal for
    numbers (M-Bus readings included), the decoded text for hex-coded text, and the text as sent
    for the meter time (``260403175431S``) and for multi-value lines (``(040*A)(-040*A)``).
    """

    def __init__(
        self,
        key: bytes | None,
        *,
        seed: int = 0,
        serial: str = "SAG1030700012345",
        phases: int = 3,
        mbus: tuple[str, ...] = ("gas", "water"),
        interval: float = 10.0,
        start: datetime | None = None,
        system_title: bytes = b"SAGgp\x00\x12\x34",
        pv: bool = False,
        aad: bytes | None = None,
    ) -> None:
        if phases not in (1, 3):
            raise ValueError("a Smarty meter has 1 or 3 phases")
        if len(mbus) > 4 or any(kind not in _MBUS_KINDS for kind in mbus):
            raise ValueError("up to 4 M-Bus devices among: " + ", ".join(_MBUS_KINDS))
        if len(system_title) != 8:
            raise ValueError("a system title is 8 bytes")
        # A household model, not cryptography: a seeded generator makes runs repeatable.
        self._rng = random.Random(seed)  # noqa: S311
        self._lock = threading.Lock()
        self._cipher = FrameCipher(key) if key is not None else None
        # What the tags authenticate: 0x30 || the specification's key unless a meter of its own.
        self.aad = aad
        self.serial = serial
        self.phases = phases
        self.interval = interval
        self.pv = pv
        self.system_title = system_title
        self.now = start or DEFAULT_START
        self.frame_counter = 0
        self.message = ""
        self.last_telegram = b""
        self.last_values: dict[str, Decimal | str] = {}
        rng = self._rng
        # Registers are kept in Wh and varh, with the fraction, so they never round backwards.
        self._energy = {
            "1-0:1.8.0": rng.uniform(1_000_000, 30_000_000),
            "1-0:2.8.0": rng.uniform(2_000_000, 40_000_000) if pv else 0.0,
            "1-0:3.8.0": rng.uniform(100_000, 2_000_000),
            "1-0:4.8.0": rng.uniform(50_000, 1_000_000),
        }
        self._counters = {
            "0-0:96.7.21": rng.randint(0, 200),
            **{
                f"1-0:{line}.{kind}.0": rng.randint(0, 40)
                for kind in (32, 36)
                for line in (32, 52, 72)[:phases]
            },
        }
        self._phases = [_Phase(voltage_drift=rng.uniform(-2.0, 3.0)) for _ in range(phases)]
        self._totals: dict[str, float] = {}
        self._running: dict[int, float] = {}  # appliance index -> seconds left
        self._base = rng.uniform(150.0, 400.0)
        self._pv_peak = rng.uniform(4000.0, 9000.0)
        self._channels = [
            _Channel(
                number=index + 1,
                kind=_MBUS_KINDS[name],
                identifier=_MBUS_KINDS[name].maker + "".join(rng.choices("0123456789", k=12)),
                offset=offset,
                total=(total := rng.uniform(*_MBUS_KINDS[name].start) * 1000),
                captured=int(total),
                capture_time=_capture_time(self.now, offset),
            )
            for index, name in enumerate(mbus)
            for offset in (rng.randrange(MBUS_PERIOD),)
        ]

    def __repr__(self) -> str:
        return f"MeterSimulator(serial={self.serial!r}, frame_counter={self.frame_counter})"

    @property
    def encrypted(self) -> bool:
        """Whether frames go out encrypted."""
        return self._cipher is not None

    def set_key(self, key: bytes | None) -> None:
        """A new key, as after a meter exchange: the frame counter starts again from 0."""
        with self._lock:
            self._cipher = FrameCipher(key) if key is not None else None
            self.frame_counter = 0

    def set_message(self, text: str) -> None:
        """The long message (0-0:96.13.0) of the following telegrams; "" for none."""
        self.message = text

    def next_frame(self) -> bytes:
        """Advance the meter by one interval and return its next frame as sent on the wire."""
        with self._lock:
            self._advance(self.interval)
            self.last_telegram = self._telegram()
            self.frame_counter += 1
            if self._cipher is None:
                return self.last_telegram
            return self._cipher.encrypt(
                self.last_telegram, self.system_title, self.frame_counter, aad=self.aad
            )

    # Household model.

    def _advance(self, seconds: float) -> None:
        rng = self._rng
        self.now += timedelta(seconds=seconds)
        for index, appliance in enumerate(_APPLIANCES):
            left = self._running.get(index)
            if left is not None:
                left -= seconds
                if left > 0:
                    self._running[index] = left
                else:
                    del self._running[index]
            elif rng.random() < appliance.per_day * seconds / 86400:
                self._running[index] = rng.expovariate(1 / (appliance.minutes * 60))
        loads = [self._base / self.phases * rng.uniform(0.85, 1.15) for _ in self._phases]
        for index in self._running:
            appliance = _APPLIANCES[index]
            share = appliance.watts / len(appliance.phases)
            for wire in appliance.phases:
                loads[wire % self.phases] += share * rng.uniform(0.97, 1.03)
        solar = self._solar() / self.phases
        import_w = export_w = q_import = q_export = 0.0
        for phase, load in zip(self._phases, loads, strict=True):
            net = load - solar
            reactive = abs(net) * rng.uniform(0.08, 0.3)
            phase.voltage_drift = min(6.0, max(-5.0, phase.voltage_drift + rng.gauss(0, 0.2)))
            # Export lifts the local voltage, a heavy load pulls it down.
            voltage = 230.0 + phase.voltage_drift + rng.gauss(0, 0.4) - net / 1000
            apparent = math.hypot(net, reactive)
            phase.values = {
                "import": max(net, 0.0),
                "export": max(-net, 0.0),
                "q_import": reactive if net >= 0 else 0.0,
                "q_export": reactive if net < 0 else 0.0,
                "voltage": voltage,
                "current": apparent / voltage,
            }
            import_w += phase.values["import"]
            export_w += phase.values["export"]
            q_import += phase.values["q_import"]
            q_export += phase.values["q_export"]
        self._totals = {
            "import": import_w,
            "export": export_w,
            "q_import": q_import,
            "q_export": q_export,
        }
        hours = seconds / 3600
        self._energy["1-0:1.8.0"] += import_w * hours
        self._energy["1-0:2.8.0"] += export_w * hours
        self._energy["1-0:3.8.0"] += q_import * hours
        self._energy["1-0:4.8.0"] += q_export * hours
        for code in self._counters:
            # Sags, swells and power failures are rare: a few a year.
            if rng.random() < seconds / (86400 * 60):
                self._counters[code] += 1
        for channel in self._channels:
            rate = channel.kind.per_hour * 1000 * hours
            channel.total += rate * rng.uniform(0.0, 2.0)
            self._capture(channel, self.now)

    def _solar(self) -> float:
        if not self.pv:
            return 0.0
        local = self.now.astimezone(LUXEMBOURG)
        hour = local.hour + local.minute / 60
        # Daylight from about 6:00 to 21:00 local time in summer, shorter in winter.
        summer = math.cos((local.timetuple().tm_yday - 172) / 365 * 2 * math.pi)
        half_day = 5.0 + 2.5 * summer
        angle = (hour - 13.5) / half_day
        if abs(angle) >= 1:
            return 0.0
        clouds = self._rng.uniform(0.6, 1.0)
        return self._pv_peak * (0.55 + 0.45 * summer) * math.cos(angle * math.pi / 2) * clouds

    def _capture(self, channel: _Channel, moment: datetime) -> None:
        when = _capture_time(moment, channel.offset)
        if when != channel.capture_time:
            channel.capture_time = when
            channel.captured = int(channel.total)

    # Telegram text.

    def _telegram(self) -> bytes:
        values: dict[str, Decimal | str] = {}
        lines = [HEADER, ""]

        def number(obis: str, digits: str, unit: str | None = None) -> None:
            values[obis] = Decimal(digits)
            lines.append(f"{obis}({digits}*{unit})" if unit else f"{obis}({digits})")

        def text(obis: str, content: str) -> None:
            encoded = content.encode().hex().upper()
            values[obis] = decode_text(encoded)
            lines.append(f"{obis}({encoded})")

        def verbatim(obis: str, content: str) -> None:
            values[obis] = content
            lines.append(f"{obis}{content}")

        phases = self._phases
        totals = self._totals
        lines.append("1-3:0.2.8(42)")
        values["1-3:0.2.8"] = "42"
        stamp = meter_time(self.now)
        lines.append(f"0-0:1.0.0({stamp})")
        values["0-0:1.0.0"] = stamp
        text("0-0:42.0.0", self.serial)
        number("1-0:1.8.0", _register(int(self._energy["1-0:1.8.0"])), "kWh")
        number("1-0:2.8.0", _register(int(self._energy["1-0:2.8.0"])), "kWh")
        number("1-0:3.8.0", _register(int(self._energy["1-0:3.8.0"])), "kvarh")
        number("1-0:4.8.0", _register(int(self._energy["1-0:4.8.0"])), "kvarh")
        number("1-0:1.7.0", _kilo(totals["import"]), "kW")
        number("1-0:2.7.0", _kilo(totals["export"]), "kW")
        number("1-0:3.7.0", _kilo(totals["q_import"]), "kvar")
        number("1-0:4.7.0", _kilo(totals["q_export"]), "kvar")
        number("0-0:17.0.0", "027.6", "kVA")
        number("1-0:9.7.0", _kilo(math.hypot(totals["import"], totals["q_import"])), "kVA")
        number("1-0:10.7.0", _kilo(math.hypot(totals["export"], totals["q_export"])), "kVA")
        verbatim("1-1:31.4.0", "(040*A)(-040*A)")
        number("0-0:96.3.10", "1")
        number("0-1:96.3.10", "0")
        number("0-2:96.3.10", "0")
        for counter, count in self._counters.items():
            number(counter, f"{count:05d}")
        text("0-0:96.13.0", self.message)
        for slot in range(2, 6):
            text(f"0-0:96.13.{slot}", "")
        for line, phase in zip((32, 52, 72), phases, strict=False):
            number(f"1-0:{line}.7.0", f"{phase.values['voltage']:05.1f}", "V")
        for line, phase in zip((31, 51, 71), phases, strict=False):
            number(f"1-0:{line}.7.0", f"{round(phase.values['current']):03d}", "A")
        for quantity, codes, unit in (
            ("import", (21, 41, 61), "kW"),
            ("export", (22, 42, 62), "kW"),
            ("q_import", (23, 43, 63), "kvar"),
            ("q_export", (24, 44, 64), "kvar"),
        ):
            for code, phase in zip(codes, phases, strict=False):
                number(f"1-0:{code}.7.0", _kilo(phase.values[quantity]), unit)
        for channel in self._channels:
            prefix = f"0-{channel.number}:"
            number(prefix + "24.1.0", channel.kind.device_type)
            text(prefix + "96.1.0", channel.identifier)
            reading = f"{channel.captured // 1000:05d}.{channel.captured % 1000:03d}"
            captured = meter_time(channel.capture_time)
            lines.append(f"{prefix}24.2.1({captured})({reading}*{channel.kind.unit})")
            values[prefix + "24.2.1"] = Decimal(reading)
            number(prefix + "24.4.0", "1")
        body = ("\r\n".join(lines) + "\r\n!").encode()
        self.last_values = values
        return body + f"{crc16_arc(body):04X}\r\n".encode()


class PtyMeter:
    """The simulator behind a pseudo-terminal, like a meter on a USB serial cable.

    A thread writes a frame at once and then every ``sim.interval`` seconds. ``close()`` removes
    the device, so a reader sees what it sees when the cable is pulled.
    """

    def __init__(self, sim: MeterSimulator, *, count: int | None = None) -> None:
        self.sim = sim
        self.frames_sent = 0
        self._count = count
        self._master, self._slave = os.openpty()
        # Raw mode: the line discipline must not translate CR or swallow bytes of the frames.
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="smarty-p1-pty-meter", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"PtyMeter(path={self.path!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def done(self) -> bool:
        """Whether the requested number of frames has been sent."""
        return self._count is not None and self.frames_sent >= self._count

    def _run(self) -> None:
        while not self.done:
            self.inject(self.sim.next_frame())
            self.frames_sent += 1
            if self._stop.wait(self.sim.interval):
                return

    def inject(self, data: bytes) -> None:
        """Put bytes on the line (noise, a foreign frame), between the meter's frames."""
        with self._write_lock:
            view = memoryview(data)
            with contextlib.suppress(BlockingIOError, OSError):
                while view:
                    view = view[os.write(self._master, view) :]

    def close(self) -> None:
        """Stop sending and remove the device."""
        self._stop.set()
        self._thread.join()
        with self._write_lock:
            if self._master >= 0:
                os.close(self._master)
                os.close(self._slave)
                self._master = self._slave = -1


def open_pty(sim: MeterSimulator, *, count: int | None = None) -> PtyMeter:
    """Start a PtyMeter for sim."""
    return PtyMeter(sim, count=count)


class TcpMeter:
    """The simulator behind a TCP server, like a serial-to-network bridge (ser2net and friends).

    Every ``sim.interval`` seconds the meter sends its next frame, to every client connected at
    that moment (none: the frame is lost, as on a real line). Use ``async with`` or
    ``await close()``.
    """

    def __init__(self, sim: MeterSimulator, count: int | None = None) -> None:
        self.sim = sim
        self.frames_sent = 0
        self._count = count
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._ticker: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()

    def __repr__(self) -> str:
        return f"TcpMeter(port={self.port})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (port 0: any free port) and start sending."""
        self._server = await asyncio.start_server(self._connected, host, port)
        self._ticker = asyncio.create_task(self._tick(), name="smarty-p1-tcp-meter")

    @property
    def port(self) -> int:
        """The port the server listens on."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def clients(self) -> int:
        """How many clients are connected."""
        return len(self._clients)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            # Whatever a client sends is ignored, as by a bridge; its end is the disconnect.
            while await reader.read(4096):
                pass
        except ConnectionError:
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _tick(self) -> None:
        while self._count is None or self.frames_sent < self._count:
            await asyncio.sleep(self.sim.interval)
            self.inject(self.sim.next_frame())
            self.frames_sent += 1
        self.finished.set()

    def inject(self, data: bytes) -> None:
        """Send bytes to every client (noise, a foreign frame), between the meter's frames."""
        for writer in list(self._clients):
            if writer.transport.get_write_buffer_size() < _MAX_BACKLOG:
                writer.write(data)

    def drop_clients(self) -> None:
        """Close every client connection, as a bridge that restarts; the server keeps listening."""
        for writer in list(self._clients):
            writer.close()
        self._clients.clear()

    async def close(self) -> None:
        """Stop sending, disconnect every client and stop listening."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        self.drop_clients()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def serve_tcp(
    sim: MeterSimulator, host: str = "127.0.0.1", port: int = 0, *, count: int | None = None
) -> TcpMeter:
    """Start a TcpMeter for sim; ``count`` stops it after that many frames (see ``finished``)."""
    meter = TcpMeter(sim, count)
    await meter.start(host, port)
    return meter
