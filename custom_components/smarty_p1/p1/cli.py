"""Console reader, MQTT bridge and meter simulator:
``python -m custom_components.smarty_p1 read|bridge|simulate``.

``read`` shows what a meter sends, from a serial port, a TCP bridge or a capture file; ``bridge``
publishes it to an MQTT broker (bridge.py); ``simulate`` plays a Smarty meter on a
pseudo-terminal or a TCP port. Neither the key nor a password is ever printed. Without Home
Assistant installed, run ``python -m p1`` from ``custom_components/smarty_p1``: this package
imports nothing outside itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .crypto import parse_key
from .errors import InvalidKeyFormatError, P1Error
from .frame import SECURITY_CONTROL
from .obis import describe, display_name
from .reader import EXIT_CONNECTION, MeterReader
from .simulator import MeterSimulator, PtyMeter, serve_tcp
from .sources import ByteSource, CannotConnect, FileSource, SerialSource, TcpSource
from .telegram import Telegram

if TYPE_CHECKING:
    from .bridge import BrokerSettings

KEY_ENV = "SMARTY_P1_KEY"
USERNAME_ENV = "SMARTY_P1_MQTT_USERNAME"
PASSWORD_ENV = "SMARTY_P1_MQTT_PASSWORD"  # noqa: S105 (a variable name, not a password)
MQTT_PORT = 1883
MQTTS_PORT = 8883


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
        elif args.command == "bridge":
            status = _bridge(parser, args, key)
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
        # python -m custom_components.smarty_p1, or python -m p1 without Home Assistant.
        prog=f"python -m {(__package__ or 'p1').removesuffix('.p1')}",
        description="Read a Smarty P1 port, publish it to MQTT, or simulate a Smarty meter.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    key_help = f"the meter's 32-digit decryption key (default: ${KEY_ENV})"

    read = commands.add_parser("read", help="decode telegrams and print them")
    read.add_argument("--key", help=key_help + "; without it only plaintext telegrams decode")
    _source_arguments(read)
    output = read.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per telegram")
    output.add_argument("--stats", action="store_true", help="only a JSON summary at the end")
    read.add_argument("--count", type=int, metavar="N", help="stop after N telegrams")
    read.add_argument(
        "--follow", action="store_true", help="reconnect after a cut instead of stopping (exit 1)"
    )

    bridge = commands.add_parser(
        "bridge",
        help="publish the meter's frames (and with its key its telegrams) to an MQTT broker",
        description="Publish a meter to an MQTT broker until SIGINT or SIGTERM: <prefix>/raw "
        "(every frame as sent), <prefix>/telegram (JSON, needs the key), <prefix>/status.",
    )
    bridge.add_argument("--key", help=key_help + "; without it only raw frames are published")
    _source_arguments(bridge)
    bridge.add_argument("--mqtt", required=True, metavar="HOST[:PORT]", help="the MQTT broker")
    bridge.add_argument(
        "--prefix",
        help="topic prefix (default: smarty/<serial>, known from the first telegram, so "
        "needed without the key)",
    )
    bridge.add_argument(
        "--per-value", action="store_true", help="also one topic per value: <prefix>/values/<obis>"
    )
    bridge.add_argument("--username", help=f"broker user name (default: ${USERNAME_ENV})")
    bridge.add_argument(
        "--password-file",
        type=Path,
        metavar="PATH",
        help=f"file holding the broker password (default: ${PASSWORD_ENV}); never on the "
        "command line, where every user sees it",
    )
    bridge.add_argument("--client-id", help="MQTT client id (default: smarty-p1-<random>)")
    bridge.add_argument("--tls", action="store_true", help="TLS, trusting the system's CAs")
    bridge.add_argument("--ca-file", type=Path, metavar="PATH", help="TLS, trusting this CA")
    bridge.add_argument("--cert", type=Path, metavar="PATH", help="TLS client certificate")
    bridge.add_argument("--cert-key", type=Path, metavar="PATH", help="its private key")
    bridge.add_argument(
        "--queue",
        type=int,
        metavar="N",
        help="messages waiting for the broker at most (default: 1000); more are dropped and "
        "counted",
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


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--port", metavar="DEV", help="serial device, e.g. /dev/ttyUSB0")
    source.add_argument("--tcp", metavar="HOST:PORT", help="network serial bridge")
    source.add_argument("--file", metavar="PATH", type=Path, help="capture, binary or hex text")
    parser.add_argument(
        "--legacy-crc",
        action="store_true",
        help="accept DSMR 2/3 telegrams without a CRC, or with fewer than 4 digits",
    )


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


def _bridge(parser: argparse.ArgumentParser, args: argparse.Namespace, key: bytes | None) -> int:
    # paho-mqtt is the bridge's own dependency: read and simulate run without it.
    from .bridge import QUEUE, BrokerError, MqttBridge  # noqa: PLC0415

    settings = _broker_settings(parser, args)
    prefix = args.prefix.strip("/") if args.prefix is not None else None
    if prefix is not None and (not prefix or any(char in prefix for char in "+#\0")):
        parser.error("--prefix: a topic without wildcards (+, #)")
    if args.queue is not None and args.queue < 1:
        parser.error("--queue: at least 1")
    try:
        source = _source(args)
        bridge = MqttBridge(
            source,
            key,
            settings,
            prefix=prefix,
            per_value=args.per_value,
            queue=args.queue or QUEUE,
            legacy_crc=args.legacy_crc,
        )
    except (CannotConnect, BrokerError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONNECTION
    return asyncio.run(_until_signalled(bridge))


async def _until_signalled(reader: MeterReader) -> int:
    """Run until done, or until SIGINT or SIGTERM (how systemd stops a service): a clean stop."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, reader.stop)
    return await reader.run()


