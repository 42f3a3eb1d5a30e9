"""``declare --prune``, shared by ``pubsubpy declare`` and ``manage.py pubsub_declare``.

Declaring is additive; pruning is an operator's decision, so the command says
what it will remove and how many messages the queue holds, then asks (unless
``--yes``), or only prints (``--dry-run``). It removes only the bindings
listed and confirmed, and only those pubsubpy recorded making.
"""

from __future__ import annotations

from collections.abc import Callable

from pubsubpy.app import PubSub
from pubsubpy.topology import SHARDS_ARROW

__all__ = ["EXIT_DECLINED", "declare_and_prune"]

EXIT_DECLINED = 1


def declare_and_prune(app: PubSub, *, prune: bool, dry_run: bool, yes: bool, echo: Callable[[str], None],
                      confirm: Callable[[str], bool], timeout: float = 60.0) -> int:
    topology = app.declare() if not dry_run else app.topology()
    if not dry_run:
        echo(f"declared exchange {topology.exchange}, queue {topology.queue.name} ({len(topology.bindings)} "
             f"bindings), dead letters {topology.dead_letter_queue.name}")
    if not prune:
        return 0
    stale = app.stale_bindings(timeout=timeout)
    if not stale:
        echo("no stale bindings: every binding pubsubpy recorded is subscribed by this version")
        return 0
    info = app.transport.queue_info(topology.queue.name)
    held = "missing" if info is None else f"holds {info.messages} message(s), {info.consumers} consumer(s)"
    echo(f"{len(stale)} binding(s) pubsubpy made that no handler of this version subscribes:")
    for name in stale:
        pattern, _, shards = name.partition(SHARDS_ARROW)  # a binding to a shards exchange (shards=N)
        echo(f"  {topology.exchange} --[{pattern}]--> {shards or topology.queue.name}")
    echo(f"queue {topology.queue.name} {held} now; removing a binding deletes no message, but events "
         "published to these keys afterwards reach no handler of this service.")
    if dry_run:
        echo("dry run: nothing removed")
        return 0
    if not yes and not confirm(f"Remove these {len(stale)} binding(s)?"):
        echo("nothing removed")
        return EXIT_DECLINED
    app.declare(prune=stale)
    left = set(app.stale_bindings(timeout=timeout)) & set(stale)
    echo(f"removed {len(stale) - len(left)} binding(s)")
    return 0
