"""The Django inbox: an idempotent handler's run and its record commit together.

``run_once`` opens a transaction on the inbox database (``"default"``: where
handlers usually write), inserts (message id, handler) into ``pubsubpy_inbox``
(a unique pair), runs the handler, and commits both. A duplicate insert means
the handler already ran: it is skipped. A handler that raises rolls its record
back with its effects, so its retry runs it again. Two consumers handed the
same message at once: the second insert waits for the first transaction, then
fails as a duplicate (or succeeds, if the first rolled back).

Replays of the event log (``ReplayInbox``): a backfill's checkpoint lives in
``pubsubpy_replay_checkpoint``, and a rebuild deletes a handler's records.

Rows older than ``INBOX_RETENTION`` (default 30 days) are deleted now and then;
a message redelivered or replayed after its row expired runs again.

``run_in_order`` (``ordered=True, idempotent=True``) adds the stale-event
guard: in the same transaction it locks the (handler, ordering key) row of
``pubsubpy_inbox_sequence`` (``SELECT ... FOR UPDATE``) and skips the event,
recording nothing, when the row's sequence is the event's or newer; else it
moves the row to the event's sequence and runs the handler. Two consumers with
events of one key queue on that row lock; the first event of a key inserts the
row, and a concurrent insert waits on the unique index, then decides again
against the row the other committed. Retention never deletes these rows
(``reset_order`` does): a replay after months is still recognised as stale.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Collection

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from pubsubpy.contrib.django.models import InboxMessage, InboxSequence, ReplayCheckpoint
from pubsubpy.inbox import Applied, OrderedRun

__all__ = ["DjangoInbox"]

_CLEAN_EVERY = 3600.0  # seconds between deletions of expired rows (per process)
_LOOKUP_BATCH = 500    # message ids per query of ``recorded`` (a dry run's)


class DjangoInbox:
    def __init__(self, database: str = "default", retention: dt.timedelta = dt.timedelta(days=30)) -> None:
        self.database = database
        self.retention = retention
        self._cleaned = 0.0
        self._lock = threading.Lock()

    def run_once(self, message_id: str, handler: str, call: Callable[[], object]) -> bool:
        with transaction.atomic(using=self.database):
            if not self._record(message_id, handler[:255]):
                return False
            call()
        self._clean_now_and_then()
        return True

    def run_in_order(self, message_id: str, handler: str, key: str, sequence: int,
                     call: Callable[[], object]) -> OrderedRun:
        handler, key = handler[:255], key[:255]
        with transaction.atomic(using=self.database):
            if not self._record(message_id, handler):
                return OrderedRun(Applied.DUPLICATE, self._sequences(handler, key).values_list(
                    "sequence", flat=True).first())
            newer, last = self._advance(handler, key, sequence)
            if not newer:
                transaction.set_rollback(True, using=self.database)  # the message's record goes too
                return OrderedRun(Applied.STALE, last)
            call()  # in the transaction: a failure rolls back the record and the sequence
        self._clean_now_and_then()
        return OrderedRun(Applied.RAN, last)

    def reset_order(self, key: str, handler: str | None = None) -> int:
        rows = InboxSequence.objects.using(self.database).filter(key=key[:255])
        if handler is not None:
            rows = rows.filter(handler=handler[:255])
        deleted: int = rows.delete()[0]
        return deleted

    def replay_state(self, name: str) -> str | None:
        state: str | None = ReplayCheckpoint.objects.using(self.database).filter(name=name[:255]).values_list(
            "state", flat=True).first()
        return state

    def save_replay_state(self, name: str, state: str | None) -> None:
        rows = ReplayCheckpoint.objects.using(self.database)
        if state is None:
            rows.filter(name=name[:255]).delete()
        else:
            rows.update_or_create(name=name[:255], defaults={"state": state})

    def recorded(self, handler: str, message_ids: Collection[str]) -> set[str]:
        found: set[str] = set()
        ids = list(message_ids)
        for start in range(0, len(ids), _LOOKUP_BATCH):
            found.update(InboxMessage.objects.using(self.database).filter(
                handler=handler[:255], message_id__in=ids[start:start + _LOOKUP_BATCH]).values_list(
                "message_id", flat=True))
        return found

    def forget_handler(self, handler: str) -> int:
        with transaction.atomic(using=self.database):
            messages: int = InboxMessage.objects.using(self.database).filter(handler=handler[:255]).delete()[0]
            sequences: int = InboxSequence.objects.using(self.database).filter(handler=handler[:255]).delete()[0]
        return messages + sequences

    def _record(self, message_id: str, handler: str) -> bool:
        """Insert (message id, handler); False when it is there already (a duplicate)."""
        try:
            with transaction.atomic(using=self.database):  # a savepoint: the duplicate's error stays in it
                InboxMessage.objects.using(self.database).create(message_id=message_id, handler=handler)
        except IntegrityError:
            return False
        return True

    def _sequences(self, handler: str, key: str) -> QuerySet[InboxSequence]:
        rows: QuerySet[InboxSequence] = InboxSequence.objects.using(self.database).filter(handler=handler, key=key)
        return rows

    def _advance(self, handler: str, key: str, sequence: int) -> tuple[bool, int | None]:
        """Lock the (handler, key) row and move it to ``sequence`` unless that is not newer; (moved, the
        sequence it had). Done before the handler runs, so a concurrent first event of the key is decided
        before any effect; the caller's transaction undoes it with a handler that fails."""
        try:
            return self._advance_once(handler, key, sequence)
        except IntegrityError:  # another consumer's first event of the key committed its row: decide again
            return self._advance_once(handler, key, sequence)

    def _advance_once(self, handler: str, key: str, sequence: int) -> tuple[bool, int | None]:
        rows = self._sequences(handler, key)
        last = rows.select_for_update().values_list("sequence", flat=True).first()
        if last is None:
            with transaction.atomic(using=self.database):  # a savepoint: a concurrent insert's error stays in it
                rows.create(handler=handler, key=key, sequence=sequence)
        elif sequence > last:
            rows.update(sequence=sequence, updated_at=timezone.now())
        return last is None or sequence > last, last

    def _clean_now_and_then(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._cleaned < _CLEAN_EVERY:
                return
            self._cleaned = now
        self.clean()

    def clean(self) -> int:
        """Delete message records older than the retention (never sequences); returns how many."""
        cutoff = timezone.now() - self.retention
        deleted: int = InboxMessage.objects.using(self.database).filter(received_at__lt=cutoff).delete()[0]
        return deleted
