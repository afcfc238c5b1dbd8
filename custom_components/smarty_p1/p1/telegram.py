"""Parsing a verified telegram into typed COSEM objects."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from .errors import NotATelegramError
from .obis import OBIS_CATALOG, ObisKind, describe

SUMMER = timezone(timedelta(hours=2))
WINTER = timezone(timedelta(hours=1))

_TIMESTAMP = re.compile(r"(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)([SW]?)")
_HEX_TEXT = re.compile(r"(?:[0-9A-Fa-f]{2})+")

type Scalar = Decimal | str | datetime | None
type Value = Scalar | tuple[Any, ...]


@dataclass(slots=True)
class CosemObject:
    """One line of a telegram: its code, its bracket contents as sent, and their meaning.

    ``value`` is a Decimal (keeping the meter's digits), decoded text, a datetime, a tuple for
    multi-value lines, or None where the meter sent nothing (an empty value or a placeholder
    time such as ``632525252525S``). ``timestamp`` is the capture time of M-Bus readings.
    Never modify one: the parser hands out the same object again when a line repeats. Not
    frozen because a frozen dataclass costs four times as much to build, and a telegram builds
    about fifty of them.
    """

    obis: str
    raw: tuple[str, ...]
    value: Value
    unit: str | None = None
    timestamp: datetime | None = None


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


# Meter times, M-Bus capture times and hex identifiers repeat from one telegram to the next, and
# turning them into objects is the dearest part of parsing: remember the recent ones.
@lru_cache(maxsize=64)
def parse_timestamp(text: str) -> datetime | None:
    """``YYMMDDhhmmssS`` (UTC+2) or ``...W`` (UTC+1); None for placeholders and nonsense."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    # Without S or W (DSMR 2 and 3) the time is the meter's local time; W is the safe guess.
    zone = SUMMER if match.group(7) == "S" else WINTER
    try:
        return datetime(2000 + year, month, day, hour, minute, second, tzinfo=zone)
    except ValueError:
        return None


def _number(text: str) -> tuple[Decimal, str | None] | None:
    """``000006.695*kWh`` -> (Decimal("6.695"), "kWh"); None when text is not a number."""
    digits, _, unit = text.partition("*")
    # The cheap checks keep timestamps (which end in S or W) and text away from Decimal.
    if not digits or not digits[-1].isdigit() or not (digits[0].isdigit() or digits[0] in "+-"):
        return None
    try:
        number = Decimal(digits)
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    return number, unit or None


@lru_cache(maxsize=64)
def decode_text(text: str) -> str:
    """Hex-encoded text as text; anything that is not printable hex text is kept as sent."""
    if not _HEX_TEXT.fullmatch(text):
        return text
    decoded = bytes.fromhex(text)
    if decoded.isascii() and decoded.decode("ascii").isprintable():
        return decoded.decode("ascii")
    return text


def _scalar(text: str) -> tuple[Scalar, str | None]:
    number = _number(text)
    if number is not None:
        return number
    if not text:
        return None, None
    moment = parse_timestamp(text)
    if moment is not None:
        return moment, None
    return text, None


_KINDS: dict[str, ObisKind | None] = {}
# Codes whose value is a single number: parsed on the fast path of parse_telegram.
_PLAIN_NUMBER_CODES = frozenset(
    code for code, info in OBIS_CATALOG.items() if info.kind is ObisKind.NUMBER and "x" not in code
)


def _kind(obis: str) -> ObisKind | None:
    try:
        return _KINDS[obis]
    except KeyError:
        info = describe(obis)
        kind = _KINDS[obis] = info.kind if info is not None else None
        if len(_KINDS) > 4096:
            # Bounded whatever codes a stream invents.
            _KINDS.clear()
        return kind


def _object(obis: str, raw: tuple[str, ...]) -> CosemObject:
    kind = _kind(obis)
    if kind is ObisKind.TEXT and len(raw) == 1:
        return CosemObject(obis, raw, decode_text(raw[0]))
    if kind is ObisKind.VERSION and len(raw) == 1:
        return CosemObject(obis, raw, raw[0] or None)
    if kind is ObisKind.FAILURE_LOG:
        return CosemObject(obis, raw, _failure_log(raw), "s")
    if len(raw) == 1:
        value, unit = _scalar(raw[0])
        return CosemObject(obis, raw, value, unit)
    if len(raw) == 2 and _TIMESTAMP.fullmatch(raw[0]):
        number = _number(raw[1])
        if number is not None:
            # (capture time)(reading): M-Bus readings, Belgian peak demand. A placeholder time
            # means the channel holds no reading, whatever digits follow.
            moment = parse_timestamp(raw[0])
            return CosemObject(obis, raw, number[0] if moment else None, number[1], moment)
    parts = [_scalar(text) for text in raw]
    units = {unit for _, unit in parts if unit is not None}
    return CosemObject(
        obis, raw, tuple(value for value, _ in parts), units.pop() if len(units) == 1 else None
    )


def _failure_log(raw: tuple[str, ...]) -> tuple[Any, ...]:
    """``(count)(0-0:96.7.19)(end time)(duration*s)...`` as ((end time, seconds), ...)."""
    events = []
    pairs = raw[2:]
    for index in range(0, len(pairs) - 1, 2):
        moment = parse_timestamp(pairs[index])
        number = _number(pairs[index + 1])
        events.append((moment, number[0] if number else None))
    return tuple(events)


# Most lines of a telegram repeat the previous telegram's word for word (limits, counters,
# serials, M-Bus readings between captures, an energy register at rest), and a line's object
# depends on nothing but its text: the objects of recent lines are reused instead of rebuilt.
class _LineMemory:
    """The objects of the lines seen lately, in two generations: when the newer one is full it
    becomes the older one, and lines still being sent move back into the newer one."""

    __slots__ = ("older", "recent")
    SIZE = 512

    def __init__(self) -> None:
        self.recent: dict[str, CosemObject] = {}
        self.older: dict[str, CosemObject] = {}

    def clear(self) -> None:
        self.recent, self.older = {}, {}


_memory = _LineMemory()


def _line_object(line: str) -> CosemObject:
    bracket = line.find("(")
    if bracket < 0:
        return _object(line, ())
    obis = line[:bracket]
    inner = line[bracket + 1 : -1]
    if obis in _PLAIN_NUMBER_CODES and inner:
        # The common case: a catalogued single number is most of every telegram.
        digits, _, unit = inner.partition("*")
        if digits.replace(".", "", 1).isdigit():
            return CosemObject(obis, (inner,), Decimal(digits), unit or None)
    return _object(obis, tuple(inner.split(")(")))


def parse_telegram(
    telegram: bytes,
    crc: int | None = None,
    system_title: bytes | None = None,
    frame_counter: int | None = None,
) -> Telegram:
    """Parse a verified telegram; every line is kept, unknown codes included."""
    try:
        text = telegram.decode("ascii")
    except UnicodeDecodeError:
        raise NotATelegramError("telegram is not ASCII text") from None
    lines = text.split("\r\n")
    if not lines[0].startswith("/"):
        raise NotATelegramError("content is not a DSMR telegram")
    header = lines[0][1:]
    objects: dict[str, CosemObject] = {}
    memory = _memory
    recent, older = memory.recent, memory.older
    last: CosemObject | None = None
    for line in lines[1:]:
        if not line:
            continue
        if line[0] == "!":
            break
        if line[0] == "(" and last is not None:
            # DSMR 2/3 gas readings continue on the next line: rebuild the previous object.
            last = _object(last.obis, last.raw + tuple(line[1:-1].split(")(")))
            objects[last.obis] = last
            continue
        last = recent.get(line)
        if last is None:
            last = older.get(line)
            if last is None:
                last = _line_object(line)
            if len(recent) >= memory.SIZE:
                memory.older, memory.recent = recent, {}
                recent, older = memory.recent, memory.older
            recent[line] = last
        objects[last.obis] = last
    return Telegram(header, objects, telegram, crc, system_title, frame_counter)
