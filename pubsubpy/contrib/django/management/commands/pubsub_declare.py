"""``manage.py pubsub_declare``: create the exchange, queues and bindings at deploy time."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

import pubsubpy
from pubsubpy.errors import PubSubError


class Command(BaseCommand):
    help = "Declare this service's exchange, queues and bindings (run at deploy time)."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            topology = pubsubpy.get_default().declare()
        except PubSubError as exc:
            raise CommandError(f"{type(exc).__name__}: {exc}") from exc
        self.stdout.write(f"declared exchange {topology.exchange}, queue {topology.queue.name} "
                          f"({len(topology.bindings)} bindings), dead letters {topology.dead_letter_queue.name}")
