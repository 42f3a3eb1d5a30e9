"""``manage.py pubsub_schema lock|check|export|docs``: the schema contract gate, as ``pubsubpy schema``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

import pubsubpy
from pubsubpy.contrib.django.model_events import published_schemas
from pubsubpy.errors import PubSubError
from pubsubpy.schema_cli import check_lock, export_asyncapi, export_jsonschema, write_docs
from pubsubpy.schemas.lockfile import DEFAULT_LOCK, write_lock


class Command(BaseCommand):
    help = "Lock the event schemas, check changes against the lock (exit 1 on a break), or export them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["lock", "check", "export", "docs"])
        parser.add_argument("--out", default="event-catalogue", help="docs: directory for index.html")
        parser.add_argument("--input", action="append", default=[], help="docs: another service's AsyncAPI JSON")
        parser.add_argument("--lock", default=DEFAULT_LOCK, help="the lock file (lock: where to write it)")
        parser.add_argument("--format", choices=["jsonschema", "asyncapi"], default="jsonschema")

    def handle(self, *args: Any, **options: Any) -> None:
        registry = pubsubpy.get_default().registry
        try:
            if options["action"] == "lock":
                self.stdout.write(f"wrote {options['lock']}: {write_lock(registry, options['lock'])} schema version(s)")
            elif options["action"] == "docs":
                app = pubsubpy.get_default()
                page = write_docs(export_asyncapi(app, published_schemas(app)), options["input"], options["out"])
                self.stdout.write(f"wrote {page}")
            elif options["action"] == "export" and options["format"] == "asyncapi":
                app = pubsubpy.get_default()
                self.stdout.write(export_asyncapi(app, published_schemas(app)))
            elif options["action"] == "export":
                self.stdout.write(export_jsonschema(registry))
            elif check_lock(registry, options["lock"], self.stdout.write):
                raise CommandError("breaking schema changes (see above)", returncode=1)
        except PubSubError as exc:
            raise CommandError(f"{type(exc).__name__}: {exc}") from exc
