"""Console reader and meter simulator: ``python -m custom_components.smarty_p1 read|simulate``.

``read`` shows what a meter sends, from a serial port, a TCP bridge or a capture file; ``simulate``
plays a Smarty meter on a pseudo-terminal or a TCP port. The key is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from .crypto import parse_key
from .decoder import DecoderStats, TelegramDecoder
from .errors import InvalidKeyFormatError, P1Error, WrongKeyError
from .frame import SECURITY_CONTROL
from .guard import TelegramGuard
from .integrity import WRONG_KEY_PROOF, FrameAuthenticator, Integrity
from .obis import describe, display_name
from .session import MeterSession
from .simulator import MeterSimulator, PtyMeter, serve_tcp
from .sources import ByteSource, CannotConnect, FileSource, SerialSource, TcpSource
from .telegram import Telegram

KEY_ENV = "SMARTY_P1_KEY"
EXIT_WRONG_KEY = 2
EXIT_CONNECTION = 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    key = _key(parser, args.key or os.environ.get(KEY_ENV))
    if args.command == "simulate" and key is None and not args.plain:
        parser.error(f"simulate needs --key (or {KEY_ENV}) unless --plain")
    try:
        if args.command == "read":
            status = _read(args, key)
        else:
            auth_key = _key(parser, args.auth_key, "--auth-key")
            status = _simulate(args, None if args.plain else key, auth_key)
        sys.stdout.flush()
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # The reader of our output (`| head`) has gone: stop quietly, as shell tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m custom_components.smarty_p1",
        description="Read a Smarty P1 port, or simulate a Smarty meter.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    key_help = f"the meter's 32-digit decryption key (default: ${KEY_ENV})"

    read = commands.add_parser("read", help="decode telegrams and print them")
    read.add_argument("--key", help=key_help + "; without it only plaintext telegrams decode")
    source = read.add_mutually_exclusive_group(required=True)
    source.add_argument("--port", metavar="DEV", help="serial device, e.g. /dev/ttyUSB0")
    source.add_argument("--tcp", metavar="HOST:PORT", help="network serial bridge")
    source.add_argument("--file", metavar="PATH", type=Path, help="capture, binary or hex text")
    output = read.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per telegram")
    output.add_argument("--stats", action="store_true", help="only a JSON summary at the end")
    read.add_argument("--count", type=int, metavar="N", help="stop after N telegrams")
    read.add_argument(
        "--follow", action="store_true", help="reconnect after a cut instead of stopping (exit 1)"
    )
    read.add_argument(
        "--legacy-crc",
        action="store_true",
        help="accept DSMR 2/3 telegrams without a CRC, or with fewer than 4 digits",
    )

    simulate = commands.add_parser("simulate", help="behave like a Smarty meter")
    simulate.add_argument("--key", help=key_help)
    target = simulate.add_mutually_exclusive_group(required=True)
    target.add_argument("--pty", action="store_true", help="on a new pseudo-terminal")
    target.add_argument("--tcp", type=int, metavar="PORT", help="on a TCP port (0: any free)")
    simulate.add_argument("--interval", type=float, default=10.0, metavar="S")
    simulate.add_argument("--seed", type=int, default=0, metavar="N")
    simulate.add_argument("--plain", action="store_true", help="send plaintext telegrams")
    simulate.add_argument(
        "--auth-key",
        metavar="HEX",
        help="authenticate with this key of the meter's own, not the specification's",
    )
    simulate.add_argument("--count", type=int, metavar="N", help="stop after N telegrams")
    return parser


def _key(parser: argparse.ArgumentParser, text: str | None, option: str = "--key") -> bytes | None:
    if text is None:
        return None
    try:
        return parse_key(text)
    except InvalidKeyFormatError as err:
        # argparse would quote the rejected value: the message must not hold the key.
        parser.error(f"{option}: {err}")


# Reading.


def _source(args: argparse.Namespace) -> ByteSource:
    if args.file is not None:
        return FileSource(args.file)
    if args.tcp is not None:
        host, _, port = args.tcp.rpartition(":")
        if not host or not port.isdigit():
            raise CannotConnect("--tcp wants HOST:PORT")
        return TcpSource(host, int(port))
    return SerialSource(args.port)


def _read(args: argparse.Namespace, key: bytes | None) -> int:
    try:
        source = _source(args)
    except CannotConnect as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONNECTION
    return asyncio.run(_ConsoleReader(args, key, source).run())


class _ConsoleReader:
    """Prints what a meter sends, judged as the integration judges it, until told to stop."""

    def __init__(self, args: argparse.Namespace, key: bytes | None, source: ByteSource) -> None:
        self.args = args
        # One authenticator for every connection: what the frames taught (a learned key) stays.
        self.authenticator = FrameAuthenticator(key) if key is not None else None
        # What has been said on stderr about the telegrams' protection.
        self.said: set[Integrity] = set()
        # Frames that did not decrypt before any telegram did: the key is wrong once they prove it.
        self.undecrypted = 0
        self.stats = DecoderStats()
        self.guard = TelegramGuard()
        self.session = MeterSession(
            source, self._new_decoder, self._receive, on_lost=self._lost, reconnect=args.follow
        )
        self.shown = 0
        self.status: int | None = None
        # Our own output was closed (`| head`): main() ends quietly.
        self.output_closed = False
        self._done = asyncio.Event()

    def _new_decoder(self) -> TelegramDecoder:
        decoder = TelegramDecoder(authenticator=self.authenticator, legacy_crc=self.args.legacy_crc)
        decoder.stats = self.stats
        return decoder

    async def run(self) -> int:
        try:
            await self.session.open()
        except CannotConnect as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_CONNECTION
        reading = asyncio.create_task(self.session.run())
        stopping = asyncio.create_task(self._done.wait())
        try:
            await asyncio.wait((reading, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reading, stopping):
                task.cancel()
            await asyncio.gather(reading, stopping, return_exceptions=True)
            await self.session.close()
            if self.output_closed:
                raise BrokenPipeError
            if self.args.stats:
                summary = {**self.stats.as_dict(), **self.guard.stats.as_dict()}
                sys.stdout.write(json.dumps(summary) + "\n")
                sys.stdout.flush()
        if self.status is None and self.undecrypted and not self.stats.telegrams:
            # A capture that ended before more frames could prove it: what it holds did not
            # decrypt, and nothing in it was damaged.
            print(WrongKeyError(), file=sys.stderr)
            return EXIT_WRONG_KEY
        if self.status is None and reading.done() and self.session.ended_by is not None:
            print(f"error: {self.session.ended_by}", file=sys.stderr)
            return EXIT_CONNECTION
        return self.status or 0

    def _stop(self, status: int) -> None:
        if self.status is None:
            self.status = status
        self._done.set()

    def _lost(self, reason: str) -> None:
        print(f"connection lost: {reason}; reconnecting", file=sys.stderr)

    def _receive(self, items: list[Telegram | P1Error]) -> None:
        try:
            self._show(items)
        except BrokenPipeError:
            self.output_closed = True
            self._stop(0)

    def _say_integrity(self, item: Telegram | P1Error) -> None:
        """One line on stderr when the telegrams are not authenticated with the specification's
        key: while the meter's own key is learned, once it is, and when CRC-only is declared."""
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
            print(f"integrity: {_INTEGRITY[said]}", file=sys.stderr)

    def _show(self, items: list[Telegram | P1Error]) -> None:
        out = sys.stdout
        for item in items:
            if self.status is not None:
                return
            self._say_integrity(item)
            if isinstance(item, P1Error):
                if self.stats.telegrams == 0 and item.reason in ("wrong_key", "key_required"):
                    self.undecrypted += 1
                    if item.reason == "key_required" or self.undecrypted >= WRONG_KEY_PROOF:
                        print(item, file=sys.stderr)
                        self._stop(EXIT_WRONG_KEY)
                        return
                    continue
                if item.reason == "damaged":
                    # A damaged frame proves nothing about the key.
                    self.undecrypted = 0
                print(f"rejected: {item}", file=sys.stderr)
                continue
            self.session.alive()
            judged = self.guard.judge(item, datetime.now(UTC))
            if judged is None:
                print(f"ignored: {_REFUSED[self.guard.refused or 'stale']}", file=sys.stderr)
                continue
            if self.args.json:
                out.write(json.dumps(judged.as_dict()) + "\n")
            elif not self.args.stats:
                _print_table(judged, out)
            out.flush()
            self.shown += 1
            if self.shown == self.args.count:
                self._stop(0)
                return


