"""Pausing on an outage: the breaker of a consumer whose handlers' dependency is down.

A handler that raises one of its ``pause_on`` exceptions says its dependency (a
database, an API answering 503) is down: retrying or dead-lettering every
message that arrives meanwhile helps nobody. The consumer's breaker trips: the
message goes back unsettled (``basic.nack(requeue=True)``, which a quorum queue
does not count as a delivery), the consumer stops taking messages, finishes the
ones running, gives back what it holds and cancels itself. After
``pause_probe_delay`` it probes: it takes one message and runs it. A probe that
fails the same way re-publishes its message to the back of the queue (attempt
unchanged) and acks it, so no message is stuck at the head being redelivered,
and the next probe waits twice as long (up to ``pause_probe_delay_max``). A
probe that succeeds, or finds the queue empty, closes the breaker and the
consumer takes messages again. One WARNING per trip and per recovery.

When every subscription of the queue is paused (or an ordered one is, whose
lanes must not be overtaken), the whole consumer pauses as above. When others
are not, only the paused subscription's share is set aside (``Parking``): each
message's runs of it are skipped and a copy aimed at it goes, confirmed, to
``<service>.parked``, attempt unchanged, while the other handlers run. Its probe
moves the oldest parked message back with a probe header (which lets it run
the paused handler); when that succeeds, or nothing is parked, the breaker
closes and the parked messages are moved back in order.

The service-wide breaker (``FailureShare``, off unless ``breaker_failure_share``
is set) trips the same breaker when that share of the messages handled over
``breaker_window`` seconds failed in a handler; its probe succeeds when the
probe's message is handled without a failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence

from pubsubpy._consume.settling import Settler
from pubsubpy._engine import Engine, Verdict
from pubsubpy.deadline import Deadline
from pubsubpy.envelope import H_PROBE
from pubsubpy.messages import Delivery, Reason
from pubsubpy.settings import Settings
from pubsubpy.transports.base import Transport

__all__ = ["SERVICE_WIDE", "Breaker", "FailureShare", "Parking", "Pauses"]

SERVICE_WIDE = "(service-wide breaker)"  # what the service-wide breaker lists among the paused subscriptions

_MOVE_BATCH = 500    # parked messages moved back per turn once their subscription runs again
_MOVE_WAIT = 0.2     # seconds to wait for the next parked message before taking the queue as empty
_FAILED_REASONS = (Reason.HANDLER_ERROR, Reason.TIME_LIMIT)  # a handler failed (not a rejection by design)

log = logging.getLogger("pubsubpy.drain")


class Breaker:
    """Open while a handler's dependency is down. Read from other threads (``/healthz``, metrics)."""

    def __init__(self, first_delay: float, max_delay: float) -> None:
        self._first, self._max = first_delay, max_delay
        self._delay = first_delay
        self._lock = threading.Lock()
        self.paused: tuple[str, ...] = ()  # the subscriptions that tripped it (empty: closed)
        self.opened_at = 0.0
        self.trips = 0

    @property
    def open(self) -> bool:
        return bool(self.paused)

    def trip(self, handlers: tuple[str, ...], why: str, queue: str) -> None:
        """A run raised a ``pause_on`` exception: open (once per outage), or note another subscription."""
        with self._lock:
            added = tuple(name for name in handlers if name not in self.paused)
            if not added:
                return
            first = not self.paused
            self.paused = (*self.paused, *added)
            if first:
                self.opened_at = time.monotonic()
                self.trips += 1
        if first:
            log.warning("pausing the consumer on %s: %s; the message goes back, and a probe runs one message in "
                        "%gs", queue, why, self._delay)

    def next_probe_delay(self) -> float:
        """How long to wait before the next probe; each call doubles the following one, up to the cap."""
        with self._lock:
            delay = self._delay
            self._delay = min(self._delay * 2, self._max)
        return delay

    def close(self, queue: str) -> None:
        """A probe succeeded (or found nothing to run): consume again."""
        with self._lock:
            if not self.paused:
                return
            paused, self.paused = self.paused, ()
            self._delay = self._first
            outage = time.monotonic() - self.opened_at
        log.warning("resuming the consumer on %s after %.0fs paused (%s): a probe succeeded", queue, outage,
                    ", ".join(paused))


