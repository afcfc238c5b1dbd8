"""Which encrypted frames count: tags verified with the meter's authentication key, learned from
its own frames when it is not the specification's, and every failure told apart.

A frame whose tag does not verify is decrypted as GCM's counter mode does, and classified:

- a telegram with a valid CRC: the key is right and the frame intact, so either the meter uses
  another authentication key (learned from it, see authkey.py) or, once the authentication key
  is established, the frame was altered (CRC-16 protects against noise, not against a change);
- telegram text with a bad CRC: damaged on the line, not a key problem;
- anything else: the wrong key.

One FrameAuthenticator holds what a meter's frames have shown (the established key, the learning
state); the decoders of successive connections share it, as they share their DecoderStats.
"""

from __future__ import annotations

from enum import StrEnum
from hmac import compare_digest

from .authkey import AuthKeySystem, LearnedAuthKey, ciphertext_blocks
from .crypto import DEFAULT_AUTH_KEY, FrameCipher, initialization_vector
from .errors import (
    AuthKeyLearningError,
    DamagedFrameError,
    MalformedFrameError,
    P1Error,
    TamperedFrameError,
    WrongKeyError,
)
from .frame import (
    PROBE_BYTES,
    SECURITY_CONTROL,
    EncryptedFrame,
    Frame,
    holds_telegram_text,
    starts_like_telegram,
    verify_telegram,
)

# Frames that decrypt to no telegram at all, with none that does, before a reader says the key
# is wrong: one such frame may be a frame damaged at its very start.
WRONG_KEY_PROOF = 2
# Frames learned from without a key that explains two of them, before CRC-only is declared.
LEARNING_LIMIT = 4
# Tag bits a second frame must confirm: a pair of frames that agree by chance is a 2^-32 event.
CONFIRMATION_BITS = 32
# Tag bytes that match the expected tag in place: a tag of a frame under another key, or of
# altered content, matches in 4 of 12 places about once in 10^7 frames.
_TAG_BYTES_KEPT = 4
# A damaged frame counter still decrypts when the frames lost since the last one are few.
_COUNTER_SLACK = 4
_ZERO_AAD = bytes([SECURITY_CONTROL]) + bytes(16)


class Integrity(StrEnum):
    """How a decoder's telegrams are protected: tell the user whenever it is not authenticated."""

    PLAINTEXT = "plaintext"  # no key set: plaintext telegrams, CRC-16 only
    AUTHENTICATED = "authenticated"  # every telegram's GCM tag verified
    LEARNING = "learning"  # learning the meter's authentication key: nothing published meanwhile
    CRC_ONLY = "crc_only"  # no authentication key explains the tags: decrypted, CRC-16 only


