"""``Deadline``: one point in time, passed down, that every nested wait respects.

A drain with ``timeout=T`` creates one ``Deadline`` and hands it to connecting,
declaring, consuming and settling; each of them waits at most what is left of
it, so retries inside retries can never multiply the user's bound.
"""

from __future__ import annotations

import math
import time

__all__ = ["Deadline"]


class Deadline:
    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at  # time.monotonic() value; math.inf for "no deadline"

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        return cls(math.inf if seconds is None else time.monotonic() + seconds)

    @classmethod
    def never(cls) -> Deadline:
        return cls(math.inf)

    def remaining(self) -> float:
        """Seconds left, never negative (``math.inf`` without a deadline)."""
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def cap(self, seconds: float) -> float:
        """``seconds``, or less if the deadline comes first."""
        return min(seconds, self.remaining())

    def sooner(self, seconds: float) -> Deadline:
        """This deadline or ``seconds`` from now, whichever comes first."""
        return Deadline(min(self.at, time.monotonic() + seconds))

    def __repr__(self) -> str:
        return "Deadline(never)" if math.isinf(self.at) else f"Deadline(in {self.at - time.monotonic():.3f}s)"
