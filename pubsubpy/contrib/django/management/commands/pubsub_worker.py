"""``manage.py pubsub_worker``: consume until SIGTERM/SIGINT, like ``pubsubpy worker``."""

from __future__ import annotations

import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

import pubsubpy
from pubsubpy.aio.worker import run_worker
from pubsubpy.errors import PubSubError
from pubsubpy.worker import exit_code


class Command(BaseCommand):
    help = "Run a long-lived consumer for this service until SIGTERM/SIGINT (graceful stop)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--concurrency", type=int, default=1, help="handlers running at once, on threads")
        parser.add_argument("--metrics-port", type=int, default=None,
                            help="serve Prometheus /metrics and a /healthz readiness probe "
                                 "(pubsubpy-events[prometheus])")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["concurrency"] < 1:
            raise CommandError(f"--concurrency must be >= 1, got {options['concurrency']}")
        app = pubsubpy.get_default()
        server = None
        try:
            if options["metrics_port"] is not None:
                from pubsubpy.telemetry.server import serve_metrics

                server = serve_metrics(app, options["metrics_port"])
            result = run_worker(app, options["concurrency"])  # with an event loop for async def handlers
        except PubSubError as exc:
            raise CommandError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            if server is not None:
                server.close()
        self.stdout.write(str(result))
        code = exit_code(result)
        if code:
            self.stderr.write("stopped before every running handler finished; their messages were returned")
            sys.exit(code)
