"""Celery: a periodic drain task.

::

    # celery.py of your project (or Django settings with the CELERY_ namespace)
    app.conf.beat_schedule = {**pubsubpy.contrib.celery.BEAT_SCHEDULE}

The task ``pubsubpy.drain`` drains the default instance (configured by
``init()`` or the Django app). Drains overlapping on several workers are safe:
they are competing consumers on one queue, so each message goes to one of them.
In a prefork worker each child opens its own broker connection.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

import pubsubpy

__all__ = ["BEAT_SCHEDULE", "drain", "relay"]

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "pubsubpy-drain": {
        "task": "pubsubpy.drain",
        "schedule": 30.0,                        # seconds
        "kwargs": {"timeout": 25.0},             # finish before the next one is due
        "options": {"expires": 30.0},            # a drain that waited too long is skipped, not stacked
    },
}


@shared_task(name="pubsubpy.drain")
def drain(max_messages: int | None = None, timeout: float = 25.0) -> dict[str, Any]:
    """Drain this service's queue; returns the ``DrainResult`` as a dict (for the result backend)."""
    result = pubsubpy.get_default().drain(max_messages=max_messages, timeout=timeout)
    return {"handled": result.handled, "retried": result.retried, "dead_lettered": result.dead_lettered,
            "reasons": dict(result.reasons), "seconds": round(result.seconds, 3), "stopped_by": result.stopped_by}


@shared_task(name="pubsubpy.relay")
def relay(batch_size: int = 1000) -> dict[str, Any]:
    """Django with ``OUTBOX``: send what is pending in the outbox (``manage.py pubsub_relay --once``).
    Schedule it with beat, e.g. every few seconds, or run ``pubsub_relay`` as a process instead."""
    import datetime as dt

    from pubsubpy.contrib.django.apps import duration, outbox_database
    from pubsubpy.contrib.django.relay import Relay

    result = Relay(pubsubpy.get_default(), outbox_database(), batch_size=batch_size,
                   retention=duration("outbox_retention", dt.timedelta(days=1))).run_once()
    return {"sent": result.sent, "parked": result.parked, "batches": result.batches}

