"""The worker commands' way to run an app whose handlers may be ``async def``.

``pubsubpy worker`` and ``manage.py pubsub_worker`` consume on the main thread (so SIGTERM and
SIGINT stop them gracefully, see ``pubsubpy.worker``); ``async def`` handlers run on an event loop
of the worker's own, on a thread beside it, for as long as the worker runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from pubsubpy._replay.window import Point
from pubsubpy._worker import handle_signals
from pubsubpy.aio._handoff import LoopHandoff
from pubsubpy.app import PubSub
from pubsubpy.errors import ConfigurationError
from pubsubpy.messages import DrainResult

__all__ = ["run_worker"]


def run_worker(app: PubSub, concurrency: int = 1, backfill: Point | None = None) -> DrainResult:
    """``app.run(concurrency, backfill=...)``, with an event loop for its ``async def`` handlers when it has any
    (a backfill runs synchronous handlers only: ``replay()`` refuses ``async def`` ones)."""
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")
    if not any(sub.is_async for sub in app.router.subscriptions):
        return app.run(concurrency=concurrency, backfill=backfill)
    if backfill is not None:
        raise ConfigurationError("--backfill replays the log through synchronous handlers; this service has async "
                                 "def handlers (replay them with a PubSub whose handlers are def)")
    stop, force = threading.Event(), threading.Event()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="pubsubpy-handler-loop", daemon=True)
    thread.start()
    try:
        with handle_signals(stop, force):
            return app.run_with(LoopHandoff(loop), concurrency, stop, force, signals=False)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            with contextlib.suppress(RuntimeError):
                loop.close()
