"""CRC-16/ARC (polynomial 0x8005 reflected as 0xA001, initial value 0, no final XOR)."""

from __future__ import annotations

import sys
from array import array


def _byte_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


def _word_table(byte_table: list[int]) -> array[int]:
    # A CRC-16 register folds a whole little-endian 16-bit word in one lookup, which halves the
    # number of Python-level iterations (the CRC is the hottest loop of a telegram).
    table = array("H", bytes(2 * 65536))
    swap = sys.byteorder == "big"
    for word in range(65536):
        crc = byte_table[word & 0xFF]
        index = ((word & 0xFF) << 8) | (word >> 8) if swap else word
        table[index] = (crc >> 8) ^ byte_table[(crc ^ (word >> 8)) & 0xFF]
    return table


_BYTE_TABLE = _byte_table()
_WORD_TABLE = _word_table(_BYTE_TABLE)


def crc16_arc(data: bytes | bytearray | memoryview) -> int:
    """Return the CRC-16/ARC of data."""
    view = memoryview(data)
    crc = 0
    even = len(view) & ~1
    table = _WORD_TABLE
    for word in view[:even].cast("H") if even else ():
        crc = table[crc ^ word]
    if even != len(view):
        crc = (crc >> 8) ^ _BYTE_TABLE[(crc ^ view[even]) & 0xFF]
    return crc
