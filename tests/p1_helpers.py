"""Shared helpers of the protocol-core tests: the vectors in tests/fixtures."""

from __future__ import annotations

import json
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from custom_components.smarty_p1.p1 import P1Error, Telegram

FIXTURES = Path(__file__).parent / "fixtures"
NEXXTLAB = "enc_lu_nexxtlab_go_smarty_reader"
SMARTY_FRAMES = (
    NEXXTLAB,
    "enc_synthetic_lu2026_dsmr_parser_msn_recipe",
    "enc_synthetic_spec_appendix_4mbus",
)


@cache
def vector(name: str) -> dict[str, Any]:
    """The vector tests/fixtures/<name>.json."""
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


def vector_names(kind: str | None = None) -> list[str]:
    """Every vector (of one kind), sorted."""
    names = sorted(path.stem for path in FIXTURES.glob("*.json"))
    return [name for name in names if kind is None or vector(name)["kind"] == kind]


def frame(name: str) -> bytes:
    """The wire bytes of an encrypted-frame vector."""
    return bytes.fromhex(vector(name)["frame_hex"])


def key(name: str) -> bytes:
    """The key of an encrypted-frame vector."""
    return bytes.fromhex(vector(name)["key_hex"])


def plaintext(name: str) -> bytes:
    """The telegram of a vector: the decrypted plaintext, or the plaintext telegram itself."""
    data = vector(name)
    text: str = (
        data["telegram"] if data["kind"] == "plaintext_telegram" else data["expected"]["plaintext"]
    )
    return text.encode("ascii")


def raw_objects(telegram: Telegram) -> list[tuple[str, tuple[str, ...]]]:
    """A telegram's objects as (obis, raw values), the form the vectors use."""
    return [(obj.obis, obj.raw) for obj in telegram.objects.values()]


def expected_objects(name: str) -> list[tuple[str, tuple[str, ...]]]:
    """A vector's expected objects as (obis, raw values)."""
    return [(obis, tuple(values)) for obis, values in vector(name)["expected"]["objects"]]


def telegrams(results: list[Telegram | P1Error]) -> list[Telegram]:
    """Only the telegrams of a decoder's results, failing on anything else."""
    assert all(isinstance(item, Telegram) for item in results), results
    return [item for item in results if isinstance(item, Telegram)]


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(socket_enabled: None) -> None:
    """Replaces conftest's fixture of the same name in the protocol-core tests, which need no
    Home Assistant instance (starting one per test would only slow them down); loopback
    sockets stay allowed for the simulated TCP meters. Import it into a test module to use it.
    """


def decimals_in(value: object) -> list[Decimal]:
    """Every Decimal in an object's value, failure-log and reading tuples included."""
    if isinstance(value, Decimal):
        return [value]
    if isinstance(value, tuple):
        return [number for item in value for number in decimals_in(item)]
    return []
