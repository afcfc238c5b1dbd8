"""Learning a meter's authentication key: GF(2^128), the linear system, and the decoder using it."""

from __future__ import annotations

import random
from functools import cache

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custom_components.smarty_p1.p1 import (
    DEFAULT_AUTH_KEY,
    AuthKeyLearningError,
    FrameAuthenticator,
    FrameCipher,
    Integrity,
    LearnedAuthKey,
    MalformedFrameError,
    P1Error,
    TamperedFrameError,
    Telegram,
    TelegramDecoder,
)
from custom_components.smarty_p1.p1.authkey import (
    TAG_BITS,
    AuthKeySystem,
    ciphertext_blocks,
    gf_multiply,
    gf_power,
    gf_times_x,
)
from custom_components.smarty_p1.p1.frame import EncryptedFrame, Frame
from custom_components.smarty_p1.p1.simulator import MeterSimulator

from .p1_helpers import (  # the fixture replaces conftest's Home Assistant set-up
    NEXXTLAB,
    auto_enable_custom_integrations,  # noqa: F401
    frame,
    key,
    plaintext,
)

TITLE = b"SAGgp\x00\x12\x34"
AUSTRIAN = "enc_at_t210d_real_tag_unverifiable"
ONE = 1 << 127  # the field's 1 in GCM's bit order


@cache
def _telegrams() -> tuple[bytes, ...]:
    """Simulated telegrams of three lengths (block counts), two of each."""
    sim = MeterSimulator(None, seed=7)
    found = []
    for message in ("", "", "Maintenance 2026-06-22", "Maintenance 2026-06-22", "x" * 48, "x" * 48):
        sim.set_message(message)
        found.append(sim.next_frame())
    return tuple(found)


def _frames(auth_key: bytes, first_counter: int = 1) -> list[bytes]:
    cipher = FrameCipher(key(NEXXTLAB), auth_key)
    return [
        cipher.encrypt(telegram, TITLE, first_counter + index)
        for index, telegram in enumerate(_telegrams())
    ]


def _fields(wire: bytes) -> EncryptedFrame:
    return EncryptedFrame(wire[2:10], int.from_bytes(wire[14:18]), wire[18:-12], wire[-12:])


def _outcomes(decoder: TelegramDecoder, wires: list[bytes]) -> list[str]:
    return [
        "telegram" if isinstance(item, Telegram) else item.reason
        for wire in wires
        for item in decoder.feed(wire)
    ]


# The field.


def test_gcm_test_vector() -> None:
    # McGrew and Viega, GCM test case 2: K = 0, P = 0^128, IV = 0^96.
    hash_key = 0x66E94BD4EF8A2C3B884CFA59CA342B2E
    ciphertext = 0x0388DACE60B6A392F328C2B971B2FE78
    lengths = 128  # len(A) = 0, len(C) = 128 bits
    ghash = gf_multiply(gf_multiply(ciphertext, hash_key) ^ lengths, hash_key)
    assert ghash == 0xF38CBB1AD69223DCC3457AE5B6B0F885


def test_field_laws() -> None:
    rng = random.Random(1)
    for _ in range(20):
        a, b, c = rng.getrandbits(128), rng.getrandbits(128), rng.getrandbits(128)
        assert gf_multiply(a, b) == gf_multiply(b, a)
        assert gf_multiply(a, b ^ c) == gf_multiply(a, b) ^ gf_multiply(a, c)
        assert gf_multiply(a, ONE) == a
        assert gf_times_x(a) == gf_multiply(a, ONE >> 1)
        assert gf_power(a, 5) == gf_multiply(gf_power(a, 2), gf_power(a, 3))
    assert gf_power(12345, 0) == ONE


