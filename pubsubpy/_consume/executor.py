"""What runs handlers for the consumer loop: one interface, three implementations.

The loop's thread owns the consumer and is the only caller. It hands deliveries
over with ``submit`` and takes back what finished with ``collect``; every
method below means exactly what it says for each implementation:

- the caller's thread (``inline_runner.InlineRunner``, ``concurrency=1`` with
  synchronous handlers): ``collect`` runs what was submitted, there and then,
  so submitted work is ``ready`` at once and nothing is ever waited for;
- a thread pool (``handler_pool.HandlerPool``, ``concurrency > 1``): work runs
  on the pool's threads and is ``ready`` once a thread handed its chunk back;
- the event loop (``HandlerPool`` with a ``ChunkWork`` from ``pubsubpy.aio``):
  a pool thread hands a whole chunk's ``async def`` runs to the loop at once.

Each run happens in a copy of the context variables of the thread that made
the executor and, when Django is in use, between ``close_old_connections()``
calls, as Celery does (``Isolation``).
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

__all__ = ["ChunkWork", "Executor", "Isolation"]

In = TypeVar("In")
Out = TypeVar("Out")
T = TypeVar("T")

# work_chunk(items, may_start, each): a whole chunk at once; each(work) isolates one item's thread-side work
ChunkWork = Callable[[list[In], Callable[[], bool], Callable[[Callable[[], Any]], Any]], list[Out | None]]


class Executor(Protocol[In, Out]):
    """Runs ``work(item)`` for the consumer loop; see the module docstring.

    ``in_flight`` counts items submitted and not yet collected. ``sleeping`` is set by the loop while it
    waits in the broker: an executor whose work finishes on another thread wakes it there (``Consumer.wake``).
    An item that has not started when ``stop_starting`` is called comes back unstarted (result ``None``); so
    does one after a result the executor's ``halt`` predicate holds true for (a handler's dependency is down).
    """

    sleeping: bool
    in_flight: int

    def submit(self, items: list[In]) -> None:
        """Hand ``items`` over, in order."""

    def can_start(self) -> bool:
        """An item submitted now would start without waiting behind one submitted before."""

    def ready(self) -> bool:
        """``collect()`` would return finished items now."""

    def wait_ready(self, timeout: float) -> bool:
        """``ready()``, waiting at most ``timeout`` seconds for it."""

    def collect(self) -> list[tuple[In, Out | None]]:
        """What finished, each with its result (``None``: handed back unstarted); may be empty."""

    def stop_starting(self) -> None:
        """No item starts from now on."""

    def shutdown(self) -> None:
        """Release the executor's threads; nothing more is submitted."""


def _django_cleanup() -> Callable[[], None] | None:
    """Django's per-request cleanup when Django is loaded and set up (never imports it).
    Looked up once per executor: a consumer starts after Django's setup, as a worker or inside a request."""
    db = sys.modules.get("django.db")
    apps_module = sys.modules.get("django.apps")
    if db is None or apps_module is None or not apps_module.apps.ready:
        return None
    close: Callable[[], None] = db.close_old_connections
    return close


class Isolation:
    """Each run in its own copy of the context of the thread that made this, between Django's
    ``close_old_connections()`` calls when Django is in use."""

    def __init__(self) -> None:
        self.context = contextvars.copy_context()
        self._cleanup = _django_cleanup()

    def run(self, work: Callable[..., T], *args: Any) -> T:
        cleanup = self._cleanup
        if cleanup is None:
            return self.context.copy().run(work, *args)
        cleanup()
        try:
            return self.context.copy().run(work, *args)
        finally:
            cleanup()
