"""Connections to RabbitMQ: parameters with bounded waits, and pika errors translated.

Every wait is bounded: TCP connect and socket I/O (``connect_timeout``),
AMQP handshake (``stack_timeout``), a broker resource alarm
(``blocked_connection_timeout``), a dead peer (``heartbeat``). ``amqp_url`` may
list several comma-separated URLs; they are tried in order (failover).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pika
import pika.exceptions

from pubsubpy.errors import (
    BrokerUnavailable,
    ConfigurationError,
    OperationTimeout,
    PubSubError,
    TransportError,
)
from pubsubpy.settings import Settings, redact_url
from pubsubpy.transports.rabbitmq.frames import tolerate_undecodable_properties

__all__ = ["abandon", "connect", "parameters", "translate_errors"]

log = logging.getLogger("pubsubpy.rabbitmq")

T = TypeVar("T")


def parameters(settings: Settings) -> list[pika.URLParameters]:
    urls = [url.strip() for url in settings.amqp_url.split(",") if url.strip()]
    result = []
    for url in urls:
        try:
            params = pika.URLParameters(url)
        except Exception as exc:  # pika raises ValueError/TypeError/AMQPError variants for bad URLs
            raise ConfigurationError(f"amqp_url {redact_url(url)!r} is not a valid AMQP URL: {exc}") from None
        params.socket_timeout = settings.connect_timeout
        params.stack_timeout = settings.connect_timeout * 2
        params.blocked_connection_timeout = settings.blocked_connection_timeout
        params.heartbeat = settings.heartbeat
        params.connection_attempts = 1
        params.retry_delay = 0
        params.client_properties = {"connection_name": f"pubsubpy:{settings.service_name or '-'}"}
        result.append(params)
    return result


def _describe_close(exc: pika.exceptions.ChannelClosedByBroker) -> str:
    return f"{exc.reply_code} {exc.reply_text}"


def translate(exc: BaseException, doing: str) -> PubSubError:
    """Map a pika (or socket) exception to the pubsubpy error a user should see."""
    if isinstance(exc, PubSubError):
        return exc
    if isinstance(exc, pika.exceptions.ConnectionBlockedTimeout):
        return OperationTimeout(f"{doing}: the broker blocked this connection (resource alarm: memory or disk) "
                                "for longer than blocked_connection_timeout")
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError | pika.exceptions.ProbableAccessDeniedError):
        return BrokerUnavailable(f"{doing}: the broker refused the credentials or the virtual host ({exc!r})")
    if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
        text = _describe_close(exc)
        if exc.reply_code == 406:
            return ConfigurationError(
                f"{doing}: {text}. An existing queue or exchange was declared with other arguments; "
                "delete it (its messages go with it) or change the settings back. pubsubpy never deletes it.")
        if exc.reply_code == 403:
            return ConfigurationError(f"{doing}: {text}. The broker user lacks permission.")
        if exc.reply_code == 404:
            return ConfigurationError(f"{doing}: {text}. Run `pubsubpy declare` (or PubSub.declare()) first.")
        return TransportError(f"{doing}: {text}")
    if isinstance(exc, pika.exceptions.AMQPConnectionError | pika.exceptions.ConnectionWrongStateError
                  | pika.exceptions.ChannelWrongStateError | pika.exceptions.StreamLostError | OSError):
        return BrokerUnavailable(f"{doing}: connection to the broker failed or was lost ({exc!r})")
    if isinstance(exc, pika.exceptions.AMQPError):
        return TransportError(f"{doing}: {exc!r}")
    return TransportError(f"{doing}: unexpected {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def translate_errors(doing: str) -> Iterator[None]:
    try:
        yield
    except PubSubError:
        raise
    except (pika.exceptions.AMQPError, OSError, AssertionError) as exc:
        raise translate(exc, doing) from exc


def connect(settings: Settings) -> pika.BlockingConnection:
    """Open a connection, trying each URL, up to ``connection_attempts`` rounds."""
    params = parameters(settings)
    last: BaseException | None = None
    for attempt in range(settings.connection_attempts):
        if attempt:
            time.sleep(settings.retry_connect_delay * attempt)
        try:
            connection = pika.BlockingConnection(params)
            tolerate_undecodable_properties(connection)
            return connection
        except (pika.exceptions.AMQPError, OSError) as exc:
            last = exc
            if isinstance(exc, pika.exceptions.ProbableAuthenticationError
                          | pika.exceptions.ProbableAccessDeniedError):
                break
            log.warning("connect to %s failed (attempt %d of %d): %r", settings.display_url, attempt + 1,
                        settings.connection_attempts, exc)
    assert last is not None
    raise translate(last, f"connecting to {settings.display_url}") from last


def abandon(connection: pika.BlockingConnection) -> None:
    """Drop a connection without waiting for anything. A polite ``close()`` waits for the broker,
    which is exactly what a blocked or unresponsive broker never answers; this aborts the socket."""
    with contextlib.suppress(Exception):
        connection._impl._adapter_disconnect_stream()


def retrying(settings: Settings, doing: str, operation: Callable[[], T], reset: Callable[[], None]) -> T:
    """Run ``operation``; if the connection is lost, ``reset`` and try again (bounded)."""
    for attempt in range(settings.connection_attempts + 1):
        try:
            with translate_errors(doing):
                return operation()
        except BrokerUnavailable:
            reset()
            if attempt >= settings.connection_attempts:
                raise
            log.warning("%s: connection lost, reconnecting (attempt %d)", doing, attempt + 1)
            time.sleep(settings.retry_connect_delay * attempt)
    raise AssertionError("unreachable")
