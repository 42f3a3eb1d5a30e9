"""Handler threads: dispatch runs here, so the consumer's thread keeps the connection alive.

pika services heartbeats only while its owner thread is inside the I/O loop. A
handler that ran on that thread for longer than two heartbeats lost the
connection, and its message came back to run again, forever. Here the owner
thread waits in the I/O loop while up to ``concurrency`` threads run handlers;
a finished handler wakes it through ``Consumer.wake``.

Each run happens in a copy of the context variables of the thread that started
the consumer, and, when Django is in use, between ``close_old_connections()``
calls, as Celery does, so a handler thread never reuses a stale database
connection. The threads are daemons: a hard stop never waits for a stuck handler.
"""

from __future__ import annotations

import contextvars
import queue
import sys
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["HandlerPool"]

In = TypeVar("In")
Out = TypeVar("Out")


def _close_old_db_connections() -> None:
    """Django's per-request cleanup, when Django is loaded and set up (never imports it)."""
    db = sys.modules.get("django.db")
    apps_module = sys.modules.get("django.apps")
    if db is None or apps_module is None or not apps_module.apps.ready:
        return
    db.close_old_connections()


class HandlerPool(Generic[In, Out]):
    """Runs ``work(item)`` on ``concurrency`` threads; the owner submits and collects.

    ``submit``, ``collect``, ``in_flight`` and ``stop_starting`` belong to the owner thread.
    An item taken after ``stop_starting`` is handed back unstarted (result ``None``).
    """

    def __init__(self, concurrency: int, work: Callable[[In], Out], wake: Callable[[], None],
                 name: str = "pubsubpy-handler") -> None:
        self._work = work
        self._wake = wake
        self._context = contextvars.copy_context()
        self._inbox: queue.SimpleQueue[In | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[In, Out | None, BaseException | None]] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self.sleeping = False  # the owner sets it while it waits; finished work wakes it then
        self.in_flight = 0
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
                         for i in range(concurrency)]
        for thread in self._threads:
            thread.start()

    def _loop(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            if self._stopping.is_set():
                self._finish(item, None, None)
                continue
            _close_old_db_connections()
            try:
                out = self._context.copy().run(self._work, item)
            except BaseException as exc:  # a bug in dispatch itself: the owner re-raises it
                self._finish(item, None, exc)
                continue
            finally:
                _close_old_db_connections()
            self._finish(item, out, None)

    def _finish(self, item: In, out: Out | None, error: BaseException | None) -> None:
        self._done.put((item, out, error))
        if self.sleeping and self._inbox.empty():  # more queued work: the owner is woken by the last one
            self._wake()

    def submit(self, item: In) -> None:
        self.in_flight += 1
        self._inbox.put(item)

    def has_results(self) -> bool:
        return not self._done.empty()

    def collect(self) -> list[tuple[In, Out | None]]:
        """Finished items (``None`` for one handed back unstarted); re-raises a dispatch bug."""
        finished: list[tuple[In, Out | None]] = []
        while True:
            try:
                item, out, error = self._done.get_nowait()
            except queue.Empty:
                return finished
            self.in_flight -= 1
            if error is not None:
                raise error
            finished.append((item, out))

    def stop_starting(self) -> None:
        """No new item starts from now on; queued ones come back unstarted."""
        self._stopping.set()

    def shutdown(self) -> None:
        self._stopping.set()
        for _ in self._threads:
            self._inbox.put(None)
