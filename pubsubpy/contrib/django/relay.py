"""The relay: sends outbox rows to the broker after their commit, in order per aggregate.

One batch is one database transaction: claim rows, publish them with confirms,
mark them sent, commit. A row is marked sent only after the broker confirmed
it, so a crash between the confirm and the commit sends that batch again, with
the same message ids (consumers deduplicate: ``idempotent=True``); nothing is
lost, and duplicates are bounded by the batch size.

Several relays on PostgreSQL: a batch claims the oldest unsent row of each
aggregate (``FOR UPDATE SKIP LOCKED``) plus the rows of those aggregates behind
it. Another relay skips a locked oldest row, and never takes a row that has an
older unsent one in its aggregate, so at most one relay holds an aggregate and
its events leave in commit order. On other databases (SQLite) run one relay.

A row the broker refuses (``basic.nack``, or unroutable with
``on_unroutable="raise"``) is parked with the error (``pubsub outbox list``)
and not retried on its own; a broker that is down fails the whole batch, which
is retried after a pause, never in a hot loop. A parked row is still its
aggregate's oldest unsent row: the aggregate's later rows wait behind it (each
batch warns how many aggregates are held) until it is retried (``pubsub outbox
retry``) or deleted, so a consumer never sees an aggregate's events with a gap.
Rows of the same batch behind a refused one were already published with it.
Sent rows are deleted once older than ``OUTBOX_RETENTION`` (default one day).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connections, transaction
from django.db.models import Count, Exists, Min, OuterRef
from django.utils import timezone

from pubsubpy._consume.backoff import Backoff
from pubsubpy.app import PubSub
from pubsubpy.contrib.django.models import OutboxMessage
from pubsubpy.contrib.django.outbox import from_row
from pubsubpy.errors import PublishNacked, TransportError
from pubsubpy.transports.base import OutgoingMessage

__all__ = ["Relay", "RelayResult"]

log = logging.getLogger("pubsubpy.relay")

# The head of an aggregate is its oldest unsent row, parked or not: an aggregate whose head is parked
# has no head to claim.
_HEADS_POSTGRESQL = """
    SELECT o.id, o.aggregate FROM pubsubpy_outbox o
    WHERE o.sent_at IS NULL AND o.parked_at IS NULL
      AND o.id = (SELECT p.id FROM pubsubpy_outbox p
                  WHERE p.aggregate = o.aggregate AND p.sent_at IS NULL
                  ORDER BY p.id LIMIT 1)
    ORDER BY o.id LIMIT %s
    FOR UPDATE OF o SKIP LOCKED
