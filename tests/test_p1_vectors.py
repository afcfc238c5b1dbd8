"""Every vector in tests/fixtures, through the whole receive path."""

from __future__ import annotations

import pytest

from custom_components.smarty_p1.p1 import (
    CRCError,
    DecryptionError,
    FrameCipher,
    Telegram,
    TelegramDecoder,
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
NEGATIVE = [case["name"] for case in vector("enc_negative_cases")["cases"]]


def test_every_vector_is_covered() -> None:
    assert set(vector_names()) == {*ENCRYPTED, *PLAINTEXT, "enc_negative_cases"}
    assert len(ENCRYPTED) >= 6
    assert len(PLAINTEXT) >= 13


@pytest.mark.parametrize("name", ENCRYPTED)
def test_encrypted_frame(name: str) -> None:
    data = vector(name)
    expected = data["expected"]
    header = data["parsed_header"]
    decoder = TelegramDecoder(key(name), auth_key=bytes.fromhex(data["auth_key_hex"]))
    (result,) = decoder.feed(frame(name))
    if not expected["gcm_tag_verifies"]:
        assert isinstance(result, DecryptionError)
        assert decoder.stats.rejected["tag"] == 1
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
    decoder = TelegramDecoder()
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
    assert raw_objects(result) == expected_objects(name)
    # Parsing on its own gives the same objects as the whole receive path.
    assert parse_telegram(plaintext(name)).objects == result.objects


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
    if "GCM tag failure" in case["expect"]:
        assert len(results) == 1
        assert isinstance(results[0], DecryptionError)
        assert str(results[0]) == "decryption failed: wrong key?"
        assert decoder.stats.telegrams == 0
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
