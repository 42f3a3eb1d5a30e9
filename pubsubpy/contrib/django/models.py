"""The outbox and inbox tables (migrations ``0001_initial``, ``0002_ordering`` and ``0003_replay`` ship with the
app)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import models


class OutboxMessage(models.Model):
    """One event waiting for the relay, exactly as it will be sent. ``id`` order is commit order
    within an aggregate (rows are inserted inside the transaction that made the change)."""

    id: int
    message_id: models.CharField[str, str] = models.CharField(max_length=64, unique=True)
    exchange: models.CharField[str, str] = models.CharField(max_length=255)
    routing_key: models.CharField[str, str] = models.CharField(max_length=255)
    body: models.BinaryField[bytes, bytes] = models.BinaryField()
    properties: models.JSONField[dict[str, Any], dict[str, Any]] = models.JSONField()
    # events of one aggregate go out in order (model path + primary key)
    aggregate: models.CharField[str, str] = models.CharField(max_length=255)
    created_at: models.DateTimeField[dt.datetime, dt.datetime] = models.DateTimeField(auto_now_add=True)
    sent_at: models.DateTimeField[dt.datetime | None, dt.datetime | None] = models.DateTimeField(null=True, blank=True)
    parked_at: models.DateTimeField[dt.datetime | None, dt.datetime | None] = models.DateTimeField(
        null=True, blank=True)  # the broker refused it: never retried alone
    error: models.TextField[str, str] = models.TextField(blank=True, default="")

    class Meta:
        db_table = "pubsubpy_outbox"
        indexes = [
            models.Index(fields=["sent_at", "parked_at", "id"], name="pubsubpy_outbox_pending"),
            # the relay's "oldest unsent row of this aggregate?" probe, one index lookup per candidate;
            # parked rows are in it: a parked row is its aggregate's head and holds the rows behind it
            models.Index(fields=["aggregate", "id"], name="pubsubpy_outbox_unsent_agg",
                         condition=models.Q(sent_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.routing_key} {self.message_id}"


class OutboxSequence(models.Model):
    """The last ``pubsubpy-sequence`` the outbox stamped for one aggregate. Its row is locked by the
    transaction that stamps until that transaction ends, so sequence order is commit order."""

    id: int
    aggregate: models.CharField[str, str] = models.CharField(max_length=255, unique=True)
    last: models.BigIntegerField[int, int] = models.BigIntegerField()

    class Meta:
        db_table = "pubsubpy_outbox_sequence"

    def __str__(self) -> str:
        return f"{self.aggregate} {self.last}"


class InboxMessage(models.Model):
    """A (message, handler) pair an idempotent handler has run for, committed with its effects."""

    id: int
    message_id: models.CharField[str, str] = models.CharField(max_length=64)
    handler: models.CharField[str, str] = models.CharField(max_length=255)
    received_at: models.DateTimeField[dt.datetime, dt.datetime] = models.DateTimeField(auto_now_add=True,
                                                                                       db_index=True)

    class Meta:
        db_table = "pubsubpy_inbox"
        constraints = [models.UniqueConstraint(fields=["message_id", "handler"], name="pubsubpy_inbox_once")]

    def __str__(self) -> str:
        return f"{self.handler} {self.message_id}"


class InboxSequence(models.Model):
    """The last sequence an ordered handler applied for one ordering key, committed with its effects.
    Retention (``INBOX_RETENTION``) never deletes these rows: ``DjangoInbox.reset_order`` does."""

    id: int
    handler: models.CharField[str, str] = models.CharField(max_length=255)
    key: models.CharField[str, str] = models.CharField(max_length=255)
    sequence: models.BigIntegerField[int, int] = models.BigIntegerField()
    updated_at: models.DateTimeField[dt.datetime, dt.datetime] = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "pubsubpy_inbox_sequence"
        constraints = [models.UniqueConstraint(fields=["handler", "key"], name="pubsubpy_inbox_sequence_once")]

    def __str__(self) -> str:
        return f"{self.handler} {self.key} {self.sequence}"


class ReplayCheckpoint(models.Model):
    """Where a worker's backfill of the event log is (``worker --backfill``): resumed from here after a crash,
    and the ids its hand-over to the live queue skips (see ``pubsubpy/_replay/handover.py``)."""

    id: int
    name: models.CharField[str, str] = models.CharField(max_length=255, unique=True)
    state: models.TextField[str, str] = models.TextField()
    updated_at: models.DateTimeField[dt.datetime, dt.datetime] = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "pubsubpy_replay_checkpoint"

    def __str__(self) -> str:
        return self.name
