"""Streaming framer: turns a byte stream of any split into encrypted and plaintext frames.

Both kinds are auto-detected. Encrypted frames are general-glo-ciphering APDUs
(``DB 08 <system title> <length> 30 <frame counter> <ciphertext> <tag>``) found by their
validated header and length; plaintext telegrams run from ``/XXX5`` to ``!CRC\\r\\n``.

Every byte is looked at once, whatever the chunking, so hostile input costs linear time:

- A frame whose length reaches past the bytes received is judged when it is complete, but a
  complete, valid frame found inside the span it claims is taken at once (a corrupted length
  must not hold back the frames behind it).
- Once a frame is judged, what lies inside its span is no news: only a valid frame found there is
  returned, the failures of false starts inside it are not (and are first screened by decrypting
  a single block, so that a stream of bogus headers costs no full decryption each).
- Plaintext candidates that share one run of printable text are judged together, from one pass
  over the run: the one CRC of its tail is rewound through the run to find where a telegram with
  that CRC can start.
- Nothing is raised: errors are returned as values, so they keep no frame alive through a
  traceback.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from .crc import crc16_arc
from .errors import (
    CRCError,
    DamagedFrameError,
    MalformedFrameError,
    MissingKeyError,
    NotATelegramError,
    P1Error,
    SecurityControlError,
    UnencryptedTelegramError,
)

# The largest frame accepted. A full Smarty readout with four M-Bus channels is about 2 KiB;
# long messages may hold up to 2048 characters each, hex-encoded, hence the generous bound.
MAX_FRAME = 16 * 1024

GLO_CIPHERING = 0xDB
SYSTEM_TITLE_LENGTH = 8
SECURITY_CONTROL = 0x30
# Authenticated only, encrypted only: valid DLMS security controls, never a Smarty's.
_OTHER_SECURITY = (0x10, 0x20)
TAG_LENGTH = 12
# Security control byte, frame counter and tag around the ciphertext.
_OVERHEAD = 1 + 4 + TAG_LENGTH
# The shortest encrypted frame: a one-byte length and one byte of ciphertext.
_SHORTEST_FRAME = 11 + _OVERHEAD + 1
# Decrypted bytes enough to see whether a frame starts like a telegram.
PROBE_BYTES = 32

# One grammar for every telegram, streamed or given to check_telegram: a header line (``/``,
# three letters, an identification), printable lines, ``!``, four CRC digits (DSMR 5; DSMR 2/3
# send none, and a Dutch heat meter drops leading zeros: only with legacy_crc), CR LF.
_HEADER_PREFIX = rb"/[A-Za-z]{3}[\x22-\x7e]"
_LINE_TEXT = rb"[\x20\x22-\x7e]"
_BODY_TEXT = rb"[\x20\x22-\x7e\r\n]"
_TELEGRAM = re.compile(
    _HEADER_PREFIX + _LINE_TEXT + rb"*\r\n" + _BODY_TEXT + rb"*!([0-9A-Fa-f]{4})\r\n"
)
_LEGACY_TELEGRAM = re.compile(
    _HEADER_PREFIX + _LINE_TEXT + rb"*\r\n" + _BODY_TEXT + rb"*!([0-9A-Fa-f]{0,4})\r\n"
)
_TAIL = re.compile(rb"!([0-9A-Fa-f]{4})\r\n")
_LEGACY_TAIL = re.compile(rb"!([0-9A-Fa-f]{0,4})\r\n")
_TAIL_PREFIX = re.compile(rb"!(?:[0-9A-Fa-f]{0,3}|[0-9A-Fa-f]{4}\r?)\Z")
_LEGACY_TAIL_PREFIX = re.compile(rb"![0-9A-Fa-f]{0,4}\r?\Z")
_BODY = re.compile(_BODY_TEXT + rb"*")
_CANDIDATE = re.compile(rb"/(?=[A-Za-z]{3}[\x22-\x7e])")
_LINE_BREAK = re.compile(rb"[\r\n]")
_TELEGRAM_START = re.compile(_HEADER_PREFIX + _LINE_TEXT + rb"*(?:\r\n|\Z)")
# An OBIS data line: random bytes hold one about once in 10^12 frames.
_OBIS_LINE = re.compile(rb"\r\n[0-9]-[0-9]+:[0-9]+\.[0-9]+\.[0-9]+\(")
_FRAME_START = re.compile(rb"[\xdb/]")
_NESTED_START = re.compile(rb"\xdb\x08")


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


class FrameOpener(Protocol):
    """What the framer needs from the keys: judge a whole frame, and glance at the start of one."""

    def open(self, frame: EncryptedFrame) -> Frame | P1Error:
        """The verified telegram of a complete frame, or why it does not count."""

    def plausible(self, frame: EncryptedFrame) -> bool:
        """Whether a frame, of which only the start of the ciphertext may be given, decrypts to
        the start of a telegram.
        """


def verify_telegram(telegram: bytes, *, legacy_crc: bool = False) -> int | P1Error | None:
    """The CRC of a whole telegram (None if it carries none), or the error that rejects it."""
    match = (_LEGACY_TELEGRAM if legacy_crc else _TELEGRAM).fullmatch(telegram)
    if match is None:
        return NotATelegramError("content is not a DSMR telegram")
    digits = match.group(1)
    if not digits:
        return None
    given = int(digits, 16)
    calculated = crc16_arc(memoryview(telegram)[: match.start(1)])
    if given != calculated:
        return CRCError(given, calculated)
    return given


def check_telegram(telegram: bytes, *, legacy_crc: bool = False) -> int | None:
    """Check that bytes are one whole telegram with a valid CRC; return the CRC (None if absent).

    Exactly as strict as the streaming decoder: what it accepts, the decoder accepts.
    """
    verdict = verify_telegram(telegram, legacy_crc=legacy_crc)
    if isinstance(verdict, P1Error):
        raise verdict
    return verdict


def starts_like_telegram(data: bytes) -> bool:
    """Whether data (maybe only the first bytes) opens with a telegram's header line."""
    return _TELEGRAM_START.match(data) is not None