_INTEGRITY = {
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
_REFUSED = {
    "foreign": "a telegram of another meter",
    "stale": "a replayed telegram (frame counter and meter time not newer)",
}


def _print_table(telegram: Telegram, out: TextIO) -> None:
    title = [telegram.header]
    if telegram.system_title is not None:
        title.append(f"system title {telegram.system_title.hex().upper()}")
        title.append(f"frame counter {telegram.frame_counter}")
    if telegram.crc is not None:
        title.append(f"CRC {telegram.crc:04X}")
    out.write("  ".join(title) + "\n")
    for obj in telegram.objects.values():
        info = describe(obj.obis)
        value = _text(obj.value)
        if obj.timestamp is not None:
            value += f" (at {obj.timestamp.isoformat()})"
        # Old firmware omits units; the catalog knows them.
        unit = obj.unit or (info.unit if info is not None else None) or ""
        name = display_name(obj.obis) or "(unknown)"
        out.write(f"  {obj.obis:<13} {name:<34} {value} {unit}".rstrip() + "\n")
    out.write("\n")


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return ", ".join(_text(item) for item in value)
    if isinstance(value, Decimal):
        return str(value)
    return repr(value) if value == "" else str(value)


# Simulating.


def _simulate(args: argparse.Namespace, key: bytes | None, auth_key: bytes | None) -> int:
    sim = MeterSimulator(
        key,
        seed=args.seed,
        interval=args.interval,
        start=datetime.now(UTC),
        aad=None if auth_key is None else bytes([SECURITY_CONTROL]) + auth_key,
    )
    if args.pty:
        with PtyMeter(sim, count=args.count) as meter:
            _announce(meter.path)
            while not meter.done:
                time.sleep(min(args.interval, 0.5))
            # Give a reader the time to take the last frame before the device goes away.
            time.sleep(args.interval)
        return 0
    asyncio.run(_serve(sim, args.tcp, args.count))
    return 0


async def _serve(sim: MeterSimulator, port: int, count: int | None) -> None:
    async with await serve_tcp(sim, "127.0.0.1", port, count=count) as meter:
        _announce(str(meter.port))
        await meter.finished.wait()
        # Let the clients take the last frame before the connections close.
        await asyncio.sleep(sim.interval)


def _announce(where: str) -> None:
    print(where, flush=True)
