"""The whole receive path: bytes in, verified and parsed telegrams out, with counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .authkey import LearnedAuthKey
from .crypto import DEFAULT_AUTH_KEY
from .errors import REASONS, P1Error
from .frame import MAX_FRAME, FrameReader
from .integrity import FrameAuthenticator, Integrity
from .telegram import Telegram, TelegramParser


@dataclass(slots=True)
class DecoderStats:
    """What a decoder has seen since it was made."""

    bytes: int = 0
    telegrams: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    last_frame_counter: int | None = None
    counter_regressions: int = 0

    def as_dict(self) -> dict[str, object]:
        """The summary printed by the console reader and shown in diagnostics."""
        return {
            "telegrams": self.telegrams,
            "rejected": {reason: self.rejected[reason] for reason in REASONS},
            "bytes": self.bytes,
            "last_frame_counter": self.last_frame_counter,
            "counter_regressions": self.counter_regressions,
        }


class TelegramDecoder:
    """Feeds chunks of any size through framing, decryption, CRC and parsing.

    ``feed`` returns, in stream order, a Telegram for every frame that verified and a P1Error
    for every frame that did not; nothing is raised for bad input.

    With a key, only encrypted frames count (plaintext telegrams are refused). ``authenticator``
    replaces ``key`` and ``auth_key`` to share what a meter's frames have shown (its learned
    authentication key) across the decoders of successive connections. ``legacy_crc`` accepts
    DSMR 2/3 telegrams without a CRC, and CRCs of fewer than four digits; off by default, since
    a DSMR 5 meter always sends four digits and a telegram without any has no integrity check.
    """

    __slots__ = ("_authenticator", "_reader", "parser", "stats")

    def __init__(
        self,
        key: bytes | None = None,
        *,
        auth_key: bytes | LearnedAuthKey = DEFAULT_AUTH_KEY,
        authenticator: FrameAuthenticator | None = None,
        max_frame: int = MAX_FRAME,
        legacy_crc: bool = False,
    ) -> None:
        if authenticator is not None and key is not None:
            raise ValueError("give a key or an authenticator, not both")
        if authenticator is None and key is not None:
            authenticator = FrameAuthenticator(key, auth_key)
        self._authenticator = authenticator
        self._reader = FrameReader(authenticator, max_frame, legacy_crc=legacy_crc)
        # Its own memory of recent lines: two meters' decoders never share parsed objects.
        self.parser = TelegramParser()
        self.stats = DecoderStats()

    def __repr__(self) -> str:
        return f"TelegramDecoder(integrity={self.integrity.value}, stats={self.stats!r})"

    @property
    def authenticator(self) -> FrameAuthenticator | None:
        """What verifies the frames (None without a key): hand it to the next connection's."""
        return self._authenticator

    @property
    def integrity(self) -> Integrity:
        """How the telegrams are protected: PLAINTEXT without a key."""
        authenticator = self._authenticator
        return Integrity.PLAINTEXT if authenticator is None else authenticator.integrity

    @property
    def learned_key(self) -> LearnedAuthKey | None:
        """The meter's authentication key, once learned from its frames and confirmed."""
        authenticator = self._authenticator
        return None if authenticator is None else authenticator.learned_key

    @property
    def noise_bytes(self) -> int:
        """Bytes skipped because they started no frame."""
        return self._reader.noise_bytes

    @property
    def pending(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return self._reader.pending

    def feed(self, data: bytes | bytearray | memoryview) -> list[Telegram | P1Error]:
        """Add bytes; return what they complete."""
        stats = self.stats
        stats.bytes += len(data)
        results: list[Telegram | P1Error] = []
        for frame in self._reader.feed(data):
            if isinstance(frame, P1Error):
                stats.rejected[frame.reason] += 1
                results.append(frame)
                continue
            try:
                telegram = self.parser.parse(
                    frame.telegram, frame.crc, frame.system_title, frame.frame_counter
                )
            except P1Error as err:  # pragma: no cover - the framer passes only valid telegrams
                # Kept so that a stricter parser cannot make feed() raise; dropped with its
                # traceback, which holds the frame.
                err.__traceback__ = None
                stats.rejected[err.reason] += 1
                results.append(err)
                continue
            counter = frame.frame_counter
            if counter is not None:
                last = stats.last_frame_counter
                if last is not None and counter <= last:
                    # A replayed frame, or a new key (the meter resets its counter to 0).
                    stats.counter_regressions += 1
                stats.last_frame_counter = counter
            stats.telegrams += 1
            results.append(telegram)
        return results
