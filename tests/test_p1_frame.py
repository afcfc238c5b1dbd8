"""The streaming framer: header validation, resynchronisation, noise, bounded memory."""

from __future__ import annotations

import random
import tracemalloc

import pytest

from custom_components.smarty_p1.p1 import (
    MAX_FRAME,
    CRCError,
    DamagedFrameError,
    FrameAuthenticator,
    FrameCipher,
    FrameReader,
    MalformedFrameError,
    MissingKeyError,
    NotATelegramError,
    P1Error,
    SecurityControlError,
    Telegram,
    TelegramDecoder,
    WrongKeyError,
    check_telegram,
    crc16_arc,
)
from custom_components.smarty_p1.p1.frame import Frame
from custom_components.smarty_p1.p1.simulator import MeterSimulator

from .p1_helpers import (  # the fixture replaces conftest's Home Assistant set-up
    NEXXTLAB,
    auto_enable_custom_integrations,  # noqa: F401
    frame,
    key,
    plaintext,
    raw_objects,
    telegrams,
)

TITLE = b"SAGgp\x00\x12\x34"


def _plain(body: str = "1-0:1.8.0(000001.000*kWh)") -> bytes:
    text = f"/ABC5\\2test\r\n\r\n{body}\r\n!".encode()
    return text + f"{crc16_arc(text):04X}\r\n".encode()


def _encrypted(telegram: bytes, counter: int = 1) -> bytes:
    return FrameCipher(key(NEXXTLAB)).encrypt(telegram, TITLE, counter)


def _decoder() -> TelegramDecoder:
    return TelegramDecoder(key(NEXXTLAB))


def test_real_frame_in_one_piece_and_byte_by_byte() -> None:
    wire = frame(NEXXTLAB)
    decoder = _decoder()
    (whole,) = telegrams(decoder.feed(wire))
    decoder = _decoder()
    pieces = [item for byte in wire for item in decoder.feed(bytes([byte]))]
    (split,) = telegrams(pieces)
    assert split.objects == whole.objects
    assert decoder.pending == 0
    assert decoder.noise_bytes == 0
    assert decoder.stats.bytes == len(wire)


@pytest.mark.parametrize(
    ("offset", "byte"),
    [
        (1, 0x09),  # system title length
        (1, 0x00),
        (10, 0x83),  # length form
        (10, 0x80),
        (11, 0x7F),  # length beyond the maximum frame
        (13, 0x31),  # security control byte
        (13, 0x10),
    ],
)
def test_every_header_byte_is_validated(offset: int, byte: int) -> None:
    broken = bytearray(frame(NEXXTLAB))
    broken[offset] = byte
    decoder = _decoder()
    # The broken start is dropped at once, so the intact frame behind it is found.
    results = decoder.feed(bytes(broken) + frame(NEXXTLAB))
    (telegram,) = telegrams([item for item in results if isinstance(item, Telegram)])
    assert raw_objects(telegram) == raw_objects(telegrams(_decoder().feed(frame(NEXXTLAB)))[0])
    assert decoder.pending == 0


def test_header_bytes_are_judged_as_they_arrive() -> None:
    decoder = _decoder()
    assert decoder.feed(b"\xdb") == []
    assert decoder.pending == 1
    # 0xDB followed by anything but 8 is line noise: dropped without waiting for more.
    assert decoder.feed(b"\x07") == []
    assert decoder.pending == 0
    assert decoder.noise_bytes == 2
    for prefix_length in range(2, 18):
        decoder = _decoder()
        assert decoder.feed(frame(NEXXTLAB)[:prefix_length]) == []
        assert decoder.pending == prefix_length


def test_tiny_length_is_not_a_frame() -> None:
    wire = bytearray(frame(NEXXTLAB))
    wire[11:13] = (17).to_bytes(2)
    decoder = _decoder()
    assert decoder.feed(bytes(wire)) == []
    assert decoder.pending == 0