@pytest.mark.parametrize("length", [1, 16, 17, 481, 646])
def test_tags_are_linear_in_the_authentication_key(length: int) -> None:
    """Against real AES-GCM: tag(AK) = tag(0) xor the system's linear map of AK."""
    rng = random.Random(length)
    encryption_key = rng.randbytes(16)
    aead = AESGCM(encryption_key)
    system = AuthKeySystem(FrameCipher(encryption_key).hash_key())
    blocks = ciphertext_blocks(length)
    rows = system.equations(blocks)
    assert len(rows) == TAG_BITS
    for _ in range(5):
        iv, data, auth_key = rng.randbytes(12), rng.randbytes(length), rng.randbytes(16)
        tag = aead.encrypt(iv, data, b"\x30" + auth_key)[-16:-4]
        zero = aead.encrypt(iv, data, b"\x30" + bytes(16))[-16:-4]
        value = int.from_bytes(auth_key)
        difference = system.tag_difference(blocks, value)
        assert int.from_bytes(tag) ^ int.from_bytes(zero) == difference
        # Each row is one tag bit as a parity of key bits.
        assert all(
            ((row & value).bit_count() & 1) == (difference >> bit) & 1
            for bit, row in enumerate(rows)
        )


# The system.


def test_ranks_and_what_they_verify() -> None:
    rng = random.Random(3)
    auth_key = rng.getrandbits(128)
    system = AuthKeySystem(rng.getrandbits(128))
    assert system.add(40, system.tag_difference(40, auth_key)) == 0
    assert system.rank == TAG_BITS
    one_length = system.complete
    assert not one_length
    same_length = system.tag_difference(40, system.key())
    assert same_length == system.tag_difference(40, auth_key)
    assert system.tag_difference(41, system.key()) != system.tag_difference(41, auth_key)
    # A second length: consistent, with most of its equations implied already.
    implied = system.add(41, system.tag_difference(41, auth_key))
    assert implied is not None
    assert implied >= 64
    assert system.complete
    assert 125 <= system.rank <= 128
    # Tags of every length are now those of the meter's key, whether or not it is recovered.
    for blocks in (1, 30, 39, 42, 200):
        assert system.tag_difference(blocks, system.key()) == system.tag_difference(
            blocks, auth_key
        )
    assert system.block_counts == (40, 41)
    assert "rank=" in repr(system)


def test_contradictions_leave_the_system_unchanged() -> None:
    rng = random.Random(4)
    system = AuthKeySystem(rng.getrandbits(128))
    auth_key = rng.getrandbits(128)
    system.add(36, system.tag_difference(36, auth_key))
    before = system.key(), system.rank
    assert system.add(36, system.tag_difference(36, auth_key) ^ 1) is None
    assert system.add(37, system.tag_difference(37, auth_key ^ (1 << 50))) is None
    assert (system.key(), system.rank) == before
    assert system.add(36, system.tag_difference(36, auth_key)) == TAG_BITS


def test_learned_key_storage_and_secrecy() -> None:
    secret = bytes(range(16))
    learned = LearnedAuthKey(secret, (36, 37))
    assert LearnedAuthKey.from_dict(learned.as_dict()) == learned
    assert secret.hex() not in repr(learned).lower()
    assert "36" in repr(learned)
    broken_forms: list[dict[str, object]] = [
        {},
        {"key": "00", "block_counts": [1]},
        {"key": secret.hex(), "block_counts": [0]},
    ]
    for broken in broken_forms:
        with pytest.raises(ValueError, match="authentication key"):
            LearnedAuthKey.from_dict(broken)
    with pytest.raises(ValueError, match="authentication key"):
        LearnedAuthKey(secret, ())


# One frame: what it can and cannot establish.


def test_one_real_frame() -> None:
    """The Austrian T210-D-R frame: no published authentication key verifies its tag, but its
    plaintext is a telegram with a valid CRC. Its 96 tag bits fix 96 of the key's 128 bits: the
    key solved from it explains its tag, but 2^32 keys do, so it verifies no other length and a
    second, independent frame is needed before anything is published.
    """
    data = frame(AUSTRIAN)
    fields = _fields(data)
    cipher = FrameCipher(key(AUSTRIAN))
    iv = fields.system_title + fields.frame_counter.to_bytes(4)
    telegram = cipher.keystream(iv, fields.ciphertext)
    assert telegram == plaintext(AUSTRIAN)
    system = AuthKeySystem(cipher.hash_key())
    zero = cipher.tag(iv, telegram, b"\x30" + bytes(16))
    blocks = ciphertext_blocks(len(fields.ciphertext))
    assert system.add(blocks, int.from_bytes(fields.tag) ^ int.from_bytes(zero)) == 0
    assert system.rank == TAG_BITS
    one_frame = system.complete
    assert not one_frame
    solved = system.key().to_bytes(16)
    assert FrameCipher(key(AUSTRIAN), solved).decrypt(fields) == telegram
    # Through the decoder: withheld, also when the same frame comes again (not independent).
    decoder = TelegramDecoder(key(AUSTRIAN))
    assert _outcomes(decoder, [data, data]) == ["learning", "learning"]
    assert decoder.integrity == Integrity.LEARNING
    assert decoder.learned_key is None
    assert decoder.stats.telegrams == 0


