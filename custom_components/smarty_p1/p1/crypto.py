"""AES-128-GCM of the Smarty P1 channel (DLMS security suite 0, IDIS package 2)."""

from __future__ import annotations

import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import DecryptionError, InvalidKeyFormatError
from .frame import SECURITY_CONTROL, TAG_LENGTH, EncryptedFrame

# The authentication key is the same for every Smarty meter (P1 specification 3.2.5).
DEFAULT_AUTH_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")

_KEY_TEXT = re.compile(r"[0-9a-fA-F]{32}")
_KEY_SEPARATORS = re.compile(r"[\s:\-]+")


def parse_key(text: str) -> bytes:
    """Turn a key as users type it (spaces, dashes, any case) into 16 bytes."""
    compact = _KEY_SEPARATORS.sub("", text)
    if not _KEY_TEXT.fullmatch(compact):
        raise InvalidKeyFormatError
    return bytes.fromhex(compact)


def normalize_key(text: str) -> str:
    """The canonical text of a key: 32 upper-case hex digits."""
    return parse_key(text).hex().upper()


class FrameCipher:
    """Decrypts and verifies frames of one meter key; the key stays inside and is never shown."""

    __slots__ = ("_aad", "_algorithm")

    def __init__(self, key: bytes, auth_key: bytes = DEFAULT_AUTH_KEY) -> None:
        if len(key) != 16 or len(auth_key) != 16:
            raise InvalidKeyFormatError
        self._algorithm = algorithms.AES(key)
        self._aad = bytes([SECURITY_CONTROL]) + auth_key

    def __repr__(self) -> str:
        return "FrameCipher(<key hidden>)"

    def decrypt(self, frame: EncryptedFrame) -> bytes:
        """Return the plaintext of frame; DecryptionError when its tag does not verify."""
        iv = frame.system_title + frame.frame_counter.to_bytes(4)
        decryptor = Cipher(
            self._algorithm, modes.GCM(iv, frame.tag, min_tag_length=TAG_LENGTH)
        ).decryptor()
        decryptor.authenticate_additional_data(self._aad)
        plaintext = decryptor.update(frame.ciphertext)
        try:
            return plaintext + decryptor.finalize()
        except InvalidTag:
            raise DecryptionError from None

    def encrypt(self, plaintext: bytes, system_title: bytes, frame_counter: int) -> bytes:
        """Build the whole wire frame for plaintext, as a meter sends it."""
        iv = system_title + frame_counter.to_bytes(4)
        encryptor = Cipher(self._algorithm, modes.GCM(iv)).encryptor()
        encryptor.authenticate_additional_data(self._aad)
        ciphertext = encryptor.update(plaintext) + encryptor.finalize()
        tag = encryptor.tag[:TAG_LENGTH]
        length = 1 + 4 + len(ciphertext) + TAG_LENGTH
        return b"".join(
            (
                bytes([0xDB, len(system_title)]),
                system_title,
                b"\x82",
                length.to_bytes(2),
                bytes([SECURITY_CONTROL]),
                frame_counter.to_bytes(4),
                ciphertext,
                tag,
            )
        )