@pytest.mark.parametrize("form", ["short", "0x81"])
def test_short_length_forms(form: str) -> None:
    wire = _encrypted(_plain())
    length = int.from_bytes(wire[11:13])
    assert length < 0x80
    # The tag does not cover the length field, so the same frame can be rewritten.
    header = bytes([length]) if form == "short" else bytes([0x81, length])
    rewritten = wire[:10] + header + wire[13:]
    decoder = _decoder()
    (telegram,) = telegrams(decoder.feed(rewritten))
    assert telegram.objects["1-0:1.8.0"].raw == ("000001.000*kWh",)
    decoder = _decoder()
    for byte in rewritten[:-1]:
        assert decoder.feed(bytes([byte])) == []
    telegrams(decoder.feed(rewritten[-1:]))


def test_cut_frame_costs_only_itself() -> None:
    first, second = _encrypted(_plain(), 1), _encrypted(_plain("1-0:1.8.0(000002.000*kWh)"), 2)
    decoder = _decoder()
    results = decoder.feed(first[:-5] + second)
    # Its content is intact and its tag is the right one but for the bytes lost: line damage.
    assert isinstance(results[0], DamagedFrameError)
    (telegram,) = telegrams(results[1:])
    assert telegram.frame_counter == 2
    assert decoder.stats.rejected["damaged"] == 1


def test_cut_plain_telegram_costs_only_itself() -> None:
    first, second = _plain(), _plain("1-0:1.8.0(000002.000*kWh)")
    decoder = TelegramDecoder()
    results = decoder.feed(first[:40] + second)
    assert isinstance(results[0], CRCError | MalformedFrameError)
    (telegram,) = telegrams(results[1:])
    assert telegram.objects["1-0:1.8.0"].raw == ("000002.000*kWh",)


@pytest.mark.parametrize("encrypted", [True, False])
def test_noise_between_frames_is_skipped(encrypted: bool) -> None:
    noise = b"\x00\x01garbage\r\n\xff\xfe" * 20
    decoder = _decoder() if encrypted else TelegramDecoder()
    wire = frame(NEXXTLAB) if encrypted else _plain()
    results = decoder.feed(noise + wire + noise + wire + noise)
    assert len(telegrams(results)) == 2
    assert decoder.noise_bytes == 3 * len(noise)
    assert decoder.pending == 0


def test_plain_telegram_with_a_binary_byte_is_rejected() -> None:
    broken = _plain().replace(b"kWh", b"k\x00h")
    decoder = TelegramDecoder()
    (error, telegram) = decoder.feed(broken + _plain())
    assert isinstance(error, MalformedFrameError)
    assert isinstance(telegram, Telegram)


@pytest.mark.parametrize("tail", [b"!XYZ\r\n", b"!12345\r\n", b"!12\n"])
def test_plain_telegram_with_a_bad_tail_is_rejected(tail: bytes) -> None:
    broken = _plain()[: _plain().rindex(b"!")] + tail
    (error, telegram) = TelegramDecoder().feed(broken + _plain())
    assert isinstance(error, MalformedFrameError)
    assert isinstance(telegram, Telegram)


def test_plain_tail_may_arrive_in_pieces() -> None:
    whole = _plain()
    decoder = TelegramDecoder()
    for cut in range(whole.rindex(b"!"), len(whole) - 1):
        decoder = TelegramDecoder()
        assert decoder.feed(whole[:cut]) == []
        telegrams(decoder.feed(whole[cut:]))


def test_plain_telegram_with_a_bad_crc() -> None:
    broken = _plain().replace(b"1.000", b"2.000")
    decoder = TelegramDecoder()
    (error, telegram) = decoder.feed(broken + _plain())
    assert isinstance(error, CRCError)
    assert isinstance(telegram, Telegram)
    assert decoder.stats.rejected["crc"] == 1


def test_telegram_without_crc_only_when_asked() -> None:
    old = b"/ISk5\\2ME382\r\n\r\n1-0:1.8.1(1.5)\r\n!\r\n"
    (error,) = TelegramDecoder().feed(old)
    assert isinstance(error, MalformedFrameError)
    with pytest.raises(NotATelegramError):
        check_telegram(old)
    (telegram,) = telegrams(TelegramDecoder(legacy_crc=True).feed(old))
    assert telegram.crc is None
    assert check_telegram(old, legacy_crc=True) is None