# The decoder learning.


def test_a_misconfigured_key_is_learned_back() -> None:
    """Frames under the specification's key, a decoder told another: it learns one that gives
    every frame the meter's tag, from the second frame on.
    """
    wires = _frames(DEFAULT_AUTH_KEY)
    decoder = TelegramDecoder(key(NEXXTLAB), auth_key=bytes(16))
    assert _outcomes(decoder, wires) == ["learning", *["telegram"] * 5]
    assert decoder.integrity == Integrity.AUTHENTICATED
    learned = decoder.learned_key
    assert learned is not None
    # Two lengths determine the tags of every length: the third adds nothing.
    lengths = list(dict.fromkeys(ciphertext_blocks(len(wire) - 30) for wire in wires))
    assert len(lengths) == 3
    assert learned.block_counts == tuple(lengths[:2])
    verifier = FrameCipher(key(NEXXTLAB), learned.key)
    for wire in [*wires, *_frames(DEFAULT_AUTH_KEY, 100)]:
        assert verifier.decrypt(_fields(wire)).startswith(b"/Lux5")


def test_a_restart_verifies_from_the_first_frame() -> None:
    auth_key = random.Random(5).randbytes(16)
    wires = _frames(auth_key)
    first = TelegramDecoder(key(NEXXTLAB))
    _outcomes(first, wires[:3])
    stored = first.learned_key
    assert stored is not None
    restored = LearnedAuthKey.from_dict(stored.as_dict())
    decoder = TelegramDecoder(key(NEXXTLAB), auth_key=restored)
    assert decoder.integrity == Integrity.AUTHENTICATED
    assert _outcomes(decoder, _frames(auth_key, 50)) == ["telegram"] * 6
    assert decoder.learned_key is not None
    # An altered frame is caught from the first frame on.
    altered = bytearray(wires[0])
    altered[30] ^= 0x01
    (error,) = decoder.feed(bytes(altered))
    assert isinstance(error, P1Error)
    assert error.reason in ("damaged", "tag")


def test_a_stored_key_keeps_learning_lengths() -> None:
    """A stored key learned from one length goes on learning from the frames it verifies."""
    wires = _frames(DEFAULT_AUTH_KEY)
    first = ciphertext_blocks(len(wires[0]) - 30)
    decoder = TelegramDecoder(key(NEXXTLAB), auth_key=LearnedAuthKey(DEFAULT_AUTH_KEY, (first,)))
    assert _outcomes(decoder, wires) == ["telegram"] * 6
    learned = decoder.learned_key
    assert learned is not None
    assert learned.key == DEFAULT_AUTH_KEY
    assert len(learned.block_counts) == 2


def test_fields_that_form_no_iv() -> None:
    fields = _fields(frame(NEXXTLAB))
    authenticator = FrameAuthenticator(key(NEXXTLAB))
    broken = EncryptedFrame(b"", fields.frame_counter, fields.ciphertext, fields.tag)
    error = authenticator.open(broken)
    assert isinstance(error, MalformedFrameError)
    assert not authenticator.plausible(broken)
    assert isinstance(authenticator.open(fields), Frame)


