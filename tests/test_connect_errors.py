"""A failed connect says its cause in words, as ``pubsubpy.errors.BrokerUnavailable``, in time; pika's own
records about it are filtered on the connecting thread only, and pubsubpy logs one WARNING per attempt."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from contextlib import AbstractContextManager, suppress

import pika
import pika.exceptions
import pytest

from pubsubpy import BrokerUnavailable, PubSub
from pubsubpy.transports.rabbitmq import _connection as connection
from pubsubpy.transports.rabbitmq import _pika_logs as pika_logs
from tests.conftest import Names, connection_pids, free_port, wait_for
from tests.contract.events import ALL, BOOKING

CONNECT_TIMEOUT = 1.0


def _fail(url: str, attempts: int = 1) -> tuple[BrokerUnavailable, float]:
    """Publish through ``url`` (which cannot connect); the error raised and the seconds it took."""
    app = PubSub(url, schemas=ALL, service_name="connect-errors", connect_timeout=CONNECT_TIMEOUT,
                 connection_attempts=attempts, retry_connect_delay=0.05, confirm_timeout=1.0)
    began = time.monotonic()
    try:
        with pytest.raises(BrokerUnavailable) as failed:
            app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
    finally:
        app.close()
    return failed.value, time.monotonic() - began


def _assert_public(exc: BrokerUnavailable) -> None:
    assert type(exc) is BrokerUnavailable, type(exc)
    assert f"{type(exc).__module__}.{type(exc).__qualname__}" == "pubsubpy.errors.BrokerUnavailable"


def _pika_records(caplog: pytest.LogCaptureFixture, level: int = logging.DEBUG) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("pika") and r.levelno >= level]


def _attempt_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "pubsubpy.rabbitmq" and r.levelno == logging.WARNING and "failed (attempt" in r.getMessage()]


def test_an_unresolvable_host_says_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    exc, took = _fail("amqp://guest:guest@nohost.invalid:5672/%2F", attempts=2)
    _assert_public(exc)
    assert "cannot resolve host 'nohost.invalid'" in str(exc), exc
    assert isinstance(exc.__cause__, socket.gaierror)
    assert took < 2 * CONNECT_TIMEOUT + 2
    # pika logs "Address resolution failed" at ERROR on a thread of its own: filtered too
    assert not _pika_records(caplog), [(r.name, r.threadName, r.getMessage()) for r in _pika_records(caplog)]
    warnings = _attempt_warnings(caplog)
    assert len(warnings) == 2 and all("cannot resolve host 'nohost.invalid'" in w for w in warnings), warnings


def test_a_refused_port_says_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    exc, took = _fail(f"amqp://guest:guest@127.0.0.1:{port}/%2F", attempts=3)
    _assert_public(exc)
    assert str(exc) == (f"connecting to amqp://guest:***@127.0.0.1:{port}/%2F: connection refused at "
                        f"127.0.0.1:{port}: is RabbitMQ running there? (memory:// needs no broker)")
    assert isinstance(exc.__cause__, pika.exceptions.AMQPConnectionError)
    assert took < 3 * CONNECT_TIMEOUT + 1
    assert not _pika_records(caplog, logging.ERROR)
    assert not _pika_records(caplog)
    warnings = _attempt_warnings(caplog)
    assert [re.sub(r".*\(attempt (\d) of 3\).*", r"\1", w) for w in warnings] == ["1", "2", "3"], warnings
    assert all("connection refused at" in w for w in warnings)


def test_a_black_hole_says_nothing_answered_within_connect_timeout(black_hole: int,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    exc, took = _fail(f"amqp://guest:guest@127.0.0.1:{black_hole}/%2F")
    _assert_public(exc)
    assert f"no answer from 127.0.0.1:{black_hole} within connect_timeout=1s" in str(exc), exc
    assert exc.__cause__ is not None
    assert took < CONNECT_TIMEOUT + 1
    assert not _pika_records(caplog)
    assert len(_attempt_warnings(caplog)) == 1


def test_bad_credentials_name_the_user_not_the_password(rabbit_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    exc, took = _fail(rabbit_url.replace("guest:guest", "guest:not-the-password"), attempts=3)
    _assert_public(exc)
    assert "authentication refused for user 'guest'" in str(exc), exc
    assert "not-the-password" not in str(exc) and "not-the-password" not in caplog.text
    assert isinstance(exc.__cause__, pika.exceptions.ProbableAuthenticationError)
    assert took < CONNECT_TIMEOUT + 1, "refused credentials are not worth a second attempt"
    assert not _pika_records(caplog, logging.ERROR)
    assert len(_attempt_warnings(caplog)) == 1


def test_several_urls_each_say_their_cause(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    exc, _ = _fail(f"amqp://nohost.invalid:5672,amqp://127.0.0.1:{port}", attempts=2)
    _assert_public(exc)
    assert "cannot resolve host 'nohost.invalid'" in str(exc), exc
    assert f"connection refused at 127.0.0.1:{port}" in str(exc), exc
    assert not _pika_records(caplog)
    assert len(_attempt_warnings(caplog)) == 4, "two rounds over two URLs"


def test_the_filter_is_scoped_to_the_connecting_thread(black_hole: int, caplog: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """While pubsubpy's connect waits on a silent port, pika records from another thread pass: a direct
    record and a whole failed pika connect of the application's own (its resolver thread's record too)."""
    caplog.set_level(logging.DEBUG)
    in_connect = threading.Event()
    real_connecting = pika_logs.connecting

    def marking(param: object) -> AbstractContextManager[None]:
        in_connect.set()
        return real_connecting(param)

    def elsewhere() -> None:
        assert in_connect.wait(5)
        logging.getLogger("pika.adapters.blocking_connection").error("the application's own pika record")
        params = pika.URLParameters("amqp://guest:guest@elsewhere.invalid:5672/%2F")
        params.connection_attempts = 1
        with suppress(pika.exceptions.AMQPError, OSError):
            pika.BlockingConnection(params)

    monkeypatch.setattr(pika_logs, "connecting", marking)
    other = threading.Thread(target=elsewhere, name="application-thread")
    other.start()
    try:
        _fail(f"amqp://guest:guest@127.0.0.1:{black_hole}/%2F")
    finally:
        other.join(10)
    passed = _pika_records(caplog, logging.ERROR)
    assert any(r.getMessage() == "the application's own pika record" for r in passed)
    assert any("Address resolution failed" in r.getMessage() for r in passed), "the app's resolver thread"
    assert any(r.threadName == "application-thread" and "Connection workflow failed" in r.getMessage()
               for r in passed)
    assert not any(r.threadName == threading.current_thread().name for r in _pika_records(caplog))


def test_pika_outside_our_connect_logs_as_usual(caplog: pytest.LogCaptureFixture) -> None:
    """On the very thread that connected, once the connect is over, pika's records pass again; the
    pika loggers' levels are untouched."""
    caplog.set_level(logging.DEBUG)
    levels = {name: logging.getLogger(name).level for name in ("pika", "pika.adapters.blocking_connection")}
    _fail(f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")
    assert not _pika_records(caplog)
    logging.getLogger("pika.adapters.blocking_connection").error("after our connect")
    assert [r.getMessage() for r in _pika_records(caplog)] == ["after our connect"]
    assert {name: logging.getLogger(name).level for name in levels} == levels


def test_giving_up_is_not_retried_by_the_operation() -> None:
    """connect's BrokerUnavailable carries its "gave up" mark: ``retrying`` does not connect again."""
    settings = PubSub(f"amqp://127.0.0.1:{free_port()}", schemas=ALL, connection_attempts=3,
                      retry_connect_delay=0).settings
    calls: list[int] = []

    def operation() -> None:
        calls.append(1)
        connection.connect(settings)

    with pytest.raises(BrokerUnavailable) as failed:
        connection.retrying(settings, "publishing", operation, lambda: None)
    assert connection.gave_up(failed.value) and len(calls) == 1
    assert not connection.gave_up(BrokerUnavailable("lost"))


def test_an_abandoned_connection_closes_at_once_without_tripping_pika(rabbit_url: str, names: Names,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """``abandon`` (a connection given up after a timeout or a loss) closes the socket in one turn, and
    leaves pika's connection closed with a reason: pika asserts on a stream ended without one."""
    service = names.service()
    app = PubSub(rabbit_url, schemas=ALL, service_name=service)
    settings = app.settings
    opened = connection.connect(settings)
    assert len(connection_pids(service)) == 1
    caplog.set_level(logging.DEBUG, logger="pika")
    connection.abandon(opened)
    assert opened.is_closed
    wait_for(lambda: not connection_pids(service), timeout=10, what="the broker to see the connection closed")
    trips = [record for record in caplog.records if "expected self._error" in record.getMessage()
             or (record.exc_info and isinstance(record.exc_info[1], AssertionError))]
    assert not trips, [record.getMessage() for record in trips]
    app.close()
