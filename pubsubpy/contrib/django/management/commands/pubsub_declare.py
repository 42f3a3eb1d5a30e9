"""``manage.py pubsub_declare [--prune [--dry-run] [--yes]]``: declare at deploy time; prune on purpose."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

import pubsubpy
from pubsubpy.errors import PubSubError
from pubsubpy.pruning import declare_and_prune


def _ask(question: str) -> bool:
    if not sys.stdin.isatty():
        sys.stdout.write(f"{question} no terminal to ask on: pass --yes to remove them\n")
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


class Command(BaseCommand):
    help = "Declare this service's exchange, queues and bindings (run at deploy time); --prune removes stale ones."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--prune", action="store_true", help="list stale bindings, ask, remove them")
        parser.add_argument("--dry-run", action="store_true", help="with --prune: only list, change nothing")
        parser.add_argument("--yes", action="store_true", help="with --prune: do not ask")

    def handle(self, *args: Any, **options: Any) -> None:
        if (options["dry_run"] or options["yes"]) and not options["prune"]:
            raise CommandError("--dry-run and --yes go with --prune")
        try:
            code = declare_and_prune(pubsubpy.get_default(), prune=options["prune"], dry_run=options["dry_run"],
                                     yes=options["yes"], echo=self.stdout.write, confirm=_ask)
        except PubSubError as exc:
            raise CommandError(f"{type(exc).__name__}: {exc}") from exc
        if code:
            raise CommandError("nothing removed", returncode=code)