"""  # a per-row index probe (pubsubpy_outbox_unsent_agg) whatever the planner's statistics say
_CLEAN_EVERY = 300.0
_HELD_CHECK_EVERY = 60.0  # seconds between looks for aggregates held behind a parked row while idle


@dataclass
class RelayResult:
    sent: int = 0
    parked: int = 0
    batches: int = 0

    def __str__(self) -> str:
        return f"{self.sent} sent, {self.parked} parked, in {self.batches} batch(es)"


class Relay:
    def __init__(self, app: PubSub, database: str = "default", batch_size: int = 1000,
                 retention: dt.timedelta = dt.timedelta(days=1)) -> None:
        self.app = app
        self.database = database
        self.batch_size = batch_size
        self.retention = retention
        self._cleaned = 0.0
        self._held_checked = -_HELD_CHECK_EVERY

    # -- one batch -----------------------------------------------------------------
    def _claim(self) -> list[tuple[int, OutgoingMessage]]:
        """(row id, message) of the rows this batch holds, oldest first: none behind a parked row."""
        rows = OutboxMessage.objects.using(self.database)
        parked_before = rows.filter(aggregate=OuterRef("aggregate"), sent_at__isnull=True,
                                    parked_at__isnull=False, id__lt=OuterRef("id"))
        pending = rows.filter(sent_at__isnull=True, parked_at__isnull=True).exclude(Exists(parked_before))
        if connections[self.database].vendor == "postgresql":
            with connections[self.database].cursor() as cursor:
                cursor.execute(_HEADS_POSTGRESQL, [self.batch_size])
                heads = cursor.fetchall()
            if not heads:
                return []
            # The rows behind each claimed head: no other relay takes them while their head is unsent.
            pending = pending.filter(aggregate__in={aggregate for _, aggregate in heads})
        fields = ("id", "exchange", "routing_key", "body", "properties")
        return [(row[0], from_row(*row[1:])) for row in pending.order_by("id").values_list(*fields)[: self.batch_size]]

    def _warn_held(self, idle: bool) -> None:
        """Warn how many aggregates wait behind a parked row, naming one: once per batch, and while
        idle at most every ``_HELD_CHECK_EVERY`` seconds."""
        now = time.monotonic()
        if idle and now - self._held_checked < _HELD_CHECK_EVERY:
            return
        self._held_checked = now
        rows = OutboxMessage.objects.using(self.database)
        behind = rows.filter(aggregate=OuterRef("aggregate"), sent_at__isnull=True, id__gt=OuterRef("id"))
        held = rows.filter(sent_at__isnull=True, parked_at__isnull=False).filter(Exists(behind)).aggregate(
            count=Count("aggregate", distinct=True), one=Min("aggregate"))
        if held["count"]:
            log.warning("%d aggregate(s) held behind a parked row (e.g. %r): their later rows wait until it "
                        "is retried (pubsub outbox retry) or deleted", held["count"], held["one"])

    def relay_batch(self) -> RelayResult:
        """Claim, publish (confirmed), mark sent or parked, commit. Raises ``TransportError`` when the
        broker cannot take the batch (nothing is marked; the rows wait for the next try)."""
        result = RelayResult()
        with transaction.atomic(using=self.database):
            rows = self._claim()
            self._warn_held(idle=not rows)
            if not rows:
                return result
            messages = [message for _, message in rows]
            refused: dict[str, str] = {}
            try:
                unroutable = self.app.send(messages)
            except PublishNacked as exc:
                refused.update({i: f"refused by the broker: {exc}" for i in exc.message_ids})
                unroutable = list(exc.unroutable)
            if unroutable and self.app.settings.on_unroutable == "raise":
                refused.update({i: "unroutable: no queue is bound for its routing key" for i in unroutable})
            now = timezone.now()
            parked: list[int] = []
            for row_id, message in rows:
                why = refused.get(message.properties.message_id or "")
                if why is not None:
                    parked.append(row_id)
                    OutboxMessage.objects.using(self.database).filter(id=row_id).update(parked_at=now, error=why[:2000])
                    log.error("outbox row %s (%s) parked: %s", row_id, message.properties.message_id, why)
            OutboxMessage.objects.using(self.database).filter(id__in=[row_id for row_id, _ in rows]).exclude(
                id__in=parked).update(sent_at=now)
        result.sent, result.parked, result.batches = len(rows) - len(parked), len(parked), 1
        return result

    # -- loops ---------------------------------------------------------------------
    def run_once(self, progress: Callable[[RelayResult], None] | None = None) -> RelayResult:
        """Send everything pending now, batch after batch (``progress`` hears the running total after
        each); then delete expired sent rows."""
        total = RelayResult()
        while True:
            batch = self.relay_batch()
            if not batch.batches:
                break
            total.sent += batch.sent
            total.parked += batch.parked
            total.batches += 1
            if progress is not None:
                progress(total)
        self.clean()
        return total

    def run(self, stop: threading.Event, poll: float = 1.0) -> RelayResult:
        """Relay until ``stop`` is set: pending rows at once, then every ``poll`` seconds; a broker
        failure pauses with capped backoff. The batch in progress finishes before it returns."""
        total = RelayResult()
        backoff = Backoff(0.5, log)
        while not stop.is_set():
            try:
                batch = self.relay_batch()
            except TransportError as exc:
                backoff.pause(f"relay cannot publish ({exc})", stop)
                continue
            backoff.reset()
            total.sent += batch.sent
            total.parked += batch.parked
            total.batches += batch.batches
            if not batch.batches:
                self.clean_now_and_then()
                stop.wait(poll)
        return total

    # -- retention -----------------------------------------------------------------
    def clean(self) -> int:
        cutoff = timezone.now() - self.retention
        deleted: int = OutboxMessage.objects.using(self.database).filter(sent_at__lt=cutoff).delete()[0]
        return deleted

    def clean_now_and_then(self) -> None:
        if time.monotonic() - self._cleaned >= _CLEAN_EVERY:
            self._cleaned = time.monotonic()
            self.clean()


class BackgroundRelay:
    """``OUTBOX_SEND_ON_COMMIT``: a daemon thread in this process, poked after each commit that wrote
    outbox rows, runs the relay at once. Best effort: the save never waits for it, and whatever it
    cannot send (broker down) stays for ``pubsub_relay``. On SQLite, use it or a relay process, not both."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def poke(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="pubsubpy-outbox-relay", daemon=True)
                self._thread.start()
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                self.relay.run_once()
            except Exception as exc:  # the broker or the database: the relay process picks the rows up
                log.warning("immediate outbox send failed (%s); pubsub_relay will send the rows", exc)
            finally:
                connections.close_all()  # this thread's connections: never left open between pokes
