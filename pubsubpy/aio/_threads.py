"""Blocking work off the event loop: a dedicated thread per long call, and coroutines run from threads.

A drain or a worker holds its thread for as long as it consumes, so it gets a thread of its own
rather than one of the loop's default executor (which it could exhaust). Handler threads run an
``async def`` handler on the consuming loop and wait for it (``await_on``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from pubsubpy.errors import HandlerCancelled, TimeLimitExceeded

__all__ = ["await_on", "start_thread", "within"]

T = TypeVar("T")

_LOOP_CHECK = 1.0  # seconds between checks that the loop still runs while a handler thread waits on it


def start_thread(work: Callable[[], T], name: str) -> asyncio.Future[T]:
    """Run ``work`` on a new daemon thread, in a copy of the caller's context; its result as a future
    of the running loop. Cancelling the future does not stop the thread: callers shield it."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def target() -> None:
        try:
            result = context.run(work)
        except BaseException as exc:  # handed to the awaiting coroutine
            error = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(settle, lambda: future.set_exception(error))
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, lambda: future.set_result(result))

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


async def within(coroutine: Coroutine[Any, Any, Any], time_limit: float) -> Any:
    """``coroutine``, cancelled past ``time_limit`` seconds with ``TimeLimitExceeded`` (``time_limit=``)."""
    try:
        return await asyncio.wait_for(coroutine, time_limit)
    except asyncio.TimeoutError:
        raise TimeLimitExceeded(f"async handler still running after time_limit={time_limit:g}s: "
                                "cancelled") from None


def await_on(loop: asyncio.AbstractEventLoop) -> Callable[[Coroutine[Any, Any, Any], float | None], Any]:
    """A call that runs a coroutine on ``loop`` from another thread and returns its result (or raises).

    Lighter than ``run_coroutine_threadsafe(...).result()`` (no concurrent future, a C queue to wait
    on, and on Python 3.12+ the task starts at once instead of one loop turn later): the round trips
    per second bound ``async def`` handlers' rate (docs/architecture.md has the measurement)."""

    def run(coroutine: Coroutine[Any, Any, Any], time_limit: float | None = None) -> Any:
        finished: queue.SimpleQueue[asyncio.Future[Any]] = queue.SimpleQueue()
        if time_limit is not None:
            coroutine = within(coroutine, time_limit)

        def start() -> None:
            if sys.version_info >= (3, 12):
                task = asyncio.Task(coroutine, loop=loop, eager_start=True)
            else:
                task = loop.create_task(coroutine)
            if task.done():  # finished without suspending: no further loop turn for the callback
                finished.put(task)
            else:
                task.add_done_callback(finished.put)

        loop.call_soon_threadsafe(start)  # RuntimeError when the loop is closed: the run fails
        while True:  # the handler takes as long as it takes; a loop that stopped or closed never finishes it
            try:
                task = finished.get(timeout=_LOOP_CHECK)
                break
            except queue.Empty:
                if loop.is_closed() or not loop.is_running():
                    raise HandlerCancelled("the event loop stopped before the handler finished") from None
        if task.cancelled():
            raise HandlerCancelled("the event loop cancelled the handler (it was shutting down)")
        return task.result()

    return run
