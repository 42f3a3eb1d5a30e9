"""What a dry run asks the inbox: of the events it would run, how many each idempotent handler already ran.

Asked in batches (``BATCH`` ids per query), so a dry run over a long window costs a query per few hundred
events, not one per event.
"""

from __future__ import annotations

from pubsubpy.inbox import ReplayInbox
from pubsubpy.router import Router

__all__ = ["AlreadyRun"]

BATCH = 500


class AlreadyRun:
    """Counts, per idempotent handler, the events its inbox holds (``ReplayResult.already_run``)."""

    def __init__(self, inbox: ReplayInbox, router: Router) -> None:
        self.inbox = inbox
        self.router = router
        self.pending: dict[str, list[str]] = {}
        self.counts: dict[str, int] = {sub.name: 0 for sub in router.subscriptions if sub.idempotent}

    def add(self, routing_key: str, message_id: str | None) -> None:
        if not message_id or not self.counts:
            return
        for sub in self.router.match(routing_key):
            if sub.idempotent:
                batch = self.pending.setdefault(sub.name, [])
                batch.append(message_id)
                if len(batch) >= BATCH:
                    self.flush(sub.name)

    def flush(self, handler: str | None = None) -> dict[str, int]:
        for name in [handler] if handler is not None else list(self.pending):
            ids = self.pending.pop(name, [])
            if ids:
                self.counts[name] += len(self.inbox.recorded(name, ids))
        return self.counts
