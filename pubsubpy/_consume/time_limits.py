"""``time_limit=``: a synchronous handler's run on a thread of its own, waited for at most that long.

Python cannot stop a thread. A run still going at its subscription's
``time_limit`` fails with ``TimeLimitExceeded`` (retried, or dead-lettered as
``time_limit``) and its message is settled; its thread is abandoned and runs on.
The waiting thread (the loop's at ``concurrency=1``, a pool thread otherwise) is
free again at once, so an abandoned run does not count towards ``concurrency``.
An effect the abandoned run commits late races the message's retry: only
``idempotent=True`` (the inbox) prevents a double effect.

``live`` counts abandoned runs still going: with more of them than ``concurrency`` the
worker stops gracefully with exit code 75 (EX_TEMPFAIL) for its supervisor to
restart it (``_consume/loop.py``). ``running(owner)`` says whether a message's
abandoned run is still going: its ordered key stays held until it returns.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable

from pubsubpy.errors import TimeLimitExceeded

__all__ = ["TimedRuns"]


class TimedRuns:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: dict[int, int] = {}  # id(owner) -> abandoned runs of it still going
        self.live = 0

    def run(self, call: Callable[[], object], limit: float, handler: str, owner: object) -> object:
        """``call()`` on a new thread; its result, or what it raised, within ``limit`` seconds; else
        ``TimeLimitExceeded``, the thread left running (counted until it returns)."""
        outcome: list[tuple[bool, object]] = []
        done = threading.Event()
        abandoned = threading.Event()
        context = contextvars.copy_context()

        def target() -> None:
            try:
                outcome.append((True, context.run(call)))
            except BaseException as exc:  # handed to the waiting thread, which fails the run with it
                outcome.append((False, exc))
            finally:
                with self._lock:
                    done.set()
                    if abandoned.is_set():
                        self._returned(owner)

        thread = threading.Thread(target=target, name=f"pubsubpy-timed-{handler[-40:]}", daemon=True)
        thread.start()
        if not done.wait(limit):
            with self._lock:
                if not done.is_set():
                    abandoned.set()
                    self.live += 1
                    self._owners[id(owner)] = self._owners.get(id(owner), 0) + 1
                    raise TimeLimitExceeded(f"handler {handler} still running after time_limit={limit:g}s: its "
                                            "thread is abandoned (it runs on) and the message settled")
        ok, value = outcome[0]
        if not ok:
            assert isinstance(value, BaseException)
            raise value
        return value

    def _returned(self, owner: object) -> None:
        self.live -= 1
        left = self._owners[id(owner)] - 1
        if left:
            self._owners[id(owner)] = left
        else:
            del self._owners[id(owner)]

    def running(self, owner: object) -> bool:
        """An abandoned run of ``owner``'s (a message) is still going."""
        return id(owner) in self._owners
