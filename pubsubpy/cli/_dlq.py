"""``pubsubpy dlq list | show ID | replay | purge``: dead letters from the command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click
from click.termui import progressbar

from pubsubpy.app import PubSub
from pubsubpy.cli._formatting import letter_json, letters_table
from pubsubpy.deadletters import DeadLetter
from pubsubpy.deadline import Deadline

__all__ = ["register_dlq_commands"]


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def register_dlq_commands(group: click.Group, with_connection: Decorator, load: Callable[..., PubSub],
                          run: Callable[[Callable[[], int | None]], None]) -> None:
    filters = [
        click.option("--reason", default=None, help="only this reason code"),
        click.option("--topic", default=None, help="only routing keys matching this pattern"),
        click.option("--handler", default=None, help="only dead letters of this handler"),
    ]

    def with_filters(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(filters):
            func = option(func)
        return func

    timeout_option = click.option("--timeout", type=click.FloatRange(min=0.1), default=120.0, show_default=True,
                                  help="seconds for the whole command, connecting included")

    @group.command("list", help="List dead letters (the queue is left unchanged).")
    @with_connection
    @timeout_option
    @with_filters
    @click.option("--limit", type=click.IntRange(min=1), default=None,
                  help="stop after this many matching dead letters (default: all)")
    @click.option("--json", "as_json", is_flag=True, help="JSON lines, for scripts")
    def list_(url: str | None, exchange: str | None, service: str | None, app_path: str | None,
              reason: str | None, topic: str | None, handler: str | None, limit: int | None,
              as_json: bool, timeout: float) -> None:
        def action() -> None:
            app = load(app_path, url, exchange, service)
            letters = app.list_dead_letters(limit=limit, reason=reason, topic=topic, handler=handler, timeout=timeout)
            if as_json:
                for letter in letters:
                    click.echo(json.dumps(letter_json(letter), sort_keys=True))
            elif letters:
                click.echo(letters_table(letters))
                click.echo(f"{len(letters)} dead letter(s)")
            else:
                click.echo("no dead letters")

        run(action)

    @group.command(help="Show one dead letter in full.")
    @with_connection
    @timeout_option
    @click.argument("message_id")
    def show(url: str | None, exchange: str | None, service: str | None, app_path: str | None,
             message_id: str, timeout: float) -> None:
        def action() -> int:
            app = load(app_path, url, exchange, service)
            found = [letter for letter in app.list_dead_letters(timeout=timeout)
                     if letter.message_id.startswith(message_id)]
            if not found:
                click.echo(f"no dead letter with id {message_id}", err=True)
                return 1
            for letter in found:
                click.echo(json.dumps(letter_json(letter), indent=2, sort_keys=True))
            return 0

        run(action)

    def bulk(verb: str, method: Callable[..., list[str]], ids: tuple[str, ...], reason: str | None,
             topic: str | None, handler: str | None, app: PubSub, timeout: float) -> int:
        everything = not ids and reason is None and topic is None and handler is None
        deadline = Deadline.after(timeout)
        total = app.dead_letter_count(timeout=deadline.remaining()) if everything or not ids else len(ids)
        with progressbar(length=total, label=verb.replace("ed", "ing", 1), file=sys.stderr) as bar:

            def step(_letter: DeadLetter) -> None:
                bar.update(1)

            done = method(set(ids) or None, reason=reason, topic=topic, handler=handler, progress=step,
                          timeout=max(deadline.remaining(), 0.001))
        click.echo(f"{verb} {len(done)} dead letter(s)")
        missing = sorted(set(ids) - set(done))
        if missing:
            click.echo(f"not found: {', '.join(missing)}", err=True)
            return 1
        return 0

    @group.command(help="Send dead letters back to the service queue (all, or by id / filter). "
                        "Replaying all of them asks first unless --yes.")
    @with_connection
    @with_filters
    @click.option("--yes", is_flag=True, help="do not ask (asked only without ids and filters)")
    @timeout_option
    @click.argument("message_ids", nargs=-1)
    def replay(url: str | None, exchange: str | None, service: str | None, app_path: str | None,
               reason: str | None, topic: str | None, handler: str | None, yes: bool, timeout: float,
               message_ids: tuple[str, ...]) -> None:
        def action() -> int:
            app = load(app_path, url, exchange, service)
            everything = not message_ids and reason is None and topic is None and handler is None
            if everything and not yes and not click.confirm(
                    f"Replay every dead letter of {app.settings.service_name} to its handlers?", default=False):
                click.echo("nothing replayed")
                return 1
            return bulk("replayed", app.replay_dead_letters, message_ids, reason, topic, handler, app, timeout)

        run(action)

    @group.command(help="Delete dead letters (all, or by id / filter). Asks first unless --yes.")
    @with_connection
    @with_filters
    @click.option("--yes", is_flag=True, help="do not ask")
    @timeout_option
    @click.argument("message_ids", nargs=-1)
    def purge(url: str | None, exchange: str | None, service: str | None, app_path: str | None,
              reason: str | None, topic: str | None, handler: str | None, yes: bool, timeout: float,
              message_ids: tuple[str, ...]) -> None:
        def action() -> int:
            app = load(app_path, url, exchange, service)
            what = ", ".join(message_ids) if message_ids else "every matching dead letter"
            if not yes and not click.confirm(f"Delete {what} from {app.settings.service_name}?", default=False):
                click.echo("nothing deleted")
                return 1
            return bulk("purged", app.purge_dead_letters, message_ids, reason, topic, handler, app, timeout)

        run(action)
