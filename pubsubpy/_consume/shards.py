"""A worker's shards: one consumer loop per shard queue it owns, handed over without reordering.

With ``shards=N`` a service's ordered subscriptions are fed by ``<service>.shard.0`` .. ``N-1`` (see
``pubsubpy/topology.py``); one key always lands in the same shard. A thread of the worker hears which
workers are alive (``presence.py``), computes which shards are this worker's, and runs the consumer loop
(``loop.py``, with its lanes, in-lane retries and stale guard) over each of them.

Hand-over: a shard that now belongs to another worker is released like a stopping worker's queue: no new
message starts, running handlers finish and are acked, and then the consumer is closed without a cancel
(``Consumer.release``), so the messages it still held go back to their places before the queue's single
active consumer moves on. The next owner, already waiting on the queue, gets them first, in order. Until a
release the new owner is a standby consumer and gets nothing: two workers never run one shard at once.
A worker frozen past the heartbeat timeout loses its connection, and with it its shard; a handler that was
running through the freeze finishes late, which the stale guard of ``ordered=True, idempotent=True``
handlers makes harmless (its event is older than what the new owner applied).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pubsubpy._consume.executor import ChunkWork
from pubsubpy._consume.loop import LoopMode, LoopOptions, consume_queue
from pubsubpy._consume.presence import ANNOUNCE_EVERY, Presence, assign, new_worker_id
from pubsubpy._engine import Engine, Item, Verdict
from pubsubpy._worker import worker_prefetch
from pubsubpy.errors import TransportError
from pubsubpy.messages import DrainResult
from pubsubpy.settings import Settings
from pubsubpy.topology import Shards
from pubsubpy.transports.base import Transport

__all__ = ["MakeEngine", "ShardWorkers", "merged"]

MakeEngine = Callable[[], tuple[Engine, ChunkWork[Item, Verdict] | None]]
"""A fresh engine of the ordered subscriptions for one shard's loop (and its chunk work, for async handlers)."""

log = logging.getLogger("pubsubpy.shards")

_TICK = 0.5           # seconds between looks at the live workers
_RESTART_EVERY = 5.0  # a shard loop that ended on an error starts again at most this often


def merged(results: list[DrainResult]) -> DrainResult:
    """One ``DrainResult`` of several loops' (the first reason to stop other than ``empty`` wins)."""
    total = DrainResult()
    for result in results:
        for name in ("handled", "retried", "dead_lettered", "deferred", "redelivered", "duplicates", "abandoned",
                     "paused", "stale"):
            setattr(total, name, getattr(total, name) + getattr(result, name))
        for reason, count in result.reasons.items():
            total.reasons[reason] = total.reasons.get(reason, 0) + count
        total.seconds = max(total.seconds, result.seconds)
        if total.stopped_by == "empty":
            total.stopped_by = result.stopped_by
    return total


@dataclass
class _ShardLoop:
    shard: int
    stop: threading.Event
    thread: threading.Thread = field(init=False)
    result: DrainResult | None = None
    failed: bool = False