class Parking:
    """Subscriptions paused while the queue's others go on, and when to probe them."""

    def __init__(self, first_delay: float, max_delay: float) -> None:
        self._first, self._max = first_delay, max_delay
        self._delay = first_delay
        self.names: frozenset[str] = frozenset()
        self.probe_at = 0.0        # monotonic; 0: no probe scheduled
        self.probing = False       # a probe message is on its way back
        self.moving = False        # closed: the parked messages are being moved back
        self.opened_at = 0.0

    def trip(self, handlers: tuple[str, ...], why: str, queue: str) -> None:
        added = frozenset(handlers) - self.names
        if not added:
            return
        if not self.names:
            self.opened_at = time.monotonic()
            self.probe_at = self.opened_at + self._delay
        self.names |= added
        log.warning("parking the share of %s on %s: %s; the queue's other subscriptions go on, and a probe "
                    "moves one parked message back in %gs", ", ".join(sorted(added)), queue, why, self._delay)

    def due(self) -> bool:
        return bool(self.names) and not self.probing and 0 < self.probe_at <= time.monotonic()

    def probe_failed(self) -> None:
        self.probing = False
        self._delay = min(self._delay * 2, self._max)
        self.probe_at = time.monotonic() + self._delay

    def close(self, queue: str) -> None:
        """A probe succeeded, or nothing was parked: the share runs again; the parked messages go back."""
        if not self.names:
            return
        names, self.names = self.names, frozenset()
        self.probing, self.probe_at, self._delay, self.moving = False, 0.0, self._first, True
        log.warning("resuming %s on %s after %.0fs parked: a probe succeeded; moving the parked messages back",
                    ", ".join(sorted(names)), queue, time.monotonic() - self.opened_at)


class FailureShare:
    """The share of messages whose handlers failed over a sliding window of ``window`` seconds."""

    def __init__(self, share: float, window: float, min_runs: int) -> None:
        self._share, self._window, self._min = share, window, min_runs
        self._seen: deque[tuple[float, bool]] = deque()
        self._failed = 0

    def record(self, failed: bool) -> bool:
        """Count one settled message; True when the share of failures is reached (the breaker should trip)."""
        now = time.monotonic()
        seen = self._seen
        seen.append((now, failed))
        self._failed += failed
        while seen and seen[0][0] < now - self._window:
            self._failed -= seen.popleft()[1]
        return len(seen) >= self._min and self._failed >= self._share * len(seen)

    def describe(self) -> str:
        return (f"{self._failed} of the last {len(self._seen)} messages failed in a handler within "
                f"breaker_window={self._window:g}s (breaker_failure_share={self._share:g})")

    def reset(self) -> None:
        self._seen.clear()
        self._failed = 0


