"""Decoding telegram lines into typed values."""

from __future__ import annotations

import gc
import json
import sys
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from pathlib import Path

import pytest

from custom_components.smarty_p1.p1 import (
    OBIS_CATALOG,
    CosemObject,
    NotATelegramError,
    ObisKind,
    Telegram,
    TelegramDecoder,
    cli,
    crc16_arc,
    describe,
    generic_code,
    mbus_channel,
    parse_telegram,
    parse_timestamp,
)
from custom_components.smarty_p1.p1 import telegram as telegram_module
from custom_components.smarty_p1.p1.obis import display_name
from custom_components.smarty_p1.p1.telegram import TelegramParser, decode_text

from .p1_helpers import (  # the fixture replaces conftest's Home Assistant set-up
    auto_enable_custom_integrations,  # noqa: F401
    decimals_in,
    plaintext,
)

SUMMER = timezone(timedelta(hours=2))
WINTER = timezone(timedelta(hours=1))


def _telegram(*lines: str, header: str = "/Lux5\\253663629_D") -> Telegram:
    body = "\r\n".join((header, "", *lines)) + "\r\n!"
    return parse_telegram((body + "0000\r\n").encode())


def _one(line: str) -> CosemObject:
    (obj,) = _telegram(line).objects.values()
    return obj


@pytest.mark.parametrize(
    ("line", "value", "unit"),
    [
        ("1-0:1.8.0(000273.764*kWh)", Decimal("273.764"), "kWh"),
        ("1-0:1.7.0(00.000*kW)", Decimal("0.000"), "kW"),
        # 2018 firmware sends some values without a unit.
        ("0-0:17.0.0(77.376)", Decimal("77.376"), None),
        ("0-0:17.0.0(069.0*kVA)", Decimal("69.0"), "kVA"),
        ("1-0:31.7.0(001*A)", Decimal(1), "A"),
        ("1-0:32.7.0(231.0*V)", Decimal("231.0"), "V"),
        ("0-0:96.7.21(01067)", Decimal(1067), None),
        ("1-0:99.1.0(-5.25*X)", Decimal("-5.25"), "X"),
    ],
)
def test_numbers_keep_the_meters_precision(line: str, value: Decimal, unit: str | None) -> None:
    obj = _one(line)
    assert obj.value == value
    assert isinstance(obj.value, Decimal)
    # Same digits after the point: 0.000 stays 0.000, not 0.
    assert obj.value.as_tuple().exponent == value.as_tuple().exponent
    assert obj.unit == unit
    assert obj.raw == (line[line.index("(") + 1 : -1],)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("260403175431S", datetime(2026, 4, 3, 17, 54, 31, tzinfo=SUMMER)),
        ("180130102122W", datetime(2018, 1, 30, 10, 21, 22, tzinfo=WINTER)),
        # DSMR 2/3 carry no suffix: local time, read as winter time.
        ("180130102122", datetime(2018, 1, 30, 10, 21, 22, tzinfo=WINTER)),
        ("632525252525S", None),
        ("261332000000W", None),
        ("26040317543", None),
        ("hello", None),
    ],
)
def test_timestamps(text: str, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected
    if expected is not None:
        assert parse_timestamp(text) == expected.astimezone(UTC)


def test_meter_time_object() -> None:
    obj = _one("0-0:1.0.0(261025025959S)")
    assert obj.value == datetime(2026, 10, 25, 0, 59, 59, tzinfo=UTC)
    assert _one("0-0:1.0.0(261025020000W)").value == datetime(2026, 10, 25, 1, tzinfo=UTC)


def test_empty_values_are_none_or_empty_text() -> None:
    assert _one("1-0:1.7.0()").value is None
    message = _one("0-0:96.13.0()")
    assert message.value == ""
    assert message.raw == ("",)


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("0-0:42.0.0(53414731303330373030303132373031)", "SAG1030700012701"),
        ("0-1:96.1.0(464C4F313832333730313230333530)", "FLO182370120350"),
        ("0-0:96.13.0(48656C6C6F20776F726C64)", "Hello world"),
        # Not printable once decoded, or not hex at all: kept as sent.
        ("0-0:96.13.0(00FF)", "00FF"),
        ("0-0:96.13.0(ABC)", "ABC"),
        ("0-0:96.1.1(3960221976967177082151037881335713)", '9`"\x19vyqw\x08!Q\x03x\x813W\x13'),
    ],
)
def test_hex_text(line: str, value: str) -> None:
    expected = value if value.isprintable() else line[line.index("(") + 1 : -1]
    assert _one(line).value == expected


