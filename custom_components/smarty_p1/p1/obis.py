"""OBIS catalog: every object of the Luxembourg Smarty P1 specification v1.1.3 (table 3.1), plus
the common DSMR objects of neighbouring countries so that foreign telegrams read sensibly.

M-Bus channel objects are written with ``x`` for the channel (``0-x:24.2.1``) and long messages
per channel as ``0-0:96.13.x``; :func:`describe` resolves concrete codes against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ObisKind(StrEnum):
    """What a value is, which decides how its text is decoded."""

    NUMBER = "number"
    TEXT = "text"  # hex-encoded text, decoded when it is printable
    TIMESTAMP = "timestamp"
    VERSION = "version"  # kept as the digits sent, e.g. "42"
    MBUS_READING = "mbus_reading"  # (capture time)(value*unit)
    LIMITS = "limits"  # several numbers on one line: 1-1:31.4.0 (import)(export)
    FAILURE_LOG = "failure_log"  # 1-0:99.97.0 (count)(obis)(time)(duration)...


@dataclass(frozen=True, slots=True)
class ObisInfo:
    """One catalog entry."""

    obis: str
    name: str
    unit: str | None
    kind: ObisKind = ObisKind.NUMBER


def _entries() -> dict[str, ObisInfo]:
    number = ObisKind.NUMBER
    rows: list[tuple[str, str, str | None, ObisKind]] = [
        ("1-3:0.2.8", "P1 version", None, ObisKind.VERSION),
        ("0-0:1.0.0", "Meter time", None, ObisKind.TIMESTAMP),
        ("0-0:42.0.0", "Logical device name", None, ObisKind.TEXT),
        ("1-0:1.8.0", "Energy imported (P+)", "kWh", number),
        ("1-0:2.8.0", "Energy exported (P-)", "kWh", number),
        ("1-0:3.8.0", "Reactive energy imported (Q+)", "kvarh", number),
        ("1-0:4.8.0", "Reactive energy exported (Q-)", "kvarh", number),
        ("1-0:1.7.0", "Active power import (P+)", "kW", number),
        ("1-0:2.7.0", "Active power export (P-)", "kW", number),
        ("1-0:3.7.0", "Reactive power import (Q+)", "kvar", number),
        ("1-0:4.7.0", "Reactive power export (Q-)", "kvar", number),
        ("0-0:17.0.0", "Power limit (SMAX)", "kVA", number),
        ("1-1:31.4.0", "Current limits import/export", "A", ObisKind.LIMITS),
        ("1-1:34.4.0", "Current limits import/export", "A", ObisKind.LIMITS),
        ("1-0:9.7.0", "Apparent power import (S+)", "kVA", number),
        ("1-0:10.7.0", "Apparent power export (S-)", "kVA", number),
        ("0-0:96.3.10", "Breaker state", None, number),
        ("0-1:96.3.10", "Relay 1 state", None, number),
        ("0-2:96.3.10", "Relay 2 state", None, number),
        ("0-0:96.7.21", "Power failures", None, number),
        ("0-0:96.7.9", "Long power failures", None, number),
        ("1-0:32.32.0", "Voltage sags L1", None, number),
        ("1-0:52.32.0", "Voltage sags L2", None, number),
        ("1-0:72.32.0", "Voltage sags L3", None, number),
        ("1-0:32.36.0", "Voltage swells L1", None, number),
        ("1-0:52.36.0", "Voltage swells L2", None, number),
        ("1-0:72.36.0", "Voltage swells L3", None, number),
        ("0-0:96.13.0", "Message", None, ObisKind.TEXT),
        ("0-0:96.13.x", "Message channel x", None, ObisKind.TEXT),
        ("1-0:32.7.0", "Voltage L1", "V", number),
        ("1-0:52.7.0", "Voltage L2", "V", number),
        ("1-0:72.7.0", "Voltage L3", "V", number),
        ("1-0:31.7.0", "Current L1", "A", number),
        ("1-0:51.7.0", "Current L2", "A", number),
        ("1-0:71.7.0", "Current L3", "A", number),
        ("1-0:21.7.0", "Active power import L1", "kW", number),
        ("1-0:41.7.0", "Active power import L2", "kW", number),
        ("1-0:61.7.0", "Active power import L3", "kW", number),
        ("1-0:22.7.0", "Active power export L1", "kW", number),
        ("1-0:42.7.0", "Active power export L2", "kW", number),
        ("1-0:62.7.0", "Active power export L3", "kW", number),
        ("1-0:23.7.0", "Reactive power import L1", "kvar", number),
        ("1-0:43.7.0", "Reactive power import L2", "kvar", number),
        ("1-0:63.7.0", "Reactive power import L3", "kvar", number),
        ("1-0:24.7.0", "Reactive power export L1", "kvar", number),
        ("1-0:44.7.0", "Reactive power export L2", "kvar", number),
        ("1-0:64.7.0", "Reactive power export L3", "kvar", number),
        ("0-x:24.1.0", "M-Bus device type", None, number),
        ("0-x:96.1.0", "M-Bus equipment identifier", None, ObisKind.TEXT),
        ("0-x:96.1.1", "M-Bus equipment identifier", None, ObisKind.TEXT),
        ("0-x:24.2.1", "M-Bus last reading", None, ObisKind.MBUS_READING),
        ("0-x:24.2.3", "M-Bus last reading", None, ObisKind.MBUS_READING),
        ("0-x:24.4.0", "M-Bus valve position", None, number),
        # Common DSMR objects of other countries.
        ("0-0:96.1.1", "Equipment identifier", None, ObisKind.TEXT),
        ("0-0:96.1.4", "Version information", None, ObisKind.VERSION),
        ("1-0:1.8.1", "Energy imported tariff 1", "kWh", number),
        ("1-0:1.8.2", "Energy imported tariff 2", "kWh", number),
        ("1-0:2.8.1", "Energy exported tariff 1", "kWh", number),
        ("1-0:2.8.2", "Energy exported tariff 2", "kWh", number),
        ("0-0:96.14.0", "Tariff indicator", None, number),
        ("0-0:96.13.1", "Message code", None, ObisKind.TEXT),
        ("1-0:99.97.0", "Power failure event log", None, ObisKind.FAILURE_LOG),
        ("1-0:1.4.0", "Current average demand", "kW", number),
        ("1-0:1.6.0", "Maximum demand this month", "kW", ObisKind.MBUS_READING),
        ("1-0:13.7.0", "Power factor", None, number),
        ("1-0:14.7.0", "Frequency", "Hz", number),
    ]
    return {obis: ObisInfo(obis, name, unit, kind) for obis, name, unit, kind in rows}


OBIS_CATALOG: dict[str, ObisInfo] = _entries()


def generic_code(obis: str) -> str:
    """The catalog code of a concrete code: ``0-2:24.2.1`` -> ``0-x:24.2.1``."""
    if obis.startswith("0-0:96.13.") and obis not in {"0-0:96.13.0", "0-0:96.13.1"}:
        return "0-0:96.13.x"
    if obis.startswith("0-") and obis[2:3] in "123456789" and obis[3:4] == ":":
        generic = "0-x" + obis[3:]
        if generic in OBIS_CATALOG:
            return generic
    return obis


def describe(obis: str) -> ObisInfo | None:
    """The catalog entry of a concrete OBIS code, or None for a code the catalog lacks."""
    return OBIS_CATALOG.get(obis) or OBIS_CATALOG.get(generic_code(obis))


def mbus_channel(obis: str) -> int | None:
    """The M-Bus channel (1-4) of an M-Bus object, else None."""
    return int(obis[2]) if generic_code(obis).startswith("0-x:") else None


def display_name(obis: str) -> str | None:
    """The catalog name of a concrete code, its channel filled in ("Message channel 2")."""
    info = describe(obis)
    if info is None:
        return None
    generic = generic_code(obis)
    if generic == obis:
        return info.name
    channel = mbus_channel(obis) or obis.rpartition(".")[2]
    name = info.name.replace("channel x", f"channel {channel}")
    return name if name != info.name else f"{name} (channel {channel})"
