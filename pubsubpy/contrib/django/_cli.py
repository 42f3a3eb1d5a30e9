"""``manage.py pubsub ...``: the ``pubsubpy`` command line inside a Django project.

``manage.py pubsub dlq list`` runs exactly the code of ``pubsubpy dlq list``, on the project's
``PubSub`` (the default instance ``PUBSUBPY`` configured), plus two commands that need Django:
``relay`` (send the outbox) and ``outbox`` (list pending rows, release parked ones). The old
``pubsub_<name>`` commands still work for one release, as aliases that warn (``DeprecatedAlias``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sys
import threading
import warnings
from argparse import Namespace
from collections.abc import Sequence
from typing import Any, ClassVar

import click
from django.core.management.base import BaseCommand, CommandError, CommandParser

import pubsubpy
from pubsubpy.cli._commands import build, run_action
from pubsubpy.contrib.django.apps import duration, outbox_database

__all__ = ["DeprecatedAlias", "PubSubCommand", "django_commands"]


def django_commands() -> list[click.Command]:
    """The commands only a Django project has: ``relay`` and ``outbox``."""

    @click.command(help="Relay the outbox to the broker: until SIGTERM/SIGINT, or --once for what is pending now.")
    @click.option("--once", is_flag=True, help="send what is pending, then exit")
    @click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True,
                  help="rows per batch (one transaction)")
    @click.option("--poll", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
                  help="seconds between looks at an empty outbox")
    def relay(once: bool, batch_size: int, poll: float) -> None:
        from pubsubpy._worker import handle_signals
        from pubsubpy.contrib.django.relay import Relay

        def action() -> int:
            sender = Relay(pubsubpy.get_default(), outbox_database(), batch_size=batch_size,
                           retention=duration("outbox_retention", dt.timedelta(days=1)))
            if once:
                result = sender.run_once(progress=lambda total: click.echo(f"  ... {total}", err=True))
                click.echo(f"relayed: {result}")
                return 0
            if not logging.getLogger().handlers:
                logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
            stop, force = threading.Event(), threading.Event()
            with handle_signals(stop, force):
                logging.getLogger("pubsubpy.relay").info("relay started: database %s, batches of %d",
                                                         sender.database, sender.batch_size)
                result = sender.run(stop, poll=poll)
            click.echo(f"relay stopped: {result}")
            return 0

        run_action(action)

    @click.command(help="The outbox: list rows not yet sent (parked ones with their error), or retry parked rows.")
    @click.argument("action", type=click.Choice(["list", "retry"]))
    @click.option("--json", "as_json", is_flag=True, help="list: one JSON object per line")
    @click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="list: rows shown")
    def outbox(action: str, as_json: bool, limit: int) -> None:
        from pubsubpy.contrib.django.models import OutboxMessage

        rows = OutboxMessage.objects.using(outbox_database()).filter(sent_at__isnull=True)
        if action == "retry":
            count = rows.filter(parked_at__isnull=False).update(parked_at=None, error="")
            click.echo(f"released {count} parked row(s) for the relay")
            return
        total, parked = rows.count(), rows.filter(parked_at__isnull=False).count()
        for row in rows.order_by("id")[:limit]:
            item = {"id": row.id, "message_id": row.message_id, "routing_key": row.routing_key,
                    "aggregate": row.aggregate, "created_at": row.created_at.isoformat(),
                    "parked": row.parked_at is not None, "error": row.error}
            if as_json:
                click.echo(json.dumps(item))
            else:
                state = f"PARKED: {row.error}" if row.parked_at else "pending"
                click.echo(f"{row.id:>8}  {row.created_at:%Y-%m-%d %H:%M:%S}  {row.routing_key:<24} "
                           f"{row.message_id}  {state}")
        if not as_json:
            click.echo(f"{total} unsent row(s), {parked} parked")

    return [relay, outbox]


class _PassThrough(CommandParser):
    """Django's parser, for the defaults of its own options; every token goes to the click command line
    (``call_command("pubsub", "dlq", "list", "--json")``)."""

    def parse_args(self, args: Sequence[str] | None = None, namespace: None = None) -> Namespace:  # type: ignore[override]
        parsed = super().parse_args([])
        parsed.args = list(args or ())
        return parsed


class PubSubCommand(BaseCommand):
    """``manage.py pubsub <the pubsubpy command line>``; see the module docstring."""

    help = "The pubsubpy command line on this project's PubSub (manage.py pubsub --help), plus relay and outbox."
    prefix: ClassVar[Sequence[str]] = ()  # an alias's subcommand, put before what it was given

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.__class__ = _PassThrough
        return parser

    def run_from_argv(self, argv: list[str]) -> None:
        """From the shell: click parses, prints and exits with its code (as ``pubsubpy`` does)."""
        self.warn_if_alias()
        cli = build(extra=django_commands())
        cli.main([*self.prefix, *self.translate(argv[2:])], prog_name=f"{argv[0]} pubsub")

    def handle(self, *args: str, **options: Any) -> None:
        """From ``call_command``: click writes to this command's stdout and stderr; a non-zero exit is a
        ``CommandError`` carrying the code."""
        self.warn_if_alias()
        cli = build(extra=django_commands())
        out = getattr(self.stdout, "_out", sys.stdout)
        err = getattr(self.stderr, "_out", sys.stderr)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main([*self.prefix, *self.translate(list(args))], prog_name="manage.py pubsub")
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if code:
                    raise CommandError(f"manage.py pubsub {' '.join([*self.prefix, *args])} exited {code}",
                                       returncode=code) from None

    def warn_if_alias(self) -> None:
        pass

    def translate(self, args: list[str]) -> list[str]:
        """An old command's arguments as ``manage.py pubsub`` takes them (unchanged here)."""
        return args


class DeprecatedAlias(PubSubCommand):
    """An old ``manage.py pubsub_<name>`` command: runs ``manage.py pubsub <name> ...`` with a warning.
    ``renamed`` maps (first argument, old option) to the new option, e.g. ``schema lock --lock F``, which
    ``pubsubpy schema lock`` spells ``--out F``."""

    renamed: ClassVar[dict[tuple[str, str], str]] = {}

    def translate(self, args: list[str]) -> list[str]:
        first = args[0] if args else ""
        return [self.renamed.get((first, arg), arg) for arg in args]

    def warn_if_alias(self) -> None:
        old = type(self).__module__.rsplit(".", 1)[-1]
        new = f"manage.py pubsub {' '.join(self.prefix)}"
        message = f"manage.py {old} is deprecated and goes in the next release: use {new}"
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        self.stderr.write(f"warning: {message}")