def test_decode_text() -> None:
    assert decode_text("4142") == "AB"
    assert decode_text("") == ""
    assert decode_text("not hex") == "not hex"


def test_version_is_kept_as_text() -> None:
    assert _one("1-3:0.2.8(42)").value == "42"
    assert _one("1-3:0.2.8()").value is None
    assert _one("0-0:96.1.4(50217)").value == "50217"


def test_current_limits_are_a_tuple() -> None:
    obj = _one("1-1:31.4.0(040*A)(-040*A)")
    assert obj.value == (Decimal(40), Decimal(-40))
    assert obj.unit == "A"
    assert obj.raw == ("040*A", "-040*A")


def test_mixed_units_give_no_unit() -> None:
    obj = _one("1-0:99.2.0(1*A)(2*V)(text)")
    assert obj.value == (Decimal(1), Decimal(2), "text")
    assert obj.unit is None


def test_mbus_reading() -> None:
    gas = _one("0-1:24.2.1(260403174542S)(14239.771*m3)")
    assert gas.value == Decimal("14239.771")
    assert gas.unit == "m3"
    assert gas.timestamp == datetime(2026, 4, 3, 17, 45, 42, tzinfo=SUMMER)
    heat = _one("0-3:24.2.1(200706102900W)(00028.103*GJ)")
    assert (heat.value, heat.unit) == (Decimal("28.103"), "GJ")


def test_mbus_placeholder_time_means_no_reading() -> None:
    empty = _one("0-2:24.2.1(632525252525S)(00000.000)")
    assert empty.value is None
    assert empty.timestamp is None
    assert empty.raw == ("632525252525S", "00000.000")


def test_belgian_peak_demand_is_a_timed_reading() -> None:
    obj = _one("1-0:1.6.0(200509134558S)(02.589*kW)")
    assert (obj.value, obj.unit) == (Decimal("2.589"), "kW")
    assert obj.timestamp == datetime(2020, 5, 9, 13, 45, 58, tzinfo=SUMMER)


def test_failure_log() -> None:
    obj = _one(
        "1-0:99.97.0(2)(0-0:96.7.19)(101208152415W)(0000000240*s)(101208151004W)(0000000301*s)"
    )
    assert obj.value == (
        (datetime(2010, 12, 8, 15, 24, 15, tzinfo=WINTER), Decimal(240)),
        (datetime(2010, 12, 8, 15, 10, 4, tzinfo=WINTER), Decimal(301)),
    )
    assert obj.unit == "s"
    assert _one("1-0:99.97.0(0)(0-0:96.7.19)").value == ()
    # A slot without a real time or duration is no event.
    broken = _one("1-0:99.97.0(1)(0-0:96.7.19)(nonsense)(oops)")
    assert broken.value == ()


def test_dsmr22_gas_reading_continues_on_the_next_line() -> None:
    telegram = _telegram(
        "0-1:24.3.0(121030140000)(00)(60)(1)(0-1:24.2.1)(m3)",
        "(00610.181)",
        "0-1:24.4.0(1)",
        header="/ISk5\\2ME382-1004",
    )
    gas = telegram.objects["0-1:24.3.0"]
    assert gas.raw == ("121030140000", "00", "60", "1", "0-1:24.2.1", "m3", "00610.181")
    assert telegram.objects["0-1:24.4.0"].value == Decimal(1)


