"""The reference-power tariff of an entry: fed by the coordinator, stored across restarts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from homeassistant.config_entries import (
    SIGNAL_CONFIG_ENTRY_CHANGED,
    ConfigEntry,
    ConfigEntryChange,
)
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers.dispatcher import async_dispatcher_connect
from homeassistant.helpers.storage import Store

from .const import CONF_RATE_NORMAL, CONF_RATE_OVERRUN, CONF_REFERENCE_POWER, DOMAIN, LOGGER
from .issues import MISSING_RATES, async_clear_issue, async_raise_missing_rates
from .p1 import CosemObject
from .tariff import Quarter, QuarterHourTracker, RatePlan

STORAGE_VERSION: Final = 1
# Written a few seconds after a quarter completes (and when the entry unloads): a crash loses
# at most the quarter in progress, which the next start reports as incomplete anyway.
SAVE_DELAY: Final = 5.0


def _store(hass: HomeAssistant, entry: ConfigEntry) -> Store[dict[str, Any]]:
    return Store(hass, STORAGE_VERSION, f"{DOMAIN}.{entry.entry_id}.tariff")


async def async_remove_store(hass: HomeAssistant, entry: ConfigEntry) -> None:
    """Forget the stored tariff state of a removed entry."""
    await _store(hass, entry).async_remove()


def plan_from_options(options: Mapping[str, Any]) -> RatePlan:
    """The published rates with the user's (ct/kWh in the options, EUR/kWh in the plan)."""
    normal, overrun = options.get(CONF_RATE_NORMAL), options.get(CONF_RATE_OVERRUN)
    return RatePlan(
        normal=None if normal is None else normal / 100,
        overrun=None if overrun is None else overrun / 100,
    )


class TariffRuntime:
    """The tracker of an entry whose reference power is set; see tariff.py for the semantics."""

    def __init__(self, hass: HomeAssistant, entry: ConfigEntry, reference: float) -> None:
        self._hass = hass
        self._entry = entry
        self._options: Mapping[str, Any] = entry.options
        self.tracker = QuarterHourTracker(reference, plan=plan_from_options(entry.options))
        self._store = _store(hass, entry)
        self._listeners: list[Callable[[Quarter], None]] = []
        # The quarter and plan the missing-rates issue was last judged for.
        self._judged: tuple[datetime, RatePlan] | None = None
        # Changed options apply at once, without a reload: the entry's update listeners are
        # Home Assistant's to reload it (OptionsFlowWithReload), so the change signal it is.
        entry.async_on_unload(
            async_dispatcher_connect(hass, SIGNAL_CONFIG_ENTRY_CHANGED, self._entry_changed)
        )
        # The issue lives while this runtime does: a reload judges again at its first telegram.
        entry.async_on_unload(lambda: async_clear_issue(hass, entry, MISSING_RATES))

    @classmethod
    def for_entry(cls, hass: HomeAssistant, entry: ConfigEntry) -> TariffRuntime | None:
        """The entry's tariff, or None while no reference power is set (the feature is off)."""
        reference = entry.options.get(CONF_REFERENCE_POWER)
        return None if reference is None else cls(hass, entry, float(reference))

    async def async_load(self) -> None:
        """Take back the state of the last run (day and month totals, the quarter in progress)."""
        data = await self._store.async_load()
        if data is not None and not self.tracker.restore(data):
            LOGGER.warning("Ignoring the stored tariff state of %s: unreadable", self._entry.title)

    async def async_save(self) -> None:
        """Write the state now (the entry unloads)."""
        await self._store.async_save(self.tracker.as_dict())

    @callback
    def async_add_overrun_listener(self, listener: Callable[[Quarter], None]) -> CALLBACK_TYPE:
        """Call ``listener`` with every completed quarter that overran; returns the remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @callback
    def feed(self, objects: Mapping[str, CosemObject], received: datetime) -> None:
        """Take a verified telegram's objects (energy registers already held against glitches).

        The meter's clock decides the quarter when the telegram has it: the grid bills by it.
        """
        energy = objects.get("1-0:1.8.0")
        if energy is None or not isinstance(energy.value, Decimal):
            return
        clock = objects.get("0-0:1.0.0")
        moment = (
            clock.value if clock is not None and isinstance(clock.value, datetime) else received
        )
        power = objects.get("1-0:1.7.0")
        kw = power.value if power is not None and isinstance(power.value, Decimal) else None
        tracker = self.tracker
        completed = tracker.feed(moment, energy.value, kw)
        if tracker.quarter_start is not None:
            self._judge_rates(tracker.quarter_start)
        if not completed:
            return
        self._store.async_delay_save(tracker.as_dict, SAVE_DELAY)
        for quarter in completed:
            if quarter.overrun > 0:
                for listener in list(self._listeners):
                    listener(quarter)

    @callback
    def _entry_changed(self, change: ConfigEntryChange, entry: ConfigEntry) -> None:
        """Take the entry's new options: reference power and rates (the totals stay)."""
        if entry is not self._entry or (options := entry.options) is self._options:
            return
        self._options = options
        tracker = self.tracker
        tracker.reference = float(options.get(CONF_REFERENCE_POWER, tracker.reference))
        tracker.plan = plan_from_options(options)
        if tracker.quarter_start is not None:
            self._judge_rates(tracker.quarter_start)

    @callback
    def _judge_rates(self, quarter: datetime) -> None:
        """Ask for the rates of a year the plan has none for; stop asking once it has.

        Judged again only when a quarter starts or the plan changes, not on every telegram.
        """
        tracker = self.tracker
        plan = tracker.plan
        if self._judged == (quarter, plan):
            return
        self._judged = (quarter, plan)
        year = quarter.astimezone(tracker.zone).year
        if (fallback := plan.fallback_year(year)) is not None:
            async_raise_missing_rates(self._hass, self._entry, year, fallback)
        else:
            async_clear_issue(self._hass, self._entry, MISSING_RATES)
