"""A long-running worker: consume until told to stop, then stop without losing or repeating work.

Signals (only when running in the main thread, so a host such as uvicorn keeps
its own): the first SIGTERM or SIGINT sets ``stop``: no new message starts,
prefetched messages not yet started go back to the queue, running handlers get
``shutdown_timeout`` to finish and be acked. A second signal sets ``force``:
the worker returns at once, leaving unfinished messages unacked for the broker
to deliver again. ``WorkerExit`` tells a command line which exit code fits.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from pubsubpy.messages import DrainResult

__all__ = ["PREFETCH_PER_HANDLER", "exit_code", "handle_signals", "worker_prefetch"]

log = logging.getLogger("pubsubpy.worker")

PREFETCH_PER_HANDLER = 4
"""Unless ``prefetch`` is set, a worker asks for this many messages per handler thread (Celery's
default multiplier): enough to keep threads busy, few enough that no message waits unacked behind
slow handlers until RabbitMQ's ``consumer_timeout`` (30 minutes) closes the channel."""


def worker_prefetch(explicit: int | None, concurrency: int) -> int:
    return explicit if explicit is not None else max(PREFETCH_PER_HANDLER * concurrency, 1)


@contextlib.contextmanager
def handle_signals(stop: threading.Event, force: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT set ``stop``, a second one ``force``; only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("%s again: stopping now; unfinished messages go back to the queue", name)
            force.set()
        else:
            log.info("%s: finishing running handlers, then stopping (send it again to stop at once)", name)
            stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


EX_TEMPFAIL = 75  # sysexits.h: try again later (a supervisor restarts the worker)


def exit_code(result: DrainResult) -> int:
    """0 for a clean stop; 75 when more runs past their ``time_limit`` were still going than ``concurrency``
    (a restart frees their threads); 1 when handlers were abandoned or the stop was forced."""
    if result.stopped_by == "stuck":
        return EX_TEMPFAIL
    return 1 if result.abandoned or result.stopped_by == "forced" else 0
