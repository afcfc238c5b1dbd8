"""Benchmarks. ``scripts/bench [core|ha]``.

core: microseconds per telegram for decrypt + verify (GCM tag and CRC) + parse of real Smarty
frames (each parsed cold) and of simulated streams, by our protocol core and by dsmr_parser with
its MSN (encrypted Smarty) specification, and the ratio. dsmr_parser is installed into the
environment for this benchmark only, at the version Home Assistant's own dsmr integration pins.
Then where our time goes (CRC, decryption, parsing), and throughput on hostile input, which must
stay flat from 16 KiB to 1 MiB (linear time).

ha: Home Assistant (the test harness's) with smarty_p1, then with core's dsmr integration set
up for the encrypted Smarty (MSn), on the same simulated telegrams over loopback TCP: event-loop
CPU per telegram, read callbacks, state writes, recorder rows per hour, and the ratios (see
scripts/bench_ha.py).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from itertools import cycle
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from custom_components.smarty_p1.p1 import Telegram, TelegramDecoder, crc16_arc  # noqa: E402
from custom_components.smarty_p1.p1 import telegram as telegram_module  # noqa: E402
from custom_components.smarty_p1.p1.crc import crc16_python  # noqa: E402
from custom_components.smarty_p1.p1.crypto import DEFAULT_AUTH_KEY, FrameCipher  # noqa: E402
from custom_components.smarty_p1.p1.frame import EncryptedFrame  # noqa: E402
from custom_components.smarty_p1.p1.simulator import MeterSimulator  # noqa: E402
from custom_components.smarty_p1.p1.telegram import CosemObject, TelegramParser  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"
SMARTY_FRAMES = (
    "enc_lu_nexxtlab_go_smarty_reader",
    "enc_synthetic_lu2026_dsmr_parser_msn_recipe",
    "enc_synthetic_spec_appendix_4mbus",
)
# Each figure is the best of many short rounds, ours and theirs taking turns, so that both sides
# are measured under the same load and a busy moment of the machine does not count.
ROUNDS = 25
ROUND_SECONDS = 0.04
# Consecutive telegrams of the simulated household, fed in turn as a meter sends them.
STREAM_KEY = bytes.fromhex("5A3C9E17B2D4486F8A01C6E3D95B7F20")
STREAM_TELEGRAMS = 360
# Sizes of the hostile inputs, each handled in one piece.
HOSTILE_SIZES = (16 * 1024, 256 * 1024, 1024 * 1024)
HOSTILE_ROUNDS = 3
# How much faster than dsmr_parser the core should be on the real frames, each cold.
TARGET = 15


def _dsmr_parser() -> Any:
    """dsmr_parser's parsers module, installed at Home Assistant's pinned version if missing."""
    try:
        return importlib.import_module("dsmr_parser.parsers")
    except ImportError:
        # Read, not imported: the dsmr integration itself imports dsmr_parser.
        spec = importlib.util.find_spec("homeassistant")
        assert spec is not None
        assert spec.submodule_search_locations is not None
        package = Path(next(iter(spec.submodule_search_locations)))
        manifest = package / "components" / "dsmr" / "manifest.json"
        requirements = json.loads(manifest.read_text())
        pins = [req for req in requirements["requirements"] if req.startswith("dsmr")]
        print(f"installing {' '.join(pins)} for the benchmark", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *pins], check=True)
        return importlib.import_module("dsmr_parser.parsers")


def _calls_per_round(work: Callable[[], object]) -> int:
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            work()
        if time.perf_counter() - start > ROUND_SECONDS:
            return calls
        calls *= 2


def _per_call(*works: Callable[[], object]) -> list[float]:
    """Seconds per call of each work, best of ROUNDS rounds taken in turns."""
    calls = [_calls_per_round(work) for work in works]
    best = [float("inf")] * len(works)
    for _ in range(ROUNDS):
        for index, work in enumerate(works):
            start = time.perf_counter()
            for _ in range(calls[index]):
                work()
            best[index] = min(best[index], (time.perf_counter() - start) / calls[index])
    return best


def _cold(decoder: TelegramDecoder, frame: bytes) -> object:
    """The whole job with no line remembered from an earlier telegram (a meter's first)."""
    telegram_module._shared.clear()
    # A decoder that holds a parser of its own (see TelegramParser) forgets too.
    parser = getattr(decoder, "parser", None)
    if isinstance(parser, TelegramParser):
        parser.clear()
    return decoder.feed(frame)


def _stream_works(
    theirs: Any, sim: MeterSimulator
) -> tuple[Callable[[], object], Callable[[], object]]:
    """Each side handles the next telegram of a simulated stream at each call."""
    frames = [sim.next_frame() for _ in range(STREAM_TELEGRAMS)]
    decoder = TelegramDecoder(STREAM_KEY)
    key_hex, auth_hex = STREAM_KEY.hex(), DEFAULT_AUTH_KEY.hex()
    ours_frames, their_frames = cycle(frames), cycle([frame.hex() for frame in frames])

    def ours() -> object:
        return decoder.feed(next(ours_frames))

    def other() -> object:
        return theirs.parse(next(their_frames), key_hex, auth_hex)

    return ours, other


# The simulated meters: (row name, meter).
STREAMS: tuple[tuple[str, Callable[[], MeterSimulator]], ...] = (
    ("simulated stream, telegram after telegram", lambda: MeterSimulator(STREAM_KEY, seed=2026)),
    (
        "3-phase, PV export, gas + water, stream",
        lambda: MeterSimulator(STREAM_KEY, seed=2026, pv=True, mbus=("gas", "water")),
    ),
)


def _breakdown(frame: bytes, key: bytes) -> dict[str, float]:
    """Seconds per call of each stage of one frame: CRC (and the pure-Python CRC that the
    protocol core falls back to without anycrc), decryption, cold parse, all of it."""
    cipher = FrameCipher(key)
    # DB 08 <system title> 82 <length> 30 <frame counter> <ciphertext> <tag>
    encrypted = EncryptedFrame(
        system_title=frame[2:10],
        frame_counter=int.from_bytes(frame[14:18]),
        ciphertext=frame[18:-12],
        tag=frame[-12:],
    )
    plaintext = cipher.decrypt(encrypted)
    body = memoryview(plaintext)[: plaintext.rindex(b"!") + 1]
    parser = TelegramParser()

    def parse() -> object:
        parser.clear()
        return parser.parse(plaintext)

    decoder = TelegramDecoder(key)
    crc, pure_crc, decrypt, parsing, whole = _per_call(
        partial(crc16_arc, body),
        partial(crc16_python, body),
        partial(cipher.decrypt, encrypted),
        parse,
        partial(_cold, decoder, frame),
    )
    return {"crc": crc, "pure": pure_crc, "decrypt": decrypt, "parse": parsing, "whole": whole}


def _print_breakdown() -> None:
    print(
        f"\n{'where the time goes (us)':<46} {'CRC':>7} {'decrypt':>8} {'parse':>7} {'rest':>6}"
        f" {'CRC in pure Python':>19}"
    )
    for name in SMARTY_FRAMES:
        vector = json.loads((FIXTURES / f"{name}.json").read_text())
        stages = _breakdown(bytes.fromhex(vector["frame_hex"]), bytes.fromhex(vector["key_hex"]))
        rest = stages["whole"] - stages["crc"] - stages["decrypt"] - stages["parse"]
        print(
            f"{name:<46} {stages['crc'] * 1e6:7.1f} {stages['decrypt'] * 1e6:8.1f} "
            f"{stages['parse'] * 1e6:7.1f} {rest * 1e6:6.1f} {stages['pure'] * 1e6:19.1f}"
        )


def _telegram_of(size: int, first: str, repeated: str) -> bytes:
    """A plaintext telegram of about size bytes: a header, first, then repeated lines."""
    head = f"/ISk5\\2ME382-1004\r\n\r\n{first}\r\n"
    count = max(0, (size - len(head) - 3) // (len(repeated) + 2))
    return (head + f"{repeated}\r\n" * count + "!\r\n").encode()


def _one_line_of(size: int, code: str, value: str) -> bytes:
    """A plaintext telegram of about size bytes whose one line holds value again and again."""
    head = f"/ISk5\\2ME382-1004\r\n\r\n{code}"
    count = max(1, (size - len(head) - 5) // (len(value) + 2))
    return (head + f"({value})" * count + "\r\n!\r\n").encode()


# Parser-hostile inputs by size: DSMR 2/3 continuation lines under one reading (quadratic once),
# and one line of ever more values.
HOSTILE_PARSER_INPUTS: tuple[tuple[str, Callable[[int], bytes]], ...] = (
    (
        "continuation lines (1) under 0-1:24.3.0",
        partial(
            _telegram_of,
            first="0-1:24.3.0(121030140000)(00)(60)(1)(0-1:24.2.1)(m3)",
            repeated="(1)",
        ),
    ),
    ("one line of values (12.5*kWh)", partial(_one_line_of, code="9-9:9.9.9", value="12.5*kWh")),
)


def _throughput(work: Callable[[], object], size: int) -> float:
    """Bytes per second of work on size bytes, best of a few rounds."""
    best = float("inf")
    for _ in range(HOSTILE_ROUNDS):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return size / best


def hostile_parser_rows() -> list[tuple[str, list[float]]]:
    """Parsing each hostile input whole: bytes per second at each of HOSTILE_SIZES."""
    rows = []
    for name, build in HOSTILE_PARSER_INPUTS:
        speeds = []
        for size in HOSTILE_SIZES:
            telegram = build(size)
            speeds.append(_throughput(partial(TelegramParser().parse, telegram), len(telegram)))
        rows.append((f"parse: {name}", speeds))
    return rows


class _Mutable:
    """A line's object as a plain slots class: cheap, but anyone holding it can change it."""

    __slots__ = ("obis", "raw", "timestamp", "unit", "value")

    def __init__(
        self, obis: str, raw: tuple[str, ...], value: object, unit: str | None, timestamp: None
    ) -> None:
        self.obis, self.raw, self.value, self.unit, self.timestamp = (
            obis,
            raw,
            value,
            unit,
            timestamp,
        )


@dataclass(slots=True)
class _Dataclass:
    obis: str
    raw: tuple[str, ...]
    value: object
    unit: str | None
    timestamp: None


@dataclass(frozen=True, slots=True)
class _Frozen:
    obis: str
    raw: tuple[str, ...]
    value: object
    unit: str | None
    timestamp: None


def _print_layouts() -> None:
    """What building one line's object costs in each layout (the parser builds dozens)."""
    value = Decimal("25.653")
    new = tuple.__new__
    builds: list[tuple[str, Callable[[], object]]] = [
        ("slots class (mutable)", lambda: _Mutable("1-0:1.8.0", ("x",), value, "kWh", None)),
        ("dataclass, slots (mutable)", lambda: _Dataclass("1-0:1.8.0", ("x",), value, "kWh", None)),
        ("dataclass, frozen", lambda: _Frozen("1-0:1.8.0", ("x",), value, "kWh", None)),
        ("NamedTuple()", lambda: CosemObject("1-0:1.8.0", ("x",), value, "kWh", None)),
        (
            "NamedTuple by tuple.__new__ (used)",
            lambda: new(CosemObject, ("1-0:1.8.0", ("x",), value, "kWh", None)),
        ),
    ]
    print(f"\n{'one object built, ns':<46} {'ns':>9}")
    for (name, _), seconds in zip(builds, _per_call(*(build for _, build in builds)), strict=True):
        print(f"{name:<46} {seconds * 1e9:9.0f}")


# Each builder gives (row name, bytes per second at each of HOSTILE_SIZES).
HOSTILE_ROWS: list[Callable[[], list[tuple[str, list[float]]]]] = [hostile_parser_rows]


def _print_hostile() -> None:
    sizes = "".join(f"{f'{size // 1024} KiB':>11}" for size in HOSTILE_SIZES)
    print(f"\n{'hostile input, MB/s in one piece':<46}{sizes}")
    for build in HOSTILE_ROWS:
        for name, speeds in build():
            print(f"{name:<46}" + "".join(f"{speed / 1e6:11.2f}" for speed in speeds))


def bench_core() -> int:
    """Our core against dsmr_parser on the real Smarty frames and on a simulated stream."""
    parsers = _dsmr_parser()
    specifications = importlib.import_module("dsmr_parser.telegram_specifications")
    theirs = parsers.TelegramParser(specifications.MSN)
    ours_total = theirs_total = 0.0
    print(f"{'frame':<46} {'ours us':>9} {'dsmr_parser us':>15} {'ratio':>7}")
    for name in SMARTY_FRAMES:
        vector = json.loads((FIXTURES / f"{name}.json").read_text())
        frame = bytes.fromhex(vector["frame_hex"])
        key = bytes.fromhex(vector["key_hex"])
        decoder = TelegramDecoder(key)
        # Checked once before timing, so both sides are measured doing the whole job.
        (telegram,) = decoder.feed(frame)
        assert isinstance(telegram, Telegram)
        parsed = theirs.parse(vector["frame_hex"], vector["key_hex"], vector["auth_key_hex"])
        assert parsed is not None
        # The same frame again and again would let every line be reused: each is parsed cold.
        ours, other = _per_call(
            partial(_cold, decoder, frame),
            partial(theirs.parse, vector["frame_hex"], vector["key_hex"], vector["auth_key_hex"]),
        )
        ours_total += ours
        theirs_total += other
        print(f"{name:<46} {ours * 1e6:9.1f} {other * 1e6:15.1f} {other / ours:6.1f}x")
    count = len(SMARTY_FRAMES)
    ratio = theirs_total / ours_total
    print(
        f"{'mean (each frame cold)':<46} {ours_total / count * 1e6:9.1f} "
        f"{theirs_total / count * 1e6:15.1f} {ratio:6.1f}x"
    )
    for name, meter in STREAMS:
        ours, other = _per_call(*_stream_works(theirs, meter()))
        print(f"{name:<46} {ours * 1e6:9.1f} {other * 1e6:15.1f} {other / ours:6.1f}x")
    verdict = "met" if ratio >= TARGET else "NOT met"
    print(f"ratio (cold): {ratio:.1f}x faster than dsmr_parser (target >= {TARGET}x: {verdict})")
    _print_breakdown()
    _print_layouts()
    _print_hostile()
    # Timing on a shared machine is noisy: the verdict is printed, never an exit status.
    return 0


def bench_ha() -> int:
    """Both integrations in Home Assistant on the same meter stream (scripts/bench_ha.py)."""
    _dsmr_parser()
    command = [sys.executable, "-m", "pytest", str(REPO / "scripts" / "bench_ha.py")]
    # -s: the table is printed by the module; no coverage, no cache: a benchmark, not a test.
    options = ["-s", "-q", "-p", "no:cacheprovider", "--no-cov", "-W", "ignore"]
    return subprocess.run([*command, *options], cwd=REPO, check=False, timeout=180).returncode


def bench_framer() -> int:
    """The framer on hostile input, tag verification, learning a key (scripts/bench_framer.py)."""
    command = [sys.executable, str(REPO / "scripts" / "bench_framer.py")]
    return subprocess.run(command, cwd=REPO, check=False, timeout=600).returncode


BENCHMARKS: dict[str, Callable[[], int]] = {
    "core": bench_core,
    "framer": bench_framer,
    "ha": bench_ha,
}


def main() -> int:
    """Run the benchmark named on the command line."""
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("benchmark", nargs="?", default="core", choices=sorted(BENCHMARKS))
    return BENCHMARKS[parser.parse_args().benchmark]()


if __name__ == "__main__":
    sys.exit(main())