class ShardWorkers:
    """Runs the loops of the shards this worker owns, on threads, until ``stop``."""

    def __init__(self, settings: Settings, service: str, transport: Transport, shards: Shards,
                 make_engine: MakeEngine, options: LoopOptions) -> None:
        self.settings = settings
        self.service = service
        self.transport = transport
        self.shards = shards
        self.make_engine = make_engine
        self.options = options  # the worker's: each shard's loop gets a copy with its queue and stop
        self.worker = new_worker_id()
        self.presence = Presence(transport, shards.presence, self.worker)
        self.loops: dict[int, _ShardLoop] = {}
        self.results: list[DrainResult] = []
        self.stop = threading.Event()
        self._ended: dict[int, float] = {}  # shard -> when its loop last ended on an error (monotonic)
        self._thread = threading.Thread(target=self._supervise, name=f"pubsubpy-shards-{service}", daemon=True)
        self._lock = threading.Lock()

    # -- the worker's side -------------------------------------------------------------
    def start(self) -> None:
        log.info("worker %s: shards of %s (%d) shared with the live workers heard on %s", self.worker,
                 self.service, len(self.shards.queues), self.shards.presence)
        self._thread.start()

    def owned(self) -> list[int]:
        """The shards whose loops run now (a released one until its loop ended)."""
        with self._lock:
            return sorted(shard for shard, loop in self.loops.items() if loop.thread.is_alive())

    def close(self, timeout: float | None = None) -> DrainResult:
        """Stop every shard loop (each releases its shard) and return what they did together."""
        self.stop.set()
        self._thread.join(timeout)
        with self._lock:
            return merged(self.results)

    # -- the supervisor thread ------------------------------------------------------
    def _supervise(self) -> None:
        try:
            if self._listen():
                self._run()
        finally:
            self._release_all()
            self.presence.announce([], leaving=True, force=True)
            self.presence.close()

    def _listen(self) -> bool:
        """Open the presence queue (retried until stopped), then hear the others for one announcement round
        before taking any shard, so a new worker does not take every shard for a moment."""
        delay = self.settings.retry_connect_delay
        while not self._stopping():
            try:
                self.presence.open()
                break
            except TransportError as exc:
                log.warning("worker %s cannot listen on %s (%s); trying again in %.1f s", self.worker,
                            self.shards.presence, exc, delay)
                if self.stop.wait(delay):
                    return False
                delay = min(delay * 2, 30.0)
        self.presence.announce([], force=True)
        until = time.monotonic() + ANNOUNCE_EVERY + _TICK
        while not self._stopping() and (left := until - time.monotonic()) > 0:
            self._hear(min(left, _TICK))
        return not self.stop.is_set()

    def _stopping(self) -> bool:
        """Told to stop: by ``close``, or by the worker's own stop event (a signal), at once for every loop."""
        worker_stop = self.options.stop
        return self.stop.is_set() or (worker_stop is not None and worker_stop.is_set())

    def _run(self) -> None:
        while not self._stopping():
            live = self.presence.live()
            owners = assign(len(self.shards.queues), live)
            self._reconcile({shard for shard, worker in owners.items() if worker == self.worker}, len(live))
            self.presence.announce(self.owned())
            self._hear(_TICK)

    def _hear(self, timeout: float) -> None:
        try:
            self.presence.hear(timeout)
        except TransportError as exc:
            log.warning("worker %s lost the presence queue (%s); keeping its shards meanwhile", self.worker, exc)
            self.stop.wait(timeout)

    def _reconcile(self, mine: set[int], workers: int) -> None:
        """Start the loops of shards now ours; release those no longer ours; collect ended loops. A new loop
        gets the worker's ``concurrency`` split over the shards a worker holds at most (at least 1 each)."""
        shards = len(self.shards.queues)
        concurrency = max(1, -(-self.options.concurrency // -(-shards // max(workers, 1))))
        with self._lock:
            for shard, loop in list(self.loops.items()):
                if not loop.thread.is_alive():
                    del self.loops[shard]
                    if loop.result is not None:
                        self.results.append(loop.result)
                    if loop.failed:
                        self._ended[shard] = time.monotonic()
                elif shard not in mine and not loop.stop.is_set():
                    log.info("worker %s releases shard %d (another worker's now)", self.worker, shard)
                    loop.stop.set()
            for shard in sorted(mine - set(self.loops)):
                if time.monotonic() - self._ended.get(shard, -_RESTART_EVERY) >= _RESTART_EVERY:
                    self.loops[shard] = self._start(shard, concurrency)

    def _start(self, shard: int, concurrency: int) -> _ShardLoop:
        stop = threading.Event()
        queue = self.shards.queues[shard].name
        health = self.options.health.part(queue) if self.options.health is not None else None
        options = dataclasses.replace(self.options, queue=queue, stop=stop, hand_over=True, mode=LoopMode.WORK,
                                      health=health, concurrency=concurrency,
                                      prefetch=worker_prefetch(None, concurrency))
        loop = _ShardLoop(shard, stop)
        loop.thread = threading.Thread(target=self._consume, args=(loop, options), name=f"pubsubpy-{queue}",
                                       daemon=True)
        log.info("worker %s takes shard %d (%s)", self.worker, shard, queue)
        loop.thread.start()
        return loop

    def _consume(self, loop: _ShardLoop, options: LoopOptions) -> None:
        try:
            engine, options.work_chunk = self.make_engine()
            loop.result = consume_queue(self.settings, self.service, self.transport, engine, options)
        except Exception:
            loop.failed = True
            log.exception("the loop of shard %d ended on an error; it starts again", loop.shard)
        finally:
            if self.options.health is not None:
                self.options.health.drop_part(self.shards.queues[loop.shard].name)

    def _release_all(self) -> None:
        with self._lock:
            loops = list(self.loops.values())
        for loop in loops:
            loop.stop.set()
        for loop in loops:
            loop.thread.join()
        with self._lock:
            self.results.extend(loop.result for loop in loops if loop.result is not None)
            self.loops.clear()
