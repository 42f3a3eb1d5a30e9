"""A replay: this service's handlers run over the event log, in log order, through the live engine.

How it reads (``<exchange>.log``, a RabbitMQ stream):

1. An end marker goes into the stream first (the default exchange, routing key
   the stream's name: never through the model exchange, where other services'
   ``#`` bindings would see it). Reading stops at it: what is published later
   is the live queue's.
2. The log's oldest message tells whether retention dropped part of the window:
   when it is not the log's first ever (offset 0) and was published after
   ``since``, the replay refuses (``LogGap``) unless ``allow_gap``.
3. A consumer attaches at ``since`` minus 60 s (a time offset finds the chunk by
   broker arrival, to the second) and each event is kept or skipped by its publish
   time (``window.event_time``), its routing key (the subscriptions replayed) and
   its message id (the same id twice in the log, a relay re-send, runs once).
4. Each kept event goes through the engine as a live one does (checks,
   validation, upcasting, middleware, the inbox), one at a time, in order. A
   stream cannot requeue, so a failed handler is retried here, in place, after
   the retry delay, up to its attempts (an ordered one as in its lane); what is
   left is dead-lettered with ``pubsubpy-replayed: <replay id>``, confirmed before
   the event is acked. Nothing goes to the live queue. A key no schema here
   knows is ``unknown_event`` at once (no other version will take it).
5. A handler whose dependency is down (``pause_on``) stops the replay
   (``ReplayStopped``, with the publish time to resume from); a lost connection
   reattaches at the next offset.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pubsubpy._consume.settling import Settler
from pubsubpy._engine import Engine, Verdict
from pubsubpy._replay.dry_run import AlreadyRun
from pubsubpy._replay.marker import is_marker, marker_id, new_marker
from pubsubpy._replay.window import event_time
from pubsubpy.deadline import Deadline
from pubsubpy.envelope import H_REPLAYED, new_message_id, version_from
from pubsubpy.errors import BrokerUnavailable, ConfigurationError, LogGap, ReplayStopped
from pubsubpy.messages import Delivery, Outcome, OutgoingMessage, Reason, ReplayResult
from pubsubpy.middleware import MessageContext, MiddlewareChain
from pubsubpy.router import Router
from pubsubpy.settings import Settings
from pubsubpy.topology import event_log_name, retry_delays_ms
from pubsubpy.transports.base import Consumer, LogOffset, Transport

__all__ = ["LogReplay", "Progress", "ReplayOptions"]

log = logging.getLogger("pubsubpy.replay")

ATTACH_EARLY = dt.timedelta(seconds=60)  # a time offset finds a chunk by arrival, to the second; publish times lead
_STEP = 0.5            # seconds: one wait for a delivery before looking at ``stop`` and the idle bound
_FIND_MARKER = 5.0     # seconds to look for the end marker's offset in the log's last chunk

CHECKPOINT_EVERY = 1000  # events between two checkpoints (``ReplayOptions.checkpoint``)
LOG_EVERY = 10_000       # events between two progress lines in the log (without a ``progress`` callback)

Checkpoint = Callable[[int | None, bool, set[str]], None]
"""Told (the next offset to read, whether the ``overlap_after`` marker was passed, the overlap ids so far)."""

Progress = Callable[[ReplayResult, float | None], None]
"""Called after each event with the running result and the share of the window read so far (None: unknown)."""


@dataclass
class ReplayOptions:
    since: dt.datetime
    until: dt.datetime | None = None
    dry_run: bool = False
    allow_gap: bool = False
    prefetch: int = 1000
    idle_timeout: float = 30.0  # seconds without a delivery before the end marker: the log stopped delivering
    progress: Progress | None = None
    stop: threading.Event | None = None
    overlap_after: str | None = None  # a marker's id: remember the ids run after it (``handover.py``)
    overlap: set[str] = field(default_factory=set)  # filled: the message ids run after ``overlap_after``
    grace: float = 0.0  # seconds of the log read past the end marker (a second marker ends it; ``handover.py``)
    resume_offset: int | None = None  # attach here instead of at ``since`` (a backfill resumed after a crash)
    after_overlap: bool = False  # resuming past the ``overlap_after`` marker
    checkpoint: Checkpoint | None = None  # told where the replay is, every ``CHECKPOINT_EVERY`` events and at its end
    already_run: AlreadyRun | None = None  # a dry run: counts what idempotent handlers' inbox already holds
    middleware: MiddlewareChain | None = None  # its ``after_message`` observers hear each replayed event


class LogProgress:
    """Progress as an INFO line every ``LOG_EVERY`` events."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.logged = 0

    def __call__(self, result: ReplayResult, share: float | None) -> None:
        if result.messages - self.logged >= LOG_EVERY:
            self.logged = result.messages
            rate = result.messages / max(time.monotonic() - self.started, 1e-6)
            where = f", {share:.0%} of the log" if share is not None else ""
            log.info("replaying %s: %d events%s, %.0f/s", self.stream, result.messages, where, rate)


