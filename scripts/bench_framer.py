"""``scripts/bench framer``: the receive path's own costs, apart from parsing.

- framer: bytes per second of hostile input fed in one chunk of 16 KiB, 256 KiB and 1 MiB (a
  linear framer shows the same rate at every size), and of a simulated meter stream;
- tag: microseconds per frame to verify a GCM tag, ours and the alternatives measured;
- learning: milliseconds per frame of learning an authentication key.

Every figure is the best of several rounds: the machine may be shared, and a busy moment must
not count.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from custom_components.smarty_p1.p1 import (
    DEFAULT_AUTH_KEY,
    FrameAuthenticator,
    FrameCipher,
    TelegramDecoder,
)
from custom_components.smarty_p1.p1.frame import EncryptedFrame
from custom_components.smarty_p1.p1.simulator import MeterSimulator

KEY = bytes.fromhex("5A3C9E17B2D4486F8A01C6E3D95B7F20")
TITLE = bytes.fromhex("5341476770001234")
# A header claiming 16 KiB, repeated: every 14 bytes a frame start.
FAKE_HEADER = bytes.fromhex("DB085341476770001234823FE030")
SIZES = (16 * 1024, 256 * 1024, 1024 * 1024)


def _best(work: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def _inputs(size: int) -> dict[str, bytes]:
    repeated = b"/ABC5" * (size // 5 + 1)
    return {
        "/ABC5 repeated, no end": repeated[:size],
        "/ABC5 repeated, !0000": repeated[: size - 7] + b"!0000\r\n",
        "bogus 14-byte header repeated": (FAKE_HEADER * (size // 14 + 1))[:size],
        "random bytes": random.Random(size).randbytes(size),
    }


def framer() -> None:
    """Hostile input in one chunk, then the simulated meter as it sends its frames."""
    print(
        f"{'input (one chunk, with a key)':<32}"
        + "".join(f"{size // 1024:>9} KiB" for size in SIZES)
    )
    rows: dict[str, list[float]] = {}
    for size in SIZES:
        rounds = 5 if size < SIZES[-1] else 3
        for name, data in _inputs(size).items():
            seconds = _best(lambda data=data: TelegramDecoder(KEY).feed(data), rounds)
            rows.setdefault(name, []).append(size / seconds / 1e6)
    for name, rates in rows.items():
        print(f"{name:<32}" + "".join(f"{rate:>8.2f} MB/s" for rate in rates))
    sim = MeterSimulator(KEY, seed=2026)
    frames = [sim.next_frame() for _ in range(360)]

    def stream() -> None:
        decoder = TelegramDecoder(KEY)
        for wire in frames:
            decoder.feed(wire)

    seconds = _best(stream, 7)
    total = sum(map(len, frames))
    print(
        f"{'simulated meter, frame by frame':<32}{total / seconds / 1e6:>8.2f} MB/s"
        f"  ({seconds / len(frames) * 1e6:.1f} us per frame, parsing included)"
    )


def _per_call(work: Callable[[], object], calls: int = 2000) -> float:
    return _best(lambda: [work() for _ in range(calls)], 9) / calls


def tag() -> None:
    """Verifying one real-sized frame's tag, three ways."""
    sim = MeterSimulator(None, seed=1)
    telegram = sim.next_frame()
    wire = FrameCipher(KEY).encrypt(telegram, TITLE, 7)
    frame = EncryptedFrame(wire[2:10], 7, wire[18:-12], wire[-12:])
    iv = TITLE + (7).to_bytes(4)
    aes = algorithms.AES(KEY)
    aad = b"\x30" + DEFAULT_AUTH_KEY

    def gcm_context() -> bytes:
        decryptor = Cipher(aes, modes.GCM(iv, frame.tag, min_tag_length=12)).decryptor()
        decryptor.authenticate_additional_data(aad)
        return decryptor.update(frame.ciphertext) + decryptor.finalize()

    def ctr_context() -> bytes:
        decryptor = Cipher(aes, modes.CTR(iv + b"\x00\x00\x00\x02")).decryptor()
        return decryptor.update(frame.ciphertext) + decryptor.finalize()

    cipher = FrameCipher(KEY)
    authenticator = FrameAuthenticator(KEY)
    assert gcm_context() == ctr_context() == cipher.decrypt(frame) == telegram
    print(f"tag of a {len(wire)}-byte frame")
    for name, work in (
        ("a new GCM context per frame (before)", gcm_context),
        ("a new CTR context, no tag check (dsmr_parser)", ctr_context),
        ("AESGCM keystream + seal, 12-byte compare (now)", lambda: cipher.decrypt(frame)),
        ("FrameAuthenticator.open (tag, CRC, no parsing)", lambda: authenticator.open(frame)),
    ):
        print(f"  {name:<52}{_per_call(work) * 1e6:>7.2f} us")


def learning() -> None:
    """Milliseconds per frame of the learning path (rare: only while a key is learned)."""
    auth_key = random.Random(3).randbytes(16)
    cipher = FrameCipher(KEY, auth_key)
    sim = MeterSimulator(None, seed=3)
    telegrams = []
    for message in ("", "", "Maintenance 2026-06-22"):
        sim.set_message(message)
        telegrams.append(sim.next_frame())
    frames = [
        EncryptedFrame(wire[2:10], 10 + index, wire[18:-12], wire[-12:])
        for index, telegram in enumerate(telegrams)
        for wire in (cipher.encrypt(telegram, TITLE, 10 + index),)
    ]
    stages: dict[str, list[float]] = {"first frame": [], "confirming frame": [], "new length": []}
    learned = None
    for _ in range(9):
        authenticator = FrameAuthenticator(KEY)
        for stage, frame in zip(stages, frames, strict=True):
            start = time.perf_counter()
            authenticator.open(frame)
            stages[stage].append(time.perf_counter() - start)
        learned = authenticator.learned_key
    assert learned is not None
    restore = _best(lambda: FrameAuthenticator(KEY, learned), 9)
    print("learning an authentication key (ms per frame)")
    for stage, seconds in stages.items():
        print(f"  {stage:<52}{min(seconds) * 1e3:>7.2f} ms")
    print(f"  {'restoring a learned key (construction)':<52}{restore * 1e3:>7.2f} ms")


def main() -> int:
    """Print every table."""
    framer()
    tag()
    learning()
    print("(best of several rounds; the machine may be shared with other work)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
