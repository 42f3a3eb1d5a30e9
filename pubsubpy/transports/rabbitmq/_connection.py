"""Connections to RabbitMQ: parameters with bounded waits, and pika errors translated.

Every wait is bounded: TCP connect and socket I/O (``connect_timeout``),
AMQP handshake (``stack_timeout``), a broker resource alarm
(``blocked_connection_timeout``), a dead peer (``heartbeat``). ``amqp_url`` may
list several comma-separated URLs; they are tried in order (failover). ``amqps://``
URLs get the SSL context of ``tls`` (CA, client certificate), whose failures are
explained in words and not retried.

A failed connect raises ``BrokerUnavailable`` whose message says each URL's cause in words (host not
resolved, connection refused, no answer, credentials or TLS refused), with pika's exception as
``__cause__``; each failed attempt is logged once, as a WARNING. pika's own records about the failure
(ERROR tracebacks) are filtered for the thread making the attempt only (``pika_logs``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
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
from pubsubpy.transports.rabbitmq import _pika_logs as pika_logs
from pubsubpy.transports.rabbitmq import _tls as tls
from pubsubpy.transports.rabbitmq._permissions import refused, vhost_refused
from pubsubpy.transports.rabbitmq._pika_hooks import install as install_pika_hooks

__all__ = ["abandon", "call_deadline", "connect", "gave_up", "parameters", "retrying", "translate_errors", "within"]

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
        params.stack_timeout = settings.connect_timeout  # socket, TLS and AMQP handshakes: connect_timeout in all
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


_GAVE_UP = "_pubsubpy_connect_gave_up"


def gave_up(exc: BaseException) -> bool:
    """Whether ``exc`` is ``connect`` giving up (attempts or deadline used up, or a cause no attempt
    changes): retrying the operation would only repeat them."""
    return bool(getattr(exc, _GAVE_UP, False))


def _giving_up(message: str) -> BrokerUnavailable:
    exc = BrokerUnavailable(message)
    setattr(exc, _GAVE_UP, True)
    return exc


def connect(settings: Settings, deadline: Deadline | None = None) -> pika.BlockingConnection:
    """Open a connection: each URL in turn, up to ``connection_attempts`` rounds, all within ``deadline``.

    Every wait (TCP connect, AMQP handshake, the pause between rounds) is cut to what is left of the
    deadline, so refused, black-holed and silent brokers all fail in time. The ``BrokerUnavailable``
    raised says why each URL failed (its last attempt) and keeps the last pika exception as ``__cause__``.
    """
    deadline = deadline or Deadline.never()
    params = parameters(settings)
    doing = f"connecting to {settings.display_url}"
    causes: dict[int, str] = {}  # URL index -> why its last attempt failed
    last: BaseException | None = None
    for attempt in range(settings.connection_attempts):
        if attempt:
            time.sleep(deadline.cap(settings.retry_connect_delay * attempt))
        for index, param in enumerate(params):
            remaining = deadline.remaining()
            if remaining <= 0:
                break
            param.socket_timeout = min(settings.connect_timeout, remaining)
            param.stack_timeout = min(settings.connect_timeout, remaining)
            try:
                with pika_logs.connecting(param):
                    connection = pika.BlockingConnection(param)
                    install_pika_hooks(connection)  # pika's internals checked (first time); tolerates bad headers
                return connection
            except (pika.exceptions.AMQPError, OSError, _ConnectorError) as exc:
                last = exc
                why, final = _cause(exc, settings, param, doing)
                causes[index] = why
                log.warning("connect to %s failed (attempt %d of %d%s): %s", _where(param), attempt + 1,
                            settings.connection_attempts, ", not retried" if final else "", why)
                if final:  # a certificate or credentials problem: another attempt changes nothing
                    raise _giving_up(f"{doing}: {why}") from exc
        if deadline.expired:
            break
    if last is None:
        raise _giving_up(f"{doing}: no connection within the deadline")
    raise _giving_up(f"{doing}: {_summary(causes)}") from last


def _summary(causes: dict[int, str]) -> str:
    """One URL's cause, or each URL's (in order, the same cause once)."""
    distinct = list(dict.fromkeys(causes[index] for index in sorted(causes)))
    if len(distinct) == 1:
        return distinct[0]
    return f"no URL connected: {'; '.join(distinct)}"


def _nested(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions pika wrapped in it (``AMQPConnectionError(AMQPConnectorSocketConnectError(
    ConnectionRefusedError(...)))``...), outermost first."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner = getattr(current, "exception", None)
        if isinstance(inner, BaseException):
            todo.append(inner)
        todo.extend(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))


def _cause(exc: BaseException, settings: Settings, param: pika.URLParameters, doing: str) -> tuple[str, bool]:
    """Why connecting with ``param`` failed, in words (never the password), and whether it is final
    (another attempt would fail the same way)."""
    failure = tls.explain(exc, settings, param)
    if failure is not None:
        return failure.why, failure.final
    where = _where(param)
    chain = list(_nested(exc))

    def found(kind: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, kind)), None)

    if found(pika.exceptions.ProbableAccessDeniedError) is not None:
        return vhost_refused(exc, doing).removeprefix(f"{doing}: "), True
    if found((pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError)) is not None:
        user = getattr(param.credentials, "username", None)
        return (f"authentication refused for user {user!r} at {where}: the broker refused the credentials; "
                "check the user name and password in amqp_url (or PUBSUBPY_PASSWORD_FILE)"), True
    if (unresolved := found(socket.gaierror)) is not None:
        return f"cannot resolve host {param.host!r} ({_strerror(unresolved)})", False
    if found(ConnectionRefusedError) is not None:
        return (f"connection refused at {where}: is RabbitMQ running there? "
                "(memory:// needs no broker)"), False
    if found((pika.adapters.utils.connection_workflow.AMQPConnectorStackTimeout, TimeoutError)) is not None:
        return f"no answer from {where} within {_bound(param, settings)}", False
    if found(ConnectionResetError) is not None or found(pika.exceptions.StreamLostError) is not None:
        return f"{where} closed the connection during the handshake (is it RabbitMQ's AMQP port?)", False
    if found(pika.exceptions.IncompatibleProtocolError) is not None:
        return f"{where} does not speak AMQP 0-9-1 (is it RabbitMQ's AMQP port, 5672 by default?)", False
    if (error := found(OSError)) is not None:
        return f"cannot reach {where} ({_strerror(error)})", False
    innermost = chain[-1]
    return f"could not connect to {where} ({type(innermost).__name__}: {innermost})", False


def _strerror(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or exc or type(exc).__name__)


def _bound(param: pika.URLParameters, settings: Settings) -> str:
    """The wait that ran out: ``connect_timeout`` or, when shorter, what was left of the deadline."""
    waited = param.stack_timeout
    if waited is None or waited >= settings.connect_timeout:
        return f"connect_timeout={settings.connect_timeout:g}s"
    return f"the {waited:.2g}s left of the call's deadline (connect_timeout={settings.connect_timeout:g}s)"


def _where(param: pika.URLParameters) -> str:
    return f"{param.host}:{param.port}"


def abandon(connection: pika.BlockingConnection) -> None:
    """Drop a connection without waiting for anything. A polite ``close()`` waits for the broker,
    which is exactly what a blocked or unresponsive broker never answers; this aborts the socket.

    pika closes an aborted socket only from the connection's I/O loop, which nobody turns again once it
    is abandoned: the broker kept such a connection, and the consumer on it kept holding its unacked
    messages, until the heartbeat timeout. One turn that does not wait closes it now. The stream is ended
    with a reason, as pika's own aborts do: pika asserts on (and logs an ERROR for) one ended without."""
    with contextlib.suppress(Exception):
        connection._impl._terminate_stream(pika.exceptions.StreamLostError("given up by pubsubpy"))
    with contextlib.suppress(Exception):
        connection.process_data_events(0)


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
        except OperationTimeout:
            reset()
            raise
        except BrokerUnavailable as exc:
            reset()
            if gave_up(exc) or attempt + 1 >= settings.connection_attempts or deadline.expired:
                raise
            log.warning("%s: connection lost, reconnecting (attempt %d)", doing, attempt + 2)
            time.sleep(deadline.cap(settings.retry_connect_delay * attempt))
    raise AssertionError("unreachable")