class FrameAuthenticator:
    """Opens one meter's frames; its keys stay inside and are never shown.

    ``auth_key`` is the authentication key to verify with (the specification's by default), or
    a key learned earlier (``learned_key``), which verifies from the first frame.
    """

    __slots__ = (
        "_aad",
        "_attempts",
        "_cipher",
        "_configured",
        "_confirmed",
        "_conflicts",
        "_established",
        "_last",
        "_learned_from",
        "_mode",
        "_system",
    )

    def __init__(self, key: bytes, auth_key: bytes | LearnedAuthKey = DEFAULT_AUTH_KEY) -> None:
        if isinstance(auth_key, LearnedAuthKey):
            learned, authentication_key = auth_key, auth_key.key
        else:
            learned, authentication_key = None, auth_key
        self._cipher = FrameCipher(key, authentication_key)
        self._aad = self._configured = bytes([SECURITY_CONTROL]) + authentication_key
        self._mode = Integrity.AUTHENTICATED
        self._system: AuthKeySystem | None = None
        self._confirmed = False
        # Whether the authentication key in use has verified a frame (or was learned so).
        self._established = False
        self._attempts = 0
        self._learned_from: set[bytes] = set()
        # Block count -> (tag difference, IV) of the last frame of a new length that
        # contradicted the learned key.
        self._conflicts: dict[int, tuple[int, bytes]] = {}
        # System title and frame counter of the last verified frame.
        self._last: tuple[bytes, int] | None = None
        if learned is not None:
            system = self._system = AuthKeySystem(self._cipher.hash_key())
            value = int.from_bytes(learned.key)
            for blocks in learned.block_counts:
                system.add(blocks, system.tag_difference(blocks, value))
            self._confirmed = self._established = True

    def __repr__(self) -> str:
        return f"FrameAuthenticator(<keys hidden>, integrity={self._mode.value})"

    @property
    def integrity(self) -> Integrity:
        """How the telegrams are protected now."""
        return self._mode

    @property
    def learned_key(self) -> LearnedAuthKey | None:
        """The meter's authentication key once learned and confirmed: store it (a secret) and
        give it back at construction. It can grow (more lengths seen): store it when it changes.
        """
        if not self._confirmed or self._system is None:
            return None
        return LearnedAuthKey(self._aad[1:], self._system.block_counts)

    def plausible(self, frame: EncryptedFrame) -> bool:
        """Whether the start of frame's ciphertext decrypts to the start of a telegram."""
        iv = initialization_vector(frame)
        return iv is not None and starts_like_telegram(
            self._cipher.keystream(iv, frame.ciphertext[:PROBE_BYTES])
        )

    def open(self, frame: EncryptedFrame) -> Frame | P1Error:
        """The verified telegram of frame, or why it does not count (never raised)."""
        iv = initialization_vector(frame)
        if iv is None:
            return MalformedFrameError("frame fields do not form a Smarty IV")
        cipher = self._cipher
        plaintext = cipher.keystream(iv, frame.ciphertext)
        expected = cipher.tag(iv, plaintext, self._aad)
        if compare_digest(expected, frame.tag):
            return self._verified(frame, iv, plaintext)
        verdict = verify_telegram(plaintext)
        if isinstance(verdict, P1Error):
            if holds_telegram_text(plaintext) or self._decrypts_with_expected_iv(frame):
                return DamagedFrameError()
            return WrongKeyError()
        if self._mode is not Integrity.CRC_ONLY and _hit_on_the_line(expected, frame.tag):
            return DamagedFrameError()
        return self._unverified(frame, iv, plaintext, verdict)

    def _verified(self, frame: EncryptedFrame, iv: bytes, plaintext: bytes) -> Frame | P1Error:
        if not self._established:
            # The key in use verifies the meter's frames: learning from tags that failed it
            # (damage, or frames injected before) is over.
            self._established = True
            self._mode = Integrity.AUTHENTICATED
            self._system = None
            self._attempts = 0
            self._learned_from.clear()
        self._last = frame.system_title, frame.frame_counter
        system = self._system
        blocks = ciphertext_blocks(len(frame.ciphertext))
        if system is not None and not system.complete and blocks not in system.block_counts:
            # A learned key that verified a new length by luck: its equations still narrow it.
            system.add(blocks, self._difference(frame, iv, plaintext))
        verdict = verify_telegram(plaintext)
        if isinstance(verdict, P1Error):
            return verdict
        return Frame(plaintext, verdict, frame.system_title, frame.frame_counter)

    def _unverified(
        self, frame: EncryptedFrame, iv: bytes, plaintext: bytes, crc: int | None
    ) -> Frame | P1Error:
        """A telegram with a valid CRC whose tag fails under the authentication key in use."""
        accepted = Frame(plaintext, crc, frame.system_title, frame.frame_counter)
        if self._mode is Integrity.CRC_ONLY:
            return accepted
        system = self._system
        blocks = ciphertext_blocks(len(frame.ciphertext))
        if self._confirmed:
            assert system is not None
            # Only a length whose tags the key does not determine yet can be news.
            if system.complete or blocks in system.block_counts:
                return TamperedFrameError()
            difference = self._difference(frame, iv, plaintext)
            if system.add(blocks, difference) is not None:
                self._use(system)
                return accepted
            # A new length contradicts the key: an altered frame, or a meter whose AAD is not
            # 0x30 || key, whose frames of one length all agree (the key learned from them
            # holds for that length only). A second frame of this length saying the same tells.
            earlier = self._conflicts.get(blocks)
            if earlier is not None and earlier[0] == difference and earlier[1] != iv:
                return self._crc_only(accepted)
            self._conflicts[blocks] = difference, iv
            return TamperedFrameError()
        if self._established:
            return TamperedFrameError()
        if iv in self._learned_from:
            # The same frame again (a duplicate on the line) proves nothing new.
            return AuthKeyLearningError()
        difference = self._difference(frame, iv, plaintext)
        if system is None:
            system = self._system = AuthKeySystem(self._cipher.hash_key())
        implied = system.add(blocks, difference)
        if implied is None:
            # The frames disagree: one of them was damaged yet passed CRC-16, or no 16-byte key
            # explains the meter's tags. Start again from this one.
            system = self._system = AuthKeySystem(self._cipher.hash_key())
            system.add(blocks, difference)
            self._learned_from.clear()
        elif self._learned_from and implied >= CONFIRMATION_BITS:
            self._confirmed = self._established = True
            self._mode = Integrity.AUTHENTICATED
            self._learned_from.clear()
            self._use(system)
            return accepted
        self._learned_from.add(iv)
        self._attempts += 1
        if self._attempts >= LEARNING_LIMIT:
            return self._crc_only(accepted)
        self._mode = Integrity.LEARNING
        return AuthKeyLearningError()

    def _crc_only(self, accepted: Frame) -> Frame:
        """No 16-byte authentication key explains the meter's tags: say so, and go on."""
        self._mode = Integrity.CRC_ONLY
        # Only the configured key may still prove the frames authentic.
        self._aad = self._configured
        self._system = None
        self._confirmed = self._established = False
        self._learned_from.clear()
        self._conflicts.clear()
        return accepted

    def _use(self, system: AuthKeySystem) -> None:
        self._aad = bytes([SECURITY_CONTROL]) + system.key().to_bytes(16)

    def _difference(self, frame: EncryptedFrame, iv: bytes, plaintext: bytes) -> int:
        """The frame's tag xor the tag it would carry under the all-zero authentication key."""
        zero = self._cipher.tag(iv, plaintext, _ZERO_AAD)
        return int.from_bytes(frame.tag) ^ int.from_bytes(zero)

    def _decrypts_with_expected_iv(self, frame: EncryptedFrame) -> bool:
        """Whether the frame is the meter's with a damaged system title or frame counter."""
        if self._last is None:
            return False
        last_title, last_counter = self._last
        head = frame.ciphertext[:PROBE_BYTES]
        guesses = {(last_title, frame.frame_counter)}
        guesses.update((last_title, last_counter + step) for step in range(1, _COUNTER_SLACK + 1))
        guesses.discard((frame.system_title, frame.frame_counter))
        return any(
            starts_like_telegram(self._cipher.keystream(title + counter.to_bytes(4), head))
            for title, counter in guesses
            if counter < 1 << 32
        )


def _hit_on_the_line(expected: bytes, received: bytes) -> bool:
    """Whether a tag is the expected one with some bytes damaged (or cut off by a lost byte)."""
    return sum(a == b for a, b in zip(expected, received, strict=True)) >= _TAG_BYTES_KEPT
