"""Reading a meter through cuts: connect, read, notice a dead line, reconnect with backoff.

One loop for the integration's coordinator, the console reader and the MQTT bridge. Each
connection gets a new decoder (no stale half frame from the last one). Only the owner's
cancellation ends the loop: a failure anywhere in it, expected or not, is a cut.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from time import monotonic

from .decoder import TelegramDecoder
from .errors import P1Error
from .sources import ByteSource, CannotConnect, PortGone
from .telegram import Telegram

_LOGGER = logging.getLogger(__name__)

# The meter sends every 10 s: a minute without a valid telegram means the line is dead.
SILENCE_TIMEOUT = 60.0
RECONNECT_MIN_DELAY = 1.0
RECONNECT_MAX_DELAY = 60.0

type Items = list[Telegram | P1Error]


class SilenceError(Exception):
    """No valid telegram for the silence timeout."""


class MeterSession:
    """Reads ``source`` until cancelled; hands what each chunk completes to ``receive``.

    The owner calls ``alive()`` for every telegram it accepts: that holds off the silence
    timeout and resets the backoff. ``on_lost(reason)`` is called once per cut, ``on_connected``
    after every successful (re)connection.
    """

    def __init__(
        self,
        source: ByteSource,
        new_decoder: Callable[[], TelegramDecoder],
        receive: Callable[[Items], None],
        *,
        on_lost: Callable[[str], None] | None = None,
        on_connected: Callable[[], None] | None = None,
        silence_timeout: float = SILENCE_TIMEOUT,
        min_delay: float = RECONNECT_MIN_DELAY,
        max_delay: float = RECONNECT_MAX_DELAY,
        reconnect: bool = True,
    ) -> None:
        self.source = source
        self._new_decoder = new_decoder
        self._receive = receive
        self._on_lost = on_lost
        self._on_connected = on_connected
        self.silence_timeout = silence_timeout
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.reconnect = reconnect
        # Why reading stopped, for a session that does not reconnect (None: a finite source
        # reached its end, or still reading).
        self.ended_by: str | None = None
        self.decoder: TelegramDecoder | None = None
        self.connected = False
        self.reconnects = 0
        self._opened = False
        self._delay = min_delay
        self._last_valid = 0.0
        # Warned once per outage that reconnecting fails; then only at debug level.
        self._warned = False

    def __repr__(self) -> str:
        return f"MeterSession({self.source}, connected={self.connected})"

    def alive(self) -> None:
        """A telegram was accepted: the line works."""
        self._last_valid = monotonic()
        self._delay = self.min_delay

    async def open(self) -> None:
        """Open the source with a new decoder; raises CannotConnect."""
        decoder = self.decoder = self._new_decoder()

        def received(data: bytes) -> None:
            self._receive(decoder.feed(data))

        await self.source.open(received)
        self.connected = True
        self._warned = False
        if self._opened:
            self.reconnects += 1
        self._opened = True
        if self._on_connected is not None:
            self._on_connected()

    async def run(self) -> None:
        """Read through every cut until cancelled, until a finite source has ended, or (when
        told not to reconnect) until the first cut, whose reason is then ``ended_by``.

        Opens the source first if ``open()`` was not called (or failed).
        """
        while True:
            if not self.connected:
                await self._reconnect()
            try:
                await self._read()
                reason = "the connection was closed"
            except SilenceError:
                reason = f"no valid telegram for {self.silence_timeout:g} s"
            except OSError as err:
                reason = str(err) or type(err).__name__
            except Exception:
                # A bug must not end the reading for good: log it and start over.
                _LOGGER.exception("Unexpected error reading %s", self.source)
                reason = "unexpected error"
            await self.close()
            if not self.source.endless:
                return
            if not self.reconnect:
                self.ended_by = reason
                return
            self._lost(reason)

    async def close(self) -> None:
        """Close the source; never raises (but for cancellation)."""
        self.connected = False
        try:
            await self.source.close()
        except Exception:
            _LOGGER.exception("Unexpected error closing %s", self.source)

    def _lost(self, reason: str) -> None:
        if self._on_lost is None:
            return
        try:
            self._on_lost(reason)
        except Exception:
            _LOGGER.exception("Unexpected error reporting the loss of %s", self.source)

    async def _reconnect(self) -> None:
        while True:
            await asyncio.sleep(self._delay)
            self._delay = min(self._delay * 2, self.max_delay)
            try:
                await self.open()
            except CannotConnect as err:
                self._failed(err)
            except Exception:
                _LOGGER.exception("Unexpected error connecting to %s", self.source)
                await self.close()
            else:
                _LOGGER.debug("Reconnected to %s", self.source)
                return

    def _failed(self, err: CannotConnect) -> None:
        if self._warned or not isinstance(err, PortGone):
            # The owner says once that the meter is unavailable; each retry is only debug.
            _LOGGER.debug("Reconnecting to %s failed: %s", self.source, err)
            return
        self._warned = True
        # Once per outage: a serial port that is gone needs a hand (a cable to plug back).
        _LOGGER.warning("%s; retrying every %g s at most", err, self.max_delay)

    async def _read(self) -> None:
        """Wait while telegrams arrive: return at EOF, raise OSError or SilenceError."""
        self._last_valid = monotonic()
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None

        def watch() -> None:
            # One timer for the whole connection, pushed back as telegrams arrive.
            nonlocal timer
            remaining = self._last_valid + self.silence_timeout - monotonic()
            if remaining > 0:
                timer = loop.call_later(remaining, watch)
            else:
                self.source.finish(SilenceError())

        if self.source.endless:
            timer = loop.call_later(self.silence_timeout, watch)
        try:
            await self.source.wait_ended()
        finally:
            if timer is not None:
                timer.cancel()
