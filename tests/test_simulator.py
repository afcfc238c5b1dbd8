"""The meter simulator: realistic, consistent with what the decoder reads, repeatable."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import struct
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from custom_components.smarty_p1.p1 import (
    DecryptionError,
    Telegram,
    TelegramDecoder,
    check_telegram,
)
from custom_components.smarty_p1.p1.simulator import (
    HEADER,
    MBUS_PERIOD,
    MeterSimulator,
    open_pty,
    serve_tcp,
)

from .p1_helpers import (  # the fixture replaces conftest's Home Assistant set-up
    auto_enable_custom_integrations,  # noqa: F401
    telegrams,
)

KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
REGISTERS = ("1-0:1.8.0", "1-0:2.8.0", "1-0:3.8.0", "1-0:4.8.0")


def _decode(sim: MeterSimulator, decoder: TelegramDecoder) -> Telegram:
    (telegram,) = telegrams(decoder.feed(sim.next_frame()))
    return telegram


# Per phase: import, export, reactive import, reactive export, current, voltage.
PHASE_CODES = [
    tuple(f"1-0:{number}.7.0" for number in numbers)
    for numbers in ((21, 22, 23, 24, 31, 32), (41, 42, 43, 44, 51, 52), (61, 62, 63, 64, 71, 72))
]


def _number(telegram: Telegram, code: str) -> Decimal:
    value = telegram.objects[code].value
    assert isinstance(value, Decimal), code
    return value


def _sent(telegram: Telegram) -> dict[str, Decimal | str]:
    """What the decoder read, in the form of the simulator's last_values."""
    values: dict[str, Decimal | str] = {}
    for obj in telegram.objects.values():
        if isinstance(obj.value, Decimal | str):
            values[obj.obis] = obj.value
        else:
            # Times and multi-value lines are kept as the text sent.
            values[obj.obis] = (
                obj.raw[0] if len(obj.raw) == 1 else "".join(f"({part})" for part in obj.raw)
            )
    return values


def test_registers_never_go_backwards_and_do_move() -> None:
    sim = MeterSimulator(KEY, seed=7, pv=True, mbus=("gas", "water", "heat"), interval=60)
    decoder = TelegramDecoder(KEY)
    first = _decode(sim, decoder)
    previous = first
    exported_at_noon = False
    # Three simulated days, a frame a minute.
    for _ in range(3 * 1440):
        telegram = _decode(sim, decoder)
        for code in (*REGISTERS, "0-1:24.2.1", "0-2:24.2.1", "0-3:24.2.1"):
            now, before = telegram.objects[code].value, previous.objects[code].value
            assert isinstance(now, Decimal)
            assert isinstance(before, Decimal)
            assert now >= before, code
        meter_time = telegram.objects["0-0:1.0.0"].value
        assert isinstance(meter_time, datetime)
        if meter_time.hour == 13 and telegram.objects["1-0:2.7.0"].value != 0:
            exported_at_noon = True
        previous = telegram
    for code in (*REGISTERS, "0-1:24.2.1", "0-2:24.2.1", "0-3:24.2.1"):
        assert previous.objects[code].value != first.objects[code].value, code
    assert exported_at_noon
    assert decoder.stats.counter_regressions == 0


def test_energy_registers_integrate_power() -> None:
    sim = MeterSimulator(KEY, seed=3, interval=10)
    decoder = TelegramDecoder(KEY)
    start = _decode(sim, decoder).objects["1-0:1.8.0"].value
    powers: list[Decimal] = []
    for _ in range(360):  # one hour
        telegram = _decode(sim, decoder)
        power = telegram.objects["1-0:1.7.0"].value
        assert isinstance(power, Decimal)
        powers.append(power)
    end = telegram.objects["1-0:1.8.0"].value
    assert isinstance(start, Decimal)
    assert isinstance(end, Decimal)
    integrated = sum(powers, Decimal(0)) * 10 / 3600
    # The meter's registers count what its 3-decimal power readings round away.
    assert abs((end - start) - integrated) < Decimal("0.01") + integrated / 100


def test_values_are_consistent() -> None:
    sim = MeterSimulator(
        KEY, seed=11, pv=True, interval=30, start=datetime(2026, 5, 1, 6, tzinfo=UTC)
    )
    decoder = TelegramDecoder(KEY)
    for _ in range(1000):
        telegram = _decode(sim, decoder)
        objects = telegram.objects
        assert _sent(telegram) == sim.last_values
        assert telegram.raw == sim.last_telegram
        for codes in PHASE_CODES:
            p_in, p_out, q_in, q_out, current, voltage = (_number(telegram, c) for c in codes)
            assert Decimal(220) < voltage < Decimal(240)
            assert p_in == 0 or p_out == 0
            assert q_in == 0 or q_out == 0
            apparent = Decimal(1000) * ((p_in + p_out) ** 2 + (q_in + q_out) ** 2).sqrt()
            # The meter shows whole amperes.
            assert abs(current - apparent / voltage) <= Decimal("0.51")
        for total, per_phase in (("1-0:1.7.0", 0), ("1-0:2.7.0", 1), ("1-0:3.7.0", 2)):
            phases = sum(_number(telegram, codes[per_phase]) for codes in PHASE_CODES)
            assert abs(_number(telegram, total) - phases) <= Decimal("0.002")
    assert telegram.header == HEADER[1:]
    assert telegram.serial == sim.serial
    assert objects["0-0:17.0.0"].value == Decimal("27.6")
    assert objects["1-1:31.4.0"].value == (Decimal(40), Decimal(-40))


