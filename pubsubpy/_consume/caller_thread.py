"""``concurrency=1`` without a thread hop: the consumer loop runs handlers on its own thread, watched.

Handing each delivery to a handler thread and its result back costs two thread
switches per chunk; with the worker's small window (prefetch 4) chunks hold a
message or three, and the hops cost more CPU than pika's own work
(docs/architecture.md has the measurement). So with
one handler at a time and synchronous handlers, the whole loop (I/O, handlers,
acks) runs on one thread, ``pubsubpy-consumer``, and the caller's thread watches it:

- The connection is a baton (``Baton.lock``): the loop's thread holds it except
  while handlers run. pika is not thread-safe, but it only needs one user at a
  time, and the lock passes it between the two threads.
- A handler that has run longer than ``_TICK``: the watcher takes the baton
  and turns the connection's I/O (heartbeats; deliveries stay buffered), every
  ``_TICK``, so a handler may take longer than the heartbeat and still runs
  once, as on a handler thread.
- ``stop`` (or the deadline) seen while a handler runs: nothing else starts.
  ``force``, or the grace period (``shutdown_timeout``) over, and the loop's
  thread still busy ``_REACT`` later: the watcher closes the connection (the
  running message goes back unacked, counted in ``DrainResult.abandoned``) and
  returns, as the pool does with its daemon threads. The loop's thread, back
  from the handler, finds the loop abandoned and ends without acking.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from pubsubpy._consume.executor import Isolation
from pubsubpy.deadline import Deadline
from pubsubpy.health import WorkerHealth
from pubsubpy.messages import DrainResult
from pubsubpy.transports.base import Consumer

__all__ = ["Abandoned", "Baton", "InlineRunner", "Watch", "watch"]

log = logging.getLogger("pubsubpy.drain")

In = TypeVar("In")
Out = TypeVar("Out")

_TICK = 0.2   # how often the watcher looks (and turns the I/O of a connection whose handler runs on)
_REACT = 0.5  # what the loop's own thread gets to stop by itself before the watcher abandons it


class Abandoned(Exception):
    """Raised on the loop's thread when it comes back from a handler to a loop the watcher gave up."""


class _Watched(Protocol):
    @property
    def running_since(self) -> float | None: ...

    @property
    def in_flight(self) -> int: ...

    def stop_starting(self) -> None: ...


