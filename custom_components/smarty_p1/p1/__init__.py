"""Smarty P1 protocol core: framing, AES-GCM decryption, CRC, parsing and the OBIS catalog.

Independent of Home Assistant, so it can be used (and shipped) on its own.
"""

from .crc import crc16_arc
from .crypto import DEFAULT_AUTH_KEY, FrameCipher, normalize_key, parse_key
from .decoder import DecoderStats, TelegramDecoder
from .errors import (
    CRCError,
    DecryptionError,
    InvalidKeyFormatError,
    MalformedFrameError,
    MissingKeyError,
    NotATelegramError,
    P1Error,
)
from .frame import MAX_FRAME, EncryptedFrame, Frame, FrameReader, check_telegram
from .obis import OBIS_CATALOG, ObisInfo, ObisKind, describe, generic_code, mbus_channel
from .telegram import CosemObject, Telegram, parse_telegram, parse_timestamp

__all__ = [
    "DEFAULT_AUTH_KEY",
    "MAX_FRAME",
    "OBIS_CATALOG",
    "CRCError",
    "CosemObject",
    "DecoderStats",
    "DecryptionError",
    "EncryptedFrame",
    "Frame",
    "FrameCipher",
    "FrameReader",
    "InvalidKeyFormatError",
    "MalformedFrameError",
    "MissingKeyError",
    "NotATelegramError",
    "ObisInfo",
    "ObisKind",
    "P1Error",
    "Telegram",
    "TelegramDecoder",
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