def holds_telegram_text(data: bytes) -> bool:
    """Whether decrypted data shows it was decrypted with the right key, even if damaged: a
    header line at its start, or an OBIS line anywhere.
    """
    return starts_like_telegram(data) or _OBIS_LINE.search(data) is not None


def _crc_rewind_tables() -> tuple[list[int], list[int]]:
    table = [crc16_arc(bytes([byte])) for byte in range(256)]
    by_high = [0] * 256
    for byte, value in enumerate(table):
        by_high[value >> 8] = byte
    return table, by_high


# CRC-16's register step ``r' = (r >> 8) ^ T[(r ^ b) & 0xFF]`` is invertible: the high byte of r'
# is the high byte of T[i] alone, and tells i.
_CRC_TABLE, _CRC_INDEX_BY_HIGH = _crc_rewind_tables()


def _crc_starts(data: bytes | bytearray, low: int, high: int, crc: int) -> set[int]:
    """Offsets s in [low, high) such that the CRC-16 of data[s:high] is crc, in one pass."""
    table, by_high = _CRC_TABLE, _CRC_INDEX_BY_HIGH
    register = crc
    starts = set()
    for offset in range(high - 1, low - 1, -1):
        index = by_high[register >> 8]
        register = (((register ^ table[index]) & 0xFF) << 8) | (index ^ data[offset])
        if not register:
            starts.add(offset)
    return starts


@dataclass(slots=True)
class _Pending:
    """An encrypted frame whose header is valid and whose end has not been judged yet."""

    start: int  # stream offsets, not buffer offsets: the buffer is trimmed between feeds
    end: int
    control: int  # offset of the security control byte from start


@dataclass(slots=True)
class _Run:
    """A run of telegram text holding plaintext candidates (``/XXX`` starts), judged together."""

    start: int  # the first candidate
    silent: bool  # it starts inside a frame already judged: only a valid telegram is news
    candidates: deque[int]
    body_end: int  # text checked up to here
    searched: int  # candidates looked for up to here
    reported: bool = False


class _NeedMore:
    pass


_NEED_MORE = _NeedMore()


