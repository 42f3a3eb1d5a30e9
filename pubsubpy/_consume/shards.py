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

__all__ = ["MakeEngine", "ShardWorkers", "merged", "previous_shard_queues"]

MakeEngine = Callable[[str], tuple[Engine, ChunkWork[Item, Verdict] | None]]
"""A fresh engine of the ordered subscriptions for the loop of one shard queue (named: what telemetry reports),
and its chunk work for async handlers."""

log = logging.getLogger("pubsubpy.shards")

_TICK = 0.5           # seconds between looks at the live workers
_RESTART_EVERY = 5.0  # a shard loop that ended on an error starts again at most this often
_MOST_SHARDS = 1024   # the largest ``shards`` setting: how far the previous generation's queues are looked for
_STRAGGLERS_EVERY = 10.0  # seconds between looks at the previous generation once it was drained


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


def previous_shard_queues(transport: Transport, shards: Shards) -> list[str]:
    """The queues of the previous generation (``shards_version`` was raised) that still exist, read from the
    broker, since their count may differ from this generation's; raises ``TransportError``."""
    if shards.previous is None:
        return []
    found: list[str] = []
    while len(found) < _MOST_SHARDS and transport.queue_info(name := shards.previous_queue(len(found))) is not None:
        found.append(name)
    return found


@dataclass
class _ShardLoop:
    queue: str
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
        self.loops: dict[str, _ShardLoop] = {}  # by queue
        self.results: list[DrainResult] = []
        self.stop = threading.Event()
        self._ended: dict[str, float] = {}  # queue -> when its loop last ended on an error (monotonic)
        self._thread = threading.Thread(target=self._supervise, name=f"pubsubpy-shards-{service}", daemon=True)
        self._lock = threading.Lock()

    # -- the worker's side -------------------------------------------------------------
    def start(self) -> None:
        log.info("worker %s: shards of %s (%d) shared with the live workers heard on %s", self.worker,
                 self.service, len(self.shards.queues), self.shards.presence)
        self._thread.start()

    def owned(self) -> list[str]:
        """The shard queues whose loops run now (a released one until its loop ended)."""
        with self._lock:
            return sorted(queue for queue, loop in self.loops.items() if loop.thread.is_alive())

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
                self._run([spec.name for spec in self.shards.queues], self._previous_queues())
        except Exception:  # a bug here must not leave the ordered subscriptions unconsumed, silently
            log.exception("worker %s: the shards' supervisor failed; stopping the worker (a supervisor restarts "
                          "it)", self.worker)
            if self.options.stop is not None:
                self.options.stop.set()
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
        return not self._stopping()

    def _stopping(self) -> bool:
        """Told to stop: by ``close``, or by the worker's own stop event (a signal), at once for every loop."""
        worker_stop = self.options.stop
        return self.stop.is_set() or (worker_stop is not None and worker_stop.is_set())

    def _previous_queues(self) -> list[str]:
        try:
            found = previous_shard_queues(self.transport, self.shards)
        except TransportError as exc:
            log.warning("worker %s could not list the previous shards (%s); consuming the new ones", self.worker, exc)
            return []
        if found:
            log.info("worker %s: finishing the %d shard queue(s) of generation %d before generation %d",
                     self.worker, len(found), self.shards.version - 1, self.shards.version)
        return found

    def _run(self, current: list[str], previous: list[str]) -> None:
        """Consume this worker's share of the shards until stopped. With a previous generation: its queues
        first, and this generation's only once every one of them stayed empty for an announcement round;
        after that, a previous queue that holds messages again (a worker of the old version stopping gave
        back what it held) is consumed beside this generation's, with a warning."""
        draining, empty_since, looked = bool(previous), None, -ANNOUNCE_EVERY
        left: list[str] = list(previous)  # the previous queues holding messages, as last looked at
        while not self._stopping():
            now = time.monotonic()
            if previous and now - looked >= (ANNOUNCE_EVERY / 2 if draining else _STRAGGLERS_EVERY):
                looked, left = now, self._holding(previous)
                if draining:
                    empty_since = None if left else (empty_since or now)
                    if empty_since is not None and now - empty_since >= ANNOUNCE_EVERY:
                        log.info("worker %s: the shards of generation %d are empty; consuming generation %d",
                                 self.worker, self.shards.version - 1, self.shards.version)
                        draining = False
                elif left:
                    log.warning("worker %s: %s of the previous generation hold messages again (a worker of the "
                                "old version gave them back?); consuming them beside the new shards", self.worker,
                                ", ".join(left))
            live = self.presence.live()
            mine = self._share(previous if draining else left, live)
            if not draining:
                mine += self._share(current, live)
            self._reconcile(mine, len(previous) if draining else len(current), len(live))
            self.presence.announce(self.owned())
            self._hear(_TICK)

    def _share(self, queues: list[str], live: list[str]) -> list[str]:
        return [queues[n] for n, worker in assign(len(queues), live).items() if worker == self.worker]

    def _holding(self, queues: list[str]) -> list[str]:
        """Those of ``queues`` with messages ready (all of them when the broker cannot tell)."""
        try:
            infos = [(name, self.transport.queue_info(name)) for name in queues]
        except TransportError:
            return list(queues)
        return [name for name, info in infos if info is not None and info.messages > 0]

    def _hear(self, timeout: float) -> None:
        try:
            self.presence.hear(timeout)
        except TransportError as exc:
            log.warning("worker %s lost the presence queue (%s); keeping its shards meanwhile", self.worker, exc)
            self.stop.wait(timeout)

    def _reconcile(self, mine: list[str], shards: int, workers: int) -> None:
        """Start the loops of shards now ours; release those no longer ours; collect ended loops. A new loop
        gets the worker's ``concurrency`` split over the shards a worker holds at most (at least 1 each)."""
        concurrency = max(1, -(-self.options.concurrency // -(-shards // max(workers, 1))))
        with self._lock:
            for queue, loop in list(self.loops.items()):
                if not loop.thread.is_alive():
                    del self.loops[queue]
                    if loop.result is not None:
                        self.results.append(loop.result)
                    if loop.failed:
                        self._ended[queue] = time.monotonic()
                elif queue not in mine and not loop.stop.is_set():
                    log.info("worker %s releases %s (another worker's now)", self.worker, queue)
                    loop.stop.set()
            for queue in mine:
                if queue not in self.loops and \
                        time.monotonic() - self._ended.get(queue, -_RESTART_EVERY) >= _RESTART_EVERY:
                    self.loops[queue] = self._start(queue, concurrency)

    def _start(self, queue: str, concurrency: int) -> _ShardLoop:
        stop = threading.Event()
        health = self.options.health.part(queue) if self.options.health is not None else None
        options = dataclasses.replace(self.options, queue=queue, stop=stop, hand_over=True, mode=LoopMode.WORK,
                                      health=health, concurrency=concurrency,
                                      prefetch=worker_prefetch(None, concurrency))
        loop = _ShardLoop(queue, stop)
        loop.thread = threading.Thread(target=self._consume, args=(loop, options), name=f"pubsubpy-{queue}",
                                       daemon=True)
        log.info("worker %s takes %s", self.worker, queue)
        loop.thread.start()
        return loop

    def _consume(self, loop: _ShardLoop, options: LoopOptions) -> None:
        try:
            engine, options.work_chunk = self.make_engine(loop.queue)
            loop.result = consume_queue(self.settings, self.service, self.transport, engine, options)
        except Exception:
            loop.failed = True
            log.exception("the loop of %s ended on an error; it starts again", loop.queue)
        finally:
            if self.options.health is not None:
                self.options.health.drop_part(loop.queue)

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
