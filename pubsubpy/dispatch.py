"""One message in, one ``Decision`` out: decode, validate, run the handlers it targets.

No I/O here: the drain loop (``consumer.py``) turns the decision into broker
operations. Order of checks, each ending the message at once:

0. ``decode_error``              the transport could not decode the message's properties
1. ``too_large``                 body over ``max_message_size`` (never parsed)
2. ``unsupported_content_type``  ``content_type`` other than JSON, or an encoding
                                 (gzip...) we do not read; a missing type is read as JSON
3. ``unknown_event``             no subscription matches, or no schema and a handler needs one
4. ``decode_error``              not UTF-8 JSON, or not a JSON object
5. ``validation_error``          the registered schema rejects it
6. handlers: ``rejected`` if one raised ``Reject``; otherwise the failed ones are
   retried, or dead-lettered as ``handler_error`` once out of attempts.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic_core
from pydantic import ValidationError

from pubsubpy.envelope import CONTENT_TYPE, H_ATTEMPT, H_HANDLERS, H_ROUTING_KEY, attempt_from, header_text
from pubsubpy.errors import InvalidTopic, Reject
from pubsubpy.outcomes import Reason
from pubsubpy.router import Router, Subscription
from pubsubpy.schemas import ModelEvent, SchemaRegistry
from pubsubpy.settings import Settings
from pubsubpy.topics import validate_routing_key
from pubsubpy.transports.base import Delivery

__all__ = ["Decision", "Dispatcher", "MessageInfo"]

log = logging.getLogger("pubsubpy.drain")

_READABLE_ENCODINGS = frozenset({"", "utf-8", "utf8", "identity"})
_ERROR_TEXT_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """What a handler may want to know besides the payload (its optional second parameter)."""

    message_id: str | None
    routing_key: str
    attempt: int
    redelivered: bool
    headers: Mapping[str, Any]
    timestamp: dt.datetime | None
    event_type: str | None
    app_id: str | None


@dataclass(slots=True)
class Decision:
    """The dispatcher's verdict. ``failed`` lists handlers to retry or blame."""

    routing_key: str
    attempt: int
    reason: Reason | None = None            # set: dead-letter with this reason
    error: str | None = None
    failed: list[Subscription] = field(default_factory=list)
    exhausted: list[Subscription] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reason is None and not self.failed


def describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # an exception whose __str__ fails must not take the drain down with it
        text = "<str() of this exception failed>"
    return f"{type(exc).__name__}: {text}"[:_ERROR_TEXT_LIMIT]


def _timestamp(seconds: int | None) -> dt.datetime | None:
    """The AMQP timestamp as a datetime; one no calendar can hold (a foreign publisher's 2**63) is None."""
    if not seconds:
        return None
    try:
        return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def event_routing_key(delivery: Delivery) -> str:
    """The event's routing key. A message that came back through the default exchange
    (a retry or a replay) carries it in a header, which is validated before use."""
    if delivery.exchange == "":
        claimed = header_text(delivery.properties.headers, H_ROUTING_KEY, limit=300)
        if claimed is not None:
            try:
                return validate_routing_key(claimed)
            except InvalidTopic:
                log.warning("ignoring malformed %s header %r", H_ROUTING_KEY, claimed[:80])
    return delivery.routing_key


def _targets(delivery: Delivery, matched: list[Subscription]) -> list[Subscription]:
    """On a retry, only the handlers that failed run again. A header naming no current
    handler (renamed since, or forged) is ignored: running all beats running none."""
    if delivery.exchange != "" or len(matched) < 2:
        return matched
    named = header_text(delivery.properties.headers, H_HANDLERS, limit=10_000)
    if not named:
        return matched
    wanted = set(named.split(","))
    chosen = [sub for sub in matched if sub.name in wanted]
    return chosen or matched


def _content_problem(delivery: Delivery) -> str | None:
    props = delivery.properties
    if props.content_type is not None:
        media = props.content_type.split(";", 1)[0].strip().lower()
        if media not in ("application/json", ""):
            return f"content_type {props.content_type!r} is not application/json; it was not read"
    if props.content_encoding is not None and props.content_encoding.strip().lower() not in _READABLE_ENCODINGS:
        return f"content_encoding {props.content_encoding!r} is not supported; send plain UTF-8 JSON"
    return None


@dataclass(slots=True)
class _Plan:
    """What depends only on the routing key, worked out once per key and drain."""

    subs: list[Subscription]
    cap: int
    schema: type[ModelEvent] | None
    unknown: str | None  # set: dead-letter as unknown_event with this error
    wants_info: bool


