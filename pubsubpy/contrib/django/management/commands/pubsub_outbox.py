"""``manage.py pubsub_outbox list|retry [--all]``: see what waits in the outbox, release parked rows."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pubsubpy.contrib.django.apps import outbox_database
from pubsubpy.contrib.django.models import OutboxMessage


class Command(BaseCommand):
    help = "List outbox rows not yet sent (parked ones with their error); retry parked rows."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["list", "retry"])
        parser.add_argument("--json", action="store_true", help="list: one JSON object per line")
        parser.add_argument("--limit", type=int, default=100)

    def handle(self, *args: Any, **options: Any) -> None:
        rows = OutboxMessage.objects.using(outbox_database()).filter(sent_at__isnull=True)
        if options["action"] == "retry":
            count = rows.filter(parked_at__isnull=False).update(parked_at=None, error="")
            self.stdout.write(f"released {count} parked row(s) for the relay")
            return
        if options["limit"] < 1:
            raise CommandError("--limit must be >= 1")
        total, parked = rows.count(), rows.filter(parked_at__isnull=False).count()
        for row in rows.order_by("id")[: options["limit"]]:
            item = {"id": row.id, "message_id": row.message_id, "routing_key": row.routing_key,
                    "aggregate": row.aggregate, "created_at": row.created_at.isoformat(),
                    "parked": row.parked_at is not None, "error": row.error}
            if options["json"]:
                self.stdout.write(json.dumps(item))
            else:
                state = f"PARKED: {row.error}" if row.parked_at else "pending"
                self.stdout.write(f"{row.id:>8}  {row.created_at:%Y-%m-%d %H:%M:%S}  {row.routing_key:<24} "
                                  f"{row.message_id}  {state}")
        if not options["json"]:
            self.stdout.write(f"{total} unsent row(s), {parked} parked")
