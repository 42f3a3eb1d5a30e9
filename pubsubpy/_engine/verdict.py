"""One message's verdict, and how the runs of its handlers fold into it.

Each matching handler runs once per delivery, whatever the others do: one
handler's ``Reject`` or exhausted retries never keeps another from running.
``Verdict.fold`` is the one place that turns the failed runs into the message's outcome:

- every run returned                  -> handled (``fold`` is not even called)
- some raised with attempts left      -> a retry copy aimed at just those handlers
- some raised a ``pause_on`` exception -> given back whole (the consumer pauses)
- some raised ``Reject``, or raised on their last attempt
                                      -> a dead letter naming just those handlers,
                                         reason ``rejected`` when every one of them
                                         rejected, ``time_limit`` when every one ran
                                         out of time, else ``handler_error``
A message can need both a retry copy and a dead letter (one handler out of
attempts, another with attempts left); each copy names its own handlers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pubsubpy.messages import HandlerResult, MessageInfo, Outcome, Reason

__all__ = ["ERROR_TEXT_LIMIT", "Verdict", "describe"]

ERROR_TEXT_LIMIT = 1000


def describe(exc: BaseException | None) -> str:
    """``Type: text`` of an exception, bounded; never raises (an ``__str__`` that fails is said so)."""
    if exc is None:
        return ""
    try:
        text = str(exc)
    except Exception:  # an exception whose __str__ fails must not take the drain down with it
        text = "<str() of this exception failed>"
    return f"{type(exc).__name__}: {text}"[:ERROR_TEXT_LIMIT]


@dataclass(slots=True)
class Verdict:
    """What happens to one message: ``retry`` handlers get a retry copy; with a ``reason``, a dead letter
    blames ``blamed`` (the handlers that rejected or ran out of attempts, if any); with ``deferred_since``,
    it goes back for another version of the service."""

    routing_key: str
    attempt: int
    reason: Reason | None = None            # set: dead-letter with this reason
    error: str | None = None
    deferred_since: float | None = None     # set: send back for another version (first deferred then)
    deferrals: int = 0                      # deferrals before this one
    retry: Sequence[str] = ()               # handlers to run again, by name
    blamed: Sequence[str] = ()              # handlers the dead letter names
    info: MessageInfo | None = None         # what the handlers were told, when any asked (reused after settling)
    stale: bool = False                     # an ordered handler's inbox skipped it as stale
    paused: Sequence[str] = ()              # handlers whose dependency is down (pause_on): give it back
    park: Sequence[str] = ()                # handlers paused while the queue's others go on: a parked copy
    ran: bool = True                        # some handler ran (False: it was only parked)
    held_for: float | None = None           # set: not settled; its ordered handlers run again in its lane after
                                            # this many seconds, as ``again`` (the engine's ``Work``)
    again: object | None = None

    @property
    def held(self) -> bool:
        """Not decided yet: it waits in its lane to run its failed ordered handlers again."""
        return self.held_for is not None

    @property
    def outcome(self) -> Outcome:  # (a message only parked, ``ran`` False, has none: ``DrainResult.paused``)
        """The message's one outcome (a dead letter wins over a retry copy made beside it)."""
        if self.reason is not None:
            return Outcome.DEAD_LETTERED
        if self.deferred_since is not None:
            return Outcome.DEFERRED
        return Outcome.RETRIED if self.retry else Outcome.HANDLED

    @property
    def ended(self) -> bool:
        """Decided before any handler ran (dead-lettered or deferred): nothing is to run."""
        return self.reason is not None or self.deferred_since is not None

    def dead(self, reason: Reason, error: str) -> Verdict:
        """Dead-letter it with ``reason``; returns itself."""
        self.reason = reason
        self.error = error[:ERROR_TEXT_LIMIT]
        return self

    def defer(self, since: float, deferrals: int) -> Verdict:
        """Send it back for another version, first deferred at ``since``; returns itself."""
        self.deferred_since, self.deferrals = since, deferrals
        return self

    def fold(self, failures: Sequence[HandlerResult]) -> Verdict:
        """Take in the failed runs of the message (the handlers that returned are not listed)."""
        paused = [run for run in failures if run.paused]
        if paused:  # given back whole, or (the consumer decides) those handlers' share parked
            self.paused = [run.handler or "" for run in paused]
            self.error = _errors(paused)
            failures = [run for run in failures if not run.paused]
        if failures:
            self._fold_failed(failures, describe_them=not paused)
        return self

    def _fold_failed(self, failures: Sequence[HandlerResult], describe_them: bool) -> None:
        retry = [run for run in failures if run.outcome is Outcome.RETRIED]
        dead = [run for run in failures if run.outcome is Outcome.DEAD_LETTERED]
        self.retry = [run.handler or "" for run in retry]
        self.blamed = [run.handler or "" for run in dead]
        if dead:  # one reason when every blamed run agrees (rejected, time_limit), else handler_error
            reasons = {run.reason for run in dead}
            self.reason = reasons.pop() if len(reasons) == 1 and None not in reasons else Reason.HANDLER_ERROR
        if describe_them:
            self.error = _errors(dead or retry)

    def park_paused(self) -> None:
        """Park the paused handlers' share (a copy aimed at them) instead of giving the message back."""
        self.park, self.paused = [*self.park, *self.paused], ()


def _errors(runs: Sequence[HandlerResult]) -> str:
    """What failed: one run's exception, or each handler's, bounded."""
    if len(runs) == 1:
        return describe(runs[0].exception)
    return "; ".join(f"{run.handler}: {describe(run.exception)}" for run in runs)[:ERROR_TEXT_LIMIT]