class Dispatcher:
    def __init__(self, settings: Settings, router: Router, registry: SchemaRegistry) -> None:
        self._settings = settings
        self._router = router
        self._registry = registry
        self._plans: dict[str, _Plan] = {}
        self._plans_for = len(registry)

    def max_attempts(self, sub: Subscription) -> int:
        return sub.max_attempts or self._settings.max_attempts

    def _plan(self, routing_key: str, subs: list[Subscription] | None = None) -> _Plan:
        if subs is None:
            if self._plans_for != len(self._registry):  # a schema was registered meanwhile
                self._plans.clear()
                self._plans_for = len(self._registry)
            plan = self._plans.get(routing_key)
            if plan is not None:
                return plan
        matched = self._router.match(routing_key) if subs is None else subs
        schema = self._registry.for_routing_key(routing_key)
        unknown = None
        if not matched:
            unknown = f"no subscription matches routing key {routing_key!r}"
        elif schema is None and (self._settings.require_schemas or not all(s.accepts_dict for s in matched)):
            unknown = f"no schema is registered for routing key {routing_key!r}"
        elif schema is not None:
            refusing = [s.name for s in matched if not s.accepts(schema)]
            if refusing:  # Router.resolve() prevents this unless a schema was registered after it ran
                unknown = f"handler(s) {', '.join(refusing)} cannot accept {schema.__qualname__}"
        cap = max((self.max_attempts(s) for s in matched), default=self._settings.max_attempts)
        plan = _Plan(matched, cap, schema, unknown, any(s.wants_info for s in matched))
        if subs is None and len(self._plans) < 10_000:
            self._plans[routing_key] = plan
        return plan

    def dispatch(self, delivery: Delivery) -> Decision:
        routing_key = event_routing_key(delivery) if delivery.exchange == "" else delivery.routing_key
        plan = self._plan(routing_key)
        headers = delivery.properties.headers
        attempt = attempt_from(headers, plan.cap) if H_ATTEMPT in headers else 1
        decision = Decision(routing_key, attempt)
        if delivery.properties.decode_error:
            return self._dead(decision, Reason.DECODE_ERROR,
                              "message properties could not be decoded: " + delivery.properties.decode_error)
        body = delivery.body
        if len(body) > self._settings.max_message_size:
            return self._dead(decision, Reason.TOO_LARGE,
                              f"body of {len(body)} bytes exceeds max_message_size={self._settings.max_message_size}")
        props = delivery.properties
        if not (props.content_type == CONTENT_TYPE and props.content_encoding is None):
            problem = _content_problem(delivery)
            if problem:
                return self._dead(decision, Reason.UNSUPPORTED_CONTENT_TYPE, problem)
        if delivery.exchange == "" and plan.subs:
            targets = _targets(delivery, plan.subs)
            if targets is not plan.subs:
                plan = self._plan(routing_key, targets)
        if plan.unknown is not None:
            return self._dead(decision, Reason.UNKNOWN_EVENT, plan.unknown)
        schema = plan.schema
        payload = self._load(body, schema, decision)
        if decision.reason is not None:
            return decision
        info = self._info(delivery, decision) if plan.wants_info else None
        raw: dict[str, Any] | None = None
        for sub in plan.subs:
            argument: Any = payload
            if schema is not None and sub.accepts_dict and not (sub.accepts_any_schema or sub.schemas):
                if raw is None:
                    raw = json.loads(body)
                argument = raw
            try:
                if info is not None and sub.wants_info:
                    sub.handler(argument, info)
                else:
                    sub.handler(argument)
            except Reject as exc:
                return self._dead(decision, Reason.REJECTED, describe(exc), blame=[sub])
            except Exception as exc:
                log.warning("handler %s failed on %s (attempt %d): %s", sub.name, routing_key,
                            decision.attempt, describe(exc))
                decision.error = describe(exc) if decision.error is None else decision.error
                if decision.attempt >= self.max_attempts(sub):
                    decision.exhausted.append(sub)
                else:
                    decision.failed.append(sub)
        if decision.exhausted:
            decision.reason = Reason.HANDLER_ERROR
        return decision

    def _load(self, body: bytes, schema: type[ModelEvent] | None, decision: Decision) -> Any:
        if schema is None:
            try:
                value = json.loads(body, parse_constant=_refuse_constant)
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                return self._dead(decision, Reason.DECODE_ERROR, f"body is not UTF-8 JSON: {exc}")
            if not isinstance(value, dict):
                return self._dead(decision, Reason.DECODE_ERROR, f"body is JSON {type(value).__name__}, not an object")
            return value
        if b"NaN" in body or b"Infinity" in body:
            problem = _strict_json_problem(body)
            if problem:
                return self._dead(decision, Reason.DECODE_ERROR, f"body is not valid JSON: {problem}")
        try:
            return schema.model_validate_json(body)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            if any(err["type"] == "json_invalid" for err in errors):
                return self._dead(decision, Reason.DECODE_ERROR, f"body is not UTF-8 JSON: {errors[0]['msg']}")
            if len(errors) == 1 and errors[0]["type"] == "model_type" and not errors[0]["loc"]:
                return self._dead(decision, Reason.DECODE_ERROR, "body is JSON but not an object")
            return self._dead(decision, Reason.VALIDATION_ERROR, f"{schema.__qualname__}: {exc}"[:_ERROR_TEXT_LIMIT])

    @staticmethod
    def _dead(decision: Decision, reason: Reason, error: str, blame: list[Subscription] | None = None) -> Decision:
        decision.reason = reason
        decision.error = error[:_ERROR_TEXT_LIMIT]
        if blame:
            decision.exhausted = blame
        return decision

    @staticmethod
    def _info(delivery: Delivery, decision: Decision) -> MessageInfo:
        props = delivery.properties
        return MessageInfo(props.message_id, decision.routing_key, decision.attempt, delivery.redelivered,
                           dict(props.headers), _timestamp(props.timestamp), props.type, props.app_id)


def _strict_json_problem(body: bytes) -> str | None:
    """pydantic's parser accepts NaN/Infinity tokens; a strict parse tells them from text inside strings."""
    try:
        pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        return f"{exc} (NaN and Infinity are not JSON)"
    return None


def _refuse_constant(name: str) -> Callable[[], None]:
    raise ValueError(f"{name} is not valid JSON")
