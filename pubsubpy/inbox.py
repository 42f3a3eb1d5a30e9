"""The inbox: what makes ``@subscribe(..., idempotent=True)`` run a handler once per message.

Delivery is at least once: after a lost connection, or when a relay re-sends
a batch it could not mark as sent, a handler can see a message again. An
idempotent subscription runs through an ``Inbox``: it records
(message id, handler) together with the handler's own effects, in one
transaction, and skips the handler when the pair is already recorded. Django
ships one (``pubsubpy.contrib.django.inbox.DjangoInbox``, installed by the
Django app); elsewhere, pass your own to ``PubSub(inbox=...)``.

An ``ordered=True, idempotent=True`` subscription also needs the stale-event
guard (``OrderedInbox``): per (handler, ordering key) the inbox keeps the last
sequence applied, written in the handler's transaction, and skips an event
whose sequence is not newer (a late retry, a dead letter replayed after a
later event was applied).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Applied", "Inbox", "OrderedInbox", "OrderedRun", "ReplayInbox"]


class Inbox(Protocol):
    """What ``@subscribe(..., idempotent=True)`` handlers run through: pass one as ``PubSub(inbox=...)``.

    Any object with this method fits. It must record (message id, handler) in the same transaction as the
    handler's effects, so that a handler that fails records nothing and its retry runs it again. Django's
    app installs ``pubsubpy.contrib.django.inbox.DjangoInbox``; ``pubsubpy.testing.MemoryInbox`` is one for
    tests (without a transaction).
    """

    def run_once(self, message_id: str, handler: str, call: Callable[[], object]) -> bool:
        """Run ``call`` unless (``message_id``, ``handler``) was recorded; record it in the same
        transaction as ``call``'s effects (so a failing ``call`` records nothing). True when it ran,
        False for a duplicate that was skipped."""
        ...


class Applied(str, enum.Enum):
    """What ``OrderedInbox.run_in_order`` did with one event."""

    RAN = "ran"
    """The handler ran, and the key's last applied sequence is now this event's."""
    DUPLICATE = "duplicate"
    """(message id, handler) was recorded: skipped, as ``run_once`` does."""
    STALE = "stale"
    """The key's last applied sequence is this event's or newer: skipped, nothing recorded."""


@dataclass(frozen=True, slots=True)
class OrderedRun:
    """The result of ``OrderedInbox.run_in_order``."""

    applied: Applied
    """What happened."""
    last: int | None
    """The key's last applied sequence before this call (None: none was recorded)."""


@runtime_checkable
class OrderedInbox(Inbox, Protocol):
    """An ``Inbox`` with the stale-event guard of ``ordered=True, idempotent=True`` subscriptions.

    Per (handler, ordering key) it keeps the last sequence applied, in its own table that retention never
    expires, written in the same transaction as the handler's effects.
    """

    def run_in_order(self, message_id: str, handler: str, key: str, sequence: int,
                     call: Callable[[], object]) -> OrderedRun:
        """In one transaction: skip a duplicate (as ``run_once``); skip the event when the last sequence
        applied for (``handler``, ``key``) is ``sequence`` or newer; else run ``call`` and record both the
        message and ``sequence``. A failing ``call`` records nothing."""
        ...

    def reset_order(self, key: str, handler: str | None = None) -> int:
        """Forget the last applied sequence of ``key`` (for ``handler`` only, or every handler); returns
        how many records were removed. The next event of the key runs whatever its sequence."""
        ...


@runtime_checkable
class ReplayInbox(Inbox, Protocol):
    """An ``Inbox`` that also serves replays of the event log (``replay()``, ``worker --backfill``).

    It keeps a backfill's checkpoint (so a worker killed during its backfill resumes where it was, and its
    hand-over to the live queue stays exact), answers a dry run's "which of these already ran", and forgets a
    handler's records for a rebuild. The Django app's inbox and ``pubsubpy.testing.MemoryInbox`` have it.
    """

    def replay_state(self, name: str) -> str | None:
        """The checkpoint saved under ``name`` (text pubsubpy wrote), or None."""
        ...

    def save_replay_state(self, name: str, state: str | None) -> None:
        """Save ``state`` under ``name`` (None: delete it), committed at once."""
        ...

    def recorded(self, handler: str, message_ids: Collection[str]) -> set[str]:
        """Those of ``message_ids`` recorded as run by ``handler``."""
        ...

    def forget_handler(self, handler: str) -> int:
        """Delete every record of ``handler``: its (message id, handler) pairs and its last applied sequences,
        so a rebuild runs every event again; returns how many records went."""
        ...
