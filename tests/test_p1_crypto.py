"""Keys, AES-GCM, frame counters, and the key staying secret."""

from __future__ import annotations

import pytest

from custom_components.smarty_p1.p1 import (
    DEFAULT_AUTH_KEY,
    REASONS,
    AuthKeyLearningError,
    DecryptionError,
    FrameCipher,
    InvalidKeyFormatError,
    P1Error,
    Telegram,
    TelegramDecoder,
    UnencryptedTelegramError,
    normalize_key,
    parse_key,
)
from custom_components.smarty_p1.p1.frame import EncryptedFrame

from .p1_helpers import (  # the fixture replaces conftest's Home Assistant set-up
    NEXXTLAB,
    auto_enable_custom_integrations,  # noqa: F401
    frame,
    key,
    plaintext,
    telegrams,
    vector,
)

KEY_TEXT = "D491470F47126332B07D1923B3504188"
TITLE = b"SAGgp\x00\x12\x34"


@pytest.mark.parametrize(
    "text",
    [
        KEY_TEXT,
        KEY_TEXT.lower(),
        "D4 91 47 0F 47 12 63 32 B0 7D 19 23 B3 50 41 88",
        "D491-470F-4712-6332-B07D-1923-B350-4188",
        "d4:91:47:0f:47:12:63:32:b0:7d:19:23:b3:50:41:88",
        f"  {KEY_TEXT}\n",
    ],
)
def test_keys_as_users_type_them(text: str) -> None:
    assert parse_key(text) == bytes.fromhex(KEY_TEXT)
    assert normalize_key(text) == KEY_TEXT


@pytest.mark.parametrize(
    "text",
    ["", KEY_TEXT[:-1], KEY_TEXT + "0", KEY_TEXT[:-1] + "G", "0x" + KEY_TEXT[2:], "é" * 32],
)
def test_malformed_keys(text: str) -> None:
    with pytest.raises(InvalidKeyFormatError) as caught:
        parse_key(text)
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == "a key is 32 hexadecimal characters (16 bytes)"


@pytest.mark.parametrize(("key_length", "auth_length"), [(15, 16), (16, 15), (32, 16)])
def test_cipher_wants_16_byte_keys(key_length: int, auth_length: int) -> None:
    with pytest.raises(InvalidKeyFormatError):
        FrameCipher(bytes(key_length), bytes(auth_length))


def test_round_trip_and_tag() -> None:
    cipher = FrameCipher(key(NEXXTLAB))
    wire = cipher.encrypt(plaintext(NEXXTLAB), TITLE, 77)
    assert wire[:2] == b"\xdb\x08"
    assert wire[2:10] == TITLE
    assert int.from_bytes(wire[11:13]) == len(plaintext(NEXXTLAB)) + 17
    assert wire[13] == 0x30
    assert int.from_bytes(wire[14:18]) == 77
    encrypted = EncryptedFrame(TITLE, 77, wire[18:-12], wire[-12:])
    assert cipher.decrypt(encrypted) == plaintext(NEXXTLAB)
    for tampered in (
        EncryptedFrame(TITLE, 78, encrypted.ciphertext, encrypted.tag),
        EncryptedFrame(b"SAGgp\x00\x12\x35", 77, encrypted.ciphertext, encrypted.tag),
        EncryptedFrame(TITLE, 77, encrypted.ciphertext, bytes(12)),
        EncryptedFrame(TITLE, 77, b"\x00" + encrypted.ciphertext[1:], encrypted.tag),
    ):
        with pytest.raises(DecryptionError):
            cipher.decrypt(tampered)
    with pytest.raises(DecryptionError):
        FrameCipher(bytes(16)).decrypt(encrypted)


def test_authentication_key_is_overridable() -> None:
    other = bytes(range(16))
    wire = FrameCipher(key(NEXXTLAB), other).encrypt(plaintext(NEXXTLAB), TITLE, 1)
    # Under the specification's key its tag fails but it decrypts: the learning of test_p1_authkey.
    (failure,) = TelegramDecoder(key(NEXXTLAB)).feed(wire)
    assert isinstance(failure, AuthKeyLearningError)
    telegrams(TelegramDecoder(key(NEXXTLAB), auth_key=other).feed(wire))
    assert bytes.fromhex(vector(NEXXTLAB)["auth_key_hex"]) == DEFAULT_AUTH_KEY


