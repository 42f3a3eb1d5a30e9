"""Helpers for users' own tests.

``reset()`` puts the default instance back to "not initialised" so a test can
call ``pubsubpy.init()`` again. Subscriptions made at import time are kept
unless ``subscriptions=True``.

``memory_pubsub(**options)`` returns a ``PubSub`` on a fresh in-process broker.

``delete_topology(app)`` removes what ``app.declare()`` created, for tests on a
real broker that use throwaway names.

``MemoryInbox()`` is an ``Inbox`` in a set, for ``idempotent=True`` handlers in
tests without a database (it has no transaction: a handler that fails midway
keeps its partial effects, which a real inbox rolls back).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pubsubpy
from pubsubpy.app import PubSub
from pubsubpy.transports.memory import MemoryBroker, MemoryTransport

__all__ = ["MemoryInbox", "delete_topology", "memory_pubsub", "reset"]


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


def delete_topology(app: PubSub, *, exchange: bool = True) -> None:
    """Remove everything ``app.declare()`` created (queues with their messages, the dead-letter
    exchange, and the model exchange unless ``exchange=False``), then close the app. For tests that
    run against a real broker with throwaway names."""
    app.transport.delete(app.topology(), exchange=exchange)
    app.close()


class MemoryInbox:
    """An ``Inbox`` for tests: (message id, handler) pairs in a set; ``runs`` counts real runs."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()
        self.runs = 0
        self._lock = threading.Lock()

    def run_once(self, message_id: str, handler: str, call: Callable[[], object]) -> bool:
        with self._lock:
            if (message_id, handler) in self.seen:
                return False
        call()
        with self._lock:
            self.seen.add((message_id, handler))
            self.runs += 1
        return True