class FrameReader:
    """Accumulates bytes and yields verified telegrams; memory stays below max_frame plus a chunk.

    ``opener`` judges encrypted frames; without it they are reported as MissingKeyError and
    plaintext telegrams are accepted, with it plaintext telegrams are refused (the meter encrypts).
    ``legacy_crc`` accepts telegrams without CRC digits (DSMR 2/3) or with fewer than four.
    """

    __slots__ = (
        "_base",
        "_buffer",
        "_counted",
        "_legacy_crc",
        "_opener",
        "_pending",
        "_quiet",
        "_run",
        "_scan",
        "max_frame",
        "noise_bytes",
    )

    def __init__(
        self,
        opener: FrameOpener | None = None,
        max_frame: int = MAX_FRAME,
        *,
        legacy_crc: bool = False,
    ) -> None:
        self._buffer = bytearray()
        self._base = 0  # stream offset of the buffer's first byte
        self._scan = 0  # every frame start before this offset has been looked at
        self._quiet = 0  # the failures of frames starting before this offset are no news
        self._counted = 0  # bytes before this offset are in a returned frame or counted noise
        self._pending: list[_Pending] = []
        self._run: _Run | None = None
        self._opener = opener
        self._legacy_crc = legacy_crc
        self.max_frame = max_frame
        self.noise_bytes = 0

    @property
    def pending(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame | P1Error]:
        """Add bytes and return the telegrams (and rejected frames) they complete, in order."""
        self._buffer += data
        results: list[Frame | P1Error] = []
        while self._run_step(results) if self._run is not None else self._step(results):
            pass
        self._trim()
        return results

    # Bookkeeping.

    def _emit(
        self, results: list[Frame | P1Error], item: Frame | P1Error, start: int, end: int
    ) -> None:
        if start > self._counted:
            self.noise_bytes += start - self._counted
        self._counted = max(self._counted, end)
        results.append(item)

    def _trim(self) -> None:
        run = self._run
        if run is not None:
            keep = run.candidates[0] if run.candidates else run.searched
        else:
            keep = min(self._scan, self._pending[0].start) if self._pending else self._scan
        if keep > self._counted:
            self.noise_bytes += keep - self._counted
            self._counted = keep
        if keep > self._base:
            del self._buffer[: keep - self._base]
            self._base = keep

    def _end(self) -> int:
        return self._base + len(self._buffer)

    # Encrypted frames.

    def _step(self, results: list[Frame | P1Error]) -> bool:
        """Look at the next frame start or judge the next complete frame; False: need bytes."""
        have = self._end()
        due = min(self._pending, key=_end_of) if self._pending else None
        if due is not None and due.end <= have:
            # Stream order: what starts early enough to end before the complete frame is first.
            start = self._next_start(due.end)
            if (
                start is not None
                and start + _SHORTEST_FRAME <= due.end
                and self._look_at(start, due, results)
            ):
                return True
            self._judge(due, results)
            return True
        start = self._next_start(have)
        return start is not None and self._look_at(start, None, results)

    def _next_start(self, limit: int) -> int | None:
        base, scan = self._base, self._scan
        if self._pending:
            # Inside a frame still open only another encrypted frame can matter: a plaintext
            # telegram there is refused anyway (a key is set), and silently (it is no news).
            match = _NESTED_START.search(self._buffer, scan - base, limit - base)
            if match is None:
                self._scan = max(scan, limit - 1)
                return None
        else:
            match = _FRAME_START.search(self._buffer, scan - base, limit - base)
            if match is None:
                self._scan = max(scan, limit)
                return None
        return match.start() + base

    def _look_at(self, start: int, due: _Pending | None, results: list[Frame | P1Error]) -> bool:
        """Examine a frame start; ``due`` is a pending frame complete already, if any."""
        buffer, offset = self._buffer, start - self._base
        if buffer[offset] != GLO_CIPHERING:
            if len(buffer) - offset < 5:
                return False
            if _CANDIDATE.match(buffer, offset):
                self._run = _Run(start, start < self._quiet, deque([start]), start, start + 1)
            else:
                self._scan = start + 1
            return True
        header = self._header(offset)
        if header is _NEED_MORE:
            return False
        if header is None:
            self._scan = start + 1
            return True
        assert isinstance(header, tuple)
        control, end = header
        shadowed = bool(self._pending) or start < self._quiet
        security = buffer[offset + control]
        if security != SECURITY_CONTROL or self._opener is None:
            # Judged by its header: nothing inside can be verified.
            if not shadowed:
                error = (
                    SecurityControlError() if security != SECURITY_CONTROL else MissingKeyError()
                )
                self._emit(results, error, start, end)
                self._quiet = max(self._quiet, end)
            self._scan = start + 1
            return True
        if due is not None and end > due.end:
            # It ends after the frame already complete, so it cannot replace that one: judge
            # that first, then look here again.
            self._judge(due, results)
            return True
        if shadowed:
            probe_end = min(end - TAG_LENGTH, start + control + 5 + PROBE_BYTES)
            if probe_end > self._end():
                return False
            if not self._opener.plausible(self._encrypted(start, control, probe_end, b"")):
                self._scan = start + 1
                return True
        self._pending.append(_Pending(start, end, control))
        self._scan = start + 1
        return True

    def _header(self, offset: int) -> tuple[int, int] | _NeedMore | None:
        """(offset of the security byte, stream end) of a frame starting at buffer offset."""
        buffer = self._buffer
        have = len(buffer) - offset
        # Each header byte is checked as soon as it arrives, so a stray 0xDB in line noise is
        # dropped at once instead of holding the stream until a bogus length is reached.
        if have < 2:
            return _NEED_MORE
        if buffer[offset + 1] != SYSTEM_TITLE_LENGTH:
            return None
        if have < 11:
            return _NEED_MORE
        form = buffer[offset + 10]
        if form == 0x82:
            if have < 13:
                return _NEED_MORE
            length, control = (buffer[offset + 11] << 8) | buffer[offset + 12], 13
        elif form == 0x81:
            if have < 12:
                return _NEED_MORE
            length, control = buffer[offset + 11], 12
        elif form < 0x80:
            length, control = form, 11
        else:
            return None
        if length <= _OVERHEAD or control + length > self.max_frame:
            return None
        if have <= control:
            return _NEED_MORE
        security = buffer[offset + control]
        if security != SECURITY_CONTROL and security not in _OTHER_SECURITY:
            return None
        return control, offset + self._base + control + length

    def _encrypted(
        self, start: int, control: int, ciphertext_end: int, tag: bytes
    ) -> EncryptedFrame:
        buffer, offset = self._buffer, start - self._base
        fields = offset + control + 1
        return EncryptedFrame(
            system_title=bytes(buffer[offset + 2 : offset + 10]),
            frame_counter=int.from_bytes(buffer[fields : fields + 4]),
            ciphertext=bytes(buffer[fields + 4 : ciphertext_end - self._base]),
            tag=tag,
        )

    def _judge(self, frame: _Pending, results: list[Frame | P1Error]) -> None:
        """Open a complete frame; a valid one wins over every open frame that claims its bytes."""
        pending = self._pending
        pending.remove(frame)
        tag_start = frame.end - TAG_LENGTH
        offset = tag_start - self._base
        tag = bytes(self._buffer[offset : offset + TAG_LENGTH])
        assert self._opener is not None
        result = self._opener.open(self._encrypted(frame.start, frame.control, tag_start, tag))
        earlier = pending[0] if pending and pending[0].start < frame.start else None
        if isinstance(result, P1Error):
            if earlier is None and frame.start >= self._quiet:
                self._emit(results, result, frame.start, frame.end)
            self._quiet = max(self._quiet, frame.end)
            return
        if earlier is not None and earlier.start >= self._quiet:
            self._emit(results, self._displaced(earlier), earlier.start, frame.start)
        pending[:] = [other for other in pending if other.start >= frame.end]
        self._emit(results, result, frame.start, frame.end)
        self._quiet = max(self._quiet, frame.end)
        self._scan = max(self._scan, frame.end)

    def _displaced(self, frame: _Pending) -> P1Error:
        """Why a frame whose span holds a valid frame fails: its length is wrong."""
        probe_end = min(self._end(), frame.start + frame.control + 5 + PROBE_BYTES)
        assert self._opener is not None
        if self._opener.plausible(self._encrypted(frame.start, frame.control, probe_end, b"")):
            return DamagedFrameError()
        return MalformedFrameError("frame length does not match its content")

    # Plaintext telegrams.

    def _run_step(self, results: list[Frame | P1Error]) -> bool:
        run = self._run
        assert run is not None
        buffer, base = self._buffer, self._base
        have = self._end()
        body_end = _BODY.match(buffer, run.body_end - base).end() + base  # type: ignore[union-attr]
        run.body_end = body_end
        # A candidate further back than the maximum frame can start no telegram any more.
        reach = body_end - self.max_frame
        candidates = run.candidates
        for match in _CANDIDATE.finditer(buffer, max(run.searched, reach) - base, body_end - base):
            candidates.append(match.start() + base)
        run.searched = max(run.searched, body_end - 4)
        if body_end == have:
            if candidates and candidates[0] < reach:
                while candidates and candidates[0] < reach:
                    candidates.popleft()
                self._report(run, results, _too_long(), run.start + self.max_frame)
            return False
        if buffer[body_end - base] != ord("!"):
            return self._end_run(
                results,
                body_end,
                MalformedFrameError("telegram holds a byte that is not printable"),
            )
        tail = (_LEGACY_TAIL if self._legacy_crc else _TAIL).match(buffer, body_end - base)
        if tail is None:
            prefix = _LEGACY_TAIL_PREFIX if self._legacy_crc else _TAIL_PREFIX
            if prefix.match(buffer, body_end - base):
                return False
            return self._end_run(
                results, body_end, MalformedFrameError("telegram does not end in !CRC")
            )
        self._judge_run(results, tail.end() + base, tail.group(1))
        return True

    def _report(self, run: _Run, results: list[Frame | P1Error], error: P1Error, end: int) -> None:
        """The one error of a run that holds no telegram (or a broken one before its telegram):
        a run of text is judged once, however many candidates it holds.
        """
        if not (run.silent or run.reported):
            run.reported = True
            self._emit(results, error, run.start, end)

    def _end_run(self, results: list[Frame | P1Error], end: int, error: P1Error) -> bool:
        run = self._run
        assert run is not None
        self._report(run, results, error, end)
        self._quiet = max(self._quiet, end)
        self._scan = end
        self._run = None
        return True

    def _judge_run(self, results: list[Frame | P1Error], end: int, digits: bytes) -> None:
        run = self._run
        assert run is not None
        buffer, base = self._buffer, self._base
        alive = [start for start in run.candidates if end - start <= self.max_frame]
        found: tuple[int, Frame | P1Error] | None = None
        first_error: P1Error = _too_long()
        if alive:
            verdict = verify_telegram(
                bytes(buffer[alive[0] - base : end - base]), legacy_crc=self._legacy_crc
            )
            if not isinstance(verdict, P1Error):
                found = alive[0], Frame(bytes(buffer[alive[0] - base : end - base]), verdict)
            elif alive[0] == run.start:
                first_error = (
                    verdict
                    if isinstance(verdict, CRCError)
                    else MalformedFrameError("telegram header line is broken")
                )
            if found is None and len(alive) > 1:
                found = self._later_telegram(alive[1:], run.body_end, end, digits)
        if found is None:
            self._report(run, results, first_error, end)
        else:
            start, item = found
            if start != run.start:
                self._report(run, results, first_error, start)
            if self._opener is not None:
                if start >= self._quiet:
                    self._emit(results, UnencryptedTelegramError(), start, end)
            else:
                self._emit(results, item, start, end)
        self._quiet = max(self._quiet, end)
        self._scan = end
        self._run = None

    def _later_telegram(
        self, starts: list[int], bang: int, end: int, digits: bytes
    ) -> tuple[int, Frame] | None:
        """The first of starts from which a valid telegram runs to the tail at bang..end."""
        buffer, base = self._buffer, self._base
        if digits:
            zero = _crc_starts(buffer, starts[0] - base, bang + 1 - base, int(digits, 16))
            starts = [start for start in starts if start - base in zero]
        line_end = -1
        for start in starts:
            if start > line_end:
                match = _LINE_BREAK.search(buffer, start - base, bang - base)
                line_end = match.start() + base if match else bang
            if buffer[line_end - base : line_end + 2 - base] == b"\r\n":
                telegram = bytes(buffer[start - base : end - base])
                verdict = verify_telegram(telegram, legacy_crc=self._legacy_crc)
                if not isinstance(verdict, P1Error):
                    return start, Frame(telegram, verdict)
        return None


def _end_of(frame: _Pending) -> int:
    return frame.end


def _too_long() -> MalformedFrameError:
    return MalformedFrameError("telegram longer than the maximum frame size")
