"""Publishing: validate against the registered schema, build the envelope, send confirmed.

Nothing reaches the broker unless it validated: an unknown (model, event) is
``UnknownEventType`` (unless ``require_schemas=False``), a bad payload is
``PayloadValidationError`` (unknown fields included), a body over
``max_message_size`` is ``MessageTooLarge``, and one nested deeper than
``max_json_depth`` (which consumers refuse) a ``PayloadValidationError``. Every
message is persistent and confirmed by the broker before the call returns.
"""

from __future__ import annotations

import difflib
import json
import logging
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypedDict

from pydantic import ValidationError

from pubsubpy._jsondepth import nesting_exceeds
from pubsubpy.envelope import H_KEY, H_SEQUENCE, H_VERSION, KEY_LIMIT, SEQUENCE_LIMIT, Properties
from pubsubpy.errors import (
    InvalidTopic,
    MessageTooLarge,
    PayloadValidationError,
    UnknownEventType,
    UnroutableMessage,
)
from pubsubpy.schemas import ModelEvent, SchemaRegistry, routing_key_for
from pubsubpy.settings import Settings, _caller_level
from pubsubpy.topics import validate_routing_key
from pubsubpy.transports.base import OutgoingMessage, Transport

__all__ = ["EventSpec", "OutboxWriter", "PublishOptions", "Publisher", "UnroutableWarning", "user_headers"]

log = logging.getLogger("pubsubpy.publish")


class UnroutableWarning(UserWarning):
    """A published message reached no queue: nobody binds its routing key yet, and ``on_unroutable="warn"``
    (the default).

    Issued through ``warnings.warn``, pointing at your publish call, besides the log line, so it shows with
    no logging configured. Make it fatal in a test run with ``pytest -W error::pubsubpy.UnroutableWarning``
    (or ``filterwarnings = ["error::pubsubpy.UnroutableWarning"]``), in code with
    ``warnings.simplefilter("error", pubsubpy.UnroutableWarning)``; ``on_unroutable="raise"`` raises
    ``UnroutableMessage`` instead, and ``"ignore"`` says nothing.
    """


class PublishOptions(TypedDict, total=False):
    """Per-message options of ``publish_many`` (the keyword arguments of ``publish_model_event``)."""

    version: int | None
    """A registered version of the event to send instead of the newest."""
    headers: Mapping[str, str | int | bool] | None
    """Your own headers (names not starting with ``pubsubpy-`` or ``x-``)."""
    correlation_id: str | None
    """The AMQP ``correlation_id`` property."""
    key: object | None
    """The ordering key's value when the schema names no ``key=`` field."""


EventSpec = tuple[str, str, Any] | tuple[str, str, Any, PublishOptions]
"""``(model, event, obj)``, or with ``PublishOptions`` as a fourth item."""

_RESERVED = ("pubsubpy-", "x-")
_MAX_HEADER_TEXT = 4096


def user_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """A caller's headers, checked: names not starting with ``pubsubpy-`` or ``x-`` (the library's
    and the broker's), values text, integers or booleans (what every AMQP client reads alike)."""
    if not headers:
        return {}
    checked: dict[str, Any] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not name or len(name) > 128:
            raise PayloadValidationError(f"header name {name!r} must be 1-128 characters of text")
        if name.lower().startswith(_RESERVED):
            raise PayloadValidationError(f"header {name!r}: names starting with 'pubsubpy-' or 'x-' are reserved "
                                         "for the library and the broker; choose another name")
        if isinstance(value, str) and len(value) > _MAX_HEADER_TEXT:
            raise PayloadValidationError(f"header {name!r}: text longer than {_MAX_HEADER_TEXT} characters")
        if not isinstance(value, (str, int, bool)):
            raise PayloadValidationError(f"header {name!r}: value {value!r} is a {type(value).__name__}; headers "
                                         "take text, integers or booleans (put anything else in the payload)")
        checked[name] = value
    return checked


def _correlation(correlation_id: str | None) -> str | None:
    if correlation_id is not None and (not isinstance(correlation_id, str) or len(correlation_id.encode()) > 255):
        raise PayloadValidationError(f"correlation_id {correlation_id!r} must be text of at most 255 bytes")
    return correlation_id


