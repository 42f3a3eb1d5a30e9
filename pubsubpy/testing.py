"""Helpers for users' own tests.

``reset()`` puts the default instance back to "not initialised" so a test can
call ``pubsubpy.init()`` again. Subscriptions made at import time are kept
unless ``subscriptions=True``.

``memory_pubsub(**options)`` returns a ``PubSub`` on a fresh in-process broker.
"""

from __future__ import annotations

from typing import Any

import pubsubpy
from pubsubpy.app import PubSub
from pubsubpy.transports.memory import MemoryBroker, MemoryTransport

__all__ = ["memory_pubsub", "reset"]


def reset(*, subscriptions: bool = False) -> None:
    old = pubsubpy._default
    old.close()
    fresh = PubSub.unconfigured()
    if not subscriptions:
        fresh.router.copy_from(old.router)
    pubsubpy._default = fresh


def memory_pubsub(broker: MemoryBroker | None = None, **options: Any) -> PubSub:
    options.setdefault("service_name", "test")
    return PubSub("memory://", transport=MemoryTransport(broker), **options)