def test_repeated_lines_reuse_their_object() -> None:
    # Consumers may skip work by identity: an unchanged line must give the very same object,
    # a changed one a new object, and the continuation of a repeated line its full reading.
    first = _telegram("1-0:1.8.0(000001.000*kWh)", "1-0:1.7.0(00.100*kW)")
    second = _telegram("1-0:1.8.0(000001.000*kWh)", "1-0:1.7.0(00.200*kW)")
    assert second.objects["1-0:1.8.0"] is first.objects["1-0:1.8.0"]
    assert second.objects["1-0:1.7.0"] is not first.objects["1-0:1.7.0"]
    assert second.objects["1-0:1.7.0"].value == Decimal("0.200")
    lines = ("0-1:24.3.0(121030140000)(00)(60)(1)(0-1:24.2.1)(m3)", "(00610.181)")
    for _ in range(2):
        gas = _telegram(*lines).objects["0-1:24.3.0"]
        assert gas.raw[-1] == "00610.181"
    head = _telegram(lines[0]).objects["0-1:24.3.0"]
    assert head.raw[-1] == "m3"


def test_unknown_codes_and_text_are_kept() -> None:
    telegram = _telegram("9-9:9.9.9(whatever)", "9-9:9.9.8()", "1-0:1.8.0(12.5*kWh)")
    assert telegram.objects["9-9:9.9.9"].value == "whatever"
    assert telegram.objects["9-9:9.9.8"].raw == ("",)
    assert telegram.objects["9-9:9.9.8"].value is None
    assert list(telegram.objects) == ["9-9:9.9.9", "9-9:9.9.8", "1-0:1.8.0"]


@pytest.mark.parametrize("text", ["+NaN1", "-sNaN2", "NaN", "Infinity", "-", "1.2.3", "+x1"])
def test_text_that_looks_numeric_is_not_a_number(text: str) -> None:
    assert not isinstance(_one(f"1-0:1.8.0({text})").value, Decimal)


def test_lines_after_the_end_are_ignored() -> None:
    telegram = parse_telegram(b"/ABC5\r\n\r\n1-0:1.8.0(1*kWh)\r\n!\r\n1-0:2.8.0(2*kWh)\r\n")
    assert list(telegram.objects) == ["1-0:1.8.0"]
    assert telegram.crc is None


@pytest.mark.parametrize("data", [b"no header\r\n!0000\r\n", b"/ABC5\xff\r\n!0000\r\n"])
def test_not_a_telegram(data: bytes) -> None:
    with pytest.raises(NotATelegramError):
        parse_telegram(data)


def test_real_telegram_view() -> None:
    telegram = parse_telegram(plaintext("plain_lu_real_2026_meterlogger"), crc=0x80F6)
    assert telegram.serial == "SAG1030700012701"
    assert telegram.get("1-0:2.8.0") is not None
    assert telegram.get("1-0:2.8.1") is None
    view = telegram.as_dict()
    assert view["header"] == "Lux5\\253663629_D"
    assert view["encrypted"] is False
    assert view["system_title"] is None
    values = view["values"]
    assert values["1-0:2.8.0"] == {"value": 112743.03, "unit": "kWh", "timestamp": None}
    assert values["0-0:96.7.21"]["value"] == 1067
    assert values["1-1:31.4.0"]["value"] == [40, -40]
    assert values["0-0:1.0.0"]["value"] == "2026-04-03T17:54:31+02:00"
    assert values["0-1:24.2.1"] == {
        "value": 14239.771,
        "unit": "m3",
        "timestamp": "2026-04-03T17:45:42+02:00",
    }
    assert values["0-0:96.13.0"]["value"] == ""
    # The telegram bytes stay out of the repr (and so out of logs).
    assert "b'/" not in repr(telegram)


