"""The message types every layer shares: what a handler is told, what became of a message, what moved.

Below both the engine and the transports (it imports neither), so neither imports
the other for a type: ``MessageInfo`` (a handler's second parameter), the
acknowledgement policy as data (``Outcome``, ``Reason``), the three results (one
per handler run, ``HandlerResult``; one per message, the engine's ``Verdict``;
one per drain or worker run, ``DrainResult``), and the two messages a transport
moves (``Delivery`` in, ``OutgoingMessage`` out).

Which failures are retried is decided in ``pubsubpy._engine.verdict`` (only
handler failures with attempts left: a bad payload never improves);
``pubsubpy._engine`` documents the order of the checks.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pubsubpy.envelope import Properties

__all__ = [
    "HANDLED",
    "TAG_BITS",
    "Delivery",
    "DrainResult",
    "HandlerResult",
    "MessageInfo",
    "Outcome",
    "OutgoingMessage",
    "Reason",
    "ReplayResult",
]

@dataclass(frozen=True, slots=True)
class MessageInfo:
    """What a handler may want to know besides the payload: its optional second parameter.

    ```python
    @pubsubpy.subscribe("Booking.*")
    def on_booking(event: BookingUpdated, info: MessageInfo) -> None:
        if info.redelivered:
            ...  # at least once: this message id may have been handled before
    ```
    """

    message_id: str | None
    """The publisher's message id (uuid4 hex for pubsubpy publishers): the key to deduplicate on."""
    routing_key: str
    """The event's routing key (``Booking.updated``), also on retries and replays."""
    attempt: int
    """1 on the first run, 2 on the first retry...; reset by a replay."""
    redelivered: bool
    """The broker delivered this message before (a lost connection, a stopped worker): it may be a
    duplicate."""
    headers: Mapping[str, Any]
    """The message's headers, your own included (library headers start with ``pubsubpy-``)."""
    timestamp: dt.datetime | None
    """When it was published (UTC, whole seconds), if the publisher said."""
    event_type: str | None
    """The AMQP ``type``: full model path and event (``shop.models.Booking.updated``)."""
    app_id: str | None
    """The publishing service."""
    schema_version: int = 1
    """The schema version that arrived (``pubsubpy-schema-version``; absent means 1), before any upcasting."""
    correlation_id: str | None = None
    """The AMQP ``correlation_id`` property, as the publisher set it."""
    key: str | None = None
    """The ordering key (``pubsubpy-key``: ``<model path>:<value>``, the aggregate the event is about), not
    the routing key; None when the publisher set none. ``ordered=True`` handlers see one key's events one at
    a time, in order."""
    sequence: int | None = None
    """The event's per-key sequence (``pubsubpy-sequence``), growing in the publisher's commit order; None
    when absent or outside ``[0, 2**63)``."""


class Outcome(str, enum.Enum):
    """What became of one consumed message; each ends in exactly one. Middleware sees it in
    ``MessageContext.outcome`` and ``HandlerResult.outcome``; ``DrainResult`` counts them."""

    HANDLED = "handled"
    """Acked after every matching handler returned."""
    RETRIED = "retried"
    """A handler raised with attempts left: a copy waits in a retry queue for another attempt of the failed
    handlers; the original is acked once the copy is confirmed."""
    DEAD_LETTERED = "dead_lettered"
    """A copy is confirmed in the dead-letter queue, with a ``Reason``; the original is acked."""
    DEFERRED = "deferred"
    """No handler here subscribes its key (another version of the service may): a copy waits in a retry
    queue, up to ``unknown_key_window``; the original is acked."""


