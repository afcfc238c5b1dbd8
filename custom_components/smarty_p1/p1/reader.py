"""Reading and judging a meter until told to stop: what the console reader and the MQTT bridge
have in common.

Both read through one MeterSession (cuts, backoff, silence), decode with a new TelegramDecoder
per connection that counts into one DecoderStats, and judge with one TelegramGuard, as the
integration's coordinator does. A subclass says what becomes of each telegram accepted, each
frame rejected and each telegram refused.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

from .decoder import DecoderStats, TelegramDecoder
from .errors import P1Error
from .guard import TelegramGuard
from .session import Items, MeterSession
from .sources import ByteSource, CannotConnect
from .telegram import Telegram

EXIT_CONNECTION = 1
EXIT_WRONG_KEY = 2

REFUSED = {
    "foreign": "a telegram of another meter",
    "stale": "a replayed telegram (frame counter and meter time not newer)",
}


class MeterReader:
    """Reads ``source`` until ``stop()``, until a finite source ends or, when told not to
    reconnect, until the first cut; ``run()`` returns the exit status."""

    def __init__(self, source: ByteSource, key: bytes | None, *, reconnect: bool) -> None:
        self.key = key
        self.stats = DecoderStats()
        self.guard = TelegramGuard()
        self.session = MeterSession(
            source,
            self._new_decoder,
            self._receive,
            on_lost=self._lost,
            on_connected=self._connected,
            reconnect=reconnect,
        )
        self.status: int | None = None
        self._done = asyncio.Event()

    def _new_decoder(self) -> TelegramDecoder:
        decoder = TelegramDecoder(self.key)
        decoder.stats = self.stats
        return decoder

    def summary(self) -> dict[str, object]:
        """What was read and judged: the statistics line."""
        return {**self.stats.as_dict(), **self.guard.stats.as_dict()}

    async def run(self) -> int:
        """Read until stopped; the exit status."""
        try:
            await self.session.open()
        except CannotConnect as err:
            self._say(f"error: {err}")
            return EXIT_CONNECTION
        self._started()
        reading = asyncio.create_task(self.session.run())
        stopping = asyncio.create_task(self._done.wait())
        try:
            await asyncio.wait((reading, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reading, stopping):
                task.cancel()
            await asyncio.gather(reading, stopping, return_exceptions=True)
            await self.session.close()
            await self._finish()
        if self.status is None and reading.done() and self.session.ended_by is not None:
            self._say(f"error: {self.session.ended_by}")
            return EXIT_CONNECTION
        return self.status or 0

    def stop(self, status: int = 0) -> None:
        """End reading with this exit status (the first one given counts)."""
        if self.status is None:
            self.status = status
        self._done.set()

    def _say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def _started(self) -> None:
        """The meter's first connection is open."""

    async def _finish(self) -> None:
        """Reading has stopped and the source is closed."""

    def _connected(self) -> None:
        """The meter's connection is open (again)."""

    def _lost(self, reason: str) -> None:
        self._say(f"connection lost: {reason}; reconnecting")

    def _receive(self, items: Items) -> None:
        for item in items:
            if self.status is not None:
                return
            if isinstance(item, P1Error):
                self._failed(item)
                continue
            self.session.alive()
            judged = self.guard.judge(item, datetime.now(UTC))
            if judged is None:
                self._refused(REFUSED[self.guard.refused or "stale"])
                continue
            self._accepted(judged)

    def _failed(self, error: P1Error) -> None:
        """A frame that did not verify; at the start, a wrong or missing key ends reading."""
        if self.stats.telegrams == 0 and error.reason in ("tag", "key_required"):
            self._say(str(error))
            self.stop(EXIT_WRONG_KEY)
            return
        self._say(f"rejected: {error}")

    def _refused(self, why: str) -> None:
        self._say(f"ignored: {why}")

    def _accepted(self, telegram: Telegram) -> None:
        """A telegram that verified and that the guard accepted (registers held where needed)."""
        raise NotImplementedError
