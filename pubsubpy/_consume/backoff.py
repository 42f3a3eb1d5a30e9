"""Waiting out a broker failure: the one reconnect policy above the transport.

The transport reconnects a lost connection by itself, within bounded tries
(``transports/rabbitmq``). What must never give up (a worker's declare and
consumer, the outbox relay) waits here between attempts: capped exponential
backoff that a ``stop`` event cuts short, one WARNING per pause.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["Backoff"]

CAP = 30.0  # seconds: the longest pause


class Backoff:
    """Pauses of ``first`` seconds, doubling up to ``CAP``; ``reset`` after a success."""

    def __init__(self, first: float, log: logging.Logger) -> None:
        self._first = max(first, 0.1)
        self._log = log
        self.delay = self._first

    def pause(self, why: str, stop: threading.Event | None) -> bool:
        """Log ``why`` and wait the current delay; True when ``stop`` was set meanwhile."""
        self._log.warning("%s; retrying in %.1fs", why, self.delay)
        stopped = (stop if stop is not None else threading.Event()).wait(self.delay)
        self.delay = min(self.delay * 2, CAP)
        return stopped

    def reset(self) -> None:
        self.delay = self._first
