"""A replay's window: ``since`` and ``until`` as users write them, and an event's time in the log.

An event's time is its ``pubsubpy-published-at`` (milliseconds), else the AMQP
``timestamp`` (seconds; a foreign publisher's), else unknown: such an event is
inside every window (it is replayed, never silently dropped).
"""

from __future__ import annotations

import datetime as dt
import re

from pubsubpy.envelope import published_at
from pubsubpy.errors import ConfigurationError
from pubsubpy.messages import Delivery

__all__ = ["Point", "event_time", "parse_point"]

Point = dt.datetime | dt.timedelta | str
"""A point in time: a datetime (naive is UTC), a timedelta before now, ``"7d"``/``"12h"``/``"30m"``/``"90s"``/
``"2w"`` before now, or an ISO 8601 time (``"2026-12-01T00:00Z"``, ``"2026-12-01"``)."""

_RELATIVE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(w|d|h|m|s)\s*$", re.IGNORECASE)
_UNIT = {"w": 7 * 86_400, "d": 86_400, "h": 3_600, "m": 60, "s": 1}


def parse_point(value: Point, now: dt.datetime, name: str = "since") -> dt.datetime:
    """``value`` as an aware UTC datetime; a ``ConfigurationError`` naming ``name`` and the value when it is none
    of the forms above."""
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
    if isinstance(value, dt.timedelta):
        return now - value
    if isinstance(value, str):
        relative = _RELATIVE.match(value)
        if relative is not None:
            return now - dt.timedelta(seconds=float(relative.group(1)) * _UNIT[relative.group(2).lower()])
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            pass
        else:
            return parse_point(parsed, now, name)
    raise ConfigurationError(f"{name}={value!r} is not a time: give a datetime, a timedelta, a duration before now "
                             "('7d', '12h', '30m', '90s', '2w') or an ISO 8601 time ('2026-12-01T00:00Z')")


def event_time(delivery: Delivery) -> dt.datetime | None:
    """When the event was published (see the module docstring); None: unknown."""
    seconds = published_at(delivery.properties.headers)
    if seconds is None:
        stamp = delivery.properties.timestamp
        seconds = float(stamp) if isinstance(stamp, int) and 0 < stamp < 2**37 else None
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