def test_counter_regressions_are_reported() -> None:
    cipher = FrameCipher(key(NEXXTLAB))
    decoder = TelegramDecoder(key(NEXXTLAB))
    counters = [5, 6, 6, 7, 3, 4]
    for counter in counters:
        (telegram,) = telegrams(decoder.feed(cipher.encrypt(plaintext(NEXXTLAB), TITLE, counter)))
        assert telegram.frame_counter == counter
    # The replayed 6, and the 3 after 7 (a new key restarts the meter's counter).
    assert decoder.stats.counter_regressions == 2
    assert decoder.stats.last_frame_counter == 4
    assert decoder.stats.telegrams == len(counters)
    summary = decoder.stats.as_dict()
    assert summary["counter_regressions"] == 2
    assert summary["rejected"] == dict.fromkeys(REASONS, 0)
    assert summary["telegrams"] == len(counters)
    assert summary["bytes"] == decoder.stats.bytes


def test_plaintext_telegrams_are_refused_with_a_key() -> None:
    decoder = TelegramDecoder(key(NEXXTLAB))
    stream = frame(NEXXTLAB) + plaintext("plain_lu_real_2026_meterlogger") + frame(NEXXTLAB)
    first, injected, replayed = decoder.feed(stream)
    assert isinstance(first, Telegram)
    assert isinstance(injected, UnencryptedTelegramError)
    assert injected.reason == "unencrypted"
    assert isinstance(replayed, Telegram)
    assert decoder.stats.last_frame_counter == vector(NEXXTLAB)["parsed_header"]["frame_counter"]
    assert decoder.stats.rejected["unencrypted"] == 1
    assert decoder.stats.telegrams == 2


def test_short_tag_or_title_is_a_decryption_error() -> None:
    cipher = FrameCipher(key(NEXXTLAB))
    wire = cipher.encrypt(plaintext(NEXXTLAB), TITLE, 77)
    for broken in (
        EncryptedFrame(TITLE, 77, wire[18:-12], wire[-12:-1]),
        EncryptedFrame(TITLE, 77, wire[18:-12], b""),
        EncryptedFrame(TITLE, 77, wire[18:-12], wire[-12:] + b"\x00"),
        EncryptedFrame(b"", 77, wire[18:-12], wire[-12:]),
        EncryptedFrame(TITLE[:4], 77, wire[18:-12], wire[-12:]),
        EncryptedFrame(TITLE, -1, wire[18:-12], wire[-12:]),
        EncryptedFrame(TITLE, 1 << 32, wire[18:-12], wire[-12:]),
    ):
        with pytest.raises(DecryptionError):
            cipher.decrypt(broken)
    assert cipher.decrypt(EncryptedFrame(TITLE, 77, wire[18:-12], wire[-12:])) == plaintext(
        NEXXTLAB
    )


def test_key_never_shows() -> None:
    secret = key(NEXXTLAB)
    forms = {secret.hex(), secret.hex().upper(), repr(secret), str(list(secret))}
    cipher = FrameCipher(secret)
    decoder = TelegramDecoder(secret)
    wrong = TelegramDecoder(bytes(16))
    shown: list[object] = [cipher, decoder, decoder.stats]
    shown += decoder.feed(frame(NEXXTLAB) + b"/ABC5\r\n!1234\r\n")
    shown += wrong.feed(frame(NEXXTLAB))
    try:
        parse_key(secret.hex()[:-1])
    except InvalidKeyFormatError as err:
        shown.append(err)
    assert any(isinstance(item, Telegram) for item in shown)
    assert any(isinstance(item, P1Error) for item in shown)
    for item in shown:
        for text in (repr(item), str(item)):
            for form in forms:
                assert form not in text
    assert repr(cipher) == "FrameCipher(<key hidden>)"
    assert "key" not in repr(decoder).lower()
