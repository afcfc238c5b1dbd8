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
from .errors import P1Error, WrongKeyError
from .guard import TelegramGuard
from .integrity import WRONG_KEY_PROOF, FrameAuthenticator, Integrity
from .session import Items, MeterSession
from .sources import ByteSource, CannotConnect
from .telegram import Telegram

EXIT_CONNECTION = 1
EXIT_WRONG_KEY = 2

# What is said on stderr when the telegrams are not authenticated with the specification's key.
INTEGRITY = {
    Integrity.AUTHENTICATED: (
        "authenticated with the meter's own authentication key, learned from its frames: every "
        "telegram's GCM tag verifies"
    ),
    Integrity.LEARNING: (
        "the meter authenticates with a key of its own (not the specification's): learning it "
        "from its frames; nothing is shown until a second frame confirms it"
    ),
    Integrity.CRC_ONLY: (
        "CRC only: no authentication key explains this meter's tags; its telegrams are "
        "decrypted and checked by their CRC-16, which catches noise but not a deliberate change"
    ),
}
REFUSED = {
    "foreign": "a telegram of another meter",
    "stale": "a replayed telegram (frame counter and meter time not newer)",
}


class MeterReader:
    """Reads ``source`` until ``stop()``, until a finite source ends or, when told not to
    reconnect, until the first cut; ``run()`` returns the exit status."""

    def __init__(
        self, source: ByteSource, key: bytes | None, *, reconnect: bool, legacy_crc: bool = False
    ) -> None:
        self.key = key
        # One authenticator for every connection: what the frames taught (a learned key) stays.
        self.authenticator = FrameAuthenticator(key) if key is not None else None
        self.legacy_crc = legacy_crc
        # Frames that did not decrypt before any telegram did: the key is wrong once they prove
        # it; and what has been said about the telegrams' protection.
        self.undecrypted = 0
        self.said: set[Integrity] = set()
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
        decoder = TelegramDecoder(authenticator=self.authenticator, legacy_crc=self.legacy_crc)
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
        if self.status is None and self.undecrypted and not self.stats.telegrams:
            # A capture that ended before more frames could prove it: what it holds did not
            # decrypt, and nothing in it was damaged.
            self._say(str(WrongKeyError()))
            return EXIT_WRONG_KEY
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
            self._say_integrity(item)
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
        """A frame that did not verify; at the start, a missing key, or a key that frames prove
        wrong, ends reading (one frame that does not decrypt may be damaged at its start)."""
        if self.stats.telegrams == 0 and error.reason in ("wrong_key", "key_required"):
            self.undecrypted += 1
            if error.reason == "key_required" or self.undecrypted >= WRONG_KEY_PROOF:
                self._say(str(error))
                self.stop(EXIT_WRONG_KEY)
            return
        if error.reason == "damaged":
            # A damaged frame proves nothing about the key.
            self.undecrypted = 0
        self._say(f"rejected: {error}")

    def _say_integrity(self, item: Telegram | P1Error) -> None:
        """One line when the telegrams are not authenticated with the specification's key:
        while the meter's own key is learned, once it is, and when CRC-only is declared."""
        authenticator = self.authenticator
        if authenticator is None:
            return
        if isinstance(item, P1Error):
            said = Integrity.LEARNING if item.reason == "learning" else None
        elif authenticator.integrity is Integrity.CRC_ONLY:
            said = Integrity.CRC_ONLY
        elif authenticator.learned_key is not None:
            said = Integrity.AUTHENTICATED
        else:
            said = None
        if said is not None and said not in self.said:
            self.said.add(said)
            self._say(f"integrity: {INTEGRITY[said]}")

    def _refused(self, why: str) -> None:
        self._say(f"ignored: {why}")

    def _accepted(self, telegram: Telegram) -> None:
        """A telegram that verified and that the guard accepted (registers held where needed)."""
        raise NotImplementedError
