"""The Django inbox: an idempotent handler's run and its record commit together.

``run_once`` opens a transaction on the inbox database (``"default"``: where
handlers usually write), inserts (message id, handler) into ``pubsubpy_inbox``
(a unique pair), runs the handler, and commits both. A duplicate insert means
the handler already ran: it is skipped. A handler that raises rolls its record
back with its effects, so its retry runs it again. Two consumers handed the
same message at once: the second insert waits for the first transaction, then
fails as a duplicate (or succeeds, if the first rolled back).

Rows older than ``INBOX_RETENTION`` (default 30 days) are deleted now and then;
a message redelivered or replayed after its row expired runs again.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable

from django.db import IntegrityError, transaction
from django.utils import timezone

from pubsubpy.contrib.django.models import InboxMessage

__all__ = ["DjangoInbox"]

_CLEAN_EVERY = 3600.0  # seconds between deletions of expired rows (per process)


class DjangoInbox:
    def __init__(self, database: str = "default", retention: dt.timedelta = dt.timedelta(days=30)) -> None:
        self.database = database
        self.retention = retention
        self._cleaned = 0.0
        self._lock = threading.Lock()

    def run_once(self, message_id: str, handler: str, call: Callable[[], object]) -> bool:
        with transaction.atomic(using=self.database):
            try:
                with transaction.atomic(using=self.database):  # a savepoint: the duplicate's error stays in it
                    InboxMessage.objects.using(self.database).create(message_id=message_id, handler=handler[:255])
            except IntegrityError:
                return False
            call()
        self._clean_now_and_then()
        return True

    def _clean_now_and_then(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._cleaned < _CLEAN_EVERY:
                return
            self._cleaned = now
        self.clean()

    def clean(self) -> int:
        """Delete records older than the retention; returns how many."""
        cutoff = timezone.now() - self.retention
        deleted: int = InboxMessage.objects.using(self.database).filter(received_at__lt=cutoff).delete()[0]
        return deleted