def test_learning_survives_a_reconnect() -> None:
    """Decoders of successive connections share one authenticator."""
    auth_key = random.Random(6).randbytes(16)
    wires = _frames(auth_key)
    authenticator = FrameAuthenticator(key(NEXXTLAB))
    first = TelegramDecoder(authenticator=authenticator)
    # The connection drops in the middle of the second frame.
    assert _outcomes(first, [wires[0], wires[1][:100]]) == ["learning"]
    second = TelegramDecoder(authenticator=first.authenticator)
    assert _outcomes(second, wires[1:]) == ["telegram"] * 5
    assert second.learned_key == authenticator.learned_key
    with pytest.raises(ValueError, match="not both"):
        TelegramDecoder(key(NEXXTLAB), authenticator=authenticator)


def test_one_lucky_damaged_frame_teaches_nothing() -> None:
    """A frame whose tag is not the meter's but whose CRC holds (as one noise-damaged frame in
    65536 would) is contradicted by the next, and learning starts again from that one.
    """
    auth_key = random.Random(7).randbytes(16)
    genuine = _frames(auth_key)
    bogus = _frames(random.Random(8).randbytes(16), 90)[0]
    decoder = TelegramDecoder(key(NEXXTLAB))
    assert _outcomes(decoder, [bogus, genuine[0], genuine[1]]) == [
        "learning",
        "learning",
        "telegram",
    ]
    learned = decoder.learned_key
    assert learned is not None
    verifier = FrameCipher(key(NEXXTLAB), learned.key)
    assert verifier.decrypt(_fields(genuine[1])).startswith(b"/Lux5")
    (error,) = decoder.feed(bogus)
    assert isinstance(error, TamperedFrameError)


def test_a_verified_frame_ends_learning() -> None:
    """Frames injected before the meter's own cannot keep a decoder learning: the first frame
    that verifies with the configured key establishes it.
    """
    injected = _frames(random.Random(9).randbytes(16), 40)
    genuine = _frames(DEFAULT_AUTH_KEY)
    decoder = TelegramDecoder(key(NEXXTLAB))
    modes = []
    assert _outcomes(decoder, injected[:1]) == ["learning"]
    modes.append(decoder.integrity)
    outcomes = _outcomes(decoder, [genuine[0], injected[1], genuine[1]])
    assert outcomes == ["telegram", "tag", "telegram"]
    modes.append(decoder.integrity)
    assert modes == [Integrity.LEARNING, Integrity.AUTHENTICATED]
    assert decoder.learned_key is None


def test_crc_only_is_left_for_a_verified_frame() -> None:
    """After CRC-only was declared, a frame that verifies with the configured key brings full
    verification back (CRC-only forced by injected frames does not last).
    """
    foreign = FrameCipher(key(NEXXTLAB))
    injected = [
        foreign.encrypt(telegram, TITLE, 60 + index, aad=b"\x30")
        for index, telegram in enumerate(_telegrams())
    ]
    decoder = TelegramDecoder(key(NEXXTLAB))
    modes = []
    outcomes = _outcomes(decoder, [injected[0], injected[2], injected[4], injected[3]])
    assert outcomes == ["learning", "learning", "learning", "telegram"]
    modes.append(decoder.integrity)
    assert _outcomes(decoder, [injected[5], _frames(DEFAULT_AUTH_KEY)[0]]) == ["telegram"] * 2
    modes.append(decoder.integrity)
    assert modes == [Integrity.CRC_ONLY, Integrity.AUTHENTICATED]
    (error,) = decoder.feed(injected[1])
    assert isinstance(error, TamperedFrameError)


def test_nothing_secret_shows() -> None:
    auth_key = random.Random(10).randbytes(16)
    wires = _frames(auth_key)
    decoder = TelegramDecoder(key(NEXXTLAB))
    shown: list[object] = [decoder, decoder.authenticator]
    for wire in wires:
        shown += decoder.feed(wire)
    learned = decoder.learned_key
    assert learned is not None
    shown += [learned, decoder.authenticator, decoder.stats]
    assert any(isinstance(item, AuthKeyLearningError) for item in shown)
    secrets = [key(NEXXTLAB), learned.key, auth_key]
    forms = {
        form for secret in secrets for form in (secret.hex(), secret.hex().upper(), repr(secret))
    }
    for item in shown:
        for text in (repr(item), str(item)):
            assert not any(form in text for form in forms)
    assert (
        repr(decoder.authenticator) == "FrameAuthenticator(<keys hidden>, integrity=authenticated)"
    )
