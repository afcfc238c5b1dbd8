"""Smarty P1 protocol core: framing, AES-GCM decryption, CRC, parsing and the OBIS catalog.

Independent of Home Assistant, so it can be used (and shipped) on its own.
"""

from .authkey import LearnedAuthKey
from .crc import crc16_arc
from .crypto import DEFAULT_AUTH_KEY, FrameCipher, normalize_key, parse_key
from .decoder import DecoderStats, TelegramDecoder
from .errors import (
    REASONS,
    AuthKeyLearningError,
    CRCError,
    DamagedFrameError,
    DecryptionError,
    InvalidKeyFormatError,
    MalformedFrameError,
    MissingKeyError,
    NotATelegramError,
    P1Error,
    SecurityControlError,
    TamperedFrameError,
    UnencryptedTelegramError,
    WrongKeyError,
)
from .frame import MAX_FRAME, EncryptedFrame, Frame, FrameReader, check_telegram
from .integrity import FrameAuthenticator, Integrity
from .obis import OBIS_CATALOG, ObisInfo, ObisKind, describe, generic_code, mbus_channel
from .telegram import CosemObject, Telegram, TelegramParser, parse_telegram, parse_timestamp

__all__ = [
    "DEFAULT_AUTH_KEY",
    "MAX_FRAME",
    "OBIS_CATALOG",
    "REASONS",
    "AuthKeyLearningError",
    "CRCError",
    "CosemObject",
    "DamagedFrameError",
    "DecoderStats",
    "DecryptionError",
    "EncryptedFrame",
    "Frame",
    "FrameAuthenticator",
    "FrameCipher",
    "FrameReader",
    "Integrity",
    "InvalidKeyFormatError",
    "LearnedAuthKey",
    "MalformedFrameError",
    "MissingKeyError",
    "NotATelegramError",
    "ObisInfo",
    "ObisKind",
    "P1Error",
    "SecurityControlError",
    "TamperedFrameError",
    "Telegram",
    "TelegramDecoder",
    "TelegramParser",
    "UnencryptedTelegramError",
    "WrongKeyError",
    "check_telegram",
    "crc16_arc",
    "describe",
    "generic_code",
    "mbus_channel",
    "normalize_key",
    "parse_key",
    "parse_telegram",
    "parse_timestamp",
]
