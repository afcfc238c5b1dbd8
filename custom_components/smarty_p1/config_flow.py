"""Config flow of Smarty P1: where the meter is, its key, checked live before anything is saved."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
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
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
from serial.tools.list_ports import comports

from . import takeover as dsmr_takeover
from .connection import Endpoint, InvalidKey, KeyRequired, SourceError, probe, source_for
from .const import (
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
    CONNECTION_MQTT,
    CONNECTION_NETWORK,
    CONNECTION_SERIAL,
    DEFAULT_MIN_INTERVAL,
    DOMAIN,
    LOGGER,
)
from .coordinator import SmartyConfigEntry
from .p1 import InvalidKeyFormatError, Telegram, normalize_key
from .p1.sources import by_id_names
from .rebroadcast import Rebroadcaster, async_port_free, listen_address
from .tariff import REFERENCE_POWERS
from .validation import vol

MANUAL_PATH = "manual"
# An entry in these states holds the port, or is about to grab it again on a retry timer.
_HOLDS_PORT = (ConfigEntryState.LOADED, ConfigEntryState.SETUP_RETRY)
# Probe errors that a key answers: they lead to the key step, not back to the connection form.
_ASK_FOR_KEY = (KeyRequired.error, InvalidKey.error)
# The steps of the first menu (adding) and of the reconfigure menu: how the meter is connected.
# Not "mqtt": that step id is MQTT discovery's.
_CONNECTION_STEPS = ["serial", "network", "mqtt_topic"]

MANUAL_PATH_SCHEMA = vol.Schema({vol.Required(CONF_DEVICE): TextSelector()})
_TCP_PORT = NumberSelector(
    NumberSelectorConfig(min=1, max=65535, step=1, mode=NumberSelectorMode.BOX)
)
NETWORK_SCHEMA = vol.Schema(
    {vol.Required(CONF_HOST): TextSelector(), vol.Required(CONF_PORT): _TCP_PORT}
)
MQTT_SCHEMA = vol.Schema({vol.Required(CONF_TOPIC): TextSelector()})
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
OPTIONS_SCHEMA = vol.Schema(
    {
        vol.Required(CONF_MIN_INTERVAL, default=DEFAULT_MIN_INTERVAL): NumberSelector(
            NumberSelectorConfig(
                min=0, max=3600, step=1, unit_of_measurement="s", mode=NumberSelectorMode.BOX
            )
        ),
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


def list_serial_ports() -> list[SelectOptionDict]:
    """The serial ports of this machine, by their stable by-id path when udev gives one.

    Blocking (it reads sysfs): run it in the executor.
    """
    by_id = by_id_names()
    options = []
    for port in comports():
        path = by_id.get(os.path.realpath(port.device), port.device)
        details = [text for text in (port.description, port.manufacturer) if text and text != "n/a"]
        if port.serial_number:
            details.append(f"s/n {port.serial_number}")
        label = f"{path} ({', '.join(details)})" if details else path
        options.append(SelectOptionDict(value=path, label=label))
    # The stable names first: they are the ones to pick.
    stable = set(by_id.values())
    options.sort(key=lambda option: (option["value"] not in stable, option["value"]))
    return options


class SmartyConfigFlow(ConfigFlow, domain=DOMAIN):
    """Adds a meter (user), replaces its key (reauth) or moves it (reconfigure)."""

    VERSION = 1
    # 1.2: value sensors have unique ids of their code and role (__init__.async_migrate_entry).
    MINOR_VERSION = 2

    def __init__(self) -> None:
        """Start with nothing known about the meter."""
        self._connection: dict[str, Any] = {}
        # The key to probe with, as stored: 32 upper-case hex digits, None for a plaintext meter.
        self._key: str | None = None
        # The new entry's data, once its meter answered: only the tariff step is left.
        self._data: dict[str, Any] = {}
        # The telegram the last probe read.
        self._telegram: Telegram | None = None
        # A dsmr entry of the same port or meter, offered for taking over; the take-over under
        # way (planned, not finished).
        self._dsmr: ConfigEntry | None = None
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
        """The meter no longer verifies with the stored key (a meter swap or a new key)."""
        self._connection = _connection_data(entry_data)
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for the new key only: the connection stays as it is."""
        return await self._async_key_step("reauth_confirm", user_input)

    async def async_step_serial(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Pick the serial port from the ones found, or choose to type its path."""
        if user_input is not None and user_input[CONF_DEVICE] == MANUAL_PATH:
            return await self.async_step_serial_manual()
        ports = await self.hass.async_add_executor_job(list_serial_ports)
        current = self._connection.get(CONF_DEVICE)
        if current is not None and all(port["value"] != current for port in ports):
            # A path typed by hand before is not in the list but is what the entry uses.
            ports.insert(0, SelectOptionDict(value=current, label=current))
        if not ports:
            return await self.async_step_serial_manual()
        ports.append(SelectOptionDict(value=MANUAL_PATH, label="Enter the path manually"))
        schema = vol.Schema(
            {
                vol.Required(CONF_DEVICE, default=ports[0]["value"]): SelectSelector(
                    SelectSelectorConfig(
                        options=ports, mode=SelectSelectorMode.LIST, translation_key="serial_port"
                    )
                )
            }
        )
        return await self._async_connection_step("serial", schema, CONNECTION_SERIAL, user_input)

    async def async_step_serial_manual(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Type the path of the serial port (one that is not listed, or a symlink of your own)."""
        return await self._async_connection_step(
            "serial_manual", MANUAL_PATH_SCHEMA, CONNECTION_SERIAL, user_input
        )

    async def async_step_network(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Host and port of a network bridge (ser2net, an ESP32 P1 dongle in raw mode)."""
        return await self._async_connection_step(
            "network", NETWORK_SCHEMA, CONNECTION_NETWORK, user_input
        )

    async def async_step_mqtt_topic(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The MQTT topic on which a dongle publishes the meter's raw frames."""
        return await self._async_connection_step(
            "mqtt_topic", MQTT_SCHEMA, CONNECTION_MQTT, user_input
        )

    async def async_step_key(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Ask for the decryption key of an encrypted meter."""
        return await self._async_key_step("key", user_input)

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

    # --- Taking over a dsmr entry (dsmr_takeover.py) ---

    async def _async_dsmr_on_port(
        self, dsmr: ConfigEntry, connection: dict[str, Any]
    ) -> ConfigFlowResult | str:
        """A dsmr entry reads the chosen port: offer to take it over instead of probing."""
        if self.source != SOURCE_USER:
            return "dsmr_reads_port"
        self._connection = connection
        self._dsmr = dsmr
        return await self.async_step_dsmr_port()

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
            return await self._async_take_over(
                await dsmr_takeover.async_release(self.hass, self._dsmr)
            )
        self._key = dsmr_takeover.stored_key(self._dsmr)
        result = await self._async_takeover_check()
        if isinstance(result, str):
            return await self._async_key_step("takeover_key", None, result)
        return result

    async def async_step_takeover_key(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """The dsmr entry's key did not verify (or the check failed): a key, and a new try."""
        return await self._async_key_step(
            "takeover_key", user_input, check=self._async_takeover_check
        )

    async def _async_takeover_check(self) -> ConfigFlowResult | str:
        """Free the port, read the meter; dsmr set up again as it was on any failure (whose
        error is returned)."""
        assert self._dsmr is not None
        dsmr = self._dsmr
        was_reading = await dsmr_takeover.async_release(self.hass, dsmr)
        try:
            serial = await self._async_read_serial()
            await self.async_set_unique_id(serial)
            self._abort_if_unique_id_configured()
        except SourceError as err:
            await dsmr_takeover.async_restore(self.hass, dsmr, was_reading=was_reading)
            return err.error
        except BaseException:
            await dsmr_takeover.async_restore(self.hass, dsmr, was_reading=was_reading)
            raise
        if dsmr_takeover.is_other_meter(dsmr, serial):
            # Its history is another meter's registers: continuing it would be a jump.
            await dsmr_takeover.async_restore(self.hass, dsmr, was_reading=was_reading)
            return self.async_abort(
                reason="dsmr_other_meter", description_placeholders={"serial": serial}
            )
        self._data = {
            **self._connection,
            CONF_DECRYPTION_KEY: self._key,
            CONF_SERIAL_NUMBER: serial,
        }
        return await self._async_take_over(was_reading)

    async def _async_take_over(self, was_reading: bool) -> ConfigFlowResult:
        """Create our entry with the plan of what moves; the dsmr entry goes once it exists."""
        assert self._dsmr is not None
        assert self._telegram is not None
        takeover = dsmr_takeover.plan(
            self.hass, self._dsmr, self._telegram, was_reading=was_reading
        )
        dsmr_takeover.async_plan(self.hass, takeover)
        self._takeover = takeover
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
        """The flow ends before our entry took the plan over: dsmr runs again as it did."""
        if (takeover := self._takeover) is not None:
            self.hass.async_create_task(
                dsmr_takeover.async_abandon(self.hass, takeover), eager_start=True
            )

    async def _async_key_step(
        self,
        step_id: str,
        user_input: dict[str, Any] | None,
        error: str | None = None,
        check: Callable[[], Awaitable[ConfigFlowResult | str]] | None = None,
    ) -> ConfigFlowResult:
        errors = {"base": error} if error else {}
        if user_input is not None:
            try:
                self._key = normalize_key(user_input[CONF_DECRYPTION_KEY])
            except InvalidKeyFormatError:
                errors[CONF_DECRYPTION_KEY] = "invalid_key_format"
            else:
                # A take-over checks the key with the dsmr entry out of the way (dsmr_takeover.py).
                result = await (check or self._async_check)()
                if not isinstance(result, str):
                    return result
                errors["base"] = result
        # The key is never shown back in the form: it is a secret.
        return self.async_show_form(step_id=step_id, data_schema=KEY_SCHEMA, errors=errors)

    async def _async_connection_step(
        self,
        step_id: str,
        schema: vol.Schema,
        connection_type: str,
        user_input: dict[str, Any] | None,
    ) -> ConfigFlowResult:
        """Probe what a connection form gave; show the form again with the error if it fails."""
        errors: dict[str, str] = {}
        if user_input is not None:
            result = await self._async_connect(connection_type, user_input)
            if not isinstance(result, str):
                return result
            errors["base"] = result
            suggested: Mapping[str, Any] = user_input
        elif self._connection.get(CONF_CONNECTION_TYPE) == connection_type:
            # Reconfiguring: the entry's current values.
            suggested = self._connection
        else:
            suggested = {}
        return self.async_show_form(
            step_id=step_id,
            data_schema=self.add_suggested_values_to_schema(schema, suggested),
            errors=errors,
        )

    async def _async_connect(
        self, connection_type: str, user_input: dict[str, Any]
    ) -> ConfigFlowResult | str:
        """Probe a connection form's endpoint; the flow's next step, or an error for that form."""
        if connection_type == CONNECTION_NETWORK:
            connection = {
                CONF_CONNECTION_TYPE: CONNECTION_NETWORK,
                CONF_HOST: user_input[CONF_HOST].strip(),
                CONF_PORT: int(user_input[CONF_PORT]),
            }
        elif connection_type == CONNECTION_MQTT:
            connection = {
                CONF_CONNECTION_TYPE: CONNECTION_MQTT,
                CONF_TOPIC: user_input[CONF_TOPIC].strip(),
            }
        else:
            connection = {
                CONF_CONNECTION_TYPE: CONNECTION_SERIAL,
                CONF_DEVICE: user_input[CONF_DEVICE].strip(),
            }
        if self.source not in (SOURCE_REAUTH, SOURCE_RECONFIGURE):
            # That port or bridge already feeds an entry, which holds it: probing would fail.
            self._async_abort_entries_match(
                {key: value for key, value in connection.items() if key != CONF_CONNECTION_TYPE}
            )
        # --- Take-over hook: a dsmr entry reads this port (probing would get half its bytes).
        if (dsmr := await dsmr_takeover.async_entry_on(self.hass, connection)) is not None:
            return await self._async_dsmr_on_port(dsmr, connection)
        # ---
        self._connection = connection
        result = await self._async_check()
        if result in _ASK_FOR_KEY:
            # An encrypted meter, or a stored key that no longer verifies on it.
            return await self._async_key_step(
                "key", None, InvalidKey.error if self._key is not None else None
            )
        return result

    def _changed_entry(self) -> ConfigEntry | None:
        if self.source == SOURCE_REAUTH:
            return self._get_reauth_entry()
        if self.source == SOURCE_RECONFIGURE:
            return self._get_reconfigure_entry()
        return None

    async def _async_check(self) -> ConfigFlowResult | str:
        """Read a telegram from the endpoint with the key; finish the flow, or name the error."""
        entry = self._changed_entry()
        released = entry if entry is not None and entry.state in _HOLDS_PORT else None
        if released is not None:
            # A serial port or a single-client ser2net bridge gives its bytes to one reader only.
            # Set up again below (not reloaded: a reload aborts this very reauth flow).
            await self.hass.config_entries.async_unload(released.entry_id)
        try:
            serial = await self._async_read_serial()
        except SourceError as err:
            if released is not None:
                await self.hass.config_entries.async_setup(released.entry_id)
            return err.error
        data = {**self._connection, CONF_DECRYPTION_KEY: self._key, CONF_SERIAL_NUMBER: serial}
        if entry is None:
            await self.async_set_unique_id(serial)
            self._abort_if_unique_id_configured()
            self._data = data
            # --- Take-over hook: a dsmr entry of this meter, reading it elsewhere.
            if (dsmr := dsmr_takeover.entry_of_meter(self.hass, serial)) is not None:
                self._dsmr = dsmr
                return await self.async_step_dsmr_meter()
            # ---
            return await self.async_step_tariff()
        if entry.unique_id != serial:
            if released is not None:
                await self.hass.config_entries.async_setup(released.entry_id)
            return self.async_abort(
                reason="wrong_meter", description_placeholders={"serial": serial}
            )
        return self.async_update_reload_and_abort(entry, data=data)

    async def _async_read_serial(self) -> str:
        """The serial number in the first telegram that verifies; SourceError otherwise."""
        endpoint = Endpoint.from_data(self._connection)
        key = bytes.fromhex(self._key) if self._key is not None else None
        try:
            telegram = await probe(source_for(self.hass, endpoint), key)
        except SourceError as err:
            LOGGER.debug("Probe of %s failed: %s", endpoint, err)
            raise
        except Exception as err:
            LOGGER.exception("Unexpected error while probing %s", endpoint)
            raise SourceError from err
        if telegram.serial is None:
            raise NoSerialError
        self._telegram = telegram
        return telegram.serial


class NoSerialError(SourceError):
    """A telegram arrived but without the serial number that identifies the meter."""

    error = "no_serial"


def _dsmr_placeholders(entry: ConfigEntry) -> dict[str, str]:
    """What the take-over texts say about a dsmr entry."""
    return {"integration": entry.domain, "title": entry.title}


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
    """The connection part of entry data (no key, no serial)."""
    keys = (CONF_CONNECTION_TYPE, CONF_DEVICE, CONF_HOST, CONF_PORT, CONF_TOPIC)
    return {key: data[key] for key in keys if key in data}


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
