"""Before a rebuild (``replay(rebuild=True)``): no worker consuming, and the inbox forgets what the replayed
idempotent handlers ran, so every event runs again; and what a dry run warns about."""

from __future__ import annotations

import datetime as dt
import logging

from pubsubpy.errors import ConfigurationError
from pubsubpy.inbox import Inbox, ReplayInbox
from pubsubpy.router import Router
from pubsubpy.topology import Topology
from pubsubpy.transports.base import Transport

__all__ = ["forget_for_rebuild", "replay_warnings"]

log = logging.getLogger("pubsubpy.replay")


def forget_for_rebuild(transport: Transport, topology: Topology, router: Router, inbox: Inbox | None, *,
                       force: bool) -> None:
    queues = [topology.queue.name] + ([spec.name for spec in topology.shards.queues] if topology.shards else [])
    busy = {name: info.consumers for name in queues
            if (info := transport.queue_info(name)) is not None and info.consumers}
    if busy and not force:
        listed = ", ".join(f"{name} ({count})" for name, count in sorted(busy.items()))
        raise ConfigurationError(f"a rebuild runs every event again while workers still consume: {listed} have "
                                 "consumers. Stop the service's workers first (or pass force=True, --force)")
    idempotent = [sub.name for sub in router.subscriptions if sub.idempotent]
    if not idempotent:
        return
    if not isinstance(inbox, ReplayInbox):
        raise ConfigurationError(
            f"a rebuild must make the inbox forget what handler(s) {', '.join(idempotent)} ran, but "
            f"{type(inbox).__name__} has no forget_handler (pubsubpy.inbox.ReplayInbox; the Django app's inbox has it)")
    for name in idempotent:
        log.warning("rebuild: the inbox forgot %d record(s) of handler %s", inbox.forget_handler(name), name)


def replay_warnings(inbox: Inbox | None, since: dt.datetime, now: dt.datetime) -> list[str]:
    """An inbox that deletes records after a while (``INBOX_RETENTION``) cannot skip events older than that."""
    retention = getattr(inbox, "retention", None)
    if isinstance(retention, dt.timedelta) and since < now - retention:
        return [f"since is older than the inbox's retention ({retention}, INBOX_RETENTION): the events published "
                f"before {(now - retention).isoformat(timespec='seconds')} have no inbox record any more, and an "
                "idempotent handler runs them again"]
    return []
