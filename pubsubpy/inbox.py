"""The inbox: what makes ``@subscribe(..., idempotent=True)`` run a handler once per message.

Delivery is at least once: after a lost connection, or when a relay re-sends
a batch it could not mark as sent, a handler can see a message again. An
idempotent subscription runs through an ``Inbox``: it records
(message id, handler) together with the handler's own effects, in one
transaction, and skips the handler when the pair is already recorded. Django
ships one (``pubsubpy.contrib.django.inbox.DjangoInbox``, installed by the
Django app); elsewhere, pass your own to ``PubSub(inbox=...)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["Inbox"]


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
