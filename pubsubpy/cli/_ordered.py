"""``pubsubpy ordered reset --key K [--handler H]``: forget a key's last applied sequence.

The stale-event guard of ``ordered=True, idempotent=True`` handlers skips an
event whose sequence is not newer than the last one applied for its key. When
a publisher's sequence restarts on purpose (a rebuilt aggregate, a restored
database whose later events are to be applied again), reset the key: its next
event runs whatever its sequence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pubsubpy.app import PubSub
from pubsubpy.errors import ConfigurationError
from pubsubpy.inbox import OrderedInbox

__all__ = ["register_ordered_commands"]

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def register_ordered_commands(group: click.Group, with_connection: Decorator, load: Callable[..., PubSub],
                              run: Callable[[Callable[[], int | None]], None]) -> None:
    @group.command("reset", help="Forget the last applied sequence of a key, so its next event runs "
                                 "whatever its sequence (the stale guard of ordered, idempotent handlers).")
    @with_connection
    @click.option("--key", required=True, help="the ordering key, as MessageInfo.key and the logs show it "
                                               "(<model path>:<value>)")
    @click.option("--handler", default=None, help="only this handler (its full name, module.function, as "
                                                  "logged); default: every handler")
    def reset(url: str | None, exchange: str | None, service: str | None, app_path: str | None, key: str,
              handler: str | None) -> None:
        def action() -> int:
            app = load(app_path, url, exchange, service)
            inbox = app.inbox
            if not isinstance(inbox, OrderedInbox):
                what = "no inbox" if inbox is None else f"an inbox without the stale guard ({type(inbox).__name__})"
                raise ConfigurationError(f"this PubSub has {what}: the sequences live in the inbox of ordered, "
                                         "idempotent handlers (pass --app with the PubSub your workers use, or "
                                         "run `manage.py pubsub ordered reset` under Django)")
            cleared = inbox.reset_order(key, handler)
            whose = f"handler {handler}" if handler else "every handler"
            click.echo(f"cleared {cleared} record(s) of key {key} ({whose})")
            return 0

        run(action)
