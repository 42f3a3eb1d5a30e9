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

__all__ = ["SERVICE_WIDE", "Breaker", "FailureShare", "Parking"]

SERVICE_WIDE = "(service-wide breaker)"  # what the service-wide breaker lists among the paused subscriptions

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
