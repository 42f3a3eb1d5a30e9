"""``manage.py pubsub_dlq list|show|replay|purge``: dead letters, like ``pubsubpy dlq``."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

import pubsubpy
from pubsubpy.errors import PubSubError
from pubsubpy.formatting import letter_json, letters_table


class Command(BaseCommand):
    help = "Dead letters: list (unchanged), show ID, replay [IDS], purge [IDS]."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("action", choices=["list", "show", "replay", "purge"])
        parser.add_argument("message_ids", nargs="*")
        parser.add_argument("--reason")
        parser.add_argument("--topic")
        parser.add_argument("--handler")
        parser.add_argument("--limit", type=int)
        parser.add_argument("--json", action="store_true", dest="as_json")
        parser.add_argument("--yes", action="store_true", help="purge without asking")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self._handle(options)
        except PubSubError as exc:
            raise CommandError(f"{type(exc).__name__}: {exc}") from exc

    def _handle(self, options: dict[str, Any]) -> None:
        app = pubsubpy.get_default()
        action, ids = options["action"], options["message_ids"]
        filters = {key: options[key] for key in ("reason", "topic", "handler")}
        if action == "list":
            letters = app.list_dead_letters(limit=options["limit"], **filters)
            if options["as_json"]:
                for letter in letters:
                    self.stdout.write(json.dumps(letter_json(letter), sort_keys=True))
            else:
                self.stdout.write(letters_table(letters) if letters else "no dead letters")
            return
        if action == "show":
            if len(ids) != 1:
                raise CommandError("show takes exactly one message id")
            found = [x for x in app.list_dead_letters() if x.message_id.startswith(ids[0])]
            if not found:
                raise CommandError(f"no dead letter with id {ids[0]}", returncode=1)
            for letter in found:
                self.stdout.write(json.dumps(letter_json(letter), indent=2, sort_keys=True))
            return
        if action == "purge" and not options["yes"]:
            answer = input(f"Delete {', '.join(ids) or 'every matching dead letter'}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                raise CommandError("nothing deleted", returncode=1)
        method = app.replay_dead_letters if action == "replay" else app.purge_dead_letters
        done = method(set(ids) or None, **filters)
        verb = "replayed" if action == "replay" else "purged"
        self.stdout.write(f"{verb} {len(done)} dead letter(s)")
        missing = sorted(set(ids) - set(done))
        if missing:
            raise CommandError(f"not found: {', '.join(missing)}", returncode=1)
