"""Per-key lanes in front of the executor: one message of a key out at a time, in arrival order.

A message's lane is its ordering key (``Engine.lane_of``; None: no ordered
handler runs it, so it needs no lane). ``admit`` lets a message through when
its lane is free and queues it behind the one out otherwise. The one out is
running, or held: waiting out the retry delay of its failed ordered handlers
(``hold``), on no thread, until ``take`` hands it back to run again. When it is
finally settled (handled or dead-lettered), ``release`` lets the next of its key
through. A held lane holds only its own key's later messages; they still take
room in the prefetch window, so a key with many messages behind a failing one
can fill the window until its retry delay ends.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable

from pubsubpy._engine import Item, Work
from pubsubpy.messages import Delivery

__all__ = ["Lanes"]

_BUSY_STEP = 0.05  # how often a lane held by an abandoned run looks again (seconds)


class Lanes:
    def __init__(self, lane_of: Callable[[Delivery], str | None],
                 busy: Callable[[Delivery], bool] | None = None) -> None:
        self._lane_of = lane_of
        self._busy = busy  # an abandoned run of this message still going (time_limit): its lane stays held
        self._releasing: list[Delivery] = []  # settled, their lanes freed once ``busy`` says they are done
        self._behind: dict[str, deque[Delivery]] = {}  # a lane whose message is out: those waiting behind it
        self._out: dict[int, str] = {}                  # id(delivery) of the message out -> its lane
        self._free: list[Item] = []                     # released, to run now
        self._held: list[tuple[float, int, Work]] = []  # (run again at, tie-break, work): a heap
        self._tie = itertools.count()
        self.waiting = 0                                # messages here: behind others, held, or free

    def admit(self, deliveries: Iterable[Delivery]) -> list[Item]:
        """Of ``deliveries`` (in arrival order), those to run now, after any released or due ones."""
        runnable = self.take()
        for delivery in deliveries:
            lane = self._lane_of(delivery)
            if lane is None:
                runnable.append(delivery)
            elif lane in self._behind:
                self._behind[lane].append(delivery)
                self.waiting += 1
            else:
                self._behind[lane] = deque()
                self._out[id(delivery)] = lane
                runnable.append(delivery)
        return runnable

    def hold(self, work: Work, delay: float) -> None:
        """``work`` runs again after ``delay`` seconds; its lane stays taken."""
        heapq.heappush(self._held, (time.monotonic() + delay, next(self._tie), work))
        self.waiting += 1

    def release(self, delivery: Delivery) -> None:
        """``delivery`` is settled: the next message of its lane may run (once no abandoned run of it is
        still going)."""
        if self._busy is not None and self._busy(delivery):
            self._releasing.append(delivery)
            return
        lane = self._out.pop(id(delivery), None)
        if lane is None:
            return
        behind = self._behind[lane]
        if not behind:
            del self._behind[lane]
            return
        following = behind.popleft()
        self._out[id(following)] = lane
        self._free.append(following)

    def take(self) -> list[Item]:
        """Released messages, and held ones whose delay has passed, to run now."""
        now = time.monotonic()
        if self._releasing:
            releasing, self._releasing = self._releasing, []
            for delivery in releasing:
                self.release(delivery)
        held = self._held
        while held and held[0][0] <= now:
            work = heapq.heappop(held)[2]
            if self._busy is not None and self._busy(work.delivery):  # its abandoned run still going
                heapq.heappush(held, (now + _BUSY_STEP, next(self._tie), work))
                break
            self._free.append(work)
        free, self._free = self._free, []
        self.waiting -= len(free)
        return free

    def ready(self) -> bool:
        """``take`` would return something now."""
        return bool(self._free) or bool(self._held and self._held[0][0] <= time.monotonic())

    def next_due(self) -> float | None:
        """Seconds until the next held message may run again; None when none is held."""
        due = max(self._held[0][0] - time.monotonic(), 0.0) if self._held else None
        if self._releasing:
            return _BUSY_STEP if due is None else min(due, _BUSY_STEP)
        return due

    def __len__(self) -> int:
        """Messages taken from the broker that wait here, unacked (behind others, held, or released)."""
        return self.waiting
