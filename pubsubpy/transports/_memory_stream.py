"""``memory://``'s streams (the event log): an append-only log read from any offset, as RabbitMQ's.

What it keeps of RabbitMQ's semantics (``transports/base.py``): messages stay
after they are read; each reader attaches at ``"first"``, ``"last"``,
``"next"``, an offset or a time (the first message stored at or after that
second), and every delivery carries its ``x-stream-offset``; retention drops
the oldest by age (``x-max-age``) and size (``x-max-length-bytes``), and, in
memory, past ``MEMORY_LOG_LIMIT`` messages; headers holding arrays or tables
are dropped on the way in; a nack is refused. Time is the broker's wall clock
(``time.time()`` plus ``advance()``), so a test ages a log without sleeping.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pubsubpy.envelope import Properties
from pubsubpy.errors import ConfigurationError, TransportError
from pubsubpy.transports.base import Delivery, LogOffset, next_delivery

__all__ = ["MEMORY_LOG_LIMIT", "MemoryLog", "MemoryLogConsumer", "is_stream"]

MEMORY_LOG_LIMIT = 2_000_000  # messages a memory log keeps at most, whatever its retention
OFFSET_HEADER = "x-stream-offset"

_UNITS = {"Y": 365 * 86_400, "M": 30 * 86_400, "D": 86_400, "h": 3_600, "m": 60, "s": 1}
_AGE = re.compile(r"^([0-9]+)(Y|M|D|h|m|s)$")


def is_stream(arguments: Mapping[str, Any]) -> bool:
    return arguments.get("x-queue-type") == "stream"


def _seconds(age: object) -> float | None:
    if age is None:
        return None
    found = _AGE.match(str(age))
    if found is None:
        raise ConfigurationError(f"x-max-age {age!r} is not a duration such as '7D', '12h' or '30m'")
    return int(found.group(1)) * _UNITS[found.group(2)]


@dataclass(slots=True)
class _Entry:
    offset: int
    stored_at: float  # wall clock, seconds
    exchange: str
    routing_key: str
    body: bytes
    properties: Properties


class MemoryLog:
    """One stream: its entries, oldest first, and its retention."""

    def __init__(self, name: str, arguments: Mapping[str, Any]) -> None:
        self.name = name
        self.arguments = dict(arguments)
        self.max_age = _seconds(arguments.get("x-max-age"))
        raw_bytes = arguments.get("x-max-length-bytes")
        self.max_bytes = None if raw_bytes is None else int(raw_bytes)
        self.entries: deque[_Entry] = deque()
        self.size = 0
        self.next_offset = 0
        self.readers: dict[MemoryLogConsumer, None] = {}

    @property
    def consumers(self) -> int:
        return len(self.readers)

    @property
    def first_offset(self) -> int:
        return self.entries[0].offset if self.entries else self.next_offset

    def append(self, exchange: str, routing_key: str, body: bytes, properties: Properties, now: float) -> None:
        headers = {key: value for key, value in properties.headers.items() if not isinstance(value, (list, dict))}
        headers[OFFSET_HEADER] = self.next_offset
        self.entries.append(_Entry(self.next_offset, now, exchange, routing_key, body,
                                   properties.with_headers(headers)))
        self.next_offset += 1
        self.size += len(body)
        self.retain(now)

    def retain(self, now: float) -> None:
        entries = self.entries
        while entries and (len(entries) > MEMORY_LOG_LIMIT
                           or (self.max_bytes is not None and self.size > self.max_bytes)
                           or (self.max_age is not None and now - entries[0].stored_at > self.max_age)):
            self.size -= len(entries.popleft().body)

    def position(self, offset: LogOffset) -> int:
        """The offset a reader attaching at ``offset`` reads first."""
        if isinstance(offset, dt.datetime):
            at = int(offset.timestamp())  # to the second, as RabbitMQ's chunk timestamps
            return next((entry.offset for entry in self.entries if int(entry.stored_at) >= at), self.next_offset)
        if offset == "first":
            return self.first_offset
        if offset == "last":
            return self.entries[-1].offset if self.entries else self.next_offset
        if offset == "next":
            return self.next_offset
        if isinstance(offset, int) and not isinstance(offset, bool):
            return max(offset, self.first_offset)
        raise TransportError(f"x-stream-offset {offset!r} is not first, last, next, an offset or a time "
                             "(PRECONDITION_FAILED)")

    def at(self, offset: int) -> _Entry | None:
        """The entry at ``offset``, or the first one after it still retained; None past the end."""
        if offset >= self.next_offset or not self.entries:
            return None
        index = max(0, offset - self.entries[0].offset)
        return self.entries[index] if index < len(self.entries) else None


class MemoryLogConsumer:
    """A reader of a ``MemoryLog`` (the ``Consumer`` contract, for a stream)."""

    def __init__(self, log: MemoryLog, condition: threading.Condition, offset: LogOffset, prefetch: int,
                 wall: Callable[[], float]) -> None:
        self._log = log
        self._condition = condition
        self._prefetch = max(1, prefetch)
        self._wall = wall
        self._tags = itertools.count(1)
        self._unacked: set[int] = set()
        self._closed = False
        self._woken = False
        with condition:
            log.retain(wall())
            self._next = log.position(offset)
            log.readers[self] = None

    def _take(self) -> Delivery | None:
        if self._closed:
            raise TransportError("consumer is closed")
        if len(self._unacked) >= self._prefetch:
            return None
        self._log.retain(self._wall())
        entry = self._log.at(self._next)
        if entry is None:
            return None
        self._next = entry.offset + 1
        tag = next(self._tags)
        self._unacked.add(tag)
        return Delivery(tag, entry.exchange, entry.routing_key, entry.body, entry.properties, False)

    def get(self, timeout: float) -> Delivery | None:
        until = time.monotonic() + timeout
        with self._condition:
            while True:
                delivery = self._take()
                if delivery is not None:
                    return delivery
                remaining = until - time.monotonic()
                if self._woken or remaining <= 0:
                    self._woken = False
                    return None
                self._condition.wait(remaining)

    def take_ready(self) -> list[Delivery]:
        ready: list[Delivery] = []
        with self._condition:
            while (delivery := self._take()) is not None:
                ready.append(delivery)
        return ready

    def keep_alive(self) -> None:
        """Nothing to keep alive in memory."""

    @property
    def connected(self) -> bool:
        return not self._closed

    def is_empty(self) -> bool:
        with self._condition:
            return self._next >= self._log.next_offset

    def next(self, timeout: float) -> Delivery | None:
        return next_delivery(self, timeout)

    def wake(self) -> None:
        with self._condition:
            self._woken = True
            self._condition.notify_all()

    def ack(self, tag: int) -> None:
        if tag not in self._unacked:
            raise TransportError(f"unknown delivery tag {tag} (PRECONDITION_FAILED)")
        self._unacked.discard(tag)

    def nack(self, tag: int, requeue: bool) -> None:
        raise TransportError(f"basic.nack and basic.reject not supported by stream queues queue {self._log.name!r} "
                             "(NOT_IMPLEMENTED)")

    def flush(self) -> None:
        return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._condition:
            self._log.readers.pop(self, None)

    def release(self) -> None:
        self.close()
