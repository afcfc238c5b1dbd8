"""CRC-16/ARC on every kind of buffer and for both byte orders of the word table."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custom_components.smarty_p1.p1 import crc as crc_module
from custom_components.smarty_p1.p1.crc import (
    ByteOrder,
    crc16_python,
    fold_words,
    word_table,
)

from .p1_helpers import (  # the fixture replaces conftest's Home Assistant set-up
    auto_enable_custom_integrations,  # noqa: F401
    plaintext,
)

CHECK = b"123456789"
# The catalogued check value of CRC-16/ARC.
CHECK_CRC = 0xBB3D
OTHER_ORDER: ByteOrder = "big" if sys.byteorder == "little" else "little"


def _bitwise(data: bytes) -> int:
    """The definition, a bit at a time: shares no table with the code under test."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _words(data: bytes, byteorder: ByteOrder) -> tuple[list[int], int | None]:
    even = len(data) & ~1
    words = [int.from_bytes(data[i : i + 2], byteorder) for i in range(0, even, 2)]
    return words, data[even] if even != len(data) else None


type Crc = Callable[[bytes | bytearray | memoryview], int]


@pytest.fixture(params=["compiled", "python"])
def crc(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Crc:
    """crc16_arc with anycrc's compiled CRC, and as it is without anycrc (the fallback)."""
    if request.param == "python":
        monkeypatch.setattr(crc_module, "_COMPILED", None)
    else:
        assert crc_module._COMPILED is not None, "anycrc is a requirement of the integration"
    return crc_module.crc16_arc


def test_the_compiled_crc_is_refused_when_it_gives_another_check_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Wrong:
        def __init__(self, name: str) -> None:
            assert name == "CRC16-ARC"

        def calc(self, data: memoryview) -> int:
            return 0

    monkeypatch.setattr("anycrc.Model", Wrong)
    assert crc_module._compiled() is None
    monkeypatch.setitem(sys.modules, "anycrc", None)
    assert crc_module._compiled() is None


def test_check_value(crc: Crc) -> None:
    assert _bitwise(CHECK) == CHECK_CRC
    assert crc16_python(CHECK) == CHECK_CRC
    assert crc(CHECK) == CHECK_CRC
    assert crc(bytearray(CHECK)) == CHECK_CRC
    assert crc(memoryview(CHECK)) == CHECK_CRC
    assert crc(b"") == 0


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_word_table_of_either_byte_order(byteorder: ByteOrder) -> None:
    # A big-endian host reads each pair of bytes the other way round: the table built for it
    # must give the same CRC from words read that way (it gave 0xF2AA before).
    table = word_table(byteorder)
    for data in (CHECK, CHECK[:8], b"", b"\x01", plaintext("plain_lu_spec_v113_appendix")):
        words, tail = _words(data, byteorder)
        assert fold_words(words, tail, table, byteorder) == _bitwise(data)


def test_the_host_uses_the_table_of_its_byte_order() -> None:
    data = plaintext("plain_lu_real_2026_meterlogger")
    words = array("H", data[: len(data) & ~1])
    assert list(words) == _words(data, sys.byteorder)[0]
    # Words read in the other order are only right with the other order's table.
    swapped, tail = _words(data, OTHER_ORDER)
    assert fold_words(swapped, tail, word_table(OTHER_ORDER), OTHER_ORDER) == _bitwise(data)


@pytest.mark.parametrize(
    "view",
    [
        memoryview(b"1x2x3x4x5x6x7x8x9x")[::2],  # not contiguous
        memoryview(bytearray(b"..123456789.."))[2:-2],
        memoryview(CHECK).cast("b"),  # signed bytes
        memoryview(CHECK).cast("c"),  # single characters
        memoryview(b"123456789\x00\x00\x00")[:9],
    ],
)
def test_any_byte_buffer(crc: Crc, view: memoryview) -> None:
    assert crc(view) == CHECK_CRC


def test_buffers_that_are_not_bytes_count_their_bytes_in_memory_order(crc: Crc) -> None:
    data = bytes(range(48))
    for view in (
        memoryview(data).cast("H"),
        memoryview(data).cast("I"),
        memoryview(data).cast("B", (6, 8)),  # two-dimensional
        memoryview(array("H", memoryview(data).cast("H"))),
    ):
        assert crc(view) == _bitwise(data)
    words = memoryview(data).cast("I")[::3]  # not contiguous, 4-byte items
    assert crc(words) == _bitwise(words.tobytes())


# The fixture only chooses an implementation: nothing of it changes between examples.
@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.binary(max_size=600), st.integers(0, 600), st.integers(0, 600))
def test_any_data_and_any_slice(crc: Crc, data: bytes, start: int, stop: int) -> None:
    expected = _bitwise(data)
    assert crc(data) == expected
    assert crc16_python(data) == expected
    assert crc(memoryview(data)[start:stop]) == _bitwise(data[start:stop])
    # CRC-16/ARC has no final XOR: the data followed by its CRC (low byte first) sums to 0.
    assert crc(data + expected.to_bytes(2, "little")) == 0
