"""Every vector in tests/fixtures, through the whole receive path."""

from __future__ import annotations

import pytest

from custom_components.smarty_p1.p1 import (
    AuthKeyLearningError,
    CRCError,
    DamagedFrameError,
    DecryptionError,
    EncryptedFrame,
    FrameCipher,
    Integrity,
    MalformedFrameError,
    NotATelegramError,
    P1Error,
    Telegram,
    TelegramDecoder,
    WrongKeyError,
    check_telegram,
    crc16_arc,
    parse_telegram,
)

from .p1_helpers import (  # the fixture replaces conftest's Home Assistant set-up
    NEXXTLAB,
    auto_enable_custom_integrations,  # noqa: F401
    expected_objects,
    frame,
    key,
    plaintext,
    raw_objects,
    telegrams,
    vector,
    vector_names,
)

ENCRYPTED = vector_names("encrypted_frame")
PLAINTEXT = vector_names("plaintext_telegram")
DERIVED = vector_names("derived_stream")
NEGATIVE = [case["name"] for case in vector("enc_negative_cases")["cases"]]
# The negative cases that yield one rejection, by what it is now told to be.
FAILING: dict[str, type[P1Error]] = {
    "wrong_key": WrongKeyError,
    # A ciphertext byte flipped: the telegram decrypts with a bad CRC.
    "flipped_ciphertext_byte_50": DamagedFrameError,
    # The content is intact and 11 of the 12 tag bytes are right.
    "flipped_tag_last_byte": DamagedFrameError,
    # The IV changed, so nothing decrypts: on a first frame this is indistinguishable from a
    # wrong key (after a verified frame it is told apart: test_damaged_counter_after_a_frame).
    "flipped_frame_counter": WrongKeyError,
    # The key decrypts it but the tag fails with the configured authentication key: learning.
    "wrong_auth_key": AuthKeyLearningError,
}


def test_every_vector_is_covered() -> None:
    assert set(vector_names()) == {*ENCRYPTED, *PLAINTEXT, *DERIVED, "enc_negative_cases"}
    assert len(ENCRYPTED) >= 6
    assert len(PLAINTEXT) >= 13
    assert len(DERIVED) >= 4


@pytest.mark.parametrize("name", ENCRYPTED)
def test_encrypted_frame(name: str) -> None:
    data = vector(name)
    expected = data["expected"]
    header = data["parsed_header"]
    decoder = TelegramDecoder(key(name), auth_key=bytes.fromhex(data["auth_key_hex"]))
    (result,) = decoder.feed(frame(name))
    if not expected["gcm_tag_verifies"]:
        # Decrypted as GCM's counter mode does, it is a telegram with a valid CRC: the key is
        # right, the meter authenticates with another key. One frame cannot confirm a learned
        # key, so nothing is published (test_p1_authkey shows what it establishes).
        assert isinstance(result, AuthKeyLearningError)
        assert decoder.integrity is Integrity.LEARNING
        assert decoder.stats.rejected["learning"] == 1
        assert decoder.stats.telegrams == 0
        return
    if not expected["crc_ok"]:
        assert isinstance(result, CRCError)
        assert result.given == int(expected["crc_in_telegram"], 16)
        assert result.calculated == int(expected["crc_calculated"], 16)
        assert decoder.stats.rejected["crc"] == 1
        assert decoder.stats.telegrams == 0
        return
    assert isinstance(result, Telegram)
    assert raw_objects(result) == expected_objects(name)
    assert result.raw == plaintext(name)
    assert result.crc == int(expected["crc_calculated"], 16)
    assert result.system_title == bytes.fromhex(header["system_title_hex"])
    assert result.frame_counter == header["frame_counter"]
    assert result.encrypted
    assert result.header == expected["header_line"][1:]
    assert decoder.stats.last_frame_counter == header["frame_counter"]


