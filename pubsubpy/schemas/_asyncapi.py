"""An AsyncAPI 3.0 document of one service: its channels, messages, and what it sends and receives.

- A channel per routing key (address ``Booking.updated``) with the AMQP binding
  of the topic exchange; a wildcard subscription expands to the registered keys
  it matches.
- A message per (event, version): the payload schema (pydantic's ``$defs``
  moved to ``components/schemas`` so every ``$ref`` resolves inside the
  document) and the wire format's headers.
- Operations: ``send`` for what the service publishes (``PubSub(publishes=...)``
  or Django's ``MODEL_EVENTS``), ``receive`` for what its subscriptions match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from pubsubpy.envelope import H_VERSION
from pubsubpy.schemas._base import ModelEvent
from pubsubpy.topics import topic_matches

__all__ = ["asyncapi_document"]

_HEADERS = {
    "type": "object",
    "description": "pubsubpy's wire format: library headers start with pubsubpy-; content_type is application/json, "
                   "message_id a uuid4 hex, type the model path and event, delivery_mode 2.",
    "properties": {
        H_VERSION: {"type": "integer", "minimum": 1, "description": "schema version; absent means 1"},
        "pubsubpy-attempt": {"type": "integer", "minimum": 1, "description": "set on retries"},
    },
}


def _id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _message_id(schema: type[ModelEvent]) -> str:
    return _id(f"{schema.event_type()}.v{schema.__pubsub_version__}")


def _schema_name(schema: type[ModelEvent]) -> str:
    return _id(f"{schema.__qualname__}.v{schema.__pubsub_version__}")


def asyncapi_document(service: str, exchange: str, url: str, schemas: Iterable[type[ModelEvent]],
                      sends: Iterable[type[ModelEvent]], receives: Iterable[str], title: str | None = None,
                      version: str = "1.0.0") -> dict[str, Any]:
    """``receives``: the subscription patterns. ``url`` is the broker URL (credentials are dropped)."""
    registered = list(schemas)
    components: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    by_key: dict[str, list[type[ModelEvent]]] = {}
    for schema in sorted(registered, key=lambda s: (s.routing_key(), s.__pubsub_version__)):
        body = schema.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in body.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components[_schema_name(schema)] = body
        messages[_message_id(schema)] = {
            "name": _message_id(schema),
            "title": f"{schema.event_type()} v{schema.__pubsub_version__}",
            "summary": (schema.__doc__ or "").strip().splitlines()[0] if schema.__doc__ else schema.event_type(),
            "contentType": "application/json",
            "headers": _HEADERS,
            "payload": {"$ref": f"#/components/schemas/{_schema_name(schema)}"},
        }
        by_key.setdefault(schema.routing_key(), []).append(schema)
    for key, versions in by_key.items():
        channels[_id(key)] = {
            "address": key,
            "messages": {_message_id(s): {"$ref": f"#/components/messages/{_message_id(s)}"} for s in versions},
            "bindings": {"amqp": {"is": "routingKey", "exchange": {"name": exchange, "type": "topic", "durable": True,
                                                                    "autoDelete": False, "vhost": "/"},
                                  "bindingVersion": "0.3.0"}},
        }
    operations: dict[str, Any] = {}
    for schema in sorted(set(sends), key=lambda s: (s.routing_key(), s.__pubsub_version__)):
        channel = _id(schema.routing_key())
        if channel in channels:
            operations[_id(f"send.{schema.routing_key()}.v{schema.__pubsub_version__}")] = {
                "action": "send", "channel": {"$ref": f"#/channels/{channel}"},
                "messages": [{"$ref": f"#/channels/{channel}/messages/{_message_id(schema)}"}],
            }
    patterns = list(receives)
    for key, versions in sorted(by_key.items()):
        if any(topic_matches(pattern, key) for pattern in patterns):
            channel = _id(key)
            operations[_id(f"receive.{key}")] = {
                "action": "receive", "channel": {"$ref": f"#/channels/{channel}"},
                "messages": [{"$ref": f"#/channels/{channel}/messages/{_message_id(s)}"} for s in versions],
            }
    parts = urlsplit(url.split(",")[0])
    servers = {"broker": {"host": f"{parts.hostname or 'localhost'}:{parts.port or 5672}",
                          "protocol": "amqps" if parts.scheme == "amqps" else "amqp",
                          "description": f"RabbitMQ; events go to the topic exchange {exchange!r}"}}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": title or f"{service} events", "version": version,
                 "description": f"Events of the service {service!r}, generated by pubsubpy.",
                 "x-pubsubpy-service": service},
        "defaultContentType": "application/json",
        "servers": servers,
        "channels": channels,
        "operations": operations,
        "components": {"schemas": components, "messages": messages},
    }