def test_serial_falls_back_to_the_dutch_identifier() -> None:
    dutch = parse_telegram(plaintext("plain_nl_dsmr5_iskra_dsmr_parser"))
    assert dutch.serial is not None
    assert dutch.serial == dutch.objects["0-0:96.1.1"].value
    assert _telegram("1-0:1.8.0(1*kWh)").serial is None


def test_catalog() -> None:
    assert describe("1-0:1.8.0") == OBIS_CATALOG["1-0:1.8.0"]
    assert describe("0-3:24.2.1") == OBIS_CATALOG["0-x:24.2.1"]
    assert describe("0-0:96.13.4") == OBIS_CATALOG["0-0:96.13.x"]
    assert describe("0-0:96.13.0") == OBIS_CATALOG["0-0:96.13.0"]
    assert describe("9-9:9.9.9") is None
    assert generic_code("0-2:96.1.0") == "0-x:96.1.0"
    assert generic_code("0-1:96.3.10") == "0-1:96.3.10"
    assert mbus_channel("0-4:24.2.1") == 4
    assert mbus_channel("0-1:96.3.10") is None
    assert mbus_channel("1-0:1.8.0") is None
    assert OBIS_CATALOG["1-1:31.4.0"].kind is ObisKind.LIMITS
    # Every object of the Luxembourg specification's example is described.
    for obis in parse_telegram(plaintext("plain_lu_spec_v113_appendix")).objects:
        assert describe(obis) is not None, obis


def test_telegram_without_an_end_line() -> None:
    telegram = parse_telegram(b"/ABC5\r\n\r\n1-0:1.8.0(1*kWh)\r\n")
    assert list(telegram.objects) == ["1-0:1.8.0"]


def test_many_unknown_codes() -> None:
    # More distinct codes than the kind cache holds: it starts over and stays correct.
    lines = [f"9-9:{index}.0.0({index})" for index in range(5000)]
    telegram = _telegram(*lines, "1-0:1.8.0(000001.000*kWh)")
    assert len(telegram.objects) == 5001
    assert telegram.objects["9-9:4999.0.0"].value == Decimal(4999)
    assert telegram.objects["1-0:1.8.0"].unit == "kWh"
    # The recent-lines memory is bounded too, and still right after it started over.
    assert telegram_module._shared.remembered() <= 2 * TelegramParser.SIZE
    again = _telegram(*lines[:10], "1-0:1.8.0(000001.000*kWh)")
    assert again.objects["9-9:9.0.0"].value == Decimal(9)


@pytest.mark.parametrize(
    ("obis", "name"),
    [
        ("1-0:1.8.0", "Energy imported (P+)"),
        ("0-0:96.13.3", "Message channel 3"),
        ("0-2:24.2.1", "M-Bus last reading (channel 2)"),
        ("0-1:96.3.10", "Relay 1 state"),
        ("9-9:9.9.9", None),
    ],
)
def test_display_name_fills_in_the_channel(obis: str, name: str | None) -> None:
    assert display_name(obis) == name


# Values the meter did not send.


@pytest.mark.parametrize(
    "data",
    [
        b"/ABC5\r\n\r\n!1234\r\n",
        b"/ABC5\r\n\r\n\r\n!\r\n",
        b"/ABC!1234\r\n",
        b"/ABC!\r\n1-0:1.8.0(1*kWh)\r\n!1234\r\n",
        b"/ABC5\r\n",
        b"/ABC5",
        # Lines, but not one of them an object.
        b"/ABC5\r\n\r\n1-0:1.8.0(000025.653*kWh\r\n(1)\r\nhello\r\n!1234\r\n",
    ],
)
def test_a_telegram_without_objects_is_not_a_telegram(data: bytes) -> None:
    with pytest.raises(NotATelegramError):
        parse_telegram(data)


