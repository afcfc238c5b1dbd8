"""``python -m p1`` from ``custom_components/smarty_p1``: the console reader, MQTT bridge and
simulator where Home Assistant is not installed (``python -m custom_components.smarty_p1``
first imports the integration, which needs it)."""

from .cli import main

raise SystemExit(main())
