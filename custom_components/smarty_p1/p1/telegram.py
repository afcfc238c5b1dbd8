"""Parsing a verified telegram into typed COSEM objects."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, NamedTuple

from .errors import NotATelegramError
from .obis import OBIS_CATALOG, ObisKind, describe

SUMMER = timezone(timedelta(hours=2))
WINTER = timezone(timedelta(hours=1))

# A unit: printable characters other than space, "*", "(" and ")", at most 16 of them.
_UNIT = re.compile(r"[!-'+-~]{1,16}")
# An OBIS code as far as this parser cares: printable, no space and no bracket.
_CODE = re.compile(r"[!-'*-~]+")
# No meter runs in 2070 or later; 1 January 2000 is where a meter's clock starts.
_YEAR_LIMIT = 70
_CLOCK_START = "000101"

type Scalar = Decimal | str | datetime | None
type Value = Scalar | tuple[Any, ...]


class CosemObject(NamedTuple):
    """One line of a telegram: its code, its bracket contents as sent, and their meaning.

    ``value`` is a Decimal (the meter's digits kept: 0.000 stays 0.000), decoded text, a
    datetime, a tuple for multi-value lines, or None where the meter sent no value of the
    code's kind: an empty value, a placeholder time, a number that is not one (see below), or
    a line with a different number of values than its code carries (``1-0:1.8.0(1)(2)``).
    ``timestamp`` is the capture time of M-Bus readings. ``raw`` always holds what was sent.

    What a value is, by the code's kind in the OBIS catalog (unknown codes: whatever the
    text reads as, number first, then time, else the text itself):

    - a number: optional sign, at most 15 integer and 9 decimal digits, optional ``*unit``
      (printable, no ``*()``, at most 16 characters); nothing else is a number.
    - a time: ``YYMMDDhhmmss`` with S or W (see :func:`parse_timestamp`); a timestamp code
      gives a datetime or None, never a number.

    A line that is not ``code(value)...(value)``, every bracket closed and none nested (a
    truncated ``1-0:1.8.0(000025.653*kWh``, a bare ``1-0:0.0.0``), is no object at all: the
    telegram lacks that code, so that nothing half-read reaches a sensor.

    Immutable (a named tuple of immutable parts): the parser hands out the same object again
    while a line repeats, and it may be shared by everything that parsed that line.
    """

    obis: str
    raw: tuple[str, ...]
    value: Value
    unit: str | None = None
    timestamp: datetime | None = None


# Built with tuple.__new__: a third cheaper than the generated constructor, and parsing a
# telegram builds dozens.
_new = tuple.__new__


@dataclass(frozen=True, slots=True)
class Telegram:
    """A verified telegram. ``objects`` maps each OBIS code to its object, in telegram order."""

    header: str
    objects: dict[str, CosemObject]
    raw: bytes = field(repr=False)
    crc: int | None = None
    system_title: bytes | None = None
    frame_counter: int | None = None

    @property
    def encrypted(self) -> bool:
        """Whether the telegram arrived encrypted (and its tag verified)."""
        return self.system_title is not None

    def get(self, obis: str) -> CosemObject | None:
        """The object for an OBIS code, if the meter sent it."""
        return self.objects.get(obis)

    @property
    def serial(self) -> str | None:
        """The meter's serial number (0-0:42.0.0 on Smarty, 0-0:96.1.1 elsewhere)."""
        for code in ("0-0:42.0.0", "0-0:96.1.1"):
            obj = self.objects.get(code)
            if obj is not None and isinstance(obj.value, str) and obj.value:
                return obj.value
        return None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view: numbers, text, lists and ISO-8601 times."""
        return {
            "header": self.header,
            "encrypted": self.encrypted,
            "system_title": self.system_title.hex().upper() if self.system_title else None,
            "frame_counter": self.frame_counter,
            "values": {
                obj.obis: {
                    "value": _json_value(obj.value),
                    "unit": obj.unit,
                    "timestamp": obj.timestamp.isoformat() if obj.timestamp else None,
                }
                for obj in self.objects.values()
            },
        }


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent
        return int(value) if isinstance(exponent, int) and exponent >= 0 else float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_json_value(item) for item in value]
    return value


def parse_timestamp(text: str) -> datetime | None:
    """``YYMMDDhhmmssS`` (UTC+2) or ``...W`` (UTC+1) as a datetime; None for placeholders.

    Without S or W (DSMR 2 and 3) the time is the meter's local time, read as winter time.
    No time at all: an impossible date (``632525252525S``), any moment of 1 January 2000
    (``000101000000W``, ``000101000001W``: a meter counts from there, so that is a clock never
    set or an empty M-Bus channel or log slot), and years from 70 (``700101010000W`` is the
    Unix epoch of an empty channel; DSMR years are 2000 + YY, and no meter runs in 2070).
    """
    if len(text) == 13:
        suffix = text[12]
        zone = SUMMER if suffix == "S" else WINTER if suffix == "W" else None
        digits = text[:12]
    else:
        zone = WINTER if len(text) == 12 else None
        digits = text
    if zone is None or not (digits.isdigit() and digits.isascii()):
        return None
    if digits.startswith(_CLOCK_START):
        return None
    rest, second = divmod(int(digits), 100)
    rest, minute = divmod(rest, 100)
    rest, hour = divmod(rest, 100)
    rest, day = divmod(rest, 100)
    year, month = divmod(rest, 100)
    if year >= _YEAR_LIMIT:
        return None
    try:
        return datetime(2000 + year, month, day, hour, minute, second, tzinfo=zone)
    except ValueError:
        return None


def _number(text: str) -> tuple[Decimal, str | None] | None:
    """``000006.695*kWh`` -> (Decimal("6.695"), "kWh"); None when text is not a number.

    A number is what a meter sends: an optional sign, 1 to 15 digits, optionally a point and
    1 to 9 digits, optionally ``*`` and a unit. Whatever else Decimal would read (exponents,
    "_", spaces, "NaN", "1.", ".5") is no value: it cannot come from a meter, and "1E999999"
    would cost seconds wherever it is turned into an int. ``text`` is ASCII (a telegram).
    """
    digits, star, unit = text.partition("*")
    # Units are letters and digits (kWh, m3): the full rule only for anything else.
    if star and not ((unit.isalnum() and len(unit) <= 16) or _UNIT.fullmatch(unit)):
        return None
    whole, point, fraction = digits.partition(".")
    if point and not (fraction.isdigit() and len(fraction) <= 9):
        return None
    if not (whole.isdigit() and len(whole) <= 15):
        sign = whole[:1]
        if sign not in {"-", "+"} or not (whole[1:].isdigit() and len(whole) <= 16):
            return None
    return Decimal(digits), unit or None


def decode_text(text: str) -> str:
    """Hex-encoded text as text; anything that is not hex of printable text is kept as sent.

    Text is UTF-8 (a long message may hold "é", C3A9) of printable characters and line
    breaks; other bytes (a binary identifier) are not text, so the hex stays.
    """
    if not text:
        return text
    try:
        data = bytes.fromhex(text)
    except ValueError:
        return text
    # fromhex skips whitespace between bytes: text with any is not one hex string.
    if 2 * len(data) != len(text):
        return text
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        return text
    if decoded.isprintable() or decoded.replace("\r", "").replace("\n", "").isprintable():
        return decoded
    return text


def _scalar(text: str) -> tuple[Scalar, str | None]:
    number = _number(text)
    if number is not None:
        return number
    if not text:
        return None, None
    moment = parse_timestamp(text)
    if moment is not None or _looks_like_time(text):
        return moment, None
    return text, None


def _looks_like_time(text: str) -> bool:
    """Whether text has the shape of a meter time (``YYMMDDhhmmssS``), valid or not."""
    if len(text) == 13 and text[12] in "SW":
        text = text[:12]
    return len(text) == 12 and text.isdigit()


type Builder = Callable[[str, tuple[str, ...]], CosemObject]


def _as_number(obis: str, raw: tuple[str, ...]) -> CosemObject:
    value, unit = (_number(raw[0]) if len(raw) == 1 else None) or (None, None)
    return _new(CosemObject, (obis, raw, value, unit, None))


def _as_numbers(obis: str, raw: tuple[str, ...]) -> CosemObject:
    """(import)(export) limits: a tuple of numbers, or one number where only one was sent."""
    if len(raw) == 1:
        return _as_number(obis, raw)
    numbers = [_number(text) for text in raw]
    units = {number[1] for number in numbers if number is not None}
    value = tuple(number[0] if number is not None else None for number in numbers)
    return _new(CosemObject, (obis, raw, value, units.pop() if len(units) == 1 else None, None))


def _as_text(obis: str, raw: tuple[str, ...]) -> CosemObject:
    value = decode_text(raw[0]) if len(raw) == 1 else None
    return _new(CosemObject, (obis, raw, value, None, None))


def _as_version(obis: str, raw: tuple[str, ...]) -> CosemObject:
    value = (raw[0] or None) if len(raw) == 1 else None
    return _new(CosemObject, (obis, raw, value, None, None))


def _as_time(obis: str, raw: tuple[str, ...]) -> CosemObject:
    value = parse_timestamp(raw[0]) if len(raw) == 1 else None
    return _new(CosemObject, (obis, raw, value, None, None))


def _as_reading(obis: str, raw: tuple[str, ...]) -> CosemObject:
    """(capture time)(reading): M-Bus readings, Belgian peak demand. A placeholder time means
    the channel holds no reading, whatever digits follow."""
    if len(raw) == 2:
        moment = parse_timestamp(raw[0])
        number = _number(raw[1])
        if moment is not None and number is not None:
            return _new(CosemObject, (obis, raw, number[0], number[1], moment))
    return _new(CosemObject, (obis, raw, None, None, None))


_NO_DURATION = 2**31 - 1


def _as_failure_log(obis: str, raw: tuple[str, ...]) -> CosemObject:
    """``(count)(0-0:96.7.19)(end time)(duration*s)...`` as ((end time, seconds), ...).

    A slot without a real time or duration is no event: an empty one reads
    ``(000101000001W)(2147483647*s)``, the largest 32-bit count, which no outage lasts.
    """
    events = []
    pairs = raw[2:]
    for index in range(0, len(pairs) - 1, 2):
        moment = parse_timestamp(pairs[index])
        number = _number(pairs[index + 1])
        if moment is not None and number is not None and number[0] < _NO_DURATION:
            events.append((moment, number[0]))
    return _new(CosemObject, (obis, raw, tuple(events), "s", None))


def _as_found(obis: str, raw: tuple[str, ...]) -> CosemObject:
    """A code the catalog lacks: each value read as whatever its text is."""
    if len(raw) == 1:
        value, unit = _scalar(raw[0])
        return _new(CosemObject, (obis, raw, value, unit, None))
    if len(raw) == 2 and _looks_like_time(raw[0]) and _number(raw[1]) is not None:
        return _as_reading(obis, raw)
    parts = [_scalar(text) for text in raw]
    units = {unit for _, unit in parts if unit is not None}
    values = tuple(value for value, _ in parts)
    return _new(CosemObject, (obis, raw, values, units.pop() if len(units) == 1 else None, None))


_BUILDERS: dict[ObisKind, Builder] = {
    ObisKind.NUMBER: _as_number,
    ObisKind.LIMITS: _as_numbers,
    ObisKind.TEXT: _as_text,
    ObisKind.VERSION: _as_version,
    ObisKind.TIMESTAMP: _as_time,
    ObisKind.MBUS_READING: _as_reading,
    ObisKind.FAILURE_LOG: _as_failure_log,
}
# The builder of each code seen, starting with the catalog's concrete codes; bounded whatever
# codes a stream invents.
_CATALOG_BUILDERS = {
    code: _BUILDERS[info.kind] for code, info in OBIS_CATALOG.items() if "x" not in code
}
_CODE_BUILDERS = dict(_CATALOG_BUILDERS)
_MOST_CODES = 4096


def _builder(obis: str) -> Builder | None:
    """The builder of a code; None for text that is no code."""
    builder = _CODE_BUILDERS.get(obis)
    if builder is not None:
        return builder
    if not _CODE.fullmatch(obis):
        return None
    info = describe(obis)
    builder = _BUILDERS[info.kind] if info is not None else _as_found
    if len(_CODE_BUILDERS) >= _MOST_CODES:
        _CODE_BUILDERS.clear()
        _CODE_BUILDERS.update(_CATALOG_BUILDERS)
    _CODE_BUILDERS[obis] = builder
    return builder


def _groups(inner: str) -> tuple[str, ...] | None:
    """``a)(b)(c`` -> ("a", "b", "c"); None when a bracket is stray or nested."""
    if "(" not in inner and ")" not in inner:
        return (inner,)
    parts = inner.split(")(")
    pairs = len(parts) - 1
    if inner.count("(") != pairs or inner.count(")") != pairs:
        return None
    return tuple(parts)


def _line_object(line: str) -> CosemObject | None:
    """The object of a line ``code(value)...(value)``; None for any other line."""
    bracket = line.find("(")
    if bracket < 1 or line[-1] != ")":
        return None
    obis = line[:bracket]
    try:
        builder = _CODE_BUILDERS[obis]
    except KeyError:
        found = _builder(obis)
        if found is None:
            return None
        builder = found
    inner = line[bracket + 1 : -1]
    if builder is _as_number or builder is _as_found or builder is _as_numbers:
        # The common case, most of every telegram: a single number. A number holds no
        # bracket, so this is the whole line.
        number = _number(inner)
        if number is not None:
            value, unit = number
            return _new(CosemObject, (obis, (inner,), value, unit, None))
    raw = _groups(inner)
    return builder(obis, raw) if raw is not None else None


# A line this short holds at most ten numbers: remembered without counting its values.
_SHORT_LINE = 32


class TelegramParser:
    """Parses telegrams, reusing the objects of the lines it saw lately.

    Most lines of a telegram repeat the previous telegram's word for word (limits, counters,
    serials, M-Bus readings between captures, an energy register at rest, a voltage back at a
    value it had), and a line's object depends on nothing but its text. The memory holds two
    generations: when the newer one is full it becomes the older one, and lines still being
    sent move back into the newer one. Only short lines of few values are remembered: whatever
    a stream sends, it holds at most ``2 * SIZE`` lines of ``LONGEST_LINE`` characters and
    ``MOST_VALUES`` values each (under 1.5 MB). One parser per stream: its memory goes with it.
    """

    __slots__ = ("_older", "_recent")
    SIZE = 512
    LONGEST_LINE = 128
    MOST_VALUES = 4

    def __init__(self) -> None:
        self._recent: dict[str, CosemObject] = {}
        self._older: dict[str, CosemObject] = {}

    def __repr__(self) -> str:
        return f"TelegramParser(remembered={self.remembered()})"

    def clear(self) -> None:
        """Forget every line."""
        self._recent, self._older = {}, {}

    def remembered(self) -> int:
        """How many lines the memory holds."""
        return len(self._recent.keys() | self._older.keys())

    def parse(
        self,
        telegram: bytes,
        crc: int | None = None,
        system_title: bytes | None = None,
        frame_counter: int | None = None,
    ) -> Telegram:
        """Parse a verified telegram; every well-formed line is kept, unknown codes included."""
        try:
            text = telegram.decode("ascii")
        except UnicodeDecodeError:
            raise NotATelegramError("telegram is not ASCII text") from None
        header_end = text.find("\r\n")
        header = text[:header_end] if header_end >= 0 else text
        # A "!" at the start of a line ends a telegram; in the header, it ends it before any
        # object.
        if not header.startswith("/") or "!" in header:
            raise NotATelegramError("content is not a DSMR telegram")
        end = text.find("\r\n!", header_end)
        body = text[header_end + 2 : end] if end >= 0 else text[header_end + 2 :]
        # DSMR 2/3 continue a reading on the next line, "(value)": joined to the line above
        # it, which must end in ")", they make one line, read like any other.
        lines = body.replace(")\r\n(", ")(").split("\r\n") if header_end >= 0 else ()
        objects: dict[str, CosemObject] = {}
        recent, older = self._recent, self._older
        size, short, longest, most = self.SIZE, _SHORT_LINE, self.LONGEST_LINE, self.MOST_VALUES
        for line in lines:
            obj = recent.get(line)
            if obj is None:
                # A CosemObject is never false: a tuple of five.
                obj = older.get(line) or _line_object(line)
                if obj is None:
                    continue
                # A short line cannot hold many values: only longer ones are counted.
                if (length := len(line)) <= short or (length <= longest and len(obj.raw) <= most):
                    if len(recent) >= size:
                        self._older, self._recent = older, recent = recent, {}
                    recent[line] = obj
            objects[obj.obis] = obj
        if not objects:
            raise NotATelegramError("telegram holds no objects")
        return Telegram(header[1:], objects, telegram, crc, system_title, frame_counter)


# parse_telegram's memory, for callers that hold no parser of their own.
_shared = TelegramParser()


def parse_telegram(
    telegram: bytes,
    crc: int | None = None,
    system_title: bytes | None = None,
    frame_counter: int | None = None,
) -> Telegram:
    """Parse a verified telegram with a parser shared by all callers (see TelegramParser)."""
    return _shared.parse(telegram, crc, system_title, frame_counter)