def test_a_frame_without_objects_is_rejected_by_the_decoder() -> None:
    body = b"/ABC5\r\n\r\n!"
    decoder = TelegramDecoder()
    (result,) = decoder.feed(body + f"{crc16_arc(body):04X}\r\n".encode())
    assert isinstance(result, NotATelegramError)
    assert decoder.stats.rejected["malformed"] == 1
    # Without even the header's fifth character the framer sees no telegram start: noise.
    body = b"/ABC!"
    decoder = TelegramDecoder()
    assert decoder.feed(body + f"{crc16_arc(body):04X}\r\n".encode()) == []
    assert decoder.noise_bytes > 0


@pytest.mark.parametrize(
    "line",
    [
        "1-0:1.8.0(000025.653*kWh",
        "1-0:1.8.0(000025.6534",
        "1-0:1.8.0000025.653*kWh)",
        "1-0:1.8.0(000025.653*kWh))",
        "1-0:1.8.0((000025.653*kWh)",
        "1-0:1.8.0(1)2(3)",
        "1-0:1.8.0(12*kWh)(99*kWh",
        "1-0:1.8.0",
        "(12*kWh)",
        "1-0:1.8.0 (12*kWh)",
        "1-0:99.97.0(1)(0-0:96.7.19)(101208152415W)(0000000240*s",
        "0-1:24.2.1(260403174542S)(14239.771*m3",
        "0-0:96.13.0(48656C6C6F",
    ],
)
def test_a_line_that_is_not_code_and_values_is_no_object(line: str) -> None:
    telegram = _telegram(line, "1-0:2.8.0(000001.000*kWh)")
    assert list(telegram.objects) == ["1-0:2.8.0"]


def test_a_number_code_with_two_values_has_no_value() -> None:
    # The fast path for single numbers once read this as 12 kWh with unit "kWh)(99*kWh".
    obj = _one("1-0:1.8.0(12*kWh)(99*kWh)")
    assert obj.value is None
    assert obj.unit is None
    assert obj.raw == ("12*kWh", "99*kWh")


@pytest.mark.parametrize(
    "text",
    [
        "1e5*kWh",
        "1E5",
        "1_000*kWh",
        "2_3_3.0*V",
        " 12",
        "12 ",
        "+-1",
        "1.",
        ".5",
        "-.5",
        "1.2.3",
        "0x10",
        "\u0661\u0662",  # Arabic-Indic digits: Decimal reads them, no meter sends them
        "1234567890123456",  # 16 integer digits
        "1.1234567890",  # 10 decimals
        "1*",
        "1*k h",
        "1*kW*h",
        "1*" + "k" * 17,
        "NaN",
        "-Infinity",
        "1E999999",
    ],
)
def test_only_what_a_meter_sends_is_a_number(text: str) -> None:
    line = f"1-0:1.8.0({text})"
    telegram = _telegram(line) if text.isascii() else None
    if telegram is not None:
        assert telegram.objects["1-0:1.8.0"].value is None
        assert telegram.objects["1-0:1.8.0"].raw == (text,)
        # On a code the catalog lacks it is kept as text, never read as a number.
        assert not isinstance(_one(f"9-9:9.9.9({text})").value, Decimal)
    else:
        with pytest.raises(NotATelegramError):
            parse_telegram(f"/ABC5\r\n\r\n{line}\r\n!\r\n".encode())


@pytest.mark.parametrize(
    ("text", "value", "unit"),
    [
        ("123456789012345", Decimal("123456789012345"), None),
        ("-123456789012345.123456789*kWh", Decimal("-123456789012345.123456789"), "kWh"),
        ("+1*m3", Decimal(1), "m3"),
        ("-0.5*kW", Decimal("-0.5"), "kW"),
        ("0*%", Decimal(0), "%"),
        ("1*" + "k" * 16, Decimal(1), "k" * 16),
    ],
)
def test_numbers_at_the_limits(text: str, value: Decimal, unit: str | None) -> None:
    obj = _one(f"1-0:1.8.0({text})")
    assert (obj.value, obj.unit) == (value, unit)
    assert str(obj.value) == str(value)