class OutboxWriter(Protocol):
    """Where encoded messages go instead of the broker when an outbox is on (Django ``OUTBOX``)."""

    def write(self, messages: list[OutgoingMessage]) -> list[str]:
        """Store ``messages`` in the current transaction; returns their message ids."""
        ...


class Publisher:
    def __init__(self, settings: Settings, registry: SchemaRegistry) -> None:
        self._settings = settings
        self._registry = registry
        self._routing_keys: dict[tuple[str, str], str] = {}

    def _routing_key(self, model: str, event: str) -> str:
        key = (model, event)
        routing_key = self._routing_keys.get(key)
        if routing_key is None:
            if not event or "." in event:
                raise InvalidTopic(f"event name {event!r} must be one word (no dots, not empty): the routing key "
                                   f"is <model>.<event>, and a pattern like 'Booking.*' matches exactly one word")
            routing_key = self._routing_keys[key] = validate_routing_key(routing_key_for(model, event))
        return routing_key

    def encode(self, model: str, event: str, obj: Any, version: int | None = None,
               headers: Mapping[str, Any] | None = None, correlation_id: str | None = None,
               key: object | None = None) -> OutgoingMessage:
        """Validate ``obj`` (against the newest registered version, or ``version``) and build the
        message; raises before anything is sent."""
        routing_key = self._routing_key(model, event)
        extra, correlation = user_headers(headers), _correlation(correlation_id)
        if version is None and isinstance(obj, ModelEvent) and type(obj).__pubsub_event__ == event \
                and type(obj).__pubsub_model__ == model:
            version = obj.__pubsub_version__  # an instance of one version says which one it is
        schema = self._registry.get(model, event, version)
        if schema is None and version is not None and self._registry.get(model, event) is not None:
            registered = sorted(s.__pubsub_version__ for s in self._registry if s.event_key() == (model, event))
            raise UnknownEventType(f"{model} {event}: version {version} is not registered "
                                   f"(registered: {', '.join(map(str, registered))})")
        wire: dict[str, Any]
        if schema is None:
            if self._settings.require_schemas:
                raise UnknownEventType(
                    f"no schema is registered for model {model!r} event {event!r}{self._near(model, event)}; define "
                    f"`class X(ModelEvent, model={model!r}, event={event!r})` or init(require_schemas=False)"
                )
            body = _schemaless_body(model, event, obj)
            wire = {} if key is None else {H_KEY: _key_text(model, key)}
        else:
            instance = _schema_instance(schema, obj)
            body = instance.__pydantic_serializer__.to_json(instance)
            wire = {H_VERSION: schema.__pubsub_version__}
            _ordering_headers(wire, model, instance, key)
        limit = self._settings.max_message_size
        if len(body) > limit:
            raise MessageTooLarge(f"{model}.{event}: body is {len(body)} bytes, over max_message_size={limit}")
        if nesting_exceeds(body, self._settings.max_json_depth):
            raise PayloadValidationError(f"{model}.{event}: payload nests deeper than max_json_depth="
                                         f"{self._settings.max_json_depth}; consumers would refuse it")
        wire.update(extra)
        props = Properties.for_event(f"{model}.{event}", self._settings.service_name, wire)
        props.correlation_id = correlation
        return OutgoingMessage(self._settings.model_exchange, routing_key, body, props,
                               mandatory=self._settings.on_unroutable != "ignore")

    def _near(self, model: str, event: str) -> str:
        """What an unknown (model, event) probably means: a registered model path (``shop.Booking`` ->
        ``shop.models.Booking``), or, for a registered model, its events."""
        events = self._registry.events()
        if model in events:
            guess = difflib.get_close_matches(event, events[model], n=1, cutoff=0.6)
            mean = f"did you mean {guess[0]!r}? " if guess else ""
            return f" ({mean}{model!r} has the events {', '.join(map(repr, events[model]))})"
        tail = model.rpartition(".")[2].lower()
        same_class = [path for path in events if path.rpartition(".")[2].lower() == tail]
        guesses = same_class or difflib.get_close_matches(model, list(events), n=1, cutoff=0.75)
        if not guesses:
            return ""
        shorter = all(model.count(".") < path.count(".") for path in guesses)
        why = " A model is named by its full path, module included" if shorter else ""
        return f" (did you mean {' or '.join(repr(path) for path in guesses[:3])}?{why})"

    def send(self, transport: Transport, messages: list[OutgoingMessage], unroutable_out: list[str] | None = None,
             ) -> list[str]:
        """Publish, confirmed; returns the message ids. The ids of mandatory messages no queue took are
        raised, or logged and warned (``UnroutableWarning``, pointing at the caller's publish), as
        ``on_unroutable`` says, and, when given, put in ``unroutable_out``."""
        unroutable = transport.publish(messages)
        if unroutable:
            if unroutable_out is not None:
                unroutable_out[:] = unroutable
            lost = set(unroutable)
            keys = sorted({m.routing_key for m in messages if m.properties.message_id in lost})
            text = (f"{len(unroutable)} message(s) reached no queue on exchange "
                    f"{self._settings.model_exchange!r} (routing keys {', '.join(keys)}): nobody subscribes yet")
            if self._settings.on_unroutable == "raise":
                raise UnroutableMessage(text, unroutable)
            log.warning(text)
            # the log line needs logging configured; a warning shows without it, and -W error can fail on it
            warnings.warn(text, UnroutableWarning, stacklevel=_caller_level())
        return [m.properties.message_id or "" for m in messages]

    def encode_many(self, events: Iterable[EventSpec]) -> list[OutgoingMessage]:
        messages = []
        for spec in events:
            options: PublishOptions = spec[3] if len(spec) == 4 else {}
            messages.append(self.encode(spec[0], spec[1], spec[2], options.get("version"), options.get("headers"),
                                        options.get("correlation_id"), options.get("key")))
        return messages


