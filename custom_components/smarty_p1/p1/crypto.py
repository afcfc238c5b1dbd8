"""AES-128-GCM of the Smarty P1 channel (DLMS security suite 0, IDIS package 2)."""

from __future__ import annotations

import re
from hmac import compare_digest

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import DecryptionError, InvalidKeyFormatError
from .frame import GLO_CIPHERING, SECURITY_CONTROL, SYSTEM_TITLE_LENGTH, TAG_LENGTH, EncryptedFrame

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
    """AES-128-GCM of one meter key; the key stays inside and is never shown.

    A GCM tag is computed here, not checked by a decryptor: Smarty tags are 12 bytes, which
    cryptography's one-shot AESGCM cannot verify, and a new GCM context per frame costs three
    times as much as two one-shot calls. The keystream gives the plaintext, and sealing that
    plaintext again gives back the ciphertext with its full 16-byte tag.
    """

    __slots__ = ("_aad", "_aead", "_key")

    def __init__(self, key: bytes, auth_key: bytes = DEFAULT_AUTH_KEY) -> None:
        if len(key) != 16 or len(auth_key) != 16:
            raise InvalidKeyFormatError
        self._key = key
        self._aead = AESGCM(key)
        self._aad = bytes([SECURITY_CONTROL]) + auth_key

    def __repr__(self) -> str:
        return "FrameCipher(<key hidden>)"

    def decrypt(self, frame: EncryptedFrame) -> bytes:
        """Return the plaintext of frame; DecryptionError when its tag does not verify."""
        iv = initialization_vector(frame)
        if iv is None or len(frame.tag) != TAG_LENGTH:
            raise DecryptionError
        plaintext = self.keystream(iv, frame.ciphertext)
        if not compare_digest(self.tag(iv, plaintext, self._aad), frame.tag):
            raise DecryptionError
        return plaintext

    def keystream(self, iv: bytes, data: bytes | bytearray | memoryview) -> bytes:
        """data xor GCM's keystream (AES-CTR from IV || 00000002): decrypts without the tag."""
        return self._aead.encrypt(iv, data, None)[:-16]

    def tag(self, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """The 12-byte tag a frame carrying plaintext under iv and aad has."""
        return self._aead.encrypt(iv, plaintext, aad)[-16:-4]

    def hash_key(self) -> int:
        """GHASH's key H = AES(key, 0^128), as a GCM field element: secret like the key."""
        # One raw block encryption of zeros is what H is: ECB encrypts nothing else here.
        encryptor = Cipher(algorithms.AES(self._key), modes.ECB()).encryptor()  # noqa: S305
        return int.from_bytes(encryptor.update(bytes(16)) + encryptor.finalize())

    def encrypt(
        self, plaintext: bytes, system_title: bytes, frame_counter: int, *, aad: bytes | None = None
    ) -> bytes:
        """Build the whole wire frame for plaintext, as a meter sends it.

        ``aad`` replaces 0x30 || authentication key, for frames of meters that authenticate
        otherwise (test vectors).
        """
        sealed = self._aead.encrypt(
            system_title + frame_counter.to_bytes(4), plaintext, self._aad if aad is None else aad
        )
        ciphertext, tag = sealed[:-16], sealed[-16:-4]
        length = 1 + 4 + len(ciphertext) + TAG_LENGTH
        return b"".join(
            (
                bytes([GLO_CIPHERING, len(system_title)]),
                system_title,
                b"\x82",
                length.to_bytes(2),
                bytes([SECURITY_CONTROL]),
                frame_counter.to_bytes(4),
                ciphertext,
                tag,
            )
        )


def initialization_vector(frame: EncryptedFrame) -> bytes | None:
    """System title || frame counter; None when the fields cannot form a Smarty IV."""
    if len(frame.system_title) != SYSTEM_TITLE_LENGTH or not 0 <= frame.frame_counter < 1 << 32:
        return None
    return frame.system_title + frame.frame_counter.to_bytes(4)