@pytest.mark.parametrize(
    "data", [b"hello", b"/ABC5\r\n1-0:1.8.0(1)\r\n", b"/ABC5\r\n!0000\r\nmore"]
)
def test_check_telegram_rejects_what_is_not_one(data: bytes) -> None:
    with pytest.raises(NotATelegramError):
        check_telegram(data)


def test_encrypted_content_that_is_not_a_telegram() -> None:
    decoder = _decoder()
    results = decoder.feed(_encrypted(b"not a telegram") + frame(NEXXTLAB))
    assert isinstance(results[0], NotATelegramError)
    assert isinstance(results[1], Telegram)
    assert decoder.stats.rejected["malformed"] == 1


def test_encrypted_telegram_that_is_not_ascii() -> None:
    body = b"/ABC5\r\n\r\n1-0:1.8.0(\xe9)\r\n!"
    telegram = body + f"{crc16_arc(body):04X}\r\n".encode()
    decoder = _decoder()
    (error,) = decoder.feed(_encrypted(telegram))
    assert isinstance(error, NotATelegramError)
    assert decoder.stats.rejected["malformed"] == 1


def test_encrypted_frame_without_a_key() -> None:
    decoder = TelegramDecoder()
    results = decoder.feed(frame(NEXXTLAB) + _plain())
    assert isinstance(results[0], MissingKeyError)
    assert results[0].reason == "key_required"
    assert isinstance(results[-1], Telegram)
    assert decoder.stats.rejected["key_required"] == 1


def test_plain_telegram_longer_than_the_maximum() -> None:
    long = _plain("0-0:96.13.0(" + "41" * 600 + ")")
    decoder = TelegramDecoder(max_frame=1024)
    results = decoder.feed(long + _plain())
    assert isinstance(results[0], MalformedFrameError)
    (telegram,) = telegrams(results[1:])
    assert "0-0:96.13.0" not in telegram.objects
    (whole,) = telegrams(TelegramDecoder().feed(long))
    assert whole.objects["0-0:96.13.0"].value == "A" * 600


def test_encrypted_frame_longer_than_the_maximum() -> None:
    decoder = TelegramDecoder(key(NEXXTLAB), max_frame=600)
    assert decoder.feed(frame(NEXXTLAB)) == []
    assert decoder.pending == 0
    assert 4 * len(frame(NEXXTLAB)) <= MAX_FRAME


@pytest.mark.parametrize("seed", range(5))
def test_memory_stays_bounded(seed: int) -> None:
    rng = random.Random(seed)
    chunk = 4096
    max_frame = 2048
    decoder = TelegramDecoder(key(NEXXTLAB), max_frame=max_frame)
    # An endless telegram, a frame header announcing the maximum, and random bytes.
    streams = [
        b"/ABC5\r\n" + b"1-0:1.8.0(1)\r\n" * 2000,
        b"\xdb\x08" + TITLE + b"\x82" + (max_frame - 13).to_bytes(2) + b"\x30" + bytes(20000),
        rng.randbytes(40000),
        bytes(rng.choice(b"/\xdb\x08\x30\x82!ABC5\r\n0123456789") for _ in range(40000)),
    ]
    for stream in streams:
        for start in range(0, len(stream), chunk):
            decoder.feed(stream[start : start + chunk])
            assert decoder.pending <= max_frame + chunk
    # Whatever came before, the next real frame is found.
    decoder.feed(b"\r\n" * 4)
    assert any(isinstance(item, Telegram) for item in decoder.feed(frame(NEXXTLAB) * 3))


def test_frame_reader_accepts_any_buffer_type() -> None:
    reader = FrameReader()
    wire = _plain()
    (result,) = reader.feed(memoryview(bytearray(wire)))
    assert isinstance(result, Frame)
    assert result.telegram == wire
    assert result.system_title is None
    assert reader.feed(bytearray(wire[:10])) == []
    assert reader.pending == 10


