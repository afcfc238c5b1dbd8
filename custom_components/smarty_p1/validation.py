"""The schema library of the running Home Assistant.

Home Assistant replaced voluptuous with probatio (a compatible successor) during 2026; the
integration supports releases on both sides (hacs.json), so it uses whichever is in charge.
"""

try:
    import probatio as vol
except ImportError:  # pragma: no cover - the oldest supported releases, tested separately
    import voluptuous as vol  # type: ignore[no-redef]

__all__ = ["vol"]
