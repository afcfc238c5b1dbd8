"""Derive the ``derived_*`` test vectors of tests/fixtures.

``scripts/run python scripts/derive_vectors.py`` writes them.

Each is a stream of frames, each frame with what the decoder must make of it (``telegram`` or
the reason of its rejection), fed to a decoder configured with ``key_hex`` and ``auth_key_hex``:

- derived_other_auth_key: a meter authenticating with a random authentication key, telegrams of
  three lengths (block counts): learned from the first two frames, then verified;
- derived_foreign_aad: a meter whose AAD is 0x30 alone (no 16-byte key explains its tags):
  learning fails, CRC-only is declared;
- derived_tampered_crc_fixed: a register changed through the CTR stream with the CRC fixed up by
  linearity, which only the tag catches; and a frame whose tag alone was hit on the line;
- derived_injected_into_encrypted_stream: plaintext telegrams and frames with another security
  byte between a meter's encrypted frames.

Everything follows from fixed seeds, so a second run writes the same files.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from custom_components.smarty_p1.p1 import (  # noqa: E402
    DEFAULT_AUTH_KEY,
    FrameCipher,
    crc16_arc,
)
from custom_components.smarty_p1.p1.authkey import ciphertext_blocks  # noqa: E402
from custom_components.smarty_p1.p1.simulator import MeterSimulator  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"
TITLE = bytes.fromhex("5341476770001234")
ORIGIN = "derived by scripts/derive_vectors.py"


def _telegrams(seed: int, messages: list[str]) -> list[bytes]:
    """Consecutive telegrams of a simulated meter; the long message sets each one's length."""
    sim = MeterSimulator(None, seed=seed)
    telegrams = []
    for message in messages:
        sim.set_message(message)
        telegrams.append(sim.next_frame())
    return telegrams


def _entry(wire: bytes, expect: str, note: str) -> dict[str, Any]:
    return {
        "frame_hex": wire.hex().upper(),
        "blocks": ciphertext_blocks(len(wire) - 30) if wire[0] == 0xDB else None,
        "expect": expect,
        "note": note,
    }