class Pauses:
    """The consumer loop's side of pausing: which verdicts pause the consumer or park a share, what a
    settled chunk does to the breakers, and moving parked messages back. The loop asks it once per settled
    chunk (``settled``) and once per turn (``tend``); while ``probing`` its consumer takes one message."""

    def __init__(self, settings: Settings, engine: Engine, queue: str, parked: str, transport: Transport,
                 settler: Settler) -> None:
        self.engine, self.queue, self.parked_queue = engine, queue, parked
        self.transport, self.settler, self.confirm_timeout = transport, settler, settings.confirm_timeout
        self.breaker = Breaker(settings.pause_probe_delay, settings.pause_probe_delay_max)
        self.parking = Parking(settings.pause_probe_delay, settings.pause_probe_delay_max) \
            if engine.has_pause_on else None
        self.failures = FailureShare(settings.breaker_failure_share, settings.breaker_window,
                                     settings.breaker_min_runs) if settings.breaker_failure_share > 0 else None
        self.probing = False  # the current consumer takes one message: the breaker's probe

    def names(self) -> tuple[str, ...]:
        """The paused subscriptions: the consumer's, then the parked shares'."""
        parked = tuple(sorted(self.parking.names)) if self.parking is not None else ()
        return self.breaker.paused + parked

    @property
    def moving(self) -> bool:
        """A parked share's messages are on their way back (a drain is not over yet)."""
        return self.parking is not None and (self.parking.moving or self.parking.probing)

    def pauses(self, verdict: Verdict) -> bool:
        """``verdict`` pauses the whole consumer (read on handler threads: the state it reads only grows
        while they run)."""
        return bool(verdict.paused) and not self.parks(verdict.paused)

    def parks(self, handlers: Sequence[str]) -> bool:
        """Whether to park these paused handlers' share (others of the queue go on) rather than pause the
        consumer: never for an ordered subscription, whose key's later messages must not overtake it."""
        parking = self.parking
        if parking is None or self.breaker.open or any(name in self.engine.ordered_names for name in handlers):
            return False
        return bool(self.engine.names - parking.names - set(handlers))

    def settled(self, done: list[tuple[Delivery, Verdict]]) -> tuple[list[tuple[Delivery, Verdict]], list[Delivery]]:
        """Trip or close the breakers on a settled chunk. Returns what to settle as usual, and the messages
        that go back unacked (a paused message, or a probe's of an ordered key, which keeps its place)."""
        tripped = any(verdict.paused for _, verdict in done)
        given_back: list[Delivery] = []
        if tripped:
            done, given_back = self.trip(done)
        if self.parking is not None and self.parking.probing \
                and any(_is_probe(delivery) and not verdict.park for delivery, verdict in done):
            self.close_parking()  # the parked share's probe ran without its dependency failing
        if self.failures is not None and done:
            self.count_failures(done)
        elif self.probing and done and not tripped:
            self.breaker.close(self.queue)  # the probe's message ran without its dependency failing
        return done, given_back

    def trip(self, done: list[tuple[Delivery, Verdict]]) -> tuple[list[tuple[Delivery, Verdict]], list[Delivery]]:
        """Trip the breaker on messages whose handler's dependency is down. They go back unacked, or, from a
        probe, copied to the back of the queue (acked with the copies) so none waits at the head being probed
        again and again; the message of an ordered key goes back unacked even then."""
        for delivery, verdict in done:
            if verdict.paused:
                why = f"its dependency is down ({verdict.error})"
                if self.parks(verdict.paused):
                    assert self.parking is not None
                    if _is_probe(delivery):
                        self.parking.probe_failed()
                    self.parking.trip(tuple(verdict.paused), why, self.queue)
                    self.engine.parking = self.parking.names
                    verdict.park_paused()  # settled with a parked copy, the other handlers' outcomes as they are
                else:
                    self.breaker.trip(tuple(verdict.paused), why, self.queue)
        kept: list[tuple[Delivery, Verdict]] = []
        given_back: list[Delivery] = []
        for delivery, verdict in done:
            if not verdict.paused or (self.probing and self.engine.lane_of(delivery) is None):
                kept.append((delivery, verdict))  # a probe's message: copied to the back (an ordered one keeps
            else:                                 # its place, so its key's later messages stay behind it)
                given_back.append(delivery)
        return kept, given_back

    def count_failures(self, done: list[tuple[Delivery, Verdict]]) -> None:
        """The service-wide breaker: trip on the share of handler failures; a probe without one closes it."""
        assert self.failures is not None
        failed = [bool(verdict.retry) or verdict.reason in _FAILED_REASONS for _, verdict in done]
        if self.probing:
            if not any(failed) and not any(verdict.paused for _, verdict in done):
                self.failures.reset()
                self.breaker.close(self.queue)
            return
        tripped = False
        for each in failed:
            tripped = self.failures.record(each) or tripped
        if tripped:
            self.breaker.trip((SERVICE_WIDE,), self.failures.describe(), self.queue)

    # -- the parked shares -----------------------------------------------------------------------------
    def start(self) -> None:
        """A consumer (not a probe's) is about to run: messages parked by an earlier run go back first."""
        if self.parking is not None and not self.probing:
            self.parking.moving = self.transport.queue_depth(self.parked_queue, deadline=Deadline.after(10)) > 0

    def tend(self) -> None:
        """Probe a parked share when it is due (move its oldest message back, marked as a probe), or move the
        parked messages back once the share runs again, a bounded batch per turn."""
        parking = self.parking
        if parking is None:
            return
        if parking.due():
            if self.move_parked(1, probe=True):
                parking.probing = True
            else:  # nothing parked to test with: run the share again
                self.close_parking()
        elif parking.moving and not self.move_parked(_MOVE_BATCH, probe=False):
            parking.moving = False

    def close_parking(self) -> None:
        assert self.parking is not None
        self.parking.close(self.queue)
        self.engine.parking = self.parking.names

    def move_parked(self, limit: int, probe: bool) -> int:
        """Move up to ``limit`` parked messages back into the service queue, in order, confirmed before each
        is acked in ``<service>.parked``; how many moved."""
        parked = self.transport.consume(self.parked_queue, limit, limit=limit, deadline=Deadline.after(10))
        try:
            taken: list[Delivery] = []
            while len(taken) < limit:
                delivery = parked.get(_MOVE_WAIT)
                if delivery is None:
                    break
                taken.append(delivery)
            if taken:
                self.transport.publish([self.settler.moved_back(d, probe) for d in taken],
                                       deadline=Deadline.after(self.confirm_timeout))
                for delivery in taken:
                    parked.ack(delivery.tag)
                parked.flush()
        finally:
            parked.close()
        return len(taken)


def _is_probe(delivery: Delivery) -> bool:
    """A parked message moved back to test its paused handlers (trusted only through the default exchange)."""
    return delivery.exchange == "" and H_PROBE in delivery.properties.headers