class Baton:
    """The consumer and its connection, shared by the loop's thread and its watcher."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.consumer: Consumer | None = None
        self.runner: _Watched | None = None
        self.abandoned = False


class InlineRunner(Generic[In, Out]):
    """The ``Executor`` of the caller's thread (``_consume/executor.py``): ``collect`` runs what was submitted, on
    the loop's own thread, ``chunk`` at a time, the baton released around them; so submitted work is
    ``ready`` at once and ``wait_ready`` never waits (no other thread could finish anything). A chunk's
    acks, or its retry and dead-letter copies (one round of confirms), go out before the next chunk
    starts: half the prefetch window keeps the broker sending the other half meanwhile. An item
    collected after ``stop_starting`` comes back unstarted (result ``None``)."""

    def __init__(self, work: Callable[[In], Out], baton: Baton, chunk: int,
                 halt: Callable[[Out], bool] | None = None) -> None:
        self._work = work
        self._halt = halt  # a result after which nothing more starts (a handler's dependency is down)
        self._baton = baton
        self._chunk = chunk
        self._isolation = Isolation()
        self._queue: deque[In] = deque()
        self._stopping = threading.Event()
        self.sleeping = False
        self.in_flight = 0
        self.running_since: float | None = None  # set while handlers run (read by the watcher)

    def submit(self, items: list[In]) -> None:
        self._queue.extend(items)
        self.in_flight += len(items)

    def can_start(self) -> bool:
        return not self._queue

    def ready(self) -> bool:
        return bool(self._queue)

    def wait_ready(self, timeout: float) -> bool:
        return bool(self._queue)

    def collect(self) -> list[tuple[In, Out | None]]:
        queue = self._queue
        chunk = [queue.popleft() for _ in range(min(len(queue), self._chunk))]
        if not chunk:
            return []
        finished: list[tuple[In, Out | None]] = []
        stopping, run, work = self._stopping, self._isolation.run, self._work
        self.running_since = time.monotonic()
        self._baton.lock.release()
        try:
            halt = self._halt
            for item in chunk:
                result = None if stopping.is_set() else run(work, item)
                finished.append((item, result))
                if halt is not None and result is not None and halt(result):
                    stopping.set()
        finally:
            self._baton.lock.acquire()
            self.running_since = None
        if self._baton.abandoned:
            raise Abandoned
        self.in_flight -= len(chunk)
        return finished

    def stop_starting(self) -> None:
        self._stopping.set()

    def shutdown(self) -> None:
        self._stopping.set()


@dataclasses.dataclass
class Watch:
    """What the watcher enforces; the same events and limits the loop itself obeys."""

    result: DrainResult
    stop: threading.Event | None
    force: threading.Event | None
    deadline: Deadline
    shutdown_timeout: float
    health: WorkerHealth | None


def watch(consume: Callable[[Baton], DrainResult], rules: Watch) -> DrainResult:
    """Run ``consume(baton)`` on a thread of its own (holding the baton) and watch it; see the module
    docstring. Returns its result, or, when it had to be abandoned, what it had done by then."""
    baton = Baton()
    outcome: list[DrainResult | BaseException] = []
    finished = threading.Event()

    def body() -> None:
        baton.lock.acquire()
        try:
            outcome.append(consume(baton))
        except Abandoned:
            pass
        except BaseException as exc:  # re-raised on the caller's thread
            outcome.append(exc)
        finally:
            baton.lock.release()
            finished.set()

    thread = threading.Thread(target=contextvars.copy_context().run, args=(body,), name="pubsubpy-consumer",
                              daemon=True)
    thread.start()
    give_up: Deadline | None = None
    forced = False
    try:
        while not finished.wait(_TICK):
            if not forced and rules.force is not None and rules.force.is_set():
                forced = True
                give_up = Deadline.after(_REACT)
            elif give_up is None and ((rules.stop is not None and rules.stop.is_set()) or rules.deadline.expired):
                give_up = Deadline.after(rules.shutdown_timeout + _REACT)
            runner = baton.runner
            if give_up is not None and runner is not None:
                runner.stop_starting()
            if give_up is not None and give_up.expired:
                return _abandon(baton, rules, forced)
            _keep_alive(baton, rules.health)
    except BaseException:  # KeyboardInterrupt on the caller's thread: as forced, then it goes on up
        _abandon(baton, rules, True)
        raise
    thread.join()
    result = outcome[0] if outcome else rules.result
    if isinstance(result, BaseException):
        raise result
    return result


def _keep_alive(baton: Baton, health: WorkerHealth | None) -> None:
    """Turn the connection's I/O for the loop's thread while its handler runs on (never blocks)."""
    runner = baton.runner
    since = runner.running_since if runner is not None else None
    if since is None or time.monotonic() - since < _TICK or not baton.lock.acquire(blocking=False):
        return
    try:
        if runner is not None and runner.running_since is not None and baton.consumer is not None:
            baton.consumer.keep_alive()
            if health is not None:
                health.turned()
    except Exception:  # a transport bug must not end the watch: the loop's thread meets the connection next
        log.exception("keeping the consumer's connection alive failed")
    finally:
        baton.lock.release()


def _abandon(baton: Baton, rules: Watch, forced: bool) -> DrainResult:
    baton.abandoned = True
    runner = baton.runner
    running = runner.in_flight if runner is not None else 0
    result = dataclasses.replace(rules.result, reasons=dict(rules.result.reasons))
    if forced:
        result.stopped_by = "forced"
    elif result.stopped_by not in ("stopped", "timeout"):
        result.stopped_by = "stopped" if rules.stop is not None and rules.stop.is_set() else "timeout"
    result.abandoned = running
    log.warning("stopping with %d handler(s) still running; their messages go back unacked", running)
    if baton.lock.acquire(timeout=1.0):  # else the loop's thread is in I/O: it closes the consumer itself
        try:
            if baton.consumer is not None:
                baton.consumer.close()
        except Exception:  # the connection is being given up anyway
            log.debug("closing an abandoned consumer failed", exc_info=True)
        finally:
            baton.lock.release()
    return result