@pytest.mark.parametrize(
    "text",
    [
        "632525252525W",
        "632525252525S",
        "000101000000W",
        "000101000001W",
        "000101010000W",
        "000101000000",
        "700101010000W",
        "991231235959S",
        "260230120000W",  # 30 February
        "260101250000W",  # hour 25
        "260101126000W",  # minute 60
        "260101000000X",
        "2601010000001",
        "26010100000",
        "\u0662\u0666\u0660\u0661\u0660\u0661\u0660\u0660\u0660\u0660\u0660\u0660W",  # not ASCII
        "",
    ],
)
def test_placeholder_and_impossible_times_are_no_time(text: str) -> None:
    assert parse_timestamp(text) is None


def test_times_at_the_limits() -> None:
    assert parse_timestamp("000102000000W") == datetime(2000, 1, 2, tzinfo=WINTER)
    assert parse_timestamp("691231235959S") == datetime(2069, 12, 31, 23, 59, 59, tzinfo=SUMMER)
    assert parse_timestamp("240229120000W") == datetime(2024, 2, 29, 12, tzinfo=WINTER)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("632525252525W", None),
        ("000101000000W", None),
        ("700101010000W", None),
        ("000101000001W", None),
        # No S or W (DSMR 2/3): a time all the same, read as winter time, never a number.
        ("200706104157", datetime(2020, 7, 6, 10, 41, 57, tzinfo=WINTER)),
        ("12345", None),
        ("000025.653*kWh", None),
        ("", None),
    ],
)
def test_a_timestamp_code_is_a_time_or_none(text: str, value: datetime | None) -> None:
    obj = _one(f"0-0:1.0.0({text})")
    assert obj.value == value
    assert obj.value is None or isinstance(obj.value, datetime)
    assert obj.raw == (text,)


@pytest.mark.parametrize("time", ["000101000000W", "700101010000W", "632525252525S", "nonsense"])
def test_mbus_reading_at_a_placeholder_time_is_no_reading(time: str) -> None:
    obj = _one(f"0-1:24.2.1({time})(00000.000*m3)")
    assert (obj.value, obj.unit, obj.timestamp) == (None, None, None)
    assert obj.raw == (time, "00000.000*m3")


def test_mbus_reading_needs_a_number() -> None:
    for reading in ("1e5*m3", "", "12.5*m3)(13"):
        assert _one(f"0-1:24.2.1(260403174542S)({reading})").value is None


def test_empty_failure_log_slots_are_no_events() -> None:
    obj = _one(
        "1-0:99.97.0(3)(0-0:96.7.19)(101208152415W)(0000000240*s)"
        "(000101000001W)(2147483647*s)(101208151004W)(2147483647*s)"
    )
    assert obj.value == ((datetime(2010, 12, 8, 15, 24, 15, tzinfo=WINTER), Decimal(240)),)


@pytest.mark.parametrize(
    "line",
    [
        "0-1:24.1.0(1E999999)",
        "9-9:9.9.9(1E999999)",
        "1-0:1.8.0(1E3000000*kWh)",
        "9-9:9.9.9(1e3000000)(1E999999*kWh)",
        "1-0:1.8.0(" + "9" * 5000 + "*kWh)",
        "9-9:9.9.9(" + "9" * 5000 + ")",
        "1-1:31.4.0(" + "9" * 5000 + "*A)(1E999999*A)",
        "0-1:24.2.1(260403174542S)(" + "9" * 5000 + "*m3)",
        "1-0:99.97.0(1)(0-0:96.7.19)(101208152415W)(" + "9" * 5000 + "*s)",
    ],
)
def test_huge_numbers_are_no_values(line: str) -> None:
    # Such numbers made as_dict() take 9.7 s, int() 88 s and `read --json` fail: they are no
    # value at all now, so every path from a telegram meets only numbers a meter sends.
    telegram = _telegram(line)
    (obj,) = telegram.objects.values()
    assert decimals_in(obj.value) == []
    assert json.loads(json.dumps(telegram.as_dict(), allow_nan=False))["values"]


