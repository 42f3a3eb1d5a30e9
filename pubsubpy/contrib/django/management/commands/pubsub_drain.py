"""``manage.py pubsub_drain``: consume everything outstanding for this service, then exit."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

import pubsubpy
from pubsubpy.errors import PubSubError


class Command(BaseCommand):
    help = "Consume everything outstanding for this service's queue, then exit."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--max-messages", type=int, default=None)
        parser.add_argument("--timeout", type=float, default=60.0)
        parser.add_argument("--fail-on-dead-letters", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = pubsubpy.get_default().drain(max_messages=options["max_messages"], timeout=options["timeout"])
        except PubSubError as exc:
            raise CommandError(f"{type(exc).__name__}: {exc}") from exc
        self.stdout.write(str(result))
        if options["fail_on_dead_letters"] and result.dead_lettered:
            raise CommandError(f"{result.dead_lettered} message(s) were dead-lettered", returncode=1)
