"""Repair issues of an entry (Settings > System > Repairs): raised and cleared where detected.

Every issue belongs to one entry: its id is its translation key and the entry id, and its data
names both, so that repairs.py finds the flow that fixes it and the entry to fix. Adding an
issue: a key below, a function that raises it, its strings under "issues" in every translation
file, and, when the user can fix it in a form, a flow in repairs.py's FIX_FLOWS (otherwise the
issue only explains). Nothing here imports the code that raises issues, so any module may.
"""

from __future__ import annotations

from typing import Final

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir

from .const import DOCUMENTATION, DOMAIN, INTEGRITY_SECTION, TROUBLESHOOTING_TOTALS

# A year without published grid rates, and no rates of the user's in the options.
MISSING_RATES: Final = "missing_rates"
# No authentication key explains the meter's tags: its telegrams rest on their CRC alone.
CRC_ONLY: Final = "crc_only"
# An energy total held above the meter (by an earlier run's store) follows the meter again.
TOTAL_RE_ANCHORED: Final = "total_re_anchored"
# Only another meter's telegrams arrive on the entry's connection: exchanged (a plaintext meter,
# whose new telegrams fail no key check), or the cable moved to another meter.
OTHER_METER: Final = "other_meter"
# The issue data key naming the other meter's serial number.
DATA_SERIAL: Final = "serial"

# The keys of the issue data.
DATA_ISSUE: Final = "issue"
DATA_ENTRY_ID: Final = "entry_id"


def issue_id(key: str, entry_id: str) -> str:
    """The issue registry id of an entry's issue."""
    return f"{key}_{entry_id}"


def _data(key: str, entry: ConfigEntry) -> dict[str, str | int | float | None]:
    return {DATA_ISSUE: key, DATA_ENTRY_ID: entry.entry_id}


@callback
def async_clear_issue(hass: HomeAssistant, entry: ConfigEntry, key: str) -> None:
    """Remove an entry's issue (nothing happens if it is not raised)."""
    ir.async_delete_issue(hass, DOMAIN, issue_id(key, entry.entry_id))


@callback
def async_raise_missing_rates(
    hass: HomeAssistant, entry: ConfigEntry, year: int, published_year: int
) -> None:
    """Ask for the grid rates of ``year``, priced meanwhile at those of ``published_year``."""
    ir.async_create_issue(
        hass,
        DOMAIN,
        issue_id(MISSING_RATES, entry.entry_id),
        data=_data(MISSING_RATES, entry),
        is_fixable=True,
        severity=ir.IssueSeverity.WARNING,
        translation_key=MISSING_RATES,
        translation_placeholders={
            "title": entry.title,
            "year": str(year),
            "published_year": str(published_year),
        },
    )


@callback
def async_raise_crc_only(hass: HomeAssistant, entry: ConfigEntry) -> None:
    """Say that the entry's telegrams are decrypted and CRC-checked, but not authenticated."""
    ir.async_create_issue(
        hass,
        DOMAIN,
        issue_id(CRC_ONLY, entry.entry_id),
        data=_data(CRC_ONLY, entry),
        is_fixable=False,
        severity=ir.IssueSeverity.WARNING,
        learn_more_url=f"{DOCUMENTATION}#{INTEGRITY_SECTION}",
        translation_key=CRC_ONLY,
        translation_placeholders={"title": entry.title},
    )


@callback
def async_raise_total_re_anchored(
    hass: HomeAssistant, entry: ConfigEntry, register: str, held: str, reading: str
) -> None:
    """Tell how to fix the statistics of a total that was held and follows the meter again.

    One issue per register; it stays (persistent) until the user dismisses it.
    """
    ir.async_create_issue(
        hass,
        DOMAIN,
        issue_id(f"{TOTAL_RE_ANCHORED}_{register}", entry.entry_id),
        data=_data(TOTAL_RE_ANCHORED, entry),
        is_fixable=False,
        is_persistent=True,
        severity=ir.IssueSeverity.WARNING,
        learn_more_url=f"{DOCUMENTATION}#{TROUBLESHOOTING_TOTALS}",
        translation_key=TOTAL_RE_ANCHORED,
        translation_placeholders={
            "title": entry.title,
            "register": register,
            "held": held,
            "reading": reading,
        },
    )


@callback
def async_raise_other_meter(hass: HomeAssistant, entry: ConfigEntry, serial: str) -> None:
    """Offer to move the entry to the meter that now answers on its connection."""
    ir.async_create_issue(
        hass,
        DOMAIN,
        issue_id(OTHER_METER, entry.entry_id),
        data={**_data(OTHER_METER, entry), DATA_SERIAL: serial},
        is_fixable=True,
        severity=ir.IssueSeverity.WARNING,
        translation_key=OTHER_METER,
        translation_placeholders={
            "title": entry.title,
            "old": str(entry.unique_id),
            "new": serial,
        },
    )