def test_meter_time_follows_luxembourg_summer_time() -> None:
    # Clocks go forward at 01:00 UTC on 2026-03-29 and back at 01:00 UTC on 2026-10-25.
    for start, before, after in (
        (datetime(2026, 3, 29, 0, 59, tzinfo=UTC), "260329015910W", "260329030000S"),
        (datetime(2026, 10, 25, 0, 59, tzinfo=UTC), "261025025910S", "261025020000W"),
    ):
        sim = MeterSimulator(None, interval=10, start=start)
        decoder = TelegramDecoder()
        texts = []
        for _ in range(6):
            telegram = _decode(sim, decoder)
            texts.append(telegram.objects["0-0:1.0.0"].raw[0])
            # The suffix makes the local time an exact instant.
            assert telegram.objects["0-0:1.0.0"].value == sim.now
        assert texts[0] == before
        assert texts[-1] == after


def test_mbus_channels_are_laid_out_like_the_meter() -> None:
    sim = MeterSimulator(KEY, mbus=("gas", "water", "heat"), interval=10)
    telegram = _decode(sim, TelegramDecoder(KEY))
    codes = list(telegram.objects)
    units = {1: ("003", "m3"), 2: ("007", "m3"), 3: ("004", "GJ")}
    for channel, (device_type, unit) in units.items():
        block = [code for code in codes if code.startswith((f"0-{channel}:2", f"0-{channel}:96.1"))]
        assert block == [
            f"0-{channel}:24.1.0",
            f"0-{channel}:96.1.0",
            f"0-{channel}:24.2.1",
            f"0-{channel}:24.4.0",
        ]
        assert telegram.objects[f"0-{channel}:24.1.0"].raw == (device_type,)
        identifier = telegram.objects[f"0-{channel}:96.1.0"]
        assert isinstance(identifier.value, str)
        assert bytes.fromhex(identifier.raw[0]).decode() == identifier.value
        reading = telegram.objects[f"0-{channel}:24.2.1"]
        assert reading.unit == unit
        assert isinstance(reading.value, Decimal)
        assert reading.value.as_tuple().exponent == -3
        assert reading.timestamp is not None
        assert timedelta(0) <= sim.now - reading.timestamp < timedelta(seconds=MBUS_PERIOD)
    # The channels come after every electricity object, as on the real meter.
    assert codes.index("0-1:24.1.0") > codes.index("1-0:64.7.0")
    assert telegram.objects["0-0:42.0.0"].raw == (sim.serial.encode().hex().upper(),)


def test_mbus_reading_only_changes_at_capture() -> None:
    sim = MeterSimulator(KEY, mbus=("gas",), interval=10)
    decoder = TelegramDecoder(KEY)
    seen: dict[datetime, Decimal] = {}
    for _ in range(200):
        reading = _decode(sim, decoder).objects["0-1:24.2.1"]
        assert reading.timestamp is not None
        assert isinstance(reading.value, Decimal)
        assert seen.setdefault(reading.timestamp, reading.value) == reading.value
    assert len(seen) >= 6


def test_one_phase_meter() -> None:
    sim = MeterSimulator(None, phases=1, mbus=(), interval=10)
    telegram = _decode(sim, TelegramDecoder())
    assert "1-0:32.7.0" in telegram.objects
    assert "1-0:21.7.0" in telegram.objects
    for code in telegram.objects:
        assert not re.match(r"1-0:(4[1-4]|5\d|6[1-4]|7\d)\.|0-1:24", code), code


def test_set_key_resets_the_counter() -> None:
    sim = MeterSimulator(KEY, interval=10)
    decoder = TelegramDecoder(KEY)
    counters = [_decode(sim, decoder).frame_counter for _ in range(3)]
    assert counters == [1, 2, 3]
    assert sim.frame_counter == 3
    new_key = bytes(16)
    sim.set_key(new_key)
    assert sim.frame_counter == 0
    (failure,) = decoder.feed(sim.next_frame())
    assert isinstance(failure, DecryptionError)
    # The same key again: a real meter after a key change also starts from 0, seen as a regression.
    sim.set_key(KEY)
    assert _decode(sim, decoder).frame_counter == 1
    assert decoder.stats.counter_regressions == 1
    sim.set_key(None)
    assert sim.next_frame().startswith(b"/")
    assert not sim.encrypted