def _vector(name: str, notes: str, key: bytes, frames: list[dict[str, Any]], **extra: Any) -> None:
    data = {
        "id": name,
        "kind": "derived_stream",
        "origin": ORIGIN,
        "notes": notes,
        "key_hex": key.hex().upper(),
        "auth_key_hex": DEFAULT_AUTH_KEY.hex().upper(),
        **extra,
        "frames": frames,
    }
    (FIXTURES / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")


def other_auth_key(rng: random.Random) -> None:
    key, auth_key = rng.randbytes(16), rng.randbytes(16)
    cipher = FrameCipher(key, auth_key)
    # Messages of 0, 24 and 48 characters: three block counts.
    short, middle, long = (
        "",
        "Maintenance 2026-06-22",
        "Coupure programmee le 22/06 de 08:00 a 12:00 h",
    )
    telegrams = _telegrams(11, [short, short, middle, long, short, middle])
    wires = [
        cipher.encrypt(telegram, TITLE, 100 + index) for index, telegram in enumerate(telegrams)
    ]
    frames = [
        _entry(wires[0], "learning", "first frame: the key decrypts it, the tag is not the spec's"),
        _entry(wires[1], "telegram", "same length, independent: confirms the learned key"),
        _entry(wires[2], "telegram", "new length: extends the equations, stays consistent"),
        _entry(wires[3], "telegram", "third length: the tags of every length are determined"),
        _entry(_tampered(key, auth_key, telegrams[4], 104), "tag", "register altered, CRC fixed"),
        _entry(wires[4], "telegram", "the genuine frame of that counter"),
        _entry(wires[5], "telegram", "verified with the learned key"),
    ]
    notes = (
        "A meter that authenticates with another key than the specification's (as a real "
        "Luxembourg Smarty did in 2026). true_auth_key_hex is the key it used; the decoder is "
        "configured with the specification's."
    )
    _vector(
        "derived_other_auth_key",
        notes,
        key,
        frames,
        true_auth_key_hex=auth_key.hex().upper(),
        integrity="authenticated",
    )


def foreign_aad(rng: random.Random) -> None:
    key = rng.randbytes(16)
    cipher = FrameCipher(key)
    short, middle = "", "Maintenance 2026-06-22"
    learning_fails = [
        (short, "learning", "learning starts"),
        (middle, "learning", "another length contradicts it: learning starts again from this one"),
        (short, "learning", "contradicts again"),
        (middle, "telegram", "a handful of frames, no key explains two: CRC-only is declared"),
        (short, "telegram", "accepted on its CRC-16 alone"),
    ]
    one_length_first = [
        (short, "learning", "learning starts"),
        (short, "telegram", "frames of one length all agree: a key is learned for that length"),
        (middle, "tag", "another length contradicts it: rejected, as an altered frame would be"),
        (
            middle,
            "telegram",
            "a second one agrees with the first: no 16-byte key explains the "
            "meter, CRC-only is declared",
        ),
        (short, "telegram", "accepted on its CRC-16 alone"),
    ]
    cases = {
        "derived_foreign_aad": (
            learning_fails,
            "Frames of two lengths in turn: no key explains any two of them.",
        ),
        "derived_foreign_aad_after_confirmation": (
            one_length_first,
            "Two frames of one length first: a key is learned that holds for that length only.",
        ),
    }
    for index, (name, (story, summary)) in enumerate(cases.items()):
        telegrams = _telegrams(12 + index, [message for message, _, _ in story])
        frames = [
            _entry(cipher.encrypt(telegram, TITLE, 200 + position, aad=b"\x30"), outcome, note)
            for position, (telegram, (_, outcome, note)) in enumerate(
                zip(telegrams, story, strict=True)
            )
        ]
        notes_text = (
            "A meter whose AAD is the security byte 0x30 alone (not 0x30 || 16-byte key): its "
            "tags fit no authentication key, so the decoder falls back to CRC-only integrity and "
            "says so. " + summary
        )
        _vector(name, notes_text, key, frames, aad_hex="30", integrity="crc_only")


def _tampered(key: bytes, auth_key: bytes, telegram: bytes, counter: int) -> bytes:
    """The frame of telegram with its energy register's first digit changed through the CTR
    stream, and the CRC digits fixed up by linearity, as an attacker without the key can.
    """
    wire = bytearray(FrameCipher(key, auth_key).encrypt(telegram, TITLE, counter))
    start = 18  # ciphertext offset in a frame with the 0x82 length form
    digit = telegram.index(b"1-0:1.8.0(") + len(b"1-0:1.8.0(")
    bang = telegram.rindex(b"!")
    delta = bytearray(bang + 1)
    delta[digit] = telegram[digit] ^ ord("9")
    # CRC-16 with a zero start is linear: crc(a xor b) = crc(a) xor crc(b) for equal lengths.
    old = int(telegram[bang + 1 : bang + 5], 16)
    new = old ^ crc16_arc(bytes(delta))
    altered = bytearray(telegram)
    altered[digit] = ord("9")
    assert new == crc16_arc(bytes(altered[: bang + 1]))
    for offset, (before, after) in enumerate(
        zip(f"{old:04X}".encode(), f"{new:04X}".encode(), strict=True)
    ):
        wire[start + bang + 1 + offset] ^= before ^ after
    wire[start + digit] ^= delta[digit]
    return bytes(wire)


def tampered(rng: random.Random) -> None:
    key = rng.randbytes(16)
    cipher = FrameCipher(key)
    telegrams = _telegrams(13, ["", "", "", ""])
    wires = [
        cipher.encrypt(telegram, TITLE, 300 + index) for index, telegram in enumerate(telegrams)
    ]
    hit = bytearray(wires[3])
    hit[-3] ^= 0x40
    frames = [
        _entry(
            _tampered(key, DEFAULT_AUTH_KEY, telegrams[0], 300),
            "learning",
            "altered before any frame verified: withheld (it could be another authentication key)",
        ),
        _entry(wires[1], "telegram", "verifies with the specification's key: established"),
        _entry(
            _tampered(key, DEFAULT_AUTH_KEY, telegrams[2], 302),
            "tag",
            "register 1-0:1.8.0 altered, CRC fixed up: only the tag catches it",
        ),
        _entry(bytes(hit), "damaged", "one tag byte hit on the line: content intact"),
        _entry(wires[3], "telegram", "the intact frame"),
    ]
    notes = "CTR malleability: CRC-16 is no protection against a deliberate change."
    _vector("derived_tampered_crc_fixed", notes, key, frames, integrity="authenticated")


def injected(rng: random.Random) -> None:
    key = rng.randbytes(16)
    cipher = FrameCipher(key)
    telegrams = _telegrams(14, ["", "", "", "", ""])
    wires = [
        cipher.encrypt(telegram, TITLE, 400 + index) for index, telegram in enumerate(telegrams)
    ]
    bad_crc = telegrams[2].replace(b"1-0:1.8.0(0", b"1-0:1.8.0(9")
    frames = [
        _entry(wires[0], "telegram", "the meter's frame"),
        _entry(telegrams[1], "unencrypted", "a valid plaintext telegram injected on the line"),
        _entry(wires[1], "telegram", "the meter's next frame"),
        _entry(bad_crc, "crc", "a plaintext telegram with a bad CRC"),
        _entry(_security(wires[2], 0x10), "security", "security byte 0x10: authenticated only"),
        _entry(_security(wires[3], 0x20), "security", "security byte 0x20: encrypted only"),
        _entry(wires[4], "telegram", "the meter's frame"),
    ]
    notes = "With a key set only the meter's encrypted and authenticated frames count."
    _vector("derived_injected_into_encrypted_stream", notes, key, frames, integrity="authenticated")


def _security(wire: bytes, control: int) -> bytes:
    changed = bytearray(wire)
    changed[13] = control
    return bytes(changed)


def main() -> None:
    """Write every derived vector."""
    rng = random.Random(2026)
    other_auth_key(rng)
    foreign_aad(rng)
    tampered(rng)
    injected(rng)


if __name__ == "__main__":
    main()
