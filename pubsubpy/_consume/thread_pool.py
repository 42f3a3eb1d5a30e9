"""Handler threads: dispatch runs here, so the consumer's thread keeps the connection alive.

pika services heartbeats only while its owner thread is inside the I/O loop. A
handler that ran on that thread for longer than two heartbeats lost the
connection, and its message came back to run again, forever. Here the owner
thread waits in the I/O loop while up to ``concurrency`` threads run handlers;
a finished handler wakes it through ``Consumer.wake``.

Work is handed over in chunks: the owner submits everything it has buffered at
once, split across the threads, and each thread returns a chunk's results in
one piece, waking the owner at most once per chunk. Handing over one message at
a time cost a queue round trip and a thread switch per message (docs/performance.md).

Each run is isolated (``executor.Isolation``), so a handler thread never reuses
a stale database connection. The threads are daemons: a hard stop never waits
for a stuck handler.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from pubsubpy._consume.executor import ChunkWork, Isolation

__all__ = ["HandlerPool"]

In = TypeVar("In")
Out = TypeVar("Out")
T = TypeVar("T")

_CHUNK_MAX = 64  # items a thread takes at once: results (and acks) of a chunk wait for its last item


class HandlerPool(Generic[In, Out]):
    """The ``Executor`` of ``concurrency`` threads (``_consume/executor.py``); the owner submits and collects."""

    def __init__(self, concurrency: int, work: Callable[[In], Out], wake: Callable[[], None],
                 name: str = "pubsubpy-handler",
                 work_chunk: ChunkWork[In, Out] | None = None, halt: Callable[[Out], bool] | None = None) -> None:
        self._work = work
        self._halt = halt  # a result after which nothing more starts (a handler's dependency is down)
        self._work_chunk = work_chunk  # a whole chunk at once (async handlers: one hand-off to the loop)
        self._wake = wake
        self._isolation = Isolation()
        self._concurrency = concurrency
        self._inbox: queue.SimpleQueue[list[In] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[list[tuple[In, Out | None]] | BaseException] = queue.SimpleQueue()
        self._taken: list[tuple[In, Out | None]] | BaseException | None = None  # out of _done by a wait, not collected
        self._stopping = threading.Event()
        self.sleeping = False  # the owner sets it while it waits in the broker; finished work wakes it there
        self.in_flight = 0
        self._chunks_out = 0
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True)
                         for i in range(concurrency)]
        for thread in self._threads:
            thread.start()

    def _loop(self) -> None:
        while True:
            chunk = self._inbox.get()
            if chunk is None:
                return
            finished: list[tuple[In, Out | None]] = []
            try:
                if self._work_chunk is not None:
                    finished.extend(zip(chunk, self._run_chunk(self._work_chunk, chunk), strict=True))
                else:
                    for item in chunk:
                        finished.append((item, self._run(item)))
            except BaseException as exc:  # a bug in dispatch itself: the owner re-raises it
                self._done.put(exc)
            else:
                self._done.put(finished)
            if self.sleeping and self._inbox.empty():  # more queued work: the owner is woken by the last one
                self._wake()

    def _run(self, item: In) -> Out | None:
        if self._stopping.is_set():
            return None
        result = self._isolation.run(self._work, item)
        if self._halt is not None and self._halt(result):
            self._stopping.set()
        return result

    def _run_chunk(self, work_chunk: ChunkWork[In, Out], chunk: list[In]) -> list[Out | None]:
        def may_start() -> bool:
            return not self._stopping.is_set()

        return self._isolation.context.copy().run(work_chunk, chunk, may_start, self._each)

    def _each(self, work: Callable[[], T]) -> T:
        """One message's thread-side work in a chunk: in its own context copy, Django cleanup around it."""
        return self._isolation.run(work)

    def submit(self, items: list[In]) -> None:
        """Hand ``items`` to the threads, split into at most one chunk per thread."""
        if not items:
            return
        self.in_flight += len(items)
        size = min(_CHUNK_MAX, math.ceil(len(items) / self._concurrency))
        for start in range(0, len(items), size):
            self._chunks_out += 1
            self._inbox.put(items[start:start + size])

    def can_start(self) -> bool:
        return self._chunks_out < self._concurrency

    def ready(self) -> bool:
        return self._taken is not None or not self._done.empty()

    def wait_ready(self, timeout: float) -> bool:
        """Block the owner until a chunk finishes (True) or ``timeout`` passes (False). It waits on the
        finished chunks' queue itself: no event to set and clear per chunk."""
        if self._taken is not None:
            return True
        try:
            self._taken = self._done.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return False
        return True

    def collect(self) -> list[tuple[In, Out | None]]:
        """Finished items (``None`` for one handed back unstarted); re-raises a dispatch bug."""
        finished: list[tuple[In, Out | None]] = []
        taken, self._taken = self._taken, None
        while True:
            if taken is not None:
                chunk, taken = taken, None
            else:
                try:
                    chunk = self._done.get_nowait()
                except queue.Empty:
                    return finished
            self._chunks_out -= 1
            if isinstance(chunk, BaseException):
                raise chunk
            self.in_flight -= len(chunk)
            finished.extend(chunk)

    def stop_starting(self) -> None:
        """No new item starts from now on; queued ones come back unstarted."""
        self._stopping.set()

    def shutdown(self) -> None:
        self._stopping.set()
        for _ in self._threads:
            self._inbox.put(None)