def test_same_seed_same_telegrams() -> None:
    def run(seed: int) -> list[bytes]:
        sim = MeterSimulator(KEY, seed=seed, pv=True, interval=10)
        return [sim.next_frame() for _ in range(100)]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_plaintext_meter_and_message() -> None:
    sim = MeterSimulator(None, interval=10)
    sim.set_message("Coupure prevue le 12/05 de 8h a 12h")
    wire = sim.next_frame()
    assert wire == sim.last_telegram
    assert check_telegram(wire) is not None
    (telegram,) = telegrams(TelegramDecoder().feed(wire))
    assert telegram.objects["0-0:96.13.0"].value == "Coupure prevue le 12/05 de 8h a 12h"
    assert sim.last_values["0-0:96.13.0"] == "Coupure prevue le 12/05 de 8h a 12h"
    assert "SAG" in repr(sim)


@pytest.mark.parametrize(
    "kwargs",
    [{"phases": 2}, {"mbus": ("gas",) * 5}, {"mbus": ("electricity",)}, {"system_title": b"SAG"}],
)
def test_rejects_what_no_meter_has(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"a Smarty meter has|M-Bus|system title"):
        MeterSimulator(KEY, **kwargs)  # type: ignore[arg-type]


def _read_pty(path: str, decoder: TelegramDecoder, count: int) -> list[Telegram]:
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY)
    try:
        found: list[Telegram] = []
        deadline = time.monotonic() + 10
        while len(found) < count and time.monotonic() < deadline:
            found += telegrams(decoder.feed(os.read(fd, 65536)))
        return found
    finally:
        os.close(fd)


def test_pty_meter_streams_and_unplugs() -> None:
    sim = MeterSimulator(KEY, interval=0.05)
    with open_pty(sim) as meter:
        assert "pts" in meter.path
        assert meter.path in repr(meter)
        meter.inject(b"\x00line noise\xdb")
        found = _read_pty(meter.path, TelegramDecoder(KEY), 3)
        assert len(found) >= 3
        assert found[-1].frame_counter is not None
        assert found[-1].frame_counter <= sim.frame_counter
    assert not os.path.exists(meter.path)
    meter.close()  # closing twice is harmless


def test_pty_meter_stops_after_count() -> None:
    sim = MeterSimulator(None, interval=0.01)
    meter = open_pty(sim, count=3)
    deadline = time.monotonic() + 5
    while not meter.done and time.monotonic() < deadline:
        time.sleep(0.01)
    meter.close()
    assert meter.frames_sent == 3
    assert sim.frame_counter == 3


async def test_tcp_meter_broadcasts_what_it_sends() -> None:
    sim = MeterSimulator(KEY, interval=0.05, pv=True)
    async with await serve_tcp(sim, count=None) as meter:
        assert str(meter.port) in repr(meter)
        readers = [await asyncio.open_connection("127.0.0.1", meter.port) for _ in range(2)]
        decoders = [TelegramDecoder(KEY) for _ in readers]
        received: list[list[Telegram]] = [[], []]
        async with asyncio.timeout(10):
            for want in (1, 3):
                for index, (reader, _) in enumerate(readers):
                    while len(received[index]) < want:
                        received[index] += telegrams(decoders[index].feed(await reader.read(65536)))
                assert meter.clients == 2
                meter.inject(b"noise between frames")
        # Both clients get the same frames.
        counters = [{t.frame_counter for t in got} for got in received]
        assert counters[0] & counters[1]
        latest = max(received[0], key=lambda t: t.frame_counter or 0)
        assert latest.frame_counter is not None
        assert latest.frame_counter <= sim.frame_counter
        assert all(decoder.stats.rejected.total() == 0 for decoder in decoders)
        meter.drop_clients()
        async with asyncio.timeout(10):
            for reader, writer in readers:
                while await reader.read(65536):
                    pass
                writer.close()
        assert meter.clients == 0


async def test_tcp_meter_finishes_after_count() -> None:
    sim = MeterSimulator(None, interval=0.01)
    meter = await serve_tcp(sim, count=4)
    reader, writer = await asyncio.open_connection("127.0.0.1", meter.port)
    async with asyncio.timeout(10):
        await meter.finished.wait()
    assert meter.frames_sent == 4
    writer.close()
    await meter.close()
    async with asyncio.timeout(10):
        while await reader.read(65536):
            pass


async def test_tcp_meter_survives_clients_that_reset_or_stall() -> None:
    sim = MeterSimulator(None, interval=0.05)
    meter = await serve_tcp(sim)
    stalled_reader, stalled = await asyncio.open_connection("127.0.0.1", meter.port)
    resetting = socket.create_connection(("127.0.0.1", meter.port))
    async with asyncio.timeout(10):
        await stalled_reader.read(1)
        # A client that vanishes with a reset is dropped from the broadcast.
        resetting.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        resetting.close()
        while meter.clients > 1:  # noqa: ASYNC110 - the meter keeps a count, not an event
            await asyncio.sleep(0.01)
        # A client that does not read gets no more than a bounded backlog: the rest is lost.
        for _ in range(40):
            meter.inject(bytes(1 << 20))
        received = 0
        stalled.close()
        await meter.close()
        while data := await stalled_reader.read(1 << 20):
            received += len(data)
    assert received < 20 << 20
    await meter.close()  # closing twice is harmless
