"""Console reader and meter simulator: ``python -m custom_components.smarty_p1 read|simulate``.

``read`` shows what a meter sends, from a serial port, a TCP bridge or a capture file; ``simulate``
plays a Smarty meter on a pseudo-terminal or a TCP port. The key is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from .crypto import parse_key
from .decoder import TelegramDecoder
from .errors import InvalidKeyFormatError, P1Error
from .obis import describe, display_name
from .simulator import MeterSimulator, PtyMeter, serve_tcp
from .telegram import Telegram

KEY_ENV = "SMARTY_P1_KEY"
CHUNK = 65536
EXIT_WRONG_KEY = 2
EXIT_CONNECTION = 1
_HEX_CAPTURE = re.compile(rb"[0-9A-Fa-f\s]+")


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
            status = _simulate(args, None if args.plain else key)
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

    simulate = commands.add_parser("simulate", help="behave like a Smarty meter")
    simulate.add_argument("--key", help=key_help)
    target = simulate.add_mutually_exclusive_group(required=True)
    target.add_argument("--pty", action="store_true", help="on a new pseudo-terminal")
    target.add_argument("--tcp", type=int, metavar="PORT", help="on a TCP port (0: any free)")
    simulate.add_argument("--interval", type=float, default=10.0, metavar="S")
    simulate.add_argument("--seed", type=int, default=0, metavar="N")
    simulate.add_argument("--plain", action="store_true", help="send plaintext telegrams")
    simulate.add_argument("--count", type=int, metavar="N", help="stop after N telegrams")
    return parser


def _key(parser: argparse.ArgumentParser, text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return parse_key(text)
    except InvalidKeyFormatError as err:
        # argparse would quote the rejected value: the message must not hold the key.
        parser.error(f"--key: {err}")


# Reading.


def _read(args: argparse.Namespace, key: bytes | None) -> int:
    decoder = TelegramDecoder(key)
    out = sys.stdout
    shown = 0
    try:
        for chunk in _chunks(args):
            for item in decoder.feed(chunk):
                if isinstance(item, P1Error):
                    if decoder.stats.telegrams == 0 and item.reason in ("tag", "key_required"):
                        print(item, file=sys.stderr)
                        return EXIT_WRONG_KEY
                    print(f"rejected: {item}", file=sys.stderr)
                    continue
                if args.json:
                    out.write(json.dumps(item.as_dict()) + "\n")
                elif not args.stats:
                    _print_table(item, out)
                out.flush()
                shown += 1
                if shown == args.count:
                    return 0
    except BrokenPipeError:
        # Our own output was closed, not the meter's line: main() ends quietly.
        raise
    except (OSError, ValueError) as err:
        # pyserial's SerialException is an OSError; a bad HOST:PORT a ValueError.
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONNECTION
    finally:
        if args.stats:
            out.write(json.dumps(decoder.stats.as_dict()) + "\n")
            out.flush()
    return 0


def _chunks(args: argparse.Namespace) -> Iterator[bytes]:
    if args.file is not None:
        yield _capture(args.file.read_bytes())
    elif args.tcp is not None:
        yield from _tcp_chunks(args.tcp)
    else:
        yield from _serial_chunks(args.port)


def _capture(data: bytes) -> bytes:
    """A capture file as bytes: hex text (as found in issue reports) is turned back into bytes."""
    if _HEX_CAPTURE.fullmatch(data):
        compact = bytes(data.translate(None, b" \t\r\n\f\v"))
        if len(compact) % 2 == 0:
            return bytes.fromhex(compact.decode("ascii"))
    return data


def _tcp_chunks(target: str) -> Iterator[bytes]:
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError("--tcp wants HOST:PORT")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=30) as sock:
        sock.settimeout(None)
        while data := sock.recv(CHUNK):
            yield data
    raise ConnectionError("connection closed by the bridge")


def _serial_chunks(device: str) -> Iterator[bytes]:
    # pyserial ships no type information; it is only needed for this source.
    import serial  # noqa: PLC0415

    with serial.Serial(device, 115200, bytesize=8, parity="N", stopbits=1, timeout=0.2) as port:
        while True:
            data = port.read(CHUNK)
            if data:
                yield data


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


def _simulate(args: argparse.Namespace, key: bytes | None) -> int:
    sim = MeterSimulator(key, seed=args.seed, interval=args.interval, start=datetime.now(UTC))
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
