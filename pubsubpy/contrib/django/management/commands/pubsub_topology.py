"""``manage.py pubsub_topology [--format text|json|mermaid]``: the service as the broker holds it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

import pubsubpy
from pubsubpy.contrib.django.model_events import published_schemas
from pubsubpy.errors import PubSubError
from pubsubpy.topology_view import describe, render


class Command(BaseCommand):
    help = "Show this service's exchange, bindings, queues (depth, consumers), handlers and published events."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=["text", "json", "mermaid"], default="text")

    def handle(self, *args: Any, **options: Any) -> None:
        app = pubsubpy.get_default()
        try:
            view = describe(app, published_schemas(app))
        except PubSubError as exc:
            raise CommandError(f"{type(exc).__name__}: {exc}") from exc
        self.stdout.write(render(view, options["format"]))
