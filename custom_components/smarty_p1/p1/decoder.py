"""The whole receive path: bytes in, verified and parsed telegrams out, with counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .crypto import DEFAULT_AUTH_KEY, FrameCipher
from .errors import P1Error
from .frame import MAX_FRAME, FrameReader
from .telegram import Telegram, parse_telegram


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
            "rejected": {
                "tag": self.rejected["tag"],
                "crc": self.rejected["crc"],
                "malformed": self.rejected["malformed"],
                "key_required": self.rejected["key_required"],
            },
            "bytes": self.bytes,
            "last_frame_counter": self.last_frame_counter,
            "counter_regressions": self.counter_regressions,
        }


class TelegramDecoder:
    """Feeds chunks of any size through framing, decryption, CRC and parsing.

    ``feed`` returns, in stream order, a Telegram for every frame that verified and a P1Error
    for every frame that did not; nothing is raised for bad input.
    """

    __slots__ = ("_reader", "stats")

    def __init__(
        self,
        key: bytes | None = None,
        *,
        auth_key: bytes = DEFAULT_AUTH_KEY,
        max_frame: int = MAX_FRAME,
    ) -> None:
        cipher = FrameCipher(key, auth_key) if key is not None else None
        self._reader = FrameReader(cipher.decrypt if cipher else None, max_frame)
        self.stats = DecoderStats()

    def __repr__(self) -> str:
        return f"TelegramDecoder(stats={self.stats!r})"

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
                telegram = parse_telegram(
                    frame.telegram, frame.crc, frame.system_title, frame.frame_counter
                )
            except P1Error as err:
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