class Reason(str, enum.Enum):
    """Why a message was dead-lettered (the ``pubsubpy-reason`` header)."""

    DECODE_ERROR = "decode_error"
    """Not UTF-8 JSON, not a JSON object, nested deeper than ``max_json_depth``, or properties and headers
    the client cannot decode."""
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
    """Not ``application/json``, or a ``content_encoding`` such as gzip (pickle is never read)."""
    TOO_LARGE = "too_large"
    """The body is over ``max_message_size`` (never parsed)."""
    UNKNOWN_EVENT = "unknown_event"
    """No schema, or no handler, for the routing key (after ``unknown_key_window`` of deferrals), or a
    version no upcaster reaches."""
    VALIDATION_ERROR = "validation_error"
    """The schema rejected the payload (never retried: a bad payload never improves)."""
    HANDLER_ERROR = "handler_error"
    """A handler kept failing for ``max_attempts`` (the only retried failure)."""
    REJECTED = "rejected"
    """A handler raised ``Reject``, or an exception of its ``dead_letter_on``."""
    TIME_LIMIT = "time_limit"
    """A handler ran past its ``time_limit`` on its last attempt."""
    DELIVERY_LIMIT = "delivery_limit"
    """Broker side: a quorum queue redelivered it more than ``delivery_limit`` times."""
    EXPIRED = "expired"
    """Broker side: a TTL ran out."""
    UNKNOWN = "unknown"
    """A dead letter whose reason header is missing or garbled."""

    @classmethod
    def parse(cls, value: object) -> Reason:
        """Clamp a reason read from a header (or ``x-death``) to a known code; ``UNKNOWN`` otherwise."""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        try:
            return cls(str(value))
        except ValueError:
            return cls.UNKNOWN



@dataclass
class DrainResult:
    """What one ``drain()`` (or a worker's ``run()``) did: how many messages ended in each outcome.

    ``str(result)`` reads ``5 messages in 0.02s: 1 handled, 2 retried, 2 dead-lettered (handler_error=1,
    rejected=1)``.
    """

    handled: int = 0
    """Messages acked after every matching handler returned."""
    retried: int = 0
    """Messages sent to a retry queue because a handler failed with attempts left."""
    dead_lettered: int = 0
    """Messages dead-lettered; ``reasons`` says why."""
    deferred: int = 0
    """Messages sent back for another version of this service (see ``unknown_key_window``)."""
    reasons: dict[str, int] = field(default_factory=dict)
    """Dead letters by reason code (``{"handler_error": 1, "rejected": 1}``)."""
    redelivered: int = 0
    """Of the settled messages, how many the broker flagged as redelivered."""
    duplicates: int = 0
    """Redeliveries of messages this consumer had already settled: acked, not run again."""
    abandoned: int = 0
    """Handlers still running at a forced stop: their messages went back unacked."""
    paused: int = 0
    """Messages given back unsettled because a handler's dependency was down (``pause_on``); each time the
    consumer paused. Not an outcome: they are handled later."""
    stale: int = 0
    """Of the handled messages, how many an ``ordered=True, idempotent=True`` handler skipped as stale: the
    inbox had applied a sequence of their key as new or newer."""
    seconds: float = 0.0
    """How long the call took."""
    stopped_by: str = "empty"
    """Why it stopped: ``"empty"``, ``"max_messages"``, ``"timeout"``, ``"stopped"`` (the stop event or a
    signal), ``"forced"`` (a second signal, or ``shutdown_timeout`` ran out), ``"paused"`` (a drain whose
    handler's dependency is down: ``pause_on``) or ``"stuck"`` (more runs past their ``time_limit`` still
    going than ``concurrency``: a worker exits with 75 for its supervisor to restart it)."""

    @property
    def messages(self) -> int:
        """Every message that ended in an outcome: handled + retried + dead-lettered + deferred."""
        return self.handled + self.retried + self.dead_lettered + self.deferred

    def count(self, outcome: Outcome, reason: Reason | None = None) -> None:
        """Count one message's outcome (the consumer calls it; ``reason`` for a dead letter)."""
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
        if self.paused:
            text += f"; {self.paused} given back while a dependency was down (paused)"
        if self.stale:
            text += f"; {self.stale} stale (older than their key's last applied event, skipped)"
        if self.abandoned:
            text += f"; {self.abandoned} unfinished handler(s) abandoned, their messages returned"
        return text