@pytest.mark.parametrize(
    ("hex_text", "text"),
    [
        ("C3A9", "é"),
        ("436F75707572652070726576756520C3A0203868", "Coupure prevue à 8h"),
        ("4C696E6520310D0A4C696E652032", "Line 1\r\nLine 2"),
        ("0A", "\n"),
        ("0D0A0D0A", "\r\n\r\n"),
        ("E282AC", "€"),
        ("F09F9881", "😁"),
    ],
)
def test_decode_text_reads_utf8_and_line_breaks(hex_text: str, text: str) -> None:
    assert decode_text(hex_text) == text
    assert decode_text(hex_text.lower()) == text
    assert _one(f"0-0:96.13.0({hex_text})").value == text


@pytest.mark.parametrize(
    "hex_text",
    [
        "C3",  # a UTF-8 sequence cut short
        "FF",
        "C328",  # invalid continuation byte
        "07",  # bell
        "4109",  # tab
        "00",
        "E280A8",  # U+2028 LINE SEPARATOR: a line break of no meter
        "41 42",  # fromhex would skip the space
        "4",
        "GG",
    ],
)
def test_decode_text_keeps_anything_else_as_sent(hex_text: str) -> None:
    assert decode_text(hex_text) == hex_text


# Work and memory an attacker can force.


def _calls(work: Callable[[], object]) -> int:
    """How many functions work calls, Python and C: a measure of work that no load changes."""
    count = 0

    def profile(_frame: object, event: str, _arg: object) -> None:
        nonlocal count
        if event in {"call", "c_call"}:
            count += 1

    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(None)
    return count


def _continued_reading(lines: int) -> bytes:
    body = "0-1:24.3.0(121030140000)(00)(60)(1)(0-1:24.2.1)(m3)\r\n" + "(1)\r\n" * lines
    return f"/ISk5\\2ME382-1004\r\n\r\n{body}!\r\n".encode()


def _long_line(values: int) -> bytes:
    return f"/ISk5\\2ME382-1004\r\n\r\n9-9:9.9.9{'(12.5*kWh)' * values}\r\n!\r\n".encode()


@pytest.mark.parametrize("build", [_continued_reading, _long_line])
def test_work_grows_linearly_with_the_input(build: Callable[[int], bytes]) -> None:
    # DSMR 2/3 continuation lines once rebuilt the object at each line: 3200 lines took 2.8 s.
    small, large = (_calls(partial(TelegramParser().parse, build(count))) for count in (400, 1600))
    assert large < 4.4 * small


def test_continuation_lines_build_the_object_once() -> None:
    telegram = TelegramParser().parse(_continued_reading(3000))
    reading = telegram.objects["0-1:24.3.0"]
    assert len(reading.raw) == 6 + 3000
    assert isinstance(reading.value, tuple)
    assert reading.value[-1] == Decimal(1)


def test_continuation_lines_after_a_broken_line_belong_to_nothing() -> None:
    telegram = _telegram(
        "0-1:24.3.0(1)", "0-1:24.4.0(1", "(2)", "1-0:1.8.0(1*kWh)", "1-0:2.8.0(1*kWh)", "(3)(4"
    )
    assert telegram.objects["0-1:24.3.0"].raw == ("1",)
    assert "0-1:24.4.0" not in telegram.objects
    assert telegram.objects["1-0:1.8.0"].raw == ("1*kWh",)
    # A broken continuation line leaves the reading it continues broken too.
    assert "1-0:2.8.0" not in telegram.objects
    with pytest.raises(NotATelegramError):
        _telegram("(1)", "(2)")


