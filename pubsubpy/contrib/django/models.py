"""The outbox and inbox tables (migration ``0001_initial`` ships with the app)."""

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
            # the relay's "oldest unsent row of this aggregate?" probe, one index lookup per candidate
            models.Index(fields=["aggregate", "id"], name="pubsubpy_outbox_unsent_agg",
                         condition=models.Q(sent_at__isnull=True, parked_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.routing_key} {self.message_id}"


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
