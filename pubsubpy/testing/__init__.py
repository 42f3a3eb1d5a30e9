"""Helpers for users' own tests (the how-to: docs/how-to/testing.md).

In-process brokers:

- ``memory_broker()`` returns a fresh, uniquely named ``memory://...`` URL: every
  ``PubSub`` given that URL in this process shares one in-process broker (plain
  ``memory://`` is a private broker per ``PubSub``). The pytest fixture
  ``memory_broker`` (``pubsubpy._pytest_plugin``) returns one per test and drops
  it afterwards; ``drop_memory_broker(url)`` does that by hand.
- ``settle(*apps, timeout=5.0)`` drains every app until nothing moves, moving the
  memory brokers' clocks forward to each retry instead of sleeping its
  ``retry_delay``; it returns a ``Settled`` (a ``DrainResult`` per service), or
  raises ``NotSettled`` (an ``AssertionError``) naming the queues still moving.
- ``capture(*apps)`` records, while it is open, what the apps published and what
  their handlers received, as typed ``PublishedEvent`` / ``HandledEvent`` records.
- ``MemoryBroker`` and ``MemoryTransport`` are the in-process broker itself.

Older helpers:

- ``reset()`` puts the default instance back to "not initialised" so a test can
  call ``pubsubpy.init()`` again. Subscriptions made at import time are kept
  unless ``subscriptions=True``.
- ``memory_pubsub(**options)`` returns a ``PubSub`` on a fresh in-process broker.
- ``delete_topology(app)`` removes what ``app.declare()`` created, for tests on a
  real broker that use throwaway names.
- ``MemoryInbox()`` is an ``Inbox`` in a set, for ``idempotent=True`` handlers in
  tests without a database (it has no transaction: a handler that fails midway
  keeps its partial effects, which a real inbox rolls back).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Collection
from typing import Any

from pubsubpy._facade import replace_default
from pubsubpy.app import PubSub
from pubsubpy.errors import ConfigurationError
from pubsubpy.inbox import Applied, OrderedRun
from pubsubpy.settings import memory_name
from pubsubpy.testing._capture import Capture, HandledEvent, PublishedEvent, capture
from pubsubpy.testing._settle import NotSettled, Settled, settle
from pubsubpy.transports.memory import MemoryBroker, MemoryTransport, drop_named_broker

__all__ = ["Capture", "HandledEvent", "MemoryBroker", "MemoryInbox", "MemoryTransport", "NotSettled",
           "PublishedEvent", "Settled", "capture", "delete_topology", "drop_memory_broker", "memory_broker",
           "memory_pubsub", "reset", "settle"]


def reset(*, subscriptions: bool = False) -> None:
    """Put the default instance back to "not initialised", so a test can call ``pubsubpy.init()`` again.
    Subscriptions made at import time are kept unless ``subscriptions=True``."""
    fresh = PubSub.unconfigured()
    old = replace_default(fresh)
    old.close()
    if not subscriptions:
        fresh.router.copy_from(old.router)


def memory_pubsub(broker: MemoryBroker | None = None, **options: Any) -> PubSub:
    """A ``PubSub`` on ``broker``, else on a private in-process broker (``service_name`` defaults to
    ``"test"``). For several services on one broker, give them one ``memory_broker()`` URL instead."""
    options.setdefault("service_name", "test")
    return PubSub("memory://", transport=MemoryTransport(broker), **options)


def delete_topology(app: PubSub, *, exchange: bool = True) -> None:
    """Remove everything ``app.declare()`` created (queues with their messages, the dead-letter
    exchange, and the model exchange unless ``exchange=False``), then close the app. For tests that
    run against a real broker with throwaway names."""
    app.transport.delete(app.topology(), exchange=exchange)
    app.close()


class MemoryInbox:
    """An ``OrderedInbox`` and ``ReplayInbox`` for tests: (message id, handler) pairs in a set, the last applied
    sequence per (handler, ordering key) and replay checkpoints in dicts; ``runs`` counts real runs."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()
        self.sequences: dict[tuple[str, str], int] = {}
        self.states: dict[str, str] = {}  # replay checkpoints (``ReplayInbox``)
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

    def run_in_order(self, message_id: str, handler: str, key: str, sequence: int,
                     call: Callable[[], object]) -> OrderedRun:
        with self._lock:
            last = self.sequences.get((handler, key))
            if (message_id, handler) in self.seen:
                return OrderedRun(Applied.DUPLICATE, last)
            if last is not None and sequence <= last:
                return OrderedRun(Applied.STALE, last)
        call()
        with self._lock:
            self.seen.add((message_id, handler))
            self.sequences[(handler, key)] = sequence
            self.runs += 1
        return OrderedRun(Applied.RAN, last)

    def reset_order(self, key: str, handler: str | None = None) -> int:
        with self._lock:
            gone = [pair for pair in self.sequences if pair[1] == key and handler in (None, pair[0])]
            for pair in gone:
                del self.sequences[pair]
        return len(gone)

    def replay_state(self, name: str) -> str | None:
        with self._lock:
            return self.states.get(name)

    def save_replay_state(self, name: str, state: str | None) -> None:
        with self._lock:
            if state is None:
                self.states.pop(name, None)
            else:
                self.states[name] = state

    def recorded(self, handler: str, message_ids: Collection[str]) -> set[str]:
        with self._lock:
            return {message_id for message_id in message_ids if (message_id, handler) in self.seen}

    def forget_handler(self, handler: str) -> int:
        with self._lock:
            pairs = {pair for pair in self.seen if pair[1] == handler}
            keys = [pair for pair in self.sequences if pair[0] == handler]
            self.seen -= pairs
            for pair in keys:
                del self.sequences[pair]
        return len(pairs) + len(keys)


# -- named in-process brokers ---------------------------------------------------------

def memory_broker() -> str:
    """A fresh, uniquely named ``memory://`` URL: give it to every ``PubSub`` that should share one
    in-process broker (the services of one test). ``drop_memory_broker(url)`` frees it."""
    return f"memory://test-{uuid.uuid4().hex[:16]}"


def drop_memory_broker(url: str) -> None:
    """Forget the broker of ``memory://NAME``: the next ``PubSub`` naming it starts on an empty one
    (apps that already hold it keep it until they go). Nothing to do for an unknown name."""
    name = memory_name(url)
    if name is None:
        raise ConfigurationError(f"{url!r} is not a memory://NAME URL")
    drop_named_broker(name)