def _message(index: int, size: int) -> bytes:
    text = f"{index:08d}".encode().hex().upper() * (size // 16)
    return f"/Lux5\\253663629_D\r\n\r\n0-0:96.13.0({text})\r\n1-0:1.8.0(1*kWh)\r\n!\r\n".encode()


def _held_after(telegrams: Iterable[bytes]) -> tuple[int, int]:
    """Bytes the shared parser holds after parsing telegrams (each dropped), and the peak."""
    telegram_module._shared.clear()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for data in telegrams:
            parse_telegram(data)
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        telegram_module._shared.clear()
    return current - base, peak - base


def test_long_lines_are_not_remembered() -> None:
    # 3000 telegrams, each with another 16 KB message, once left 29 MB held.
    held, peak = _held_after(_message(index, 16 * 1024) for index in range(3000))
    assert held < 64 * 1024
    assert peak < 1024 * 1024


def test_the_memory_is_bounded_whatever_the_lines() -> None:
    # The largest lines it remembers, all different: at most SIZE of them.
    def telegrams() -> Iterator[bytes]:
        for index in range(3000):
            values = "".join(f"({index:015d}.{slot:09d}*kWhkWhkWhkWhkWh)" for slot in range(3))
            line = f"9-9:{index}.0.0{values}"[: TelegramParser.LONGEST_LINE - 1] + ")"
            yield f"/ABC5\r\n\r\n{line}\r\n!\r\n".encode()

    held, peak = _held_after(telegrams())
    assert held < 1536 * 1024
    assert peak < 1536 * 1024 + 64 * 1024


def test_objects_are_immutable() -> None:
    obj = _one("1-0:1.8.0(000001.000*kWh)")
    with pytest.raises(AttributeError):
        obj.value = Decimal(2)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        obj.unit = "Wh"  # type: ignore[misc]
    assert hash(obj) == hash(_one("1-0:1.8.0(000001.000*kWh)"))


def test_each_parser_has_its_own_memory() -> None:
    data = _message(1, 64)
    first, second = TelegramParser(), TelegramParser()
    one = first.parse(data).objects["0-0:96.13.0"]
    assert first.parse(data).objects["0-0:96.13.0"] is one
    other = second.parse(data).objects["0-0:96.13.0"]
    assert other == one
    assert other is not one
    assert first.remembered() == 2
    first.clear()
    assert first.remembered() == 0
    assert first.parse(data).objects["0-0:96.13.0"] is not one
    assert "remembered=2" in repr(first)


def test_a_long_line_is_built_each_time() -> None:
    parser = TelegramParser()
    data = _message(1, 1024)
    one, two = (parser.parse(data).objects["0-0:96.13.0"] for _ in range(2))
    assert one == two
    assert one is not two
    assert parser.remembered() == 1


def _energy(parser: TelegramParser, index: int) -> CosemObject:
    return parser.parse(f"/ABC5\r\n\r\n1-0:1.8.0({index}*kWh)\r\n!\r\n".encode()).objects[
        "1-0:1.8.0"
    ]


def test_lines_still_sent_are_kept_and_old_ones_forgotten() -> None:
    parser = TelegramParser()
    kept, dropped = _energy(parser, 0), _energy(parser, 1)
    for index in range(2, 4 * TelegramParser.SIZE):
        _energy(parser, index)
        if index % 100 == 0:
            # Sent now and then: it moves back to the newer generation each time.
            assert _energy(parser, 0) is kept
    assert parser.remembered() <= 2 * TelegramParser.SIZE
    assert _energy(parser, 0) is kept
    again = _energy(parser, 1)
    assert again == dropped
    assert again is not dropped


def test_the_console_reader_prints_json_of_a_huge_register(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A 5000-digit register once made `read --json` exit 1.
    body = (
        b"/Lux5\\253663629_D\r\n\r\n1-0:1.8.0("
        + b"9" * 5000
        + b"*kWh)\r\n0-1:24.1.0(1E999999)\r\n!"
    )
    capture = tmp_path / "capture.bin"
    capture.write_bytes(body + f"{crc16_arc(body):04X}\r\n".encode())
    assert cli.main(["read", "--file", str(capture), "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    values = json.loads(line)["values"]
    assert values["1-0:1.8.0"]["value"] is None
    assert values["0-1:24.1.0"]["value"] is None