class LogReplay:
    def __init__(self, settings: Settings, service: str, transport: Transport, engine: Engine, router: Router,
                 options: ReplayOptions) -> None:
        self.settings = settings
        self.transport = transport
        self.engine = engine
        self.router = router
        self.options = options
        self.stream = event_log_name(settings.model_exchange)
        self.settler = Settler(settings, service)
        self.result = ReplayResult(replay_id=new_message_id(), since=options.since, until=options.until,
                                   dry_run=options.dry_run)
        if options.progress is None:  # a worker's backfill, a caller without its own: a log line now and then
            options.progress = LogProgress(self.stream)
        self.seen: set[str] = set()
        self.matches: dict[str, bool] = {}
        self.next_offset: int | None = None
        self.end_marker = ""  # the marker whose reading ends the replay
        self.end_offset: int | None = None    # its offset (for progress), when found
        self.first_offset: int | None = None  # the first offset read
        self.offset: int | None = None        # the offset of the message being settled
        self.ends_at = time.time()
        self.after_overlap = False  # (from ``options`` at ``run``: a backfill sets them after making this)
        self.unsaved = 0  # events settled since the last checkpoint
        self.stop = options.stop or threading.Event()

    # -- the run ---------------------------------------------------------------------
    def run(self) -> ReplayResult:
        started = time.monotonic()
        self.after_overlap = self.options.after_overlap
        self.check_log()
        self.end_marker = self.result.replay_id
        self.transport.publish([new_marker(self.stream, self.end_marker)])
        self.ends_at = time.time()
        self.end_offset = self.marker_offset(self.end_marker)
        self.check_gap()
        start = self.options.resume_offset
        self.consumer = self.attach(self.options.since - ATTACH_EARLY if start is None else start)
        try:
            self.read()
        except ReplayStopped:
            self.save()  # what was settled stays settled: a resumed backfill starts after it
            raise
        else:
            self.save()
            if self.options.already_run is not None:
                self.result.already_run = self.options.already_run.flush()
        finally:
            self.consumer.close()
            self.result.seconds = time.monotonic() - started
        log.info("replayed %s: %s", self.stream, self.result)
        return self.result

    def check_log(self) -> None:
        if self.transport.queue_info(self.stream) is None:
            raise ConfigurationError(
                f"there is no event log {self.stream!r} to replay: set event_log (say event_log='7D') on the services "
                "that publish to this exchange; the log holds what is published from then on")

    def attach(self, offset: LogOffset) -> Consumer:
        # (no deadline: one would bound the consumer's whole life; connecting is bounded by the settings)
        return self.transport.consume(self.stream, self.options.prefetch, recover=False, offset=offset)

    def marker_offset(self, marker: str) -> int | None:
        """The offset of ``marker``, just written: in the log's last chunk (None: not seen within a few seconds;
        progress is then told by publish time)."""
        consumer = self.attach("last")
        try:
            until = Deadline.after(_FIND_MARKER)
            while not until.expired:  # (a busy log may have moved its last chunk past the marker already)
                delivery = consumer.get(until.cap(_STEP))
                if delivery is not None and is_marker(delivery) and marker_id(delivery) == marker:
                    offset = delivery.properties.headers.get("x-stream-offset")
                    return offset if isinstance(offset, int) else None
            return None
        finally:
            consumer.close()

    def check_gap(self) -> None:
        """Raise ``LogGap`` when retention dropped the start of the window (see the module docstring)."""
        consumer = self.attach("first")
        try:
            oldest = consumer.get(self.options.idle_timeout)
        finally:
            consumer.close()
        if oldest is None:
            raise ReplayStopped(f"the event log {self.stream!r} delivered nothing within "
                                f"{self.options.idle_timeout:g}s, not even this replay's marker", self.options.since)
        at, offset = event_time(oldest), oldest.properties.headers.get("x-stream-offset")
        since = self.options.since
        if at is None or offset == 0 or at <= since:
            return
        self.result.gap = at - since
        if not (self.options.allow_gap or self.options.dry_run):
            raise LogGap(f"the event log {self.stream!r} starts at {at.isoformat(timespec='seconds')}, after "
                         f"since={since.isoformat(timespec='seconds')}: retention dropped {at - since} of the window. "
                         "Replay from a later since, or pass allow_gap=True (--allow-gap) to replay what is left",
                         since, at)
        log.warning("the event log %r starts %s after since: replaying what is left (allow_gap)", self.stream,
                    at - since)

    def read(self) -> None:
        idle = Deadline.after(self.options.idle_timeout)
        while True:
            if self.stop.is_set():
                raise ReplayStopped("the replay was stopped", self.result.last_at)
            consumer = self.consumer
            try:
                delivery = consumer.get(_STEP)
            except BrokerUnavailable as exc:
                self.consumer = self.reattach(consumer, exc)
                continue
            if delivery is None:
                if idle.expired:
                    raise ReplayStopped(f"the event log {self.stream!r} delivered nothing for "
                                        f"{self.options.idle_timeout:g}s before this replay's end marker",
                                        self.result.last_at)
                continue
            idle = Deadline.after(self.options.idle_timeout)
            if not self.take(consumer, delivery):
                consumer.flush()
                return

    def reattach(self, consumer: Consumer, exc: BrokerUnavailable) -> Consumer:
        """The connection was lost: a new consumer at the next offset (every earlier one is settled)."""
        consumer.close()
        log.warning("replay of %r lost its connection (%s); attaching again at offset %s", self.stream, exc,
                    self.next_offset)
        for attempt in range(1, self.settings.connection_attempts + 1):
            try:
                return self.attach(self.next_offset if self.next_offset is not None else
                                   self.options.since - ATTACH_EARLY)
            except BrokerUnavailable:
                if attempt == self.settings.connection_attempts:
                    raise
                time.sleep(self.settings.retry_connect_delay * attempt)
        raise AssertionError("not reached")

    # -- one message -----------------------------------------------------------------
    def take(self, consumer: Consumer, delivery: Delivery) -> bool:
        """Settle one message read from the log; False once the end is reached."""
        self.result.read += 1
        offset = delivery.properties.headers.get("x-stream-offset")
        self.offset = offset if isinstance(offset, int) else None
        if self.first_offset is None:
            self.first_offset = self.offset
        going_on = self.settle(delivery)
        consumer.ack(delivery.tag)
        if self.offset is not None:
            self.next_offset = self.offset + 1  # every message before it is settled
        self.unsaved += 1
        if self.unsaved >= CHECKPOINT_EVERY:
            self.save()
        return going_on

    def settle(self, delivery: Delivery) -> bool:
        """A marker, an event outside the window or not for us, or one to run; False once the end is reached."""
        result, options = self.result, self.options
        if is_marker(delivery):
            marker = marker_id(delivery)
            if marker == options.overlap_after:
                self.after_overlap = True
            if marker != self.end_marker:
                return True
            if options.grace <= 0 or self.end_marker != result.replay_id:
                return False
            self.extend()
            return True
        at = event_time(delivery)
        if at is not None and (at < options.since or (options.until is not None and at > options.until)):
            result.outside += 1
            return not (options.until is not None and at > options.until + ATTACH_EARLY)
        if not self.subscribed(delivery.routing_key):
            result.unsubscribed += 1
        elif self.repeated(delivery):
            result.repeated += 1
        else:
            self.run_event(delivery, at)
            if options.progress is not None:
                options.progress(result, self.share(at))
        return True

    def save(self) -> None:
        """Tell the checkpoint where the replay is: every message before ``next_offset`` is settled."""
        self.unsaved = 0
        if self.options.checkpoint is not None:
            self.options.checkpoint(self.next_offset, self.after_overlap, self.options.overlap)

    def extend(self) -> None:
        """At the end marker, with ``grace``: read on up to a second marker written ``grace`` seconds after the
        first, for events routed before a queue's binding but stored in the log a moment after the marker."""
        self.wait(max(0.0, self.ends_at + self.options.grace - time.time()))
        self.end_marker = f"{self.result.replay_id}.grace"
        self.transport.publish([new_marker(self.stream, self.end_marker)])

    def subscribed(self, routing_key: str) -> bool:
        found = self.matches.get(routing_key)
        if found is None:
            found = self.matches[routing_key] = bool(self.router.match(routing_key))
        return found

    def repeated(self, delivery: Delivery) -> bool:
        message_id = delivery.properties.message_id
        if not message_id:
            return False
        if message_id in self.seen:
            return True
        self.seen.add(message_id)
        return False

    def share(self, at: dt.datetime | None) -> float | None:
        """How far through the window the replay is: by offset when the end marker's is known, else by time."""
        offset, first, end = self.offset, self.first_offset, self.end_offset
        if offset is not None and first is not None and end is not None and end > first:
            return max(0.0, min(1.0, (offset + 1 - first) / (end - first)))
        if at is None:
            return None
        span = self.ends_at - self.options.since.timestamp()
        return None if span <= 0 else max(0.0, min(1.0, (at.timestamp() - self.options.since.timestamp()) / span))

    def run_event(self, delivery: Delivery, at: dt.datetime | None) -> None:
        result = self.result
        key = delivery.routing_key
        result.keys[key] = result.keys.get(key, 0) + 1
        if at is not None:
            result.first_at = result.first_at or at
            result.last_at = at
        if self.options.dry_run:
            verdict = self.engine.prepare(delivery).verdict
            outcome = Outcome.DEAD_LETTERED if verdict.reason is not None else Outcome.HANDLED
            result.count(outcome, verdict.reason)
            if self.options.already_run is not None and verdict.reason is None:
                self.options.already_run.add(key, delivery.properties.message_id)
            return
        verdict, letters = self.run_handlers(delivery, at)
        if letters:
            lost = self.transport.publish(letters)
            if lost:
                raise self.settler.missing(lost)
        outcome = Outcome.DEAD_LETTERED if letters else Outcome.HANDLED
        result.count(outcome, verdict.reason)
        if verdict.stale:
            result.stale += 1
        self.observe(delivery, verdict, outcome)
        if self.after_overlap and delivery.properties.message_id:
            self.options.overlap.add(delivery.properties.message_id)

    def observe(self, delivery: Delivery, verdict: Verdict, outcome: Outcome) -> None:
        """The middleware's ``after_message``, as for a live message (its queue: the log)."""
        chain = self.options.middleware
        observers = chain.observers() if chain is not None and chain.observes_messages else None
        if not observers:
            return
        info = verdict.info or self.engine.info(delivery, verdict, version_from(delivery.properties.headers))
        ran = outcome is Outcome.HANDLED or verdict.reason in (Reason.HANDLER_ERROR, Reason.REJECTED)
        MiddlewareChain.after_message(observers, MessageContext(info, outcome, verdict.reason, verdict.error,
                                                                self.settings.model_exchange, self.stream, ran))

    def run_handlers(self, delivery: Delivery, at: dt.datetime | None) -> tuple[Verdict, list[OutgoingMessage]]:
        """Run the event's handlers, retrying failed ones in place; the last verdict and the dead letters."""
        letters: list[OutgoingMessage] = []
        blamed: Verdict | None = None
        current = delivery
        verdict = self.engine.dispatch(current)
        while True:
            if verdict.paused:
                raise ReplayStopped(f"handler(s) {', '.join(verdict.paused)} stopped the replay: a dependency is down "
                                    f"({verdict.error}); run it again from its resume_from once it is back", at)
            if verdict.held:  # an ordered handler failed with attempts left: again, in place
                again, delay = verdict.again, verdict.held_for or 0.0
                verdict.again = verdict.held_for = None
                self.wait(delay)
                verdict = self.engine.handle(again)  # type: ignore[arg-type]  # the engine's own Work
                continue
            if verdict.reason is not None:
                blamed = verdict
                letters.append(self.letter(current, verdict))
            if not verdict.retry:
                return blamed or verdict, letters
            copy = self.settler.retry_copy(current, verdict)
            self.wait(random.choice(retry_delays_ms(self.settings, verdict.attempt)) / 1000.0)
            current = Delivery(delivery.tag, "", copy.routing_key, copy.body, copy.properties, False)
            verdict = self.engine.dispatch(current)

    def letter(self, delivery: Delivery, verdict: Verdict) -> OutgoingMessage:
        return self.settler.dead_letter_copy(delivery, verdict, extra={H_REPLAYED: self.result.replay_id})

    def wait(self, seconds: float) -> None:
        """A retry's delay, the stop event looked at (a stopped replay ends at the next event)."""
        self.stop.wait(seconds)