@dataclass
class ReplayResult(DrainResult):
    """What a replay of the event log did (``replay()``): a ``DrainResult`` of the events it ran, and what it
    read around them. ``str()`` adds the window and the skipped counts.

    A dry run (``dry_run=True``) runs no handler: ``handled`` then counts the events that would run,
    ``dead_lettered`` and ``reasons`` those that would be dead-lettered before any handler ran."""

    replay_id: str = ""
    """Names this replay: its dead letters carry it in ``pubsubpy-replayed``."""
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    read: int = 0
    """Messages read from the log, markers and events outside the window included."""
    outside: int = 0
    """Events read whose publish time is outside ``[since, until]``."""
    unsubscribed: int = 0
    """Events in the window that no subscription replayed here matches."""
    repeated: int = 0
    """Events whose message id the log held twice (a relay re-send): run once."""
    first_at: dt.datetime | None = None
    """Publish time of the first event in the window."""
    last_at: dt.datetime | None = None
    """Publish time of the last event in the window."""
    gap: dt.timedelta | None = None
    """How much of the window retention had dropped (``allow_gap=True``); None: none."""
    keys: dict[str, int] = field(default_factory=dict)
    """Events in the window by routing key (those it ran or would run)."""
    already_run: dict[str, int] | None = None
    """A dry run: per idempotent handler, how many of the events its inbox already holds (a replay skips them;
    None: the inbox cannot tell)."""
    warnings: list[str] = field(default_factory=list)
    """What the caller should know (a dry run's ``since`` older than the inbox's retention...)."""
    dry_run: bool = False

    def __str__(self) -> str:
        window = f"{_iso(self.first_at)} .. {_iso(self.last_at)}" if self.first_at else "no event in the window"
        text = ("dry run: " if self.dry_run else "") + super().__str__()
        text += f"; read {self.read} from the log ({window}), {self.outside} outside the window, " \
                f"{self.unsubscribed} not subscribed, {self.repeated} repeated ids"
        if self.gap is not None:
            text += f"; retention gap of {self.gap} at the start"
        return text


def _iso(at: dt.datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at is not None else "-"


@dataclass(frozen=True, slots=True)
class HandlerResult:
    """What became of one handler run: ``handled``, or ``retried``, or ``dead_lettered`` with the reason
    (``rejected`` for ``Reject``, ``handler_error`` on the last attempt)."""

    outcome: Outcome
    """``handled``, ``retried`` or ``dead_lettered``."""
    reason: Reason | None = None
    """For ``dead_lettered``: ``rejected`` or ``handler_error``."""
    exception: BaseException | None = None
    """What the handler raised, if anything (for error reporting)."""
    handler: str | None = None
    """The subscription's name (``module.function``), on the results the engine keeps."""
    paused: bool = False
    """The handler raised one of its ``pause_on`` exceptions: its dependency is down. The message goes back
    unsettled, its attempt not counted, and the consumer pauses until a probe succeeds."""

    @property
    def ok(self) -> bool:
        """The run succeeded (``outcome`` is ``handled``)."""
        return self.outcome is Outcome.HANDLED


HANDLED = HandlerResult(Outcome.HANDLED)


@dataclass(slots=True)
class OutgoingMessage:
    exchange: str
    routing_key: str
    body: bytes
    properties: Properties
    mandatory: bool = False


TAG_BITS = 40
"""A delivery's ``tag`` holds the broker's delivery tag in its low ``TAG_BITS`` bits (a transport may
number its connections above them, so a tag from an old connection is never mistaken for a new one)."""


@dataclass(slots=True)
class Delivery:
    """A consumed message. Treat ``properties`` (headers included) as read-only."""

    tag: int
    exchange: str
    routing_key: str
    body: bytes
    properties: Properties
    redelivered: bool