def test_plaintext_of_the_real_frame() -> None:
    (result,) = FrameReader(FrameAuthenticator(key(NEXXTLAB))).feed(frame(NEXXTLAB))
    assert isinstance(result, Frame)
    assert result.telegram == plaintext(NEXXTLAB)
    assert result.crc == 0xCFDE


def test_maximum_does_not_depend_on_the_chunking() -> None:
    long = _plain("0-0:96.13.0(" + "41" * 600 + ")")
    for chunk in (1, 100, len(long)):
        decoder = TelegramDecoder(max_frame=len(long) - 1)
        results = [
            item
            for start in range(0, len(long), chunk)
            for item in decoder.feed(long[start : start + chunk])
        ]
        assert [type(item) for item in results] == [MalformedFrameError], chunk
        decoder = TelegramDecoder(max_frame=len(long))
        results = [
            item
            for start in range(0, len(long), chunk)
            for item in decoder.feed(long[start : start + chunk])
        ]
        assert [type(item) for item in results] == [Telegram], chunk


# Hostile input.

FAKE_HEADER = bytes.fromhex("DB085341476770001234823FE030")


def _with_crc(body: bytes) -> bytes:
    return body + f"{crc16_arc(body):04X}\r\n".encode()


@pytest.mark.parametrize(
    ("data", "rejected"),
    [
        (b"/ABC5!\r\n", [MalformedFrameError]),
        (b"/ABC!\r\n", []),  # not even the start of a telegram: line noise
        (b"/ABC5\r\n!\r\n", [MalformedFrameError]),
        # Altered, and its CRC digits dropped so that nothing can check it.
        (
            _plain().replace(b"1.000", b"9.000")[: _plain().rindex(b"!") + 1] + b"\r\n",
            [MalformedFrameError],
        ),
    ],
)
def test_a_telegram_needs_its_crc(data: bytes, rejected: list[type[P1Error]]) -> None:
    decoder = TelegramDecoder()
    assert [type(item) for item in decoder.feed(data)] == rejected
    assert decoder.pending == 0
    with pytest.raises(NotATelegramError):
        check_telegram(data)


@pytest.mark.parametrize(
    "body",
    [
        b"/ABC5\r\n\r\n1-0:1.8.0(\x00)\r\n!",  # a binary byte in the body
        b"/AB\x7f5\r\n\r\n1-0:1.8.0(1)\r\n!",  # a header byte that is no letter
        b"/ABC!\r\n\r\n1-0:1.8.0(1)\r\n!",  # no identification
        b"/ABC5!",  # no header line
        b"/ABC5 ident\n\r\n1-0:1.8.0(1)\r\n!",  # a header line without CR
        b"/ABC5\r\n\r\n1-0:1.8.0(1)\r\n!!",  # two ends
    ],
)
def test_check_telegram_is_as_strict_as_the_decoder(body: bytes) -> None:
    data = _with_crc(body)
    with pytest.raises(NotATelegramError):
        check_telegram(data)
    assert not any(isinstance(item, Telegram) for item in TelegramDecoder().feed(data))


