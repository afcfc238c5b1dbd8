"""Config flow of Smarty P1: where the meter is, its key, checked live before anything is saved."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, override

from homeassistant.config_entries import (
    SOURCE_REAUTH,
    SOURCE_RECONFIGURE,
    SOURCE_USER,
    ConfigEntry,
    ConfigEntryState,
    ConfigFlow,
    ConfigFlowResult,
    OptionsFlowWithReload,
)
from homeassistant.const import CONF_DEVICE, CONF_HOST, CONF_PORT
from homeassistant.core import callback
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    SerialPortSelector,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)

from . import const
from . import takeover as dsmr_takeover
from .connection import Endpoint, InvalidKey, KeyRequired, SourceError, probe, source_for
from .const import (
    CONF_AUTH_KEY,
    CONF_CONNECTION_TYPE,
    CONF_DECRYPTION_KEY,
    CONF_MIN_INTERVAL,
    CONF_RATE_NORMAL,
    CONF_RATE_OVERRUN,
    CONF_REBROADCAST_ALL_INTERFACES,
    CONF_REBROADCAST_PORT,
    CONF_REFERENCE_POWER,
    CONF_SERIAL_NUMBER,
    CONF_TOPIC,
    CONF_TOTAL_INTERVAL,
    CONNECTION_MQTT,
    CONNECTION_NETWORK,
    CONNECTION_SERIAL,
    DEFAULT_MIN_INTERVAL,
    DEFAULT_TOTAL_INTERVAL,
    DOMAIN,
    LOGGER,
)
from .coordinator import SmartyConfigEntry
from .exchange import async_exchange_meter
from .p1 import InvalidKeyFormatError, Telegram, normalize_key
from .p1.integrity import FrameAuthenticator
from .rebroadcast import Rebroadcaster, async_port_free, listen_address
from .tariff import REFERENCE_POWERS
from .validation import vol

# An entry in these states holds the port, or is about to grab it again on a retry timer.
_HOLDS_PORT = (ConfigEntryState.LOADED, ConfigEntryState.SETUP_RETRY)
# Probe errors that a key answers: they lead to the key step, not back to the connection form.
_ASK_FOR_KEY = (KeyRequired.error, InvalidKey.error)
# The steps of the first menu (adding) and of the reconfigure menu: how the meter is connected.
# Not "mqtt": that step id is MQTT discovery's.
_CONNECTION_STEPS = ["serial", "network", "mqtt_topic"]
# The steps that ask for the key alone.
_KEY_STEPS = ("key", "reauth_confirm", "takeover_key")

# Home Assistant's serial port selector lists the ports of this machine by their stable
# /dev/serial/by-id names and ESPHome serial proxies, and lets the user type a path instead.
SERIAL_SCHEMA = vol.Schema({vol.Required(CONF_DEVICE): SerialPortSelector()})
_TCP_PORT = NumberSelector(
    NumberSelectorConfig(min=1, max=65535, step=1, mode=NumberSelectorMode.BOX)
)
NETWORK_SCHEMA = vol.Schema(
    {vol.Required(CONF_HOST): TextSelector(), vol.Required(CONF_PORT): _TCP_PORT}
)
MQTT_SCHEMA = vol.Schema({vol.Required(CONF_TOPIC): TextSelector()})
# Each connection step: its form and the connection type it gives.
_CONNECTION_FORMS = {
    "serial": (SERIAL_SCHEMA, CONNECTION_SERIAL),
    "network": (NETWORK_SCHEMA, CONNECTION_NETWORK),
    "mqtt_topic": (MQTT_SCHEMA, CONNECTION_MQTT),
}
KEY_SCHEMA = vol.Schema(
    {
        vol.Required(CONF_DECRYPTION_KEY): TextSelector(
            TextSelectorConfig(type=TextSelectorType.PASSWORD)
        )
    }
)
# The reference power printed on the bill, picked or typed as written there ("12 kW"); only the
# published levels are billed, so any other is refused with a message that lists them (the
# selector's own check, without custom_value, would only show an untranslated schema error).
# Left empty: no tariff.
TARIFF_FIELDS: dict[Any, Any] = {
    vol.Optional(CONF_REFERENCE_POWER): SelectSelector(
        SelectSelectorConfig(
            options=[SelectOptionDict(value=str(kw), label=f"{kw} kW") for kw in REFERENCE_POWERS],
            custom_value=True,
            mode=SelectSelectorMode.DROPDOWN,
        )
    )
}
# What the error of a reference power that is not a published level lists.
_LEVELS = {"levels": ", ".join(str(kw) for kw in REFERENCE_POWERS)}
# A grid rate in ct/kWh, as the bill shows it: the options and the missing-rates repair ask for it.
RATE_SELECTOR = NumberSelector(
    NumberSelectorConfig(
        min=0, max=100, step=0.001, unit_of_measurement="ct/kWh", mode=NumberSelectorMode.BOX
    )
)
TARIFF_SCHEMA = vol.Schema(TARIFF_FIELDS)
_SECONDS = NumberSelector(
    NumberSelectorConfig(
        min=0, max=3600, step=1, unit_of_measurement="s", mode=NumberSelectorMode.BOX
    )
)
OPTIONS_SCHEMA = vol.Schema(
    {
        vol.Required(CONF_MIN_INTERVAL, default=DEFAULT_MIN_INTERVAL): _SECONDS,
        vol.Required(CONF_TOTAL_INTERVAL, default=DEFAULT_TOTAL_INTERVAL): _SECONDS,
        **TARIFF_FIELDS,
        vol.Optional(CONF_RATE_NORMAL): RATE_SELECTOR,
        vol.Optional(CONF_RATE_OVERRUN): RATE_SELECTOR,
        # Empty: no re-broadcast.
        vol.Optional(CONF_REBROADCAST_PORT): _TCP_PORT,
        vol.Optional(CONF_REBROADCAST_ALL_INTERFACES, default=False): BooleanSelector(),
    }
)
# Options that a form's empty field turns off: dropped from the saved options, not kept.
_CLEARABLE_OPTIONS = (
    CONF_REFERENCE_POWER,
    CONF_RATE_NORMAL,
    CONF_RATE_OVERRUN,
    CONF_REBROADCAST_PORT,
    CONF_REBROADCAST_ALL_INTERFACES,
)


class SmartyConfigFlow(ConfigFlow, domain=DOMAIN):
    """Adds a meter (user), replaces its key (reauth) or moves it (reconfigure).

    Every answer is checked on a live telegram (the probe, shown as progress: it may take 25 s).
    When another meter answers for an entry, the old one may have been exchanged: the flow
    offers to move the entry to it.
    """

    VERSION = 1
    # 1.2: value sensors have unique ids of their code and role (migration.py).
    MINOR_VERSION = 2

    def __init__(self) -> None:
        """Start with nothing known about the meter."""
        self._connection: dict[str, Any] = {}
        # The key to probe with, as stored: 32 upper-case hex digits, None for a plaintext meter.
        self._key: str | None = None
        # What the probe found: the data of a new entry (connection, key, serial number).
        self._data: dict[str, Any] = {}
        # The form the probe's answer goes back to when it is an error.
        self._asked_from = "user"
        # The probe: the serial number of the meter that answered, or a SourceError.
        self._probe: asyncio.Task[str] | None = None
        # The entry being changed, unloaded so that the probe can have its port; set up again
        # when the probe is over, unless it is reloaded with what the flow found.
        self._released: ConfigEntry | None = None
        # What the probe learned: the telegram, and the meter's own authentication key if it has
        # one (a secret, stored with the entry so that it verifies from the first frame).
        self._telegram: Telegram | None = None
        self._learned: dict[str, Any] | None = None
        # A dsmr entry of the same port or meter, offered for taking over; whether it was
        # reading when released for the probe; the take-over under way (planned, not finished).
        self._dsmr: ConfigEntry | None = None
        self._dsmr_was_reading = False
        self._takeover: dsmr_takeover.Takeover | None = None

    @staticmethod
    @callback
    @override
    def async_get_options_flow(config_entry: SmartyConfigEntry) -> SmartyOptionsFlow:
        """The options of an entry."""
        return SmartyOptionsFlow()

    @override
    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask how the meter is connected."""
        return self.async_show_menu(step_id="user", menu_options=_CONNECTION_STEPS)

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Move a meter to another port or bridge; its key is tried first, asked if it fails."""
        entry = self._get_reconfigure_entry()
        self._connection = _connection_data(entry.data)
        self._key = entry.data.get(CONF_DECRYPTION_KEY)
        return self.async_show_menu(step_id="reconfigure", menu_options=_CONNECTION_STEPS)

    async def async_step_reauth(self, entry_data: Mapping[str, Any]) -> ConfigFlowResult:
        """The meter no longer verifies with the stored key (a meter exchange or a new key)."""
        self._connection = _connection_data(entry_data)
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for the new key only: the connection stays as it is."""
        return await self._async_key_step("reauth_confirm", user_input)

    async def async_step_serial(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """The serial port: a USB P1 cable, an ESPHome serial proxy, or a path typed in."""
        return await self._async_connection_step("serial", user_input)

    async def async_step_network(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Host and port of a network bridge (ser2net, an ESP32 P1 dongle in raw mode)."""
        return await self._async_connection_step("network", user_input)

    async def async_step_mqtt_topic(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The MQTT topic on which a dongle publishes the meter's raw frames."""
        return await self._async_connection_step("mqtt_topic", user_input)

    async def async_step_key(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for the decryption key of an encrypted meter."""
        return await self._async_key_step("key", user_input)

    async def async_step_probe(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Wait for the probe's telegram; the dialog says so, and can be closed meanwhile."""
        assert self._probe is not None, "a probe was started"
        if self._probe.done():
            return self.async_show_progress_done(next_step_id="probe_done")
        return self.async_show_progress(
            step_id="probe",
            progress_action="probe",
            progress_task=self._probe,
            description_placeholders={
                "endpoint": Endpoint.from_data(self._connection).address,
                "timeout": f"{const.PROBE_TIMEOUT:g}",
            },
        )

    async def async_step_probe_done(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """What the probe found decides the next step."""
        probe_task, self._probe = self._probe, None
        assert probe_task is not None, "a probe has ended"
        try:
            serial = probe_task.result()
        except SourceError as err:
            await self._async_give_back()
            return await self._async_probe_failed(err.error)
        self._data = {
            **self._connection,
            CONF_DECRYPTION_KEY: self._key,
            CONF_SERIAL_NUMBER: serial,
            **({CONF_AUTH_KEY: self._learned} if self._learned else {}),
        }
        if self._asked_from == "takeover_key":
            return await self._async_takeover_probed(serial)
        entry = self._changed_entry()
        if entry is None:
            return await self._async_new_meter(serial)
        await self.async_set_unique_id(serial)
        if serial != entry.unique_id:
            await self._async_give_back()
            if self.hass.config_entries.async_entry_for_domain_unique_id(DOMAIN, serial) is None:
                return await self.async_step_exchange()
        # Only the meter of another entry is left to refuse.
        self._abort_if_unique_id_mismatch(
            reason="wrong_meter", description_placeholders={"serial": serial}
        )
        self._released = None
        return self.async_update_reload_and_abort(entry, data_updates=self._updates_for(entry))

    async def async_step_exchange(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Another meter answered for this entry: offer to move the entry to it."""
        return self.async_show_menu(
            step_id="exchange",
            menu_options=["exchange_confirm", "exchange_decline"],
            description_placeholders=self._exchanged_serials(),
        )

    async def async_step_exchange_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The meter was exchanged: the entry, its entities and devices move to the new one."""
        serials = self._exchanged_serials()
        entry = self._changed_entry()
        assert entry is not None, "an exchange changes an entry"
        await async_exchange_meter(self.hass, entry, serials["new"], self._updates_for(entry))
        return self.async_abort(
            reason="meter_exchanged",
            description_placeholders={"old": serials["old"], "new": serials["new"]},
        )

    async def async_step_exchange_decline(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Not an exchange: the entry stays as it was (it reads its meter again already)."""
        return self.async_abort(
            reason="exchange_declined", description_placeholders=self._exchanged_serials()
        )

    async def async_step_tariff(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Offer the reference-power tariff (optional; also in the options later)."""
        errors: dict[str, str] = {}
        if user_input is not None:
            try:
                options = _tariff_options(user_input)
            except ValueError:
                errors[CONF_REFERENCE_POWER] = "invalid_reference_power"
            else:
                title = f"Smarty {self._data[CONF_SERIAL_NUMBER]}"
                return self.async_create_entry(title=title, data=self._data, options=options)
        return self.async_show_form(
            step_id="tariff",
            data_schema=self.add_suggested_values_to_schema(TARIFF_SCHEMA, user_input or {}),
            errors=errors,
            description_placeholders=_LEVELS,
        )

    # --- Taking over a dsmr entry (takeover.py) ---

    async def async_step_dsmr_port(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Offer to take over the dsmr entry that reads the chosen port (one port, one reader)."""
        return self._dsmr_menu("dsmr_port", ["takeover", "dsmr_keep"])

    async def async_step_dsmr_meter(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Offer to take over the dsmr entry of this meter, or to add the meter next to it."""
        return self._dsmr_menu("dsmr_meter", ["takeover", "tariff"])

    def _dsmr_menu(self, step_id: str, options: list[str]) -> ConfigFlowResult:
        assert self._dsmr is not None
        return self.async_show_menu(
            step_id=step_id,
            menu_options=options,
            description_placeholders=_dsmr_placeholders(self._dsmr),
        )

    async def async_step_dsmr_keep(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Keep the dsmr entry: the port has one reader, so the flow ends here."""
        assert self._dsmr is not None
        return self.async_abort(
            reason="dsmr_reads_port", description_placeholders=_dsmr_placeholders(self._dsmr)
        )

    async def async_step_takeover(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Take the dsmr entry over: on its port with its key first (the same meter)."""
        assert self._dsmr is not None
        if self._data:
            # The meter answered on another path already (the same meter by its serial).
            was_reading = await dsmr_takeover.async_release(self.hass, self._dsmr)
            return await self._async_take_over(was_reading)
        self._key = dsmr_takeover.stored_key(self._dsmr)
        return await self._async_takeover_probe()

    async def async_step_takeover_key(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The dsmr entry's key did not verify (or the check failed): a key, and a new try."""
        return await self._async_key_step("takeover_key", user_input)

    async def _async_takeover_probe(self) -> ConfigFlowResult:
        """Free the port of the dsmr entry and read the meter there (its answer comes back to
        the take-over's key step)."""
        assert self._dsmr is not None
        self._dsmr_was_reading = await dsmr_takeover.async_release(self.hass, self._dsmr)
        return await self._async_start_probe("takeover_key")

    async def _async_takeover_probed(self, serial: str) -> ConfigFlowResult:
        """The meter answered on the dsmr entry's port: our entry, unless it is not dsmr's."""
        dsmr = self._dsmr
        assert dsmr is not None
        if await self.async_set_unique_id(serial) is not None:
            await dsmr_takeover.async_restore(self.hass, dsmr, was_reading=self._dsmr_was_reading)
            self._abort_if_unique_id_configured()
        if dsmr_takeover.is_other_meter(dsmr, serial):
            # Its history is another meter's registers: continuing it would be a jump.
            await dsmr_takeover.async_restore(self.hass, dsmr, was_reading=self._dsmr_was_reading)
            return self.async_abort(
                reason="dsmr_other_meter", description_placeholders={"serial": serial}
            )
        return await self._async_take_over(self._dsmr_was_reading)

    async def _async_take_over(self, was_reading: bool) -> ConfigFlowResult:
        """Create our entry with the plan of what moves; the dsmr entry goes once it exists."""
        assert self._dsmr is not None
        assert self._telegram is not None
        takeover = dsmr_takeover.plan(
            self.hass, self._dsmr, self._telegram, was_reading=was_reading
        )
        dsmr_takeover.async_plan(self.hass, takeover)
        # From here on the plan knows whether dsmr was reading, and sets it up again if needed.
        self._takeover, self._dsmr_was_reading = takeover, False
        title = f"Smarty {self._data[CONF_SERIAL_NUMBER]}"
        return self.async_create_entry(title=title, data=self._data)

    @override
    async def async_on_create_entry(self, result: ConfigFlowResult) -> ConfigFlowResult:
        """Our entry exists (and took over the entities): remove the dsmr entry; say what moved."""
        if (takeover := self._takeover) is None:
            return result
        self._takeover = None
        if await dsmr_takeover.async_abandon(self.hass, takeover):
            # Our setup did not carry the plan out: nothing moved, so dsmr stays as it was.
            return result
        result["description"] = "takeover"
        result["description_placeholders"] = await dsmr_takeover.async_finish(self.hass, takeover)
        return result

    @callback
    @override
    def async_remove(self) -> None:
        """The flow is gone, maybe closed while probing: the entry gets its port back, and a
        dsmr entry not taken over runs again as it did."""
        if self._released is not None:
            self.hass.async_create_task(
                self._async_give_back(), f"{DOMAIN} set up {self._released.title} again"
            )
        if (takeover := self._takeover) is not None:
            self.hass.async_create_task(
                dsmr_takeover.async_abandon(self.hass, takeover), eager_start=True
            )
        elif self._dsmr is not None and self._dsmr_was_reading:
            self.hass.async_create_task(
                self._async_restore_dsmr(), f"{DOMAIN} set up {self._dsmr.title} again"
            )

    async def _async_restore_dsmr(self) -> None:
        """The dsmr entry, released for a probe that did not lead to a take-over, again."""
        dsmr, self._dsmr = self._dsmr, None
        if dsmr is None:
            return
        if self._probe is not None:
            # The cancelled probe is closing the port.
            await asyncio.wait([self._probe])
        await dsmr_takeover.async_restore(self.hass, dsmr, was_reading=self._dsmr_was_reading)
        self._dsmr_was_reading = False

    async def _async_key_step(
        self, step_id: str, user_input: dict[str, Any] | None
    ) -> ConfigFlowResult:
        """A key form; a well-formed key is probed."""
        errors: dict[str, str] = {}
        if user_input is not None:
            try:
                self._key = normalize_key(user_input[CONF_DECRYPTION_KEY])
            except InvalidKeyFormatError:
                errors = {CONF_DECRYPTION_KEY: "invalid_key_format"}
            else:
                if step_id == "takeover_key":
                    return await self._async_takeover_probe()
                return await self._async_start_probe(step_id)
        return self._show_key_form(step_id, errors)

    def _show_key_form(self, step_id: str, errors: dict[str, str]) -> ConfigFlowResult:
        # The key is never shown back in the form: it is a secret.
        return self.async_show_form(step_id=step_id, data_schema=KEY_SCHEMA, errors=errors)

    async def _async_connection_step(
        self, step_id: str, user_input: dict[str, Any] | None
    ) -> ConfigFlowResult:
        """A connection form; what it gives is probed."""
        if user_input is None:
            return self._show_connection_form(step_id, {})
        connection_type = _CONNECTION_FORMS[step_id][1]
        return await self._async_endpoint_chosen(step_id, _connection(connection_type, user_input))

    def _show_connection_form(self, step_id: str, errors: dict[str, str]) -> ConfigFlowResult:
        """A connection form showing what was tried last, or the entry's connection."""
        schema, connection_type = _CONNECTION_FORMS[step_id]
        same_type = self._connection.get(CONF_CONNECTION_TYPE) == connection_type
        return self.async_show_form(
            step_id=step_id,
            data_schema=self.add_suggested_values_to_schema(
                schema, self._connection if same_type else {}
            ),
            errors=errors,
        )

    async def _async_endpoint_chosen(
        self, step_id: str, connection: dict[str, Any]
    ) -> ConfigFlowResult:
        """The one place where an endpoint the user chose is checked before it is probed."""
        if self.source not in (SOURCE_REAUTH, SOURCE_RECONFIGURE):
            # That port or bridge already feeds an entry, which holds it: probing would fail.
            self._async_abort_entries_match(
                {key: value for key, value in connection.items() if key != CONF_CONNECTION_TYPE}
            )
        self._connection = connection
        # A dsmr entry reads this port: probing would get half its bytes (one port, one reader).
        if (dsmr := await dsmr_takeover.async_entry_on(self.hass, connection)) is not None:
            if self.source != SOURCE_USER:
                return self._show_connection_form(step_id, {"base": "dsmr_reads_port"})
            self._dsmr = dsmr
            return await self.async_step_dsmr_port()
        return await self._async_start_probe(step_id)

    async def _async_start_probe(self, step_id: str) -> ConfigFlowResult:
        """Read a telegram from the endpoint with the key; its answer goes back to step_id."""
        self._asked_from = step_id
        entry = self._changed_entry()
        if entry is not None and entry.state in _HOLDS_PORT:
            # A serial port or a single-client ser2net bridge gives its bytes to one reader only.
            # Set up again afterwards (not reloaded: a reload aborts this very reauth flow).
            await self.hass.config_entries.async_unload(entry.entry_id)
            self._released = entry
        self._probe = self.hass.async_create_task(
            self._async_read_serial(), f"{DOMAIN} probe of {Endpoint.from_data(self._connection)}"
        )
        return await self.async_step_probe()

    async def _async_probe_failed(self, error: str) -> ConfigFlowResult:
        """The form the probe was asked from, again, with the error; or the key step."""
        step_id = self._asked_from
        if step_id == "takeover_key" and self._dsmr is not None:
            # Nothing taken over: dsmr reads its port again while the user looks at the error.
            await dsmr_takeover.async_restore(
                self.hass, self._dsmr, was_reading=self._dsmr_was_reading
            )
            self._dsmr_was_reading = False
        if step_id in _KEY_STEPS:
            errors = {"base": error}
            return self._show_key_form(step_id, errors)
        if error in _ASK_FOR_KEY:
            # An encrypted meter, or a stored key that no longer verifies on it.
            errors = {"base": InvalidKey.error} if self._key is not None else {}
            return self._show_key_form("key", errors)
        errors = {"base": error}
        return self._show_connection_form(step_id, errors)

    async def _async_new_meter(self, serial: str) -> ConfigFlowResult:
        """A meter to add; one that has an entry already is moved to where it answered now."""
        existing = await self.async_set_unique_id(serial)
        if existing is not None:
            # The USB cable moved, the bridge got a new address: the entry follows its meter,
            # with the key that was just checked.
            self._abort_if_unique_id_configured(
                updates=self._updates_for(existing),
                error="connection_updated",
                description_placeholders={"endpoint": Endpoint.from_data(self._connection).address},
            )
        # A dsmr entry of this meter, reading it elsewhere.
        if (dsmr := dsmr_takeover.entry_of_meter(self.hass, serial)) is not None:
            self._dsmr = dsmr
            return await self.async_step_dsmr_meter()
        return await self.async_step_tariff()

    def _updates_for(self, entry: ConfigEntry) -> dict[str, Any]:
        """What the probe found, as changes to an entry's data (the rest of it stays).

        Fields of the entry's old connection that the new one has not are cleared (None):
        Home Assistant's updates can change and add keys, not remove them.
        """
        updates = {**dict.fromkeys(_connection_data(entry.data)), **self._data}
        stored_key = entry.data.get(CONF_DECRYPTION_KEY)
        if (
            entry.data.get(CONF_AUTH_KEY)
            and CONF_AUTH_KEY not in updates
            and (normalize_key(stored_key) if stored_key else None) != self._key
        ):
            # A new key: what was learned under the old one does not hold.
            updates[CONF_AUTH_KEY] = None
        return updates

    def _changed_entry(self) -> ConfigEntry | None:
        if self.source == SOURCE_REAUTH:
            return self._get_reauth_entry()
        if self.source == SOURCE_RECONFIGURE:
            return self._get_reconfigure_entry()
        return None

    def _exchanged_serials(self) -> dict[str, str]:
        """The serial numbers of the entry's meter and of the one that answered instead."""
        entry = self._changed_entry()
        assert entry is not None, "an exchange changes an entry"
        return {"old": str(entry.unique_id), "new": str(self.unique_id)}

    async def _async_give_back(self) -> None:
        """Set the released entry up again, once the probe has let go of the port."""
        entry, self._released = self._released, None
        if entry is None:
            return
        if self._probe is not None:
            # The dialog was closed while probing: the cancelled probe is closing the port.
            await asyncio.wait([self._probe])
        # Unless it was removed or set up by someone else meanwhile.
        if (
            self.hass.config_entries.async_get_entry(entry.entry_id) is entry
            and entry.state is ConfigEntryState.NOT_LOADED
        ):
            await self.hass.config_entries.async_setup(entry.entry_id)

    async def _async_read_serial(self) -> str:
        """The serial number in the first telegram that verifies; SourceError otherwise."""
        endpoint = Endpoint.from_data(self._connection)
        authenticator = FrameAuthenticator(bytes.fromhex(self._key)) if self._key else None
        try:
            telegram = await probe(
                source_for(self.hass, endpoint), None, authenticator=authenticator
            )
        except SourceError as err:
            LOGGER.debug("Probe of %s failed: %s", endpoint, err)
            raise
        except Exception as err:
            LOGGER.exception("Unexpected error while probing %s", endpoint)
            raise SourceError from err
        if telegram.serial is None:
            raise NoSerialError
        self._telegram = telegram
        learned = authenticator.learned_key if authenticator else None
        self._learned = None if learned is None else learned.as_dict()
        return telegram.serial


class NoSerialError(SourceError):
    """A telegram arrived but without the serial number that identifies the meter."""

    error = "no_serial"


def _dsmr_placeholders(entry: ConfigEntry) -> dict[str, str]:
    """What the take-over texts say about a dsmr entry."""
    return {"integration": entry.domain, "title": entry.title}


def _connection(connection_type: str, user_input: Mapping[str, Any]) -> dict[str, Any]:
    """The connection (entry data without key and serial) that a connection form gave."""
    if connection_type == CONNECTION_NETWORK:
        return {
            CONF_CONNECTION_TYPE: CONNECTION_NETWORK,
            CONF_HOST: user_input[CONF_HOST].strip(),
            CONF_PORT: int(user_input[CONF_PORT]),
        }
    if connection_type == CONNECTION_MQTT:
        return {CONF_CONNECTION_TYPE: CONNECTION_MQTT, CONF_TOPIC: user_input[CONF_TOPIC].strip()}
    return {CONF_CONNECTION_TYPE: CONNECTION_SERIAL, CONF_DEVICE: user_input[CONF_DEVICE].strip()}


def _tariff_options(user_input: Mapping[str, Any]) -> dict[str, float]:
    """The tariff options a form gave; ValueError for a reference power that is not a published
    level (a typo, or one stored by an earlier version that took any value)."""
    options: dict[str, float] = {}
    reference = str(user_input.get(CONF_REFERENCE_POWER) or "").strip()
    if reference:
        # Typed in as on the bill: "12", "12 kW", "12,0".
        value = float(reference.lower().removesuffix("kw").strip().replace(",", "."))
        if value not in REFERENCE_POWERS:
            raise ValueError(reference)
        options[CONF_REFERENCE_POWER] = value
    for key in (CONF_RATE_NORMAL, CONF_RATE_OVERRUN):
        if user_input.get(key) is not None:
            options[key] = float(user_input[key])
    return options


def _rebroadcast_options(user_input: Mapping[str, Any]) -> dict[str, Any]:
    """The re-broadcast options a form gave: none when its port is left empty."""
    if user_input.get(CONF_REBROADCAST_PORT) is None:
        return {}
    return {
        CONF_REBROADCAST_PORT: int(user_input[CONF_REBROADCAST_PORT]),
        CONF_REBROADCAST_ALL_INTERFACES: bool(user_input.get(CONF_REBROADCAST_ALL_INTERFACES)),
    }


def _connection_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """The connection part of entry data (no key, no serial); cleared fields left out."""
    keys = (CONF_CONNECTION_TYPE, CONF_DEVICE, CONF_HOST, CONF_PORT, CONF_TOPIC)
    return {key: data[key] for key in keys if data.get(key) is not None}


class SmartyOptionsFlow(OptionsFlowWithReload):
    """How often the entities take a new state; the reference-power tariff; the re-broadcast.

    The running entry reads its options live, so saving them reconnects nothing; only turning
    the tariff on or off (it adds or removes entities) or changing where telegrams are
    re-broadcast (the server is bound at setup) reloads the entry.
    """

    automatic_reload = False

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Minimum time between state updates (0: every telegram); reference power, rates."""
        errors: dict[str, str] = {}
        current: Mapping[str, Any] = self.config_entry.options
        if user_input is not None:
            try:
                tariff = _tariff_options(user_input)
            except ValueError:
                errors[CONF_REFERENCE_POWER] = "invalid_reference_power"
            else:
                options = {
                    **{
                        key: value
                        for key, value in current.items()
                        if key not in _CLEARABLE_OPTIONS
                    },
                    CONF_MIN_INTERVAL: int(user_input[CONF_MIN_INTERVAL]),
                    CONF_TOTAL_INTERVAL: int(user_input[CONF_TOTAL_INTERVAL]),
                    **tariff,
                    **_rebroadcast_options(user_input),
                }
                address = listen_address(options)
                if (
                    address is not None
                    and address.port != self._rebroadcasting_on()
                    and not await async_port_free(address)
                ):
                    errors[CONF_REBROADCAST_PORT] = "port_in_use"
                else:
                    self.automatic_reload = (CONF_REFERENCE_POWER in options) != (
                        CONF_REFERENCE_POWER in self.config_entry.options
                    ) or address != listen_address(self.config_entry.options)
                    return self.async_create_entry(data=options)
            current = user_input
        elif CONF_REFERENCE_POWER in current:
            # The selector shows text: 12.0 kW is offered back as "12".
            current = {**current, CONF_REFERENCE_POWER: f"{current[CONF_REFERENCE_POWER]:g}"}
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(OPTIONS_SCHEMA, current),
            errors=errors,
            description_placeholders=_LEVELS,
        )

    def _rebroadcasting_on(self) -> int | None:
        """The port the running entry re-broadcasts on: saving it again is no clash with itself."""
        # runtime_data exists only while the entry is set up.
        coordinator = getattr(self.config_entry, "runtime_data", None)
        broadcaster: Rebroadcaster | None = getattr(coordinator, "rebroadcast", None)
        return None if broadcaster is None else broadcaster.port