def _key_text(model: str, value: object) -> str:
    """``pubsubpy-key``: ``<model path>:<value>``, bounded like the inbox's column."""
    if value is None or isinstance(value, (bool, bytes)) or str(value) == "":
        raise PayloadValidationError(f"{model}: the ordering key {value!r} must be a non-empty value such as an id")
    text = f"{model}:{value}"
    if len(text) > KEY_LIMIT:
        raise PayloadValidationError(f"{model}: the ordering key {text[:60]!r}... is longer than {KEY_LIMIT} "
                                     "characters (model path included); key on a shorter field")
    return text


def _ordering_headers(wire: dict[str, Any], model: str, instance: ModelEvent, key: object | None) -> None:
    """``pubsubpy-key`` from the schema's ``key=`` field (else ``key``), ``pubsubpy-sequence`` from its
    ``sequence=`` field."""
    schema = type(instance)
    field = schema.__pubsub_key__
    if field is not None:
        value = getattr(instance, field)
        if key is not None and str(key) != str(value):
            raise PayloadValidationError(f"{schema.__qualname__}: key={key!r} differs from its key field "
                                         f"{field}={value!r}; leave key= out, the schema names the key")
        key = value
    if key is not None:
        wire[H_KEY] = _key_text(model, key)
    field = schema.__pubsub_sequence__
    if field is not None:
        number = getattr(instance, field)
        if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number < SEQUENCE_LIMIT:
            raise PayloadValidationError(f"{schema.__qualname__}: sequence field {field}={number!r} must be an "
                                         "integer in [0, 2**63)")
        wire[H_SEQUENCE] = number


def _schema_instance(schema: type[ModelEvent], obj: Any) -> ModelEvent:
    try:
        if isinstance(obj, schema):
            instance = obj
        elif isinstance(obj, Mapping):
            instance = schema.model_validate(obj, extra="forbid", from_attributes=False)
        elif isinstance(obj, ModelEvent):
            raise PayloadValidationError(
                f"{schema.__qualname__} expected, got a {type(obj).__qualname__} instance"
            )
        else:
            instance = schema.model_validate(obj, from_attributes=True)
    except ValidationError as exc:
        raise PayloadValidationError(f"payload for {schema.__qualname__} is invalid: {exc}") from None
    return instance


def _schemaless_body(model: str, event: str, obj: Any) -> bytes:
    if not isinstance(obj, Mapping):
        raise PayloadValidationError(f"{model}.{event} has no schema, so its payload must be a mapping")
    try:
        return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise PayloadValidationError(f"{model}.{event}: payload is not JSON-serializable: {exc}") from None