def _crc_bytes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the bytes the framer checksums."""
    from custom_components.smarty_p1.p1 import frame as frame_module

    counted: list[int] = []

    def counting(data: bytes | bytearray | memoryview) -> int:
        counted.append(len(data))
        return crc16_arc(data)

    monkeypatch.setattr(frame_module, "crc16_arc", counting)
    return counted


@pytest.mark.parametrize("chunk", [1, 1000, 1 << 20])
@pytest.mark.parametrize(
    ("header", "rejected"), [(b"/ABC5", MalformedFrameError), (b"/ABC5\r\n", CRCError)]
)
def test_repeated_headers_are_judged_once(
    chunk: int, header: bytes, rejected: type[P1Error], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every /ABC5 starts a candidate, all in one run of text: one error, each byte
    checksummed at most once (with CR LF each is a header line, so each could start a telegram).
    """
    counted = _crc_bytes(monkeypatch)
    stream = header * (16 * 1024 // len(header) - 2) + b"!0000\r\n"
    decoder = TelegramDecoder()
    results = [
        item
        for start in range(0, len(stream), chunk)
        for item in decoder.feed(stream[start : start + chunk])
    ]
    assert type(results[0]) is rejected
    # A suffix whose CRC happens to be 0000 passes the framer (each candidate has a 2^-16
    # chance), and holds no object: no telegram either.
    for item in results[1:]:
        assert isinstance(item, NotATelegramError)
    assert len(results) <= 2
    assert sum(counted) <= 2 * len(stream)
    endless = TelegramDecoder()
    results = endless.feed(b"/ABC5" * (64 * 1024 // 5))
    assert [type(item) for item in results] == [MalformedFrameError]
    assert endless.pending <= MAX_FRAME + 5


def test_a_telegram_after_many_headers_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    counted = _crc_bytes(monkeypatch)
    stream = b"/ABC5" * 2000 + _plain()
    results = TelegramDecoder().feed(stream)
    assert [type(item) for item in results] == [CRCError, Telegram]
    assert results[1].raw == _plain()  # type: ignore[union-attr]
    assert sum(counted) <= 3 * len(stream)


@pytest.mark.parametrize("keyed", [True, False])
@pytest.mark.parametrize("size", [64 * 1024, 256 * 1024])
def test_bogus_headers_hold_no_memory(keyed: bool, size: int) -> None:
    """Errors are values without tracebacks, one per span judged, not one per false start."""
    stream = (FAKE_HEADER * (size // len(FAKE_HEADER) + 1))[:size]
    decoder = _decoder() if keyed else TelegramDecoder()
    tracemalloc.start()
    try:
        results = decoder.feed(stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * size + 4 * MAX_FRAME
    assert 1 <= len(results) <= size // (MAX_FRAME - 64) + 1
    assert all(item.__traceback__ is None for item in results if isinstance(item, P1Error))
    assert decoder.pending <= MAX_FRAME


def test_a_corrupted_length_does_not_hold_back_the_frames_behind_it() -> None:
    sim = MeterSimulator(key(NEXXTLAB), seed=3)
    frames = [sim.next_frame() for _ in range(4)]
    decoder = _decoder()
    # A bogus header just before the meter's frames, fed as the meter sends them.
    first = decoder.feed(FAKE_HEADER + frames[0])
    assert [type(item) for item in first] == [MalformedFrameError, Telegram]
    assert [type(item) for item in decoder.feed(frames[1])] == [Telegram]
    # A frame of the meter whose own length was hit: known as the meter's, so damaged.
    stretched = bytearray(frames[2])
    stretched[11:13] = (0x3FE0).to_bytes(2)
    assert decoder.feed(bytes(stretched)) == []
    assert [type(item) for item in decoder.feed(frames[3])] == [DamagedFrameError, Telegram]
    assert decoder.pending == 0


@pytest.mark.parametrize("one_chunk", [True, False])
def test_wrong_key_frames_give_one_error_each(one_chunk: bool) -> None:
    sim = MeterSimulator(key(NEXXTLAB), seed=4)
    frames = [sim.next_frame() for _ in range(500)]
    decoder = TelegramDecoder(bytes(16))
    pieces = [b"".join(frames)] if one_chunk else frames
    results = [item for piece in pieces for item in decoder.feed(piece)]
    assert [type(item) for item in results] == [WrongKeyError] * 500
    assert decoder.stats.rejected == {"wrong_key": 500}


@pytest.mark.parametrize("control", [0x10, 0x20])
def test_other_security_bytes_are_rejected(control: int) -> None:
    other = bytearray(frame(NEXXTLAB))
    other[13] = control
    decoder = _decoder()
    error, telegram = decoder.feed(bytes(other) + frame(NEXXTLAB))
    assert isinstance(error, SecurityControlError)
    assert error.reason == "security"
    assert isinstance(telegram, Telegram)
    assert decoder.stats.rejected["security"] == 1
