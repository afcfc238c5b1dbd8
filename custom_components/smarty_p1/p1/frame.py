"""Streaming framer: turns a byte stream of any split into encrypted and plaintext frames.

Both kinds are auto-detected per frame. Encrypted frames are general-glo-ciphering APDUs
(``DB 08 <system title> <length> 30 <frame counter> <ciphertext> <tag>``) found by their
validated header and length; plaintext telegrams run from ``/XXX5`` to ``!CRC\\r\\n``.
A frame that turns out broken makes the framer resume one byte after its start, so the frame
that follows is never lost; bytes that start no frame are skipped as line noise.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto

from .crc import crc16_arc
from .errors import CRCError, MalformedFrameError, MissingKeyError, NotATelegramError, P1Error

# The largest frame accepted. A full Smarty readout with four M-Bus channels is about 2 KiB;
# long messages may hold up to 2048 characters each, hex-encoded, hence the generous bound.
MAX_FRAME = 16 * 1024

GLO_CIPHERING = 0xDB
SYSTEM_TITLE_LENGTH = 8
SECURITY_CONTROL = 0x30
TAG_LENGTH = 12
# Security control byte, frame counter and tag around the ciphertext.
_OVERHEAD = 1 + 4 + TAG_LENGTH

_FRAME_START = re.compile(rb"[\xdb/]")
_PLAIN_HEADER = re.compile(rb"/[A-Za-z]{3}[\x21-\x7e]")
# Everything a telegram may hold before its "!": printable ASCII and line ends.
_PLAIN_BODY = re.compile(rb"[\x20\x22-\x7e\r\n]*")
_PLAIN_TAIL = re.compile(rb"!([0-9A-Fa-f]{0,4})\r\n")
_PLAIN_TAIL_PREFIX = re.compile(rb"![0-9A-Fa-f]{0,4}\r?\Z")


@dataclass(frozen=True, slots=True)
class EncryptedFrame:
    """An encrypted frame, split into its fields; not yet decrypted."""

    system_title: bytes
    frame_counter: int
    ciphertext: bytes
    tag: bytes


@dataclass(frozen=True, slots=True)
class Frame:
    """A telegram whose CRC (and, when it came encrypted, GCM tag) has been verified.

    ``crc`` is None for DSMR 2/3 telegrams, which carry none; ``system_title`` and
    ``frame_counter`` are None for plaintext telegrams.
    """

    telegram: bytes
    crc: int | None
    system_title: bytes | None = None
    frame_counter: int | None = None


type Decrypt = Callable[[EncryptedFrame], bytes]


class _Step(Enum):
    NEED_MORE = auto()
    SKIPPED = auto()


def check_telegram(telegram: bytes) -> int | None:
    """Check that bytes are one whole telegram with a valid CRC; return the CRC (None if absent)."""
    if not _PLAIN_HEADER.match(telegram):
        raise NotATelegramError("content is not a DSMR telegram")
    bang = telegram.rfind(b"!")
    tail = _PLAIN_TAIL.fullmatch(telegram, bang) if bang >= 0 else None
    if tail is None:
        raise NotATelegramError("telegram does not end in !CRC")
    digits = tail.group(1)
    if not digits:
        # DSMR 2 and 3 telegrams carry no CRC at all.
        return None
    given = int(digits, 16)
    calculated = crc16_arc(memoryview(telegram)[: bang + 1])
    if given != calculated:
        raise CRCError(given, calculated)
    return given


def _missing_key(_frame: EncryptedFrame) -> bytes:
    raise MissingKeyError


class FrameReader:
    """Accumulates bytes and yields verified telegrams; memory stays below max_frame plus a chunk.

    ``decrypt`` opens encrypted frames (raising DecryptionError when the tag fails); without
    it, encrypted frames are reported as MissingKeyError.
    """

    __slots__ = ("_buffer", "_checked", "_decrypt", "max_frame", "noise_bytes")

    def __init__(self, decrypt: Decrypt | None = None, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        # How far into a pending plaintext telegram the body has already been validated, so that
        # a stream fed byte by byte is not re-scanned from the start on every byte.
        self._checked = 0
        self._decrypt = decrypt or _missing_key
        self.max_frame = max_frame
        self.noise_bytes = 0

    @property
    def pending(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame | P1Error]:
        """Add bytes and return the telegrams (and rejected frames) they complete, in order."""
        buffer = self._buffer
        buffer += data
        results: list[Frame | P1Error] = []
        while buffer:
            match = _FRAME_START.search(buffer)
            if match is None:
                self._skip(len(buffer))
                break
            if match.start():
                self._skip(match.start())
            outcome = self._encrypted() if buffer[0] == GLO_CIPHERING else self._plain()
            if outcome is _Step.NEED_MORE:
                break
            if outcome is not _Step.SKIPPED:
                results.append(outcome)
        return results

    def _skip(self, count: int) -> None:
        del self._buffer[:count]
        self._checked = 0
        self.noise_bytes += count

    def _resync(self) -> None:
        """Give up the frame that starts the buffer and look again one byte later."""
        del self._buffer[:1]
        self._checked = 0

    def _take(self, count: int) -> bytes:
        frame = bytes(self._buffer[:count])
        del self._buffer[:count]
        self._checked = 0
        return frame

    def _too_long(self) -> MalformedFrameError:
        self._resync()
        return MalformedFrameError("telegram longer than the maximum frame size")

    def _not_a_frame(self) -> _Step:
        self._skip(1)
        return _Step.SKIPPED

    def _encrypted(self) -> Frame | P1Error | _Step:
        buffer = self._buffer
        have = len(buffer)
        # Each header byte is checked as soon as it arrives, so a stray 0xDB in line noise is
        # dropped at once instead of holding the stream until a bogus length is reached.
        if have < 2:
            return _Step.NEED_MORE
        if buffer[1] != SYSTEM_TITLE_LENGTH:
            return self._not_a_frame()
        if have < 11:
            return _Step.NEED_MORE
        form = buffer[10]
        if form == 0x82:
            if have < 13:
                return _Step.NEED_MORE
            length, header = (buffer[11] << 8) | buffer[12], 13
        elif form == 0x81:
            if have < 12:
                return _Step.NEED_MORE
            length, header = buffer[11], 12
        elif form < 0x80:
            length, header = form, 11
        else:
            return self._not_a_frame()
        if length <= _OVERHEAD or header + length > self.max_frame:
            return self._not_a_frame()
        if have <= header:
            return _Step.NEED_MORE
        if buffer[header] != SECURITY_CONTROL:
            return self._not_a_frame()
        total = header + length
        if have < total:
            return _Step.NEED_MORE
        encrypted = EncryptedFrame(
            system_title=bytes(buffer[2:10]),
            frame_counter=int.from_bytes(buffer[header + 1 : header + 5]),
            ciphertext=bytes(buffer[header + 5 : total - TAG_LENGTH]),
            tag=bytes(buffer[total - TAG_LENGTH : total]),
        )
        try:
            telegram = self._decrypt(encrypted)
        except P1Error as err:
            # A frame cut short swallows the start of the next one and fails its tag: look
            # again one byte later so the intact frame behind it is still found.
            self._resync()
            return err
        # The tag proves the frame's bounds, so the frame is consumed even if its content fails.
        self._take(total)
        try:
            crc = check_telegram(telegram)
        except P1Error as err:
            return err
        return Frame(telegram, crc, encrypted.system_title, encrypted.frame_counter)

    def _plain(self) -> Frame | P1Error | _Step:
        buffer = self._buffer
        have = len(buffer)
        if self._checked == 0:
            if have < 5:
                return _Step.NEED_MORE
            if not _PLAIN_HEADER.match(buffer):
                return self._not_a_frame()
            self._checked = 1
        # The body pattern matches the empty string, so there is always a match.
        end = _PLAIN_BODY.match(buffer, self._checked).end()  # type: ignore[union-attr]
        if end == have:
            if have > self.max_frame:
                return self._too_long()
            self._checked = end
            return _Step.NEED_MORE
        if buffer[end] != ord("!"):
            self._resync()
            return MalformedFrameError("telegram holds a byte that is not printable text")
        self._checked = end
        tail = _PLAIN_TAIL.match(buffer, end)
        if tail is None:
            if _PLAIN_TAIL_PREFIX.match(buffer, end):
                return _Step.NEED_MORE
            self._resync()
            return MalformedFrameError("telegram does not end in !CRC")
        if tail.end() > self.max_frame:
            # Also when it arrives in one piece: the verdict must not depend on the chunking.
            return self._too_long()
        telegram = bytes(buffer[: tail.end()])
        try:
            crc = check_telegram(telegram)
        except P1Error as err:
            # A telegram cut short runs into the next one and fails here: look again from the
            # next byte so the intact telegram behind it is still found.
            self._resync()
            return err
        self._take(tail.end())
        return Frame(telegram, crc)