@pytest.mark.parametrize("name", ENCRYPTED)
def test_encrypt_rebuilds_the_wire_frame(name: str) -> None:
    data = vector(name)
    header = data["parsed_header"]
    if not data["expected"]["gcm_tag_verifies"]:
        pytest.skip("the authentication key of this frame is unknown")
    cipher = FrameCipher(key(name), bytes.fromhex(data["auth_key_hex"]))
    rebuilt = cipher.encrypt(
        plaintext(name), bytes.fromhex(header["system_title_hex"]), header["frame_counter"]
    )
    assert rebuilt == frame(name)


@pytest.mark.parametrize("name", PLAINTEXT)
def test_plaintext_telegram(name: str) -> None:
    expected = vector(name)["expected"]
    unpadded = len(expected["crc_in_telegram"]) < 4
    decoder = TelegramDecoder(legacy_crc=unpadded)
    (result,) = decoder.feed(plaintext(name))
    calculated = int(expected["crc_calculated"], 16)
    assert crc16_arc(plaintext(name)[: plaintext(name).rindex(b"!") + 1]) == calculated
    if not expected["crc_ok"]:
        assert isinstance(result, CRCError)
        assert (result.given, result.calculated) == (
            int(expected["crc_in_telegram"], 16),
            calculated,
        )
        return
    assert isinstance(result, Telegram)
    assert not result.encrypted
    assert result.crc == calculated
    assert check_telegram(plaintext(name), legacy_crc=unpadded) == calculated
    assert raw_objects(result) == expected_objects(name)
    # Parsing on its own gives the same objects as the whole receive path.
    assert parse_telegram(plaintext(name)).objects == result.objects


def test_unpadded_crc_is_not_dsmr_5() -> None:
    """A Dutch heat meter writes its CRC with three digits (B9F): DSMR 5 always sends four, so
    it is refused unless asked for, like a DSMR 2/3 telegram without CRC.
    """
    name = "plain_nl_unpadded_crc_dsmr_parser"
    (error,) = TelegramDecoder().feed(plaintext(name))
    assert isinstance(error, MalformedFrameError)
    with pytest.raises(NotATelegramError):
        check_telegram(plaintext(name))


def _negative(name: str) -> dict[str, str]:
    (case,) = (case for case in vector("enc_negative_cases")["cases"] if case["name"] == name)
    return dict(case)


def _decoder(case: dict[str, str]) -> TelegramDecoder:
    data = vector("enc_negative_cases")
    return TelegramDecoder(
        bytes.fromhex(case.get("key_hex", data["key_hex"])),
        auth_key=bytes.fromhex(case.get("auth_key_hex", "00112233445566778899AABBCCDDEEFF")),
    )


@pytest.mark.parametrize("name", NEGATIVE)
def test_negative_case(name: str) -> None:
    case = _negative(name)
    decoder = _decoder(case)
    wire = bytes.fromhex(case["frame_hex"])
    results = decoder.feed(wire)
    if name in FAILING:
        (error,) = results
        assert type(error) is FAILING[name]
        assert decoder.stats.rejected[error.reason] == 1
        assert decoder.stats.telegrams == 0
        if name == "wrong_key":
            assert str(error) == "decryption failed: wrong key?"
        if name == "wrong_auth_key":
            assert decoder.integrity is Integrity.LEARNING
    elif name == "truncated_by_1":
        assert results == []
        assert decoder.pending == len(wire)
        # The byte that was missing completes the frame.
        (telegram,) = telegrams(decoder.feed(frame(NEXXTLAB)[-1:]))
        assert raw_objects(telegram) == expected_objects(NEXXTLAB)
        assert decoder.pending == 0
    elif name == "leading_garbage_then_frame":
        (telegram,) = telegrams(results)
        assert raw_objects(telegram) == expected_objects(NEXXTLAB)
        assert decoder.noise_bytes == len(wire) - len(frame(NEXXTLAB))
    elif name == "two_frames_back_to_back":
        first, second = results
        assert isinstance(first, Telegram)
        assert raw_objects(first) == expected_objects(NEXXTLAB)
        assert isinstance(second, CRCError)
        assert decoder.stats.telegrams == 1
        assert decoder.stats.rejected["crc"] == 1
    else:  # pragma: no cover - a new case needs its expectation written here
        pytest.fail(f"no expectation for negative case {name}: {case['expect']}")
    assert decoder.pending == 0


