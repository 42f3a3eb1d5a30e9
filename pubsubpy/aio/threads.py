"""Blocking work off the event loop: a dedicated thread per long call, and coroutines run from threads.

A drain or a worker holds its thread for as long as it consumes, so it gets a thread of its own
rather than one of the loop's default executor (which it could exhaust). Handler threads run an
``async def`` handler on the consuming loop and wait for it (``await_on``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["await_on", "start_thread"]

T = TypeVar("T")


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


def await_on(loop: asyncio.AbstractEventLoop) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """A call that runs a coroutine on ``loop`` from another thread and returns its result (or raises)."""

    def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    return run
