"""Properties of the receive path over generated streams (hypothesis)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from decimal import Decimal
from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from custom_components.smarty_p1.p1 import (
    CosemObject,
    NotATelegramError,
    ObisKind,
    P1Error,
    Telegram,
    TelegramDecoder,
    check_telegram,
    describe,
)
from custom_components.smarty_p1.p1 import telegram as telegram_module
from custom_components.smarty_p1.p1.simulator import MeterSimulator
from custom_components.smarty_p1.p1.telegram import TelegramParser

from .p1_helpers import (  # the fixture replaces conftest's Home Assistant set-up
    NEXXTLAB,
    auto_enable_custom_integrations,  # noqa: F401
    decimals_in,
    frame,
    key,
)

# Bounded so that the suite stays fast; derandomized so that a run is repeatable (a corrupted
# plaintext telegram has a 1 in 65536 chance of a matching CRC-16, which no test should roll).
BOUNDED = settings(max_examples=150, deadline=None, derandomize=True, database=None)


@cache
def _frames() -> tuple[bytes, ...]:
    """Encrypted frames of two meters and plaintext telegrams, all intact."""
    encrypted = MeterSimulator(key(NEXXTLAB), seed=1, interval=10, mbus=("gas", "water", "heat"))
    plain = MeterSimulator(None, seed=2, interval=10, phases=1)
    return (
        encrypted.next_frame(),
        frame(NEXXTLAB),
        plain.next_frame(),
        encrypted.next_frame(),
        plain.next_frame(),
        encrypted.next_frame(),
    )


def _keyed(wire: bytes) -> bool:
    return wire[0] == 0xDB


@cache
def _intact() -> tuple[Telegram, ...]:
    """What the frames decode to: encrypted ones with the key, plaintext ones without it."""
    found = [
        TelegramDecoder(key(NEXXTLAB) if _keyed(wire) else None).feed(wire) for wire in _frames()
    ]
    assert all(len(items) == 1 and isinstance(items[0], Telegram) for items in found)
    return tuple(item for items in found for item in items if isinstance(item, Telegram))


def _feed(pieces: list[bytes], keyed: bool = True) -> list[Telegram | P1Error]:
    decoder = TelegramDecoder(key(NEXXTLAB) if keyed else None)
    return [item for piece in pieces for item in decoder.feed(piece)]


def _summary(results: list[Telegram | P1Error]) -> list[object]:
    return [item if isinstance(item, Telegram) else type(item) for item in results]


@BOUNDED
@given(
    st.lists(st.integers(0, 6), min_size=1, max_size=12),
    st.lists(st.integers(1, 70000), max_size=40),
    st.binary(max_size=64),
    st.booleans(),
)
def test_any_split_gives_the_same_telegrams(
    order: list[int], cuts: list[int], noise: bytes, keyed: bool
) -> None:
    stream = b"".join(_frames()[index % len(_frames())] + noise for index in order)
    whole = _feed([stream], keyed)
    points = sorted({cut % (len(stream) + 1) for cut in cuts})
    pieces = [
        stream[start:end] for start, end in zip([0, *points], [*points, len(stream)], strict=True)
    ]
    assert _summary(_feed(pieces, keyed)) == _summary(whole)


@BOUNDED
@given(st.data())
def test_byte_by_byte_equals_one_piece(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(_frames()) - 1))
    wire = data.draw(st.binary(max_size=8)) + _frames()[index]
    assert _summary(_feed([bytes([byte]) for byte in wire])) == _summary(_feed([wire]))


_EDITS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 200)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
)


def _apply(stream: bytes, edits: list[tuple[str, int, object]]) -> bytes:
    data = bytearray(stream)
    for action, where, what in edits:
        if not data:
            break
        position = where % len(data)
        if action == "flip":
            assert isinstance(what, int)
            data[position] ^= what
        elif action == "insert":
            assert isinstance(what, bytes)
            data[position:position] = what
        elif action == "delete":
            assert isinstance(what, int)
            del data[position : position + what]
        else:
            del data[position:]
    return bytes(data)


@BOUNDED
@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=8),
    st.lists(_EDITS, min_size=1, max_size=6),
    st.integers(1, 5000),
    st.booleans(),
)
def test_damage_never_yields_a_telegram_that_was_not_sent(
    order: list[int], edits: list[tuple[str, int, object]], chunk: int, keyed: bool
) -> None:
    stream = _apply(b"".join(_frames()[index] for index in order), edits)
    pieces = [stream[start : start + chunk] for start in range(0, len(stream), chunk)]
    results = _feed(pieces, keyed)
    intact = _intact()
    for item in results:
        if isinstance(item, Telegram):
            assert item in intact
            # With a key only encrypted frames count; without one, none can.
            assert item.encrypted == keyed
    # A damaged frame never costs the next one: every frame the damage missed still comes out.
    untouched = sum(
        stream.count(_frames()[index]) for index in set(order) if _keyed(_frames()[index]) == keyed
    )
    assert sum(isinstance(item, Telegram) for item in results) >= untouched


@BOUNDED
@given(st.integers(0, 5), st.lists(_EDITS, max_size=3), st.binary(max_size=6), st.booleans())
def test_check_telegram_is_exactly_as_strict_as_the_decoder(
    index: int, edits: list[tuple[str, int, object]], prefix: bytes, legacy_crc: bool
) -> None:
    """The public check accepts a telegram if and only if the decoder returns it whole."""
    telegram = _intact()[index].raw
    candidate = prefix + _apply(telegram, edits)
    try:
        check_telegram(candidate, legacy_crc=legacy_crc)
    except P1Error:
        accepted = False
    else:
        accepted = True
    results = TelegramDecoder(legacy_crc=legacy_crc).feed(candidate)
    whole = [item for item in results if isinstance(item, Telegram) and item.raw == candidate]
    assert bool(whole) == accepted


@BOUNDED
@given(st.binary(max_size=3000), st.integers(1, 512))
def test_noise_alone_yields_nothing(noise: bytes, chunk: int) -> None:
    decoder = TelegramDecoder(key(NEXXTLAB), max_frame=1024)
    for start in range(0, len(noise), chunk):
        assert not any(
            isinstance(item, Telegram) for item in decoder.feed(noise[start : start + chunk])
        )
        assert decoder.pending <= 1024 + chunk


# The parser on lines of every shape.

_CODES = (
    "1-0:1.8.0",
    "1-0:32.7.0",
    "0-0:96.7.21",
    "1-1:31.4.0",
    "0-0:1.0.0",
    "0-1:24.2.1",
    "1-0:1.6.0",
    "0-0:42.0.0",
    "0-2:96.1.0",
    "1-3:0.2.8",
    "1-0:99.97.0",
    "0-1:24.3.0",
    "9-9:9.9.9",
)
# The definition of a number, written once more here as a regular expression.
_A_NUMBER = re.compile(r"([-+]?[0-9]{1,15}(?:\.[0-9]{1,9})?)(?:\*([!-'+-~]{1,16}))?")
_VALUES = st.one_of(
    st.text(alphabet="0123456789.+-*eE_ kWhmVAS()x", max_size=24),
    st.from_regex(r"[-+]?[0-9]{0,17}(\.[0-9]{0,11})?(\*[ -~]{0,18})?", fullmatch=True),
    st.from_regex(r"[0-9]{12}[SW]?", fullmatch=True),
    st.from_regex(r"([0-9A-F]{2}){0,8}", fullmatch=True),
)
_LINES = st.builds(
    lambda code, values, tail, cut: (code + "".join(f"({value})" for value in values) + tail)[
        : cut or None
    ],
    st.sampled_from(_CODES),
    st.lists(_VALUES, max_size=6),
    st.sampled_from(["", "", ")", "(", "x", " ", ")("]),
    st.integers(0, 80),
).filter(lambda line: line.isascii() and "\r" not in line and "\n" not in line)


def _general(line: str) -> CosemObject | None:
    """A line read by the general path alone, bypassing the single-number shortcut."""
    bracket = line.find("(")
    if bracket < 1 or line[-1] != ")":
        return None
    obis = line[:bracket]
    raw = telegram_module._groups(line[bracket + 1 : -1])
    builder = telegram_module._builder(obis)
    return builder(obis, raw) if raw is not None and builder is not None else None


@BOUNDED
@given(_LINES)
def test_the_single_number_shortcut_reads_lines_as_the_general_path(line: str) -> None:
    assert telegram_module._line_object(line) == _general(line)


@BOUNDED
@given(st.one_of(_VALUES, st.text(alphabet=st.characters(codec="ascii"), max_size=30)))
def test_a_number_is_exactly_what_the_definition_says(text: str) -> None:
    match = _A_NUMBER.fullmatch(text)
    expected = (Decimal(match[1]), match[2]) if match else None
    assert telegram_module._number(text) == expected


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.lists(_LINES, min_size=1, max_size=12))
def test_every_value_is_one_a_meter_can_send(lines: list[str]) -> None:
    data = ("/ABC5\r\n\r\n" + "".join(f"{line}\r\n" for line in lines) + "!\r\n").encode()
    try:
        cold = TelegramParser().parse(data)
    except NotATelegramError:
        assert all(telegram_module._line_object(line) is None for line in lines)
        return
    for obj in cold.objects.values():
        for number in decimals_in(obj.value):
            _sign, digits, exponent = number.as_tuple()
            assert isinstance(exponent, int)
            assert -9 <= exponent <= 0
            assert len(digits) + exponent <= 15
        info = describe(obj.obis)
        kind = info.kind if info is not None else None
        if kind is ObisKind.TIMESTAMP:
            assert obj.value is None or isinstance(obj.value, datetime)
        if kind is ObisKind.NUMBER:
            assert obj.value is None or isinstance(obj.value, Decimal)
        if obj.timestamp is not None:
            assert isinstance(obj.value, Decimal)
    json.dumps(cold.as_dict(), allow_nan=False)
    # What a parser remembers never changes what it reads.
    warm = TelegramParser()
    warm.parse(data)
    assert warm.parse(data) == cold
