"""Typed errors of the P1 protocol core.

Every message is fixed text: no error ever carries key material or frame bytes, so an exception
can be logged or shown to a user as it is.
"""

from __future__ import annotations

from typing import ClassVar

# Every reason a frame can be rejected for, in the order summaries list them.
REASONS = (
    "wrong_key",
    "damaged",
    "tag",
    "crc",
    "malformed",
    "key_required",
    "unencrypted",
    "security",
    "learning",
)


class P1Error(Exception):
    """Base class of everything the protocol core rejects."""

    reason: ClassVar[str] = "error"


class DecryptionError(P1Error):
    """A frame's GCM tag did not verify (FrameCipher.decrypt). The decoder says why instead,
    with one of the subclasses below.
    """

    reason = "tag"

    def __init__(self, message: str = "decryption failed: the GCM tag does not verify") -> None:
        super().__init__(message)


class WrongKeyError(DecryptionError):
    """Decrypted, the frame holds no telegram at all: the decryption key is not the meter's.

    The only rejection that says the key is wrong, so the only one that may lead to asking the
    user for a new key.
    """

    reason = "wrong_key"

    def __init__(self) -> None:
        super().__init__("decryption failed: wrong key?")


class DamagedFrameError(DecryptionError):
    """The frame decrypts to a telegram that is cut or corrupted: line noise, a lost byte, or
    another program reading the same port. Not a key problem.
    """

    reason = "damaged"

    def __init__(self) -> None:
        super().__init__("frame damaged on the line: its telegram is cut or corrupted")


class TamperedFrameError(DecryptionError):
    """A telegram with a valid CRC whose tag fails under the meter's established authentication
    key: altered on the way (CRC-16 is no protection against a deliberate change).
    """

    reason = "tag"

    def __init__(self) -> None:
        super().__init__("frame content does not match its authentication tag: altered?")


class AuthKeyLearningError(P1Error):
    """A telegram withheld while the meter's authentication key is being learned: its key is
    not confirmed yet by a second, independent frame.
    """

    reason = "learning"

    def __init__(self) -> None:
        super().__init__("frame withheld: learning the meter's authentication key")


class CRCError(P1Error):
    """The telegram's CRC-16 does not match its content."""

    reason = "crc"

    def __init__(self, given: int, calculated: int) -> None:
        super().__init__(f"CRC mismatch: telegram says {given:04X}, content gives {calculated:04X}")
        self.given = given
        self.calculated = calculated


class MalformedFrameError(P1Error):
    """A frame started but its structure is broken (bad bytes, impossible length, bad CRC text)."""

    reason = "malformed"


class NotATelegramError(P1Error):
    """A frame decrypted correctly but does not hold a DSMR telegram."""

    reason = "malformed"


class MissingKeyError(P1Error):
    """An encrypted frame arrived but no decryption key was given."""

    reason = "key_required"

    def __init__(self) -> None:
        super().__init__("encrypted frame received but no decryption key is set")


class UnencryptedTelegramError(P1Error):
    """A plaintext telegram while a decryption key is set: the meter encrypts, so plaintext on
    the line did not come from it.
    """

    reason = "unencrypted"

    def __init__(self) -> None:
        super().__init__("plaintext telegram refused: the meter encrypts its telegrams")


class SecurityControlError(P1Error):
    """A frame authenticated only (security byte 0x10) or encrypted only (0x20): a Smarty
    always encrypts and authenticates (0x30).
    """

    reason = "security"

    def __init__(self) -> None:
        super().__init__("frame not both encrypted and authenticated: security byte is not 0x30")


class InvalidKeyFormatError(ValueError):
    """A key is not 32 hexadecimal characters (16 bytes)."""

    def __init__(self) -> None:
        super().__init__("a key is 32 hexadecimal characters (16 bytes)")