def test_damaged_counter_after_a_frame() -> None:
    """Once a frame has verified, a frame whose counter was hit still decrypts under the IV the
    meter would have used next: damage, not a wrong key.
    """
    case = _negative("flipped_frame_counter")
    wire = frame(NEXXTLAB)
    counter = int.from_bytes(wire[14:18])
    earlier = FrameCipher(key(NEXXTLAB)).encrypt(plaintext(NEXXTLAB), wire[2:10], counter - 1)
    decoder = _decoder(case)
    verified, error = decoder.feed(earlier + bytes.fromhex(case["frame_hex"]))
    assert isinstance(verified, Telegram)
    assert isinstance(error, DamagedFrameError)


@pytest.mark.parametrize("name", NEGATIVE)
def test_negative_case_byte_by_byte(name: str) -> None:
    """The verdicts do not depend on how the stream is split."""
    case = _negative(name)
    whole = _decoder(case).feed(bytes.fromhex(case["frame_hex"]))
    decoder = _decoder(case)
    split = [
        item for byte in bytes.fromhex(case["frame_hex"]) for item in decoder.feed(bytes([byte]))
    ]
    assert [type(item) for item in split] == [type(item) for item in whole]
    assert [item.objects for item in split if isinstance(item, Telegram)] == [
        item.objects for item in whole if isinstance(item, Telegram)
    ]


def _wires(name: str) -> list[bytes]:
    return [bytes.fromhex(entry["frame_hex"]) for entry in vector(name)["frames"]]


def _outcomes(results: list[Telegram | P1Error]) -> list[str]:
    return ["telegram" if isinstance(item, Telegram) else item.reason for item in results]


@pytest.mark.parametrize("split", ["frames", "one_chunk", "bytes"])
@pytest.mark.parametrize("name", DERIVED)
def test_derived_stream(name: str, split: str) -> None:
    """Every derived frame gets the verdict its vector gives it, however the stream is cut."""
    data = vector(name)
    wires = _wires(name)
    decoder = TelegramDecoder(
        bytes.fromhex(data["key_hex"]), auth_key=bytes.fromhex(data["auth_key_hex"])
    )
    if split == "frames":
        pieces = wires
    elif split == "one_chunk":
        pieces = [b"".join(wires)]
    else:
        pieces = [bytes([byte]) for byte in b"".join(wires)]
    results = [item for piece in pieces for item in decoder.feed(piece)]
    assert _outcomes(results) == [entry["expect"] for entry in data["frames"]]
    assert decoder.integrity == data["integrity"]
    assert decoder.pending == 0
    assert decoder.noise_bytes == 0
    # No value the meter did not send: each telegram is what its frame holds.
    cipher = FrameCipher(bytes.fromhex(data["key_hex"]))
    for item, wire in zip(results, wires, strict=True):
        if isinstance(item, Telegram):
            assert item.raw == cipher.keystream(wire[2:10] + wire[14:18], wire[18:-12])


def test_learned_key_of_the_derived_meter() -> None:
    """The key learned from the derived meter verifies all its genuine frames with full GCM, of
    every length, though it need not be the meter's key bit for bit.
    """
    name = "derived_other_auth_key"
    data = vector(name)
    decoder = TelegramDecoder(bytes.fromhex(data["key_hex"]))
    for wire in _wires(name):
        decoder.feed(wire)
    learned = decoder.learned_key
    assert learned is not None
    assert set(learned.block_counts) <= {entry["blocks"] for entry in data["frames"]}
    genuine = FrameCipher(bytes.fromhex(data["key_hex"]), learned.key)
    for entry, wire in zip(data["frames"], _wires(name), strict=True):
        frame_fields = EncryptedFrame(
            wire[2:10], int.from_bytes(wire[14:18]), wire[18:-12], wire[-12:]
        )
        if entry["expect"] in ("telegram", "learning"):
            assert genuine.decrypt(frame_fields).startswith(b"/Lux5")
        else:
            with pytest.raises(DecryptionError):
                genuine.decrypt(frame_fields)