def _broker_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> BrokerSettings:
    from .bridge import BrokerSettings  # noqa: PLC0415

    host, port = _host_port(args.mqtt)
    tls = args.tls or any(path is not None for path in (args.ca_file, args.cert, args.cert_key))
    if not host or (port is not None and not (port.isdigit() and 0 < int(port) < 65536)):
        parser.error("--mqtt wants HOST or HOST:PORT")
    if args.cert_key is not None and args.cert is None:
        parser.error("--cert-key needs --cert")
    username = args.username or os.environ.get(USERNAME_ENV)
    if args.password_file is not None:
        try:
            password: str | None = args.password_file.read_text().rstrip("\r\n")
        except OSError as err:
            parser.error(f"--password-file: cannot read {args.password_file}: {err.strerror}")
    else:
        password = os.environ.get(PASSWORD_ENV)
    if password is not None and username is None:
        parser.error(f"a password needs a user name (--username or ${USERNAME_ENV})")
    return BrokerSettings(
        host=host,
        port=int(port) if port is not None else MQTTS_PORT if tls else MQTT_PORT,
        username=username,
        password=password,
        client_id=args.client_id or f"smarty-p1-{secrets.token_hex(4)}",
        tls=tls,
        ca_file=args.ca_file,
        cert_file=args.cert,
        key_file=args.cert_key,
    )


def _host_port(text: str) -> tuple[str, str | None]:
    """HOST, HOST:PORT, [IPv6] or [IPv6]:PORT; an IPv6 address without brackets has no port."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, rest.removeprefix(":") if rest else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, port
    return text, None


class _ConsoleReader(MeterReader):
    """Prints what a meter sends, judged as the integration judges it, until told to stop."""

    def __init__(self, args: argparse.Namespace, key: bytes | None, source: ByteSource) -> None:
        super().__init__(source, key, reconnect=args.follow, legacy_crc=args.legacy_crc)
        self.args = args
        self.shown = 0
        # Our own output was closed (`| head`): main() ends quietly.
        self.output_closed = False

    async def _finish(self) -> None:
        if self.output_closed:
            raise BrokenPipeError
        if self.args.stats:
            sys.stdout.write(json.dumps(self.summary()) + "\n")
            sys.stdout.flush()

    def _receive(self, items: list[Telegram | P1Error]) -> None:
        try:
            super()._receive(items)
        except BrokenPipeError:
            self.output_closed = True
            self.stop(0)

    def _accepted(self, telegram: Telegram) -> None:
        out = sys.stdout
        if self.args.json:
            out.write(json.dumps(telegram.as_dict()) + "\n")
        elif not self.args.stats:
            _print_table(telegram, out)
        out.flush()
        self.shown += 1
        if self.shown == self.args.count:
            self.stop(0)


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
