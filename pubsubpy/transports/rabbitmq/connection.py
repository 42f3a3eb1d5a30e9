"""Connections to RabbitMQ: parameters with bounded waits, and pika errors translated.

Every wait is bounded: TCP connect and socket I/O (``connect_timeout``),
AMQP handshake (``stack_timeout``), a broker resource alarm
(``blocked_connection_timeout``), a dead peer (``heartbeat``). ``amqp_url`` may
list several comma-separated URLs; they are tried in order (failover). ``amqps://``
URLs get the SSL context of ``tls`` (CA, client certificate), whose failures are
explained in words and not retried.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pika
import pika.adapters.utils.connection_workflow
import pika.exceptions

from pubsubpy.deadline import Deadline
from pubsubpy.errors import (
    BrokerUnavailable,
    ConfigurationError,
    OperationTimeout,
    PubSubError,
    TransportError,
)
from pubsubpy.settings import Settings, redact_url
from pubsubpy.transports.rabbitmq import tls
from pubsubpy.transports.rabbitmq.permissions import refused, vhost_refused
from pubsubpy.transports.rabbitmq.pika_hooks import install as install_pika_hooks

__all__ = ["Unreachable", "abandon", "call_deadline", "connect", "parameters", "retrying", "translate_errors", "within"]

log = logging.getLogger("pubsubpy.rabbitmq")

T = TypeVar("T")

_ConnectorError = pika.adapters.utils.connection_workflow.AMQPConnectorException  # pika's handshake timeouts


def parameters(settings: Settings) -> list[pika.URLParameters]:
    urls = [url.strip() for url in settings.amqp_url.split(",") if url.strip()]
    result = []
    for url in urls:
        try:
            params = pika.URLParameters(url)
        except Exception as exc:  # pika raises ValueError/TypeError/AMQPError variants for bad URLs
            raise ConfigurationError(f"amqp_url {redact_url(url)!r} is not a valid AMQP URL: {exc}") from None
        tls.secure(params, settings)  # amqps://: our SSL context (CA, client certificate); EXTERNAL login
        params.socket_timeout = settings.connect_timeout
        params.stack_timeout = settings.connect_timeout * 2
        params.blocked_connection_timeout = settings.blocked_connection_timeout
        params.heartbeat = settings.heartbeat
        params.connection_attempts = 1
        params.retry_delay = 0
        params.client_properties = {"connection_name": f"pubsubpy:{settings.service_name or '-'}"}
        result.append(params)
    return result


def call_deadline(settings: Settings) -> Deadline:
    """What bounds a call made without a deadline: one connect per URL, then one confirm wait."""
    urls = sum(1 for url in settings.amqp_url.split(",") if url.strip())
    return Deadline.after(settings.connect_timeout * max(urls, 1) + settings.confirm_timeout)


def _describe_close(exc: pika.exceptions.ChannelClosedByBroker) -> str:
    return f"{exc.reply_code} {exc.reply_text}"


def translate(exc: BaseException, doing: str) -> PubSubError:
    """Map a pika (or socket) exception to the pubsubpy error a user should see."""
    if isinstance(exc, PubSubError):
        return exc
    if isinstance(exc, pika.exceptions.ConnectionBlockedTimeout):
        return OperationTimeout(f"{doing}: the broker blocked this connection (resource alarm: memory or disk) "
                                "for longer than blocked_connection_timeout")
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return BrokerUnavailable(vhost_refused(exc, doing))
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError):
        return BrokerUnavailable(f"{doing}: the broker refused the credentials ({exc!r})")
    if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
        text = _describe_close(exc)
        if exc.reply_code == 406:
            return ConfigurationError(
                f"{doing}: {text}. An existing queue or exchange was declared with other arguments; "
                "delete it (its messages go with it) or change the settings back. pubsubpy never deletes it.")
        if exc.reply_code == 403:
            return refused(exc, doing)
        if exc.reply_code == 404:
            return ConfigurationError(f"{doing}: {text}. Run `pubsubpy declare` (or PubSub.declare()) first.")
        return TransportError(f"{doing}: {text}")
    if isinstance(exc, _ConnectorError):
        return BrokerUnavailable(f"{doing}: could not open an AMQP connection in time ({exc!r})")
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
    except (pika.exceptions.AMQPError, OSError, AssertionError, _ConnectorError) as exc:
        raise translate(exc, doing) from exc


class Unreachable(BrokerUnavailable):
    """``connect`` used up its attempts (or the deadline): retrying the operation would only repeat them."""


def connect(settings: Settings, deadline: Deadline | None = None) -> pika.BlockingConnection:
    """Open a connection: each URL in turn, up to ``connection_attempts`` rounds, all within ``deadline``.

    Every wait (TCP connect, AMQP handshake, the pause between rounds) is cut to what is left of the
    deadline, so refused, black-holed and silent brokers all fail in time.
    """
    deadline = deadline or Deadline.never()
    params = parameters(settings)
    last: BaseException | None = None
    last_param: pika.URLParameters | None = None
    for attempt in range(settings.connection_attempts):
        if attempt:
            time.sleep(deadline.cap(settings.retry_connect_delay * attempt))
        for param in params:
            remaining = deadline.remaining()
            if remaining <= 0:
                break
            param.socket_timeout = min(settings.connect_timeout, remaining)
            param.stack_timeout = min(settings.connect_timeout * 2, remaining)
            try:
                connection = pika.BlockingConnection(param)
                install_pika_hooks(connection)  # pika's internals checked (first time); tolerates bad headers
                return connection
            except (pika.exceptions.AMQPError, OSError, _ConnectorError) as exc:
                last, last_param = exc, param
                failure = tls.explain(exc, settings, param)
                if failure is not None and failure.final:  # a certificate problem: another attempt changes nothing
                    raise Unreachable(f"connecting to {settings.display_url}: {failure.why}") from exc
                if isinstance(exc, pika.exceptions.ProbableAuthenticationError
                              | pika.exceptions.ProbableAccessDeniedError):
                    raise Unreachable(str(translate(exc, f"connecting to {settings.display_url}"))) from exc
                log.warning("connect to %s failed (attempt %d of %d): %r", _where(param), attempt + 1,
                            settings.connection_attempts, exc)
        if deadline.expired:
            break
    doing = f"connecting to {settings.display_url}"
    if last is None:
        raise Unreachable(f"{doing}: no connection within the deadline")
    failure = tls.explain(last, settings, last_param) if last_param is not None else None
    raise Unreachable(f"{doing}: {failure.why}" if failure else str(translate(last, doing))) from last


def _where(param: pika.URLParameters) -> str:
    return f"{param.host}:{param.port}"


def abandon(connection: pika.BlockingConnection) -> None:
    """Drop a connection without waiting for anything. A polite ``close()`` waits for the broker,
    which is exactly what a blocked or unresponsive broker never answers; this aborts the socket."""
    with contextlib.suppress(Exception):
        connection._impl._adapter_disconnect_stream()


class _DeadlinePassed(Exception):
    pass


@contextlib.contextmanager
def within(connection: pika.BlockingConnection, deadline: Deadline, doing: str) -> Iterator[None]:
    """Bound every blocking pika call made inside by ``deadline``.

    pika's synchronous RPCs (``queue_declare``, ``basic_cancel``...) wait without a limit. A timer on
    the connection's I/O loop raises out of that wait when the deadline passes; the connection's state
    is then unknown, so it is abandoned and ``OperationTimeout`` raised.
    """
    if math.isinf(deadline.at):
        yield
        return

    def expire() -> None:
        raise _DeadlinePassed

    timer = connection._impl.ioloop.call_later(deadline.remaining(), expire)
    try:
        yield
    except _DeadlinePassed:
        abandon(connection)
        raise OperationTimeout(f"{doing}: no answer from the broker before the deadline") from None
    finally:
        with contextlib.suppress(Exception):
            connection._impl.ioloop.remove_timeout(timer)


def retrying(settings: Settings, doing: str, operation: Callable[[], T], reset: Callable[[], None],
             deadline: Deadline | None = None) -> T:
    """Run ``operation``; if an open connection is lost, ``reset`` and try again, within ``deadline``.

    A failure to connect at all is not retried here: ``connect`` already made its attempts.
    """
    deadline = deadline or Deadline.never()
    for attempt in range(settings.connection_attempts):
        try:
            with translate_errors(doing):
                return operation()
        except (Unreachable, OperationTimeout):
            reset()
            raise
        except BrokerUnavailable:
            reset()
            if attempt + 1 >= settings.connection_attempts or deadline.expired:
                raise
            log.warning("%s: connection lost, reconnecting (attempt %d)", doing, attempt + 2)
            time.sleep(deadline.cap(settings.retry_connect_delay * attempt))
    raise AssertionError("unreachable")
