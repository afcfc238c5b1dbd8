"""CRC-16/ARC (polynomial 0x8005 reflected as 0xA001, initial value 0, no final XOR).

The CRC of every telegram is the costliest step of the receive path in pure Python (about 25 us
for a kilobyte, a third of the whole job), so a compiled CRC is used where the ``anycrc``
package is installed (the integration requires it; it has abi3 wheels for every platform Home
Assistant runs on): a thousandth of that. Without it, as in a bare copy of this protocol core,
the word table below gives the same results. Both are checked against each other in the tests.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Literal

type ByteOrder = Literal["little", "big"]


def _byte_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_BYTE_TABLE = _byte_table()


def _swap(word: int) -> int:
    return ((word & 0xFF) << 8) | (word >> 8)


def word_table(byteorder: ByteOrder) -> list[int]:
    """The table that folds two bytes read as one 16-bit word of ``byteorder`` into the register.

    The register takes the two bytes in little-endian order. A big-endian host reads each word
    byte-swapped, so its register is kept byte-swapped as well (``crc ^ word`` stays one index)
    and is swapped back at the end (:func:`fold_words`).
    """
    table = [0] * 65536
    for word in range(65536):
        crc = _BYTE_TABLE[word & 0xFF]
        folded = (crc >> 8) ^ _BYTE_TABLE[(crc ^ (word >> 8)) & 0xFF]
        if byteorder == "little":
            table[word] = folded
        else:
            table[_swap(word)] = _swap(folded)
    return table


# One lookup per two bytes halves the Python-level iterations of the hottest loop of a telegram.
# A list, not an array('H'): it holds the int objects, so a lookup creates none (16 against
# 22 us per KiB), for about 2 MiB of memory.
_WORD_TABLE = word_table(sys.byteorder)


def fold_words(
    words: Iterable[int], tail: int | None, table: list[int], byteorder: ByteOrder
) -> int:
    """The CRC of the bytes given as 16-bit words of ``byteorder`` and an odd last byte."""
    crc = 0
    for word in words:
        crc = table[crc ^ word]
    if byteorder == "big":
        crc = _swap(crc)
    if tail is not None:
        crc = (crc >> 8) ^ _BYTE_TABLE[(crc ^ tail) & 0xFF]
    return crc


def _flat(data: bytes | bytearray | memoryview) -> memoryview:
    """data as one flat run of unsigned bytes, the bytes tobytes() gives.

    Only such a buffer can be cast to words, and the compiled CRC reads any other (a strided
    view) wrongly without a word; copying the others keeps one definition of what is summed.
    """
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1 or not view.c_contiguous:
        return memoryview(view.tobytes())
    return view


def crc16_python(data: bytes | bytearray | memoryview) -> int:
    """The CRC in pure Python, two bytes per step: what :func:`crc16_arc` falls back to."""
    view = _flat(data)
    size = len(view)
    even = size & ~1
    words = view[:even].cast("H") if even else ()
    return fold_words(words, view[even] if even != size else None, _WORD_TABLE, sys.byteorder)


def _compiled() -> Callable[[memoryview], int] | None:
    """anycrc's CRC-16/ARC, if it is installed and gives the catalogued check value."""
    try:
        from anycrc import Model  # type: ignore[import-untyped]  # noqa: PLC0415 (optional)
    except ImportError:
        return None
    calc: Callable[[memoryview], int] = Model("CRC16-ARC").calc
    return calc if calc(memoryview(b"123456789")) == 0xBB3D else None


_COMPILED = _compiled()


def crc16_arc(data: bytes | bytearray | memoryview) -> int:
    """Return the CRC-16/ARC of data (any buffer: its bytes in memory order)."""
    compiled = _COMPILED
    if compiled is None:
        return crc16_python(data)
    return compiled(_flat(data))
