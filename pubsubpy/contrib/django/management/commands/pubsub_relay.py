"""``manage.py pubsub_relay [--once] [--batch-size N]``: send outbox rows to the broker after their commit."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

import pubsubpy
from pubsubpy.contrib.django.apps import duration, outbox_database
from pubsubpy.contrib.django.relay import Relay
from pubsubpy.errors import PubSubError
from pubsubpy.worker import handle_signals


class Command(BaseCommand):
    help = "Relay the outbox to the broker: until SIGTERM/SIGINT, or --once for what is pending now."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="send what is pending, then exit")
        parser.add_argument("--batch-size", type=int, default=1000, help="rows per batch (one transaction)")
        parser.add_argument("--poll", type=float, default=1.0, help="seconds between looks at an empty outbox")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be >= 1")
        relay = Relay(pubsubpy.get_default(), outbox_database(), batch_size=options["batch_size"],
                      retention=duration("outbox_retention", dt.timedelta(days=1)))
        try:
            if options["once"]:
                result = relay.run_once(progress=lambda total: self.stderr.write(f"  ... {total}"))
                self.stdout.write(f"relayed: {result}")
                return
            if not logging.getLogger().handlers:
                logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
            stop, force = threading.Event(), threading.Event()
            with handle_signals(stop, force):
                logging.getLogger("pubsubpy.relay").info("relay started: database %s, batches of %d",
                                                         relay.database, relay.batch_size)
                result = relay.run(stop, poll=options["poll"])
            self.stdout.write(f"relay stopped: {result}")
        except PubSubError as exc:
            raise CommandError(f"{type(exc).__name__}: {exc}") from exc
