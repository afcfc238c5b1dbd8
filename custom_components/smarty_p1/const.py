"""Constants of the Smarty P1 integration."""

from __future__ import annotations

import logging
from typing import Final

DOMAIN: Final = "smarty_p1"
DOCUMENTATION: Final = "https://github.com/smarty-p1/smarty_p1"
# README anchors that repair issues link to.
TROUBLESHOOTING_TOTALS: Final = "an-energy-total-was-held"
INTEGRITY_SECTION: Final = "what-authenticated-means-for-your-meter"
LOGGER = logging.getLogger(__package__)

# Config entry data. The serial device uses Home Assistant's CONF_DEVICE ("device"), the network
# bridge CONF_HOST and CONF_PORT ("host", "port").
CONF_CONNECTION_TYPE: Final = "connection_type"
CONNECTION_SERIAL: Final = "serial"
CONNECTION_NETWORK: Final = "network"
CONNECTION_MQTT: Final = "mqtt"
CONF_TOPIC: Final = "topic"  # the MQTT topic of a dongle that publishes the raw frames
CONF_DECRYPTION_KEY: Final = "decryption_key"  # 32 upper-case hex digits; None: plaintext meter
CONF_SERIAL_NUMBER: Final = "serial_number"
# The meter's own authentication key, learned from its frames when it is not the
# specification's (p1/authkey.py): a secret, like the decryption key.
CONF_AUTH_KEY: Final = "auth_key"

# Options.
CONF_MIN_INTERVAL: Final = "min_update_interval"  # seconds; 0 = every telegram
DEFAULT_MIN_INTERVAL: Final = 0
# Meter totals (energy, gas, water registers) take a new state at most this often; 0 = with the
# other values. A total's 10 s history is worth nothing next to its 5-minute statistics, which
# the energy dashboard reads and which come out the same: each is the period's last state.
CONF_TOTAL_INTERVAL: Final = "total_update_interval"  # seconds
DEFAULT_TOTAL_INTERVAL: Final = 60
# The reference-power tariff: absent (the feature off) until the user sets the power in kW.
CONF_REFERENCE_POWER: Final = "reference_power"
# Rate overrides in ct/kWh (the bill's unit), absent: the built-in table of the year.
CONF_RATE_NORMAL: Final = "rate_normal"
CONF_RATE_OVERRUN: Final = "rate_overrun"
# Re-broadcast of the decrypted telegrams on a local TCP port: absent (off) unless a port is set;
# on 127.0.0.1 unless the user opens it to the network.
CONF_REBROADCAST_PORT: Final = "rebroadcast_port"
CONF_REBROADCAST_ALL_INTERFACES: Final = "rebroadcast_all_interfaces"

# The meter sends every 10 s; a telegram may take a while after the port opens.
PROBE_TIMEOUT: Final = 25.0
# Tag failures for this long on a meter that worked before mean a new key: reauthenticate.
AUTH_FAILURE_WINDOW: Final = 60.0

MANUFACTURER: Final = "Sagemcom"
MODEL: Final = "T210-D"
