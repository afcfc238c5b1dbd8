"""Typed errors of the P1 protocol core.

Every message is fixed text: no error ever carries key material or frame bytes, so an exception
can be logged or shown to a user as it is.
"""

from __future__ import annotations

from typing import ClassVar


class P1Error(Exception):
    """Base class of everything the protocol core rejects."""

    reason: ClassVar[str] = "error"


class DecryptionError(P1Error):
    """The GCM tag did not verify: wrong key, wrong authentication key or a damaged frame."""

    reason = "tag"

    def __init__(self, message: str = "decryption failed: wrong key?") -> None:
        super().__init__(message)


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


class InvalidKeyFormatError(ValueError):
    """A key is not 32 hexadecimal characters (16 bytes)."""

    def __init__(self) -> None:
        super().__init__("a key is 32 hexadecimal characters (16 bytes)")
