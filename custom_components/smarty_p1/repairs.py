"""The flows that fix this integration's repair issues (issues.py raises them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from homeassistant.components.repairs import RepairsFlow, RepairsFlowResult
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir

from .config_flow import RATE_SELECTOR
from .const import CONF_RATE_NORMAL, CONF_RATE_OVERRUN, DOMAIN
from .exchange import async_exchange_meter
from .issues import DATA_ENTRY_ID, DATA_ISSUE, DATA_SERIAL, MISSING_RATES, OTHER_METER
from .validation import vol

RATES_SCHEMA = vol.Schema(
    {vol.Required(CONF_RATE_NORMAL): RATE_SELECTOR, vol.Required(CONF_RATE_OVERRUN): RATE_SELECTOR}
)


class EntryRepairFlow(RepairsFlow):
    """A fix flow for an issue of one entry (the entry may be deleted while the flow is open)."""

    def __init__(self, entry_id: str) -> None:
        self.entry_id = entry_id

    def placeholders(self) -> dict[str, str] | None:
        """The issue's placeholders, for the form's description."""
        issue = ir.async_get(self.hass).async_get_issue(DOMAIN, self.issue_id)
        return None if issue is None else issue.translation_placeholders


class MissingRatesFlow(EntryRepairFlow):
    """Asks for the grid rates of a year that has none published, into the entry's options."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> RepairsFlowResult:
        """Show the form (what older releases pass in here is the issue id, not an answer)."""
        return await self.async_step_rates()

    async def async_step_rates(self, user_input: dict[str, Any] | None = None) -> RepairsFlowResult:
        """Both rates in ct/kWh; the running entry prices the next quarters with them."""
        entry = self.hass.config_entries.async_get_entry(self.entry_id)
        if entry is None:
            return self.async_abort(reason="entry_removed")
        if user_input is not None:
            rates = {key: float(user_input[key]) for key in (CONF_RATE_NORMAL, CONF_RATE_OVERRUN)}
            self.hass.config_entries.async_update_entry(entry, options={**entry.options, **rates})
            return self.async_create_entry(data={})
        return self.async_show_form(
            step_id="rates",
            data_schema=self.add_suggested_values_to_schema(RATES_SCHEMA, entry.options),
            description_placeholders=self.placeholders(),
        )


class OtherMeterFlow(EntryRepairFlow):
    """Moves the entry to the meter that answers on its connection now (a meter exchange)."""

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> RepairsFlowResult:
        """Ask first: it may be a cable plugged into the wrong meter."""
        return await self.async_step_confirm()

    async def async_step_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> RepairsFlowResult:
        """Confirmed: the same entities and history, the new meter's values from now on."""
        entry = self.hass.config_entries.async_get_entry(self.entry_id)
        issue = ir.async_get(self.hass).async_get_issue(DOMAIN, self.issue_id)
        serial = None if issue is None or issue.data is None else issue.data.get(DATA_SERIAL)
        if entry is None or not isinstance(serial, str):
            return self.async_abort(reason="entry_removed")
        if user_input is not None:
            await async_exchange_meter(self.hass, entry, serial)
            return self.async_create_entry(data={})
        return self.async_show_form(
            step_id="confirm",
            data_schema=vol.Schema({}),
            description_placeholders=self.placeholders(),
        )


# The issues (by translation key) that a form fixes.
FIX_FLOWS: Final[Mapping[str, Callable[[str], RepairsFlow]]] = {
    MISSING_RATES: MissingRatesFlow,
    OTHER_METER: OtherMeterFlow,
}


async def async_create_fix_flow(
    hass: HomeAssistant, issue_id: str, data: dict[str, str | int | float | None] | None
) -> RepairsFlow:
    """The flow for a fixable issue, from the issue's data (see issues.py)."""
    data = data or {}
    flow, entry_id = FIX_FLOWS.get(str(data.get(DATA_ISSUE))), data.get(DATA_ENTRY_ID)
    if flow is None or not isinstance(entry_id, str):
        raise ValueError(f"{DOMAIN} has no fix for the issue {issue_id}")
    return flow(entry_id)
