"""The consumer loop behind ``drain()`` and ``run()``: take, dispatch on handler threads, settle.

Delivery semantics (at least once):

- A message is acked only after its outcome is safe: handled, or a copy
  (retry or dead letter) confirmed by the broker. A crash or a lost connection
  before that leaves it unacked, and the broker delivers it again
  (``MessageInfo.redelivered``).
- Handlers run on ``concurrency`` threads (``_consume/thread_pool.py``) while this
  thread keeps the connection alive, so a handler may take longer than the
  heartbeat and still runs once. With ``concurrency=1`` (and synchronous
  handlers) the loop runs its handlers itself, on a thread of its own, while the
  caller's thread keeps the connection alive during a long one
  (``_consume/caller_thread.py``): no thread hop per message. Either way messages are
  handled in queue order at ``concurrency=1``.
- A redelivered message that this loop already settled (its ack was lost with
  the connection) is acked without running again and counted in
  ``DrainResult.duplicates``, never as another outcome.
- The retry and dead-letter copies of a chunk of finished messages go out
  together, under one round of confirms, and while the broker stores them the
  next chunk's handlers run and send their own copies; only then does the loop
  wait for the first chunk's confirms and ack its originals, writing the acks at
  once so the broker refills the window meanwhile (``settle`` sends,
  ``confirm`` waits and acks; docs/architecture.md has the measurement).
- Stopping (``timeout``, ``stop`` set, a signal): no new message starts;
  messages already taken but not started go back to the queue unacked; running
  handlers get ``shutdown_timeout`` to finish and be acked. Past that (or when
  ``force`` is set) the loop returns at once, their messages unacked: they come
  back, nothing is lost (``DrainResult.abandoned`` counts them).
- Ordered handlers: messages pass through per-key lanes (``_consume/lanes.py``)
  on their way to the executor; a message whose ordered handler failed with
  attempts left is held in its lane, unacked, and runs again there after the
  retry delay (the loop's waits end when the next one is due).
- A handler whose dependency is down (one of its ``pause_on`` exceptions)
  trips the breaker (``_consume/pausing.py``): its message goes back, the loop
  stops taking, gives back what it holds and cancels its consumer; a worker
  then probes with one message at a time until one succeeds, and consumes
  again. A drain stops (``stopped_by="paused"``).
- ``LoopMode.DRAIN`` (``drain()``) stops once the queue is empty and everything
  taken is settled; broker failures end it with a ``TransportError``.
  ``LoopMode.WORK`` (a worker's ``run()``) never stops on its own and never gives
  up on the broker: it reconnects with capped backoff.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

from pubsubpy._consume.backoff import Backoff
from pubsubpy._consume.caller_thread import Abandoned, Baton, InlineRunner, Watch, watch
from pubsubpy._consume.executor import ChunkWork, Executor
from pubsubpy._consume.lanes import Lanes
from pubsubpy._consume.pausing import Pauses
from pubsubpy._consume.settling import Settler
from pubsubpy._consume.thread_pool import HandlerPool
from pubsubpy._consume.time_limits import TimedRuns
from pubsubpy._engine import AwaitOnLoop, Engine, Item, Verdict, Work
from pubsubpy._engine.runs import log_fields
from pubsubpy.deadline import Deadline
from pubsubpy.envelope import H_ATTEMPT, H_COPY, version_from
from pubsubpy.errors import TransportError
from pubsubpy.health import WorkerHealth
from pubsubpy.messages import Delivery, DrainResult, Outcome, Reason
from pubsubpy.middleware import MessageContext, MiddlewareChain
from pubsubpy.settings import Settings
from pubsubpy.topology import parked_queue, service_queue
from pubsubpy.transports.base import Consumer, PendingPublish, Redeclare, Transport

__all__ = ["LoopHandoff", "LoopMode", "LoopOptions", "consume_queue"]

log = logging.getLogger("pubsubpy.drain")

_POLL = 0.2          # how often a waiting loop looks at ``stop`` (seconds)
_EMPTY_STEP = 0.05   # re-ask step while the broker reports ready messages not yet pushed
_RECENT = 10_000     # settled messages remembered for spotting redeliveries
_PLAIN = (int, str, type(None))
_HANDLER_REASONS = (Reason.HANDLER_ERROR, Reason.REJECTED)  # dead letters a handler decided


class LoopMode(enum.Enum):
    """What the loop is for: its stop rule and what a broker failure does."""

    DRAIN = "drain"  # until the queue is empty (or max_messages, the deadline, stop); a broker failure raises
    WORK = "work"    # until stopped; a broker failure pauses with capped backoff and consumes again


@dataclass
class LoopOptions:
    prefetch: int
    concurrency: int = 1
    max_messages: int | None = None
    mode: LoopMode = LoopMode.DRAIN
    deadline: Deadline = field(default_factory=Deadline.never)
    stop: threading.Event | None = None
    force: threading.Event | None = None
    on_message: Callable[[DrainResult], None] | None = None
    middleware: MiddlewareChain | None = None
    health: WorkerHealth | None = None
    declare: Redeclare | None = None    # before consuming: declare the topology (a worker retries it)
    redeclare: Redeclare | None = None  # the queue was deleted under the consumer: declare it again
    work_chunk: ChunkWork[Item, Verdict] | None = None  # async handlers: a chunk at a time (pubsubpy.aio)
    queue: str | None = None  # what to consume; None: the service queue (a shard queue's loop names its own)
    hand_over: bool = False   # a shard: close by releasing (``Consumer.release``), for the next worker to take
    skip_ids: frozenset[str] | None = None  # events a backfill ran (``_replay/handover.py``): acked, not run


class LoopHandoff(Protocol):
    """How a consumer runs ``async def`` handlers on an event loop (``pubsubpy.aio._handoff``)."""

    @property
    def await_on_loop(self) -> AwaitOnLoop: ...

    def chunk_work(self, engine: Engine) -> ChunkWork[Item, Verdict] | None: ...


_Key = tuple[str, str, str, object]


class _Recent:
    """Keys of recently settled deliveries (at least the last ``_RECENT``): a redelivery of one of them was
    already dealt with. Two generations of sets: an add is one set insert, the oldest keys go
    ``_RECENT`` at a time (an ordered dict's per-message eviction cost 5% of a drain's CPU)."""

    def __init__(self) -> None:
        self._current: set[_Key] = set()
        self._previous: set[_Key] = set()

    @staticmethod
    def key(delivery: Delivery) -> _Key | None:
        message_id = delivery.properties.message_id
        if not message_id:
            return None
        headers = delivery.properties.headers
        copy = headers.get(H_COPY)  # each retry/deferral/replay copy has its own
        if copy is None:
            copy = headers.get(H_ATTEMPT)
        return message_id, delivery.exchange, delivery.routing_key, \
            copy if type(copy) in _PLAIN else repr(copy)  # a foreign header may be unhashable

    def add(self, delivery: Delivery) -> None:
        key = self.key(delivery)
        if key is not None:
            current = self._current
            current.add(key)
            if len(current) >= _RECENT:
                self._previous, self._current = current, set()

    def __contains__(self, delivery: Delivery) -> bool:
        key = self.key(delivery)
        return key is not None and (key in self._current or key in self._previous)


class _Loop:
    def __init__(self, settings: Settings, service: str, transport: Transport, engine: Engine,
                 options: LoopOptions) -> None:
        self.settings = settings
        self.queue = options.queue or service_queue(service)
        self.transport = transport
        self.engine = engine
        self.options = options
        self.settler = Settler(settings, service)
        self.result = DrainResult()
        self.recent = _Recent()
        self.parked: deque[Delivery] = deque()
        self.pause = Pauses(settings, engine, self.queue, parked_queue(service), transport, self.settler)
        # executors start nothing after a verdict that pauses the consumer (not one whose share is parked)
        self.halt: Callable[[Verdict], bool] | None = self.pause.pauses if engine.has_pause_on else None
        self.timed = TimedRuns() if engine.has_time_limits else None
        if self.timed is not None:
            engine.run_timed = self.timed.run
        self.lanes = self.new_lanes()
        self.taken = 0
        self.stopping = False     # no new message starts
        self.grace: Deadline | None = None
        self.session_taken = 0    # messages taken by the current consumer
        self.waited = False       # the current consumer waited for a delivery at least once
        self.backoff = Backoff(settings.retry_connect_delay, log)
        self.baton: Baton | None = None  # when the loop runs its handlers itself, watched
        # copies sent, oldest first, whose originals are acked once confirmed (at most two: see ``step``)
        self.unconfirmed: deque[tuple[list[tuple[Delivery, Verdict]], PendingPublish]] = deque()

    # -- setup ---------------------------------------------------------------------
    def new_lanes(self) -> Lanes | None:
        if not self.engine.has_ordered_handlers:
            return None
        return Lanes(self.engine.lane_of, self.timed.running if self.timed is not None else None)

    def open_consumer(self) -> Consumer | None:
        """Declare (when asked to) and consume; a worker retries both with backoff until stopped (None). A probe
        takes one message."""
        declare = self.options.declare
        deadline = self.options.deadline
        prefetch, limit = (1, 1) if self.pause.probing else (self.options.prefetch, self.options.max_messages)
        while True:
            try:
                if declare is not None:
                    declare(None if deadline.at == math.inf else deadline)
                    declare = None  # done: a retry after this only consumes
                return self.transport.consume(self.queue, prefetch, limit=limit, deadline=self.options.deadline,
                                              redeclare=self.options.redeclare)
            except TransportError as exc:
                if self.options.mode is LoopMode.DRAIN:
                    raise
                doing = "declare the topology" if declare is not None else f"consume from {self.queue}"
                if self.backoff.pause(f"cannot {doing} ({exc})", self.options.stop):
                    return None

    # -- the loop ------------------------------------------------------------------
    def run(self) -> DrainResult:
        started = time.monotonic()
        options = self.options
        if options.concurrency == 1 and options.work_chunk is None:
            result = watch(self.consume_inline, Watch(self.result, options.stop, options.force, options.deadline,
                                                      self.settings.shutdown_timeout, options.health))
        else:
            result = self.consume(lambda consumer: HandlerPool(
                options.concurrency, self.engine.handle, consumer.wake, work_chunk=options.work_chunk,
                halt=self.halt))
        result.seconds = time.monotonic() - started  # (an abandoned loop's result is a snapshot of self.result)
        return result

    def consume_inline(self, baton: Baton) -> DrainResult:
        """``run`` on the watched thread, holding ``baton`` (see ``_consume/caller_thread.py``)."""
        self.baton = baton

        def runner(consumer: Consumer) -> InlineRunner[Item, Verdict]:
            made = InlineRunner(self.engine.handle, baton, chunk=max(1, min(self.options.prefetch // 2, 500)),
                                halt=self.halt)
            baton.consumer, baton.runner = consumer, made
            return made

        return self.consume(runner)

    def consume(self, make_executor: Callable[[Consumer], Executor[Item, Verdict]]) -> DrainResult:
        """Consume, one consumer after another while a worker pauses and probes (see ``pausing.py``)."""
        health = self.options.health
        if health is not None:
            health.pausing(self.pause.names, lambda: self.pause.breaker.trips)
        consumer = self.open_consumer()
        if consumer is not None:
            self.pause.start()
        while consumer is not None:
            self.session(consumer, make_executor(consumer))
            if self.options.mode is not LoopMode.WORK or self.result.stopped_by not in ("paused", "probed"):
                return self.result
            consumer = self.after_pause()
        self.result.stopped_by = "stopped"
        return self.result

    def session(self, consumer: Consumer, executor: Executor[Item, Verdict]) -> None:
        """Run one consumer until the loop stops, pauses or has probed; close it (giving back what it holds)."""
        health = self.options.health
        if health is not None:
            health.attached(consumer, self.queue)
        try:
            while not self.step(consumer, executor):
                pass
            if self.result.stopped_by != "forced":
                self.confirm_all(consumer)  # copies sent in the last steps: ack their originals
        finally:
            if health is not None:
                health.detached()
            executor.shutdown()
            consumer.release() if self.options.hand_over else consumer.close()

    def after_pause(self) -> Consumer | None:
        """While the breaker is open: wait for the next probe, then a consumer of one message; once it closed,
        the consumer again. None: stopped meanwhile."""
        stop, breaker = self.options.stop or threading.Event(), self.pause.breaker
        if breaker.open and stop.wait(breaker.next_probe_delay()):
            return None
        self.pause.probing = breaker.open
        self.stopping, self.grace, self.session_taken, self.waited = False, None, 0, False
        self.parked.clear()  # the closed consumer's deliveries: it gave them back
        self.lanes = self.new_lanes()
        self.result.stopped_by = "empty"
        return self.open_consumer()

    def step(self, consumer: Consumer, executor: Executor[Item, Verdict]) -> bool:
        """One turn: settle what finished, decide whether to stop, take more, wait. True: done."""
        if self.options.health is not None:
            self.options.health.turned()
        if self.baton is not None and self.baton.abandoned:
            raise Abandoned
        try:
            finished = executor.collect()
            if finished:
                self.settle(consumer, finished)
            self.pause_or_give_up(executor)
            while len(self.unconfirmed) > 1:
                self.confirm(consumer)  # the chunk before's copies: stored while this chunk ran and sent its own
            if self.should_stop(consumer, executor):
                return True
            if not self.stopping:
                self.pause.tend()
                self.feed(consumer, executor)
            if self.unconfirmed and not executor.ready():
                # Nothing to run while the broker stores them; and a retry copy aimed at this queue must be in
                # it before the queue can count as empty.
                self.confirm_all(consumer)
            if self.drained(consumer, executor):
                self.result.stopped_by = "empty"
                return True
            self.wait(consumer, executor)
        except TransportError as exc:
            if self.options.mode is LoopMode.DRAIN:
                raise
            if self.backoff.pause(f"consumer on {self.queue} failed ({exc})", self.options.stop):
                self.begin_stop(executor, "stopped")
            return False
        self.backoff.reset()
        return False

    def drained(self, consumer: Consumer, executor: Executor[Item, Verdict]) -> bool:
        """A drain's end: nothing taken is unsettled or waiting here, nothing parked on its way back, and the
        queue is empty."""
        if self.stopping or self.options.mode is not LoopMode.DRAIN or executor.in_flight or self.parked \
                or self.lanes or self.options.max_messages == self.taken:
            return False
        return not self.pause.moving and consumer.is_empty()

    def should_stop(self, consumer: Consumer, executor: Executor[Item, Verdict]) -> bool:
        options = self.options
        if options.force is not None and options.force.is_set():
            return self.abandon(executor, "forced")
        if self.pause.probing and self.probed(consumer, executor):
            self.result.stopped_by = "probed"
            return True
        if not self.stopping:
            if options.stop is not None and options.stop.is_set():
                self.begin_stop(executor, "stopped")
            elif options.deadline.expired:
                self.begin_stop(executor, "timeout")
            elif options.max_messages is not None and self.taken >= options.max_messages and executor.in_flight == 0 \
                    and not self.lanes:
                self.result.stopped_by = "max_messages"
                return True
        if self.stopping:
            if executor.in_flight == 0:
                return True
            if self.grace is not None and self.grace.expired:
                return self.abandon(executor, self.result.stopped_by)
        return False

    def pause_or_give_up(self, executor: Executor[Item, Verdict]) -> None:
        """Stop taking messages when the breaker opened (a dependency is down), or when more runs past their
        time_limit are still going than ``concurrency`` (the worker exits for its supervisor to restart it)."""
        if self.stopping:
            return
        if self.pause.breaker.open and not self.pause.probing:
            self.begin_stop(executor, "paused")
        elif self.timed is not None and self.timed.live > self.options.concurrency:
            log.error("%d handler run(s) past their time_limit are still running on abandoned threads (more than "
                      "concurrency=%d): stopping, for a supervisor to restart the worker (exit code 75)",
                      self.timed.live, self.options.concurrency)
            self.begin_stop(executor, "stuck")

    def probed(self, consumer: Consumer, executor: Executor[Item, Verdict]) -> bool:
        """The probe's one message is settled, or there was none to take (the queue is empty: consume again,
        and the next message will tell)."""
        if self.stopping or executor.in_flight or self.lanes or self.parked or self.unconfirmed:
            return False
        if self.session_taken:
            return True
        if self.waited and consumer.is_empty():
            self.pause.breaker.close(self.queue)
            return True
        return False

    def begin_stop(self, executor: Executor[Item, Verdict], why: str) -> None:
        self.stopping = True
        self.result.stopped_by = why
        self.grace = Deadline.after(self.settings.shutdown_timeout)
        executor.stop_starting()

    def abandon(self, executor: Executor[Item, Verdict], why: str) -> bool:
        self.result.stopped_by = why
        self.result.abandoned = executor.in_flight
        if executor.in_flight:
            log.warning("stopping with %d handler(s) still running; their messages go back to %s unacked",
                        executor.in_flight, self.queue)
        return True

    def may_take(self) -> bool:
        limit = self.options.max_messages
        return not self.stopping and (limit is None or self.taken < limit) \
            and not (self.pause.probing and self.session_taken)

    def feed(self, consumer: Consumer, executor: Executor[Item, Verdict]) -> None:
        if not self.parked:  # with deliveries parked, what arrived since is taken in the next wait
            self.take_buffered(consumer)
        batch: list[Item] = []
        skip = self.options.skip_ids
        while self.parked and self.may_take():
            delivery = self.parked.popleft()
            self.taken += 1
            self.session_taken += 1
            if (delivery.redelivered and delivery in self.recent) or (skip is not None and _replayed(delivery, skip)):
                consumer.ack(delivery.tag)
                self.result.duplicates += 1
                continue
            batch.append(delivery)
        executor.submit(batch if self.lanes is None else self.lanes.admit(cast(list[Delivery], batch)))

    def wait(self, consumer: Consumer, executor: Executor[Item, Verdict]) -> None:
        self.waited = True
        timeout = _EMPTY_STEP if self.options.mode is LoopMode.DRAIN and not executor.in_flight else _POLL
        if not self.stopping:
            timeout = self.options.deadline.cap(timeout)
        elif self.grace is not None:
            timeout = self.grace.cap(timeout)
        lanes = self.lanes
        if lanes is not None and not self.stopping:
            due = lanes.next_due()
            if due is not None:
                timeout = min(timeout, due)
        consumer.flush()
        until = Deadline.after(timeout)
        while not executor.ready():
            if ((self.parked and self.may_take()) or (lanes is not None and lanes.ready())) and executor.can_start():
                return
            if not executor.can_start():
                # Every handler thread is busy: sleep until one finishes, looking at the connection
                # (heartbeats, new deliveries) every _POLL. Reading the socket in larger gulps between chunks costs
                # less than answering every packet while the handlers run.
                if executor.wait_ready(until.cap(_POLL)) or until.expired:
                    return
                self.take_buffered(consumer)
                continue
            executor.sleeping = True
            try:
                delivery = None if executor.ready() else consumer.get(until.remaining())
            finally:
                executor.sleeping = False
            if delivery is None:
                return  # woken, or the time is up
            self.parked.append(delivery)

    def take_buffered(self, consumer: Consumer) -> None:
        """Run the connection's I/O once and park what it delivered."""
        self.parked.extend(consumer.take_ready())

    # -- settling ------------------------------------------------------------------
    def settle(self, consumer: Consumer, finished: Sequence[tuple[Item, Verdict | None]]) -> None:
        """Send the copies of every finished message in one round; they are acked once the copies are
        confirmed (``confirm``), or at once when there are none. A message handed back unstarted
        (``None``) stays unacked and returns to the queue."""
        if self.lanes is not None:
            done = self.through_lanes(self.lanes, finished)
        else:  # no lanes: every item is a delivery
            done = [(cast(Delivery, item), verdict) for item, verdict in finished if verdict is not None]
        done, given_back = self.pause.settled(done)
        for delivery in given_back:  # its dependency is down: back to the queue, its attempt not counted
            consumer.nack(delivery.tag, requeue=True)
            self.result.paused += 1
        copies = self.settler.copies(done)
        if not copies:
            self.acknowledge(consumer, done)
            return
        limit = self.options.deadline
        if limit.remaining() < 1.0:  # a copy made at the deadline still gets a moment to be confirmed
            limit = Deadline.after(min(1.0, self.settings.confirm_timeout))
        try:
            pending = self.transport.begin_publish(copies, deadline=limit)
        except TransportError:
            self.give_back(consumer, done)
            raise
        self.unconfirmed.append((done, pending))

    @staticmethod
    def through_lanes(lanes: Lanes, finished: Sequence[tuple[Item, Verdict | None]]
                      ) -> list[tuple[Delivery, Verdict]]:
        """Held messages go back to their lanes; the rest are settled, and free their lanes."""
        settled: list[tuple[Delivery, Verdict]] = []
        for item, verdict in finished:
            delivery = item.delivery if isinstance(item, Work) else item
            if verdict is not None and verdict.held:
                assert isinstance(verdict.again, Work) and verdict.held_for is not None
                again, delay = verdict.again, verdict.held_for
                verdict.again = verdict.held_for = None
                lanes.hold(again, delay)
                continue
            if verdict is not None:
                lanes.release(delivery)
                settled.append((delivery, verdict))
        return settled

    def confirm_all(self, consumer: Consumer) -> None:
        while self.unconfirmed:
            self.confirm(consumer)

    def confirm(self, consumer: Consumer) -> None:
        """Wait for the oldest copies ``settle`` sent, then ack their originals."""
        done, pending = self.unconfirmed.popleft()
        try:
            lost = pending.result()
            if lost:
                raise self.settler.missing(lost)
        except TransportError:
            self.give_back(consumer, done)
            raise
        self.acknowledge(consumer, done)
        consumer.flush()  # now, not at the next I/O: the broker refills the window while the next chunk runs

    @staticmethod
    def give_back(consumer: Consumer, done: list[tuple[Delivery, Verdict]]) -> None:
        for delivery, _ in done:  # their copies are not safe: hand them back for another try
            consumer.nack(delivery.tag, requeue=True)

    def acknowledge(self, consumer: Consumer, done: list[tuple[Delivery, Verdict]]) -> None:
        result = self.result
        debug = log.isEnabledFor(logging.DEBUG)
        middleware = self.options.middleware
        observers = middleware.observers() if middleware is not None and middleware.observes_messages else None
        for delivery, verdict in done:
            consumer.ack(delivery.tag)
            if verdict.paused or verdict.park:  # back at the end of the queue (a probe's), or a share parked
                result.paused += 1
                if verdict.paused or not verdict.ran:
                    continue
            outcome = verdict.outcome
            result.count(outcome, verdict.reason)
            if verdict.stale:
                result.stale += 1
            if delivery.redelivered:
                result.redelivered += 1
            self.recent.add(delivery)
            if outcome is Outcome.DEAD_LETTERED:
                log.warning("dead-lettered %s (%s) from %s: %s: %s", delivery.properties.message_id,
                            verdict.routing_key, self.queue, verdict.reason.value if verdict.reason else "?",
                            verdict.error, extra=self.log_fields(delivery, verdict, outcome))
            elif outcome is Outcome.DEFERRED:
                log.info("deferred %s (%s): no handler here subscribes it; another version may",
                         delivery.properties.message_id, verdict.routing_key,
                         extra=self.log_fields(delivery, verdict, outcome))
            elif debug:
                log.debug("%s %s (%s)", outcome.value, delivery.properties.message_id, verdict.routing_key,
                          extra=self.log_fields(delivery, verdict, outcome))
            if observers:
                MiddlewareChain.after_message(observers, self.message_context(delivery, verdict, outcome))
            if self.options.on_message is not None:
                self.options.on_message(result)

    def message_context(self, delivery: Delivery, verdict: Verdict, outcome: Outcome) -> MessageContext:
        ran = outcome in (Outcome.HANDLED, Outcome.RETRIED) or verdict.reason in _HANDLER_REASONS
        info = verdict.info or self.engine.info(delivery, verdict, version_from(delivery.properties.headers))
        return MessageContext(info, outcome, verdict.reason, verdict.error, self.settings.model_exchange,
                              self.queue, ran)

    @staticmethod
    def log_fields(delivery: Delivery, verdict: Verdict, outcome: Outcome) -> dict[str, object]:
        handlers = ",".join(verdict.blamed or verdict.retry) or None
        fields = log_fields(delivery.properties.message_id, verdict.routing_key, handlers, verdict.attempt,
                            outcome.value)
        fields["reason"] = verdict.reason.value if verdict.reason else None
        return fields


def _replayed(delivery: Delivery, skip: frozenset[str]) -> bool:
    """An event the backfill before this loop ran (an original, never a retry copy of it)."""
    return delivery.exchange != "" and delivery.properties.message_id in skip


def consume_queue(settings: Settings, service: str, transport: Transport, engine: Engine,
                  options: LoopOptions) -> DrainResult:
    """Run the loop over ``service``'s queue with ``options``; see the module docstring."""
    loop = _Loop(settings, service, transport, engine, options)
    result = loop.run()
    if result.messages or result.duplicates:
        log.info("consumed %s: %s", loop.queue, result)
    return result
