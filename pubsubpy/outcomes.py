"""What can become of a consumed message, as data.

Every message a drain takes ends in exactly one ``Outcome``; the reason codes
of dead letters are fixed here. Which failures are retried is decided in
``handler_runs.fold`` (only handler failures with attempts left: a bad payload
never improves), and ``dispatch.py`` documents the order of the checks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["DrainResult", "Outcome", "Reason"]


class Outcome(str, enum.Enum):
    HANDLED = "handled"            # acked after every matching handler returned
    RETRIED = "retried"            # a handler raised; a copy waits for another attempt; original acked
    DEAD_LETTERED = "dead_lettered"  # a copy is confirmed in the dead-letter queue; original acked
    DEFERRED = "deferred"          # no handler here subscribes its key (another version may): a copy waits
                                   # in a retry queue, up to unknown_key_window; original acked


class Reason(str, enum.Enum):
    """Why a message was dead-lettered (the ``pubsubpy-reason`` header)."""

    DECODE_ERROR = "decode_error"                        # not UTF-8 JSON, or not a JSON object
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"  # not application/json (pickle is never read)
    TOO_LARGE = "too_large"                              # body over max_message_size
    UNKNOWN_EVENT = "unknown_event"                      # no schema, or no handler, for the routing key
                                                         # (after unknown_key_window of deferrals)
    VALIDATION_ERROR = "validation_error"                # the schema rejected the payload
    HANDLER_ERROR = "handler_error"                      # a handler kept failing for max_attempts (the only
                                                         # retried failure: bad payloads never improve)
    REJECTED = "rejected"                                # a handler raised Reject
    DELIVERY_LIMIT = "delivery_limit"                    # broker side: redelivered too often
    EXPIRED = "expired"                                  # broker side: a TTL ran out
    UNKNOWN = "unknown"                                  # a dead letter whose reason header is missing or garbled

    @classmethod
    def parse(cls, value: object) -> Reason:
        """Clamp a reason read from a header (or ``x-death``) to a known code."""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        try:
            return cls(str(value))
        except ValueError:
            return cls.UNKNOWN



@dataclass
class DrainResult:
    """What one ``drain()`` did."""

    handled: int = 0
    retried: int = 0
    dead_lettered: int = 0
    deferred: int = 0      # sent back for another version of this service (see unknown_key_window)
    reasons: dict[str, int] = field(default_factory=dict)
    redelivered: int = 0   # of the settled messages, how many the broker flagged as redelivered
    duplicates: int = 0    # redeliveries of messages this consumer had already settled: acked, not run again
    abandoned: int = 0     # handlers still running at a forced stop: their messages went back unacked
    seconds: float = 0.0
    stopped_by: str = "empty"  # "empty", "max_messages", "timeout", "stopped" (stop/signal) or "forced"

    @property
    def messages(self) -> int:
        return self.handled + self.retried + self.dead_lettered + self.deferred

    def count(self, outcome: Outcome, reason: Reason | None = None) -> None:
        if outcome is Outcome.HANDLED:
            self.handled += 1
        elif outcome is Outcome.RETRIED:
            self.retried += 1
        elif outcome is Outcome.DEFERRED:
            self.deferred += 1
        else:
            self.dead_lettered += 1
            key = (reason or Reason.UNKNOWN).value
            self.reasons[key] = self.reasons.get(key, 0) + 1

    def __str__(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.reasons.items()))
        text = (f"{self.messages} messages in {self.seconds:.2f}s: {self.handled} handled, {self.retried} retried, "
                f"{self.dead_lettered} dead-lettered" + (f" ({reasons})" if reasons else ""))
        if self.deferred:
            text += f"; {self.deferred} deferred (keys no handler here subscribes)"
        if self.duplicates:
            text += f"; {self.duplicates} duplicate deliveries skipped"
        if self.abandoned:
            text += f"; {self.abandoned} unfinished handler(s) abandoned, their messages returned"
        return text
