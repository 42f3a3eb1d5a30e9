"""Least privilege on RabbitMQ: a service works with exactly the permissions the README lists, and with less
the error names the resource and the permission the refused operation needed (RabbitMQ names the resource only)."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pika.exceptions
import pytest

from pubsubpy import BrokerUnavailable, ConfigurationError, MessageInfo, PermissionDenied, PubSub, Reject
from pubsubpy.transports.rabbitmq._permissions import Permissions, refused, service_permissions
from tests.conftest import IN_CI, Names, running_worker, wait_for
from tests.contract.events import ALL, BOOKING, BookingCreated, BookingUpdated

NewUser = Callable[[Permissions | None], str]  # the permissions (None: none at all) -> an amqp URL as that user


def _rabbitmqctl(*args: str, password: str | None = None) -> None:
    # the password goes through stdin: never on a command line an error message would show
    subprocess.run(["rabbitmqctl", *args], input=password, text=True, check=True, capture_output=True, timeout=60)


@pytest.fixture
def new_user(rabbit_url: str) -> Iterator[NewUser]:
    """Broker users with a random password, each deleted after the test."""
    if shutil.which("rabbitmqctl") is None:
        if IN_CI:
            pytest.fail("rabbitmqctl is needed to create users with limited permissions")
        pytest.skip("rabbitmqctl is not available")
    parts = urlsplit(rabbit_url)
    vhost = unquote(parts.path[1:]) or "/"
    users: list[str] = []

    def make(permissions: Permissions | None) -> str:
        user, password = f"t-{uuid.uuid4().hex[:10]}", secrets.token_urlsafe(16)
        _rabbitmqctl("add_user", user, password=password + "\n")
        users.append(user)
        if permissions is not None:
            _rabbitmqctl("set_permissions", "-p", vhost, user, permissions.configure, permissions.write,
                         permissions.read)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"))

    yield make
    for user in users:
        _rabbitmqctl("delete_user", user)


def _names(*names: str) -> str:
    return "^(" + "|".join(re.escape(name) for name in names) + ")$"


def _consumer(url: str, service: str, exchange: str) -> PubSub:
    return PubSub(url, schemas=ALL, model_exchange=exchange, service_name=service, retry_delay=0.05, max_attempts=3)


def _drain_until(app: PubSub, done: Callable[[], bool], what: str) -> None:
    wait_for(lambda: app.drain(timeout=5) is not None and done(), timeout=15, what=what)


def test_the_documented_regexes() -> None:
    """The README's table, for service ``billing`` on exchange ``models``."""
    own = (r"billing\.dead-letters|billing\.dlx|billing\.events|billing\.events\.ledger|billing\.parked"
           r"|billing\.presence|billing\.presence\..+|billing\.retry\.[0-9]+ms|billing\.shard\.(v[0-9]+\.)?[0-9]+"
           r"|billing\.shards(\.v[0-9]+)?")
    written = (r"amq\.default|billing\.dead-letters|billing\.dlx|billing\.events|billing\.parked|billing\.presence"
               r"|billing\.presence\..+|billing\.shard\.(v[0-9]+\.)?[0-9]+|billing\.shards(\.v[0-9]+)?")
    assert service_permissions("billing", "models") == Permissions(
        configure=f"^({own}|models|models\\.log)$", write=f"^({written}|models|models\\.log)$",
        read=f"^({own}|models|models\\.log)$")
    assert service_permissions("billing", "models", consumes=False) == Permissions(
        r"^(models|models\.log)$", r"^(models|models\.log)$", "^models$")
    consumer = service_permissions("billing", "models", publishes=False)
    assert consumer.write == f"^({written})$"
    assert service_permissions("a.b", "x*").configure.startswith(r"^(a\.b\.dead-letters|")


def test_a_service_runs_its_whole_cycle_with_exactly_the_documented_permissions(
        new_user: NewUser, names: Names) -> None:
    service, exchange = names.service(), names.exchange()
    app = _consumer(new_user(service_permissions(service, exchange, publishes=False)), service, exchange)
    shop = PubSub(new_user(service_permissions(service, exchange, consumes=False)), schemas=ALL,
                  model_exchange=exchange, service_name=f"{service}-shop", on_unroutable="raise")
    attempts: list[int] = []
    handled: list[tuple[int, str]] = []
    refuse = {"status": "refused"}

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated, info: MessageInfo) -> None:
        attempts.append(info.attempt)
        if info.attempt == 1:
            raise RuntimeError("fails once: retried through a retry queue")

    @app.subscribe("Booking.updated")
    def on_updated(event: BookingUpdated) -> None:
        if event.status == refuse["status"]:
            raise Reject("dead-lettered at once")
        handled.append((event.id, event.status))

    app.declare()  # new queues: the dead-letter checks need write on the DLX and on amq.default
    shop.publish_model_event(BOOKING, "created", BookingCreated(id=1, guest="g"))
    shop.publish_model_event(BOOKING, "updated", BookingUpdated(id=1, status="refused"))
    _drain_until(app, lambda: attempts == [1, 2] and app.dead_letter_count() == 1, "the retry and the dead letter")

    [letter] = app.list_dead_letters()
    assert (letter.reason, letter.routing_key, letter.payload) == ("rejected", "Booking.updated",
                                                                   {"id": 1, "status": "refused"})
    refuse["status"] = "cancelled"
    assert app.replay_dead_letters() == [letter.message_id]
    _drain_until(app, lambda: handled == [(1, "refused")], "the replayed letter")
    assert app.dead_letter_count() == 0

    shop.publish_model_event(BOOKING, "updated", {"id": 2, "status": "cancelled"})
    _drain_until(app, lambda: app.dead_letter_count() == 1, "a second dead letter")
    assert len(app.purge_dead_letters()) == 1 and app.dead_letter_count() == 0

    newer = _consumer(app.settings.amqp_url, service, exchange)  # a version that dropped Booking.updated

    @newer.subscribe("Booking.created")
    def on_created_v2(event: BookingCreated) -> None: ...

    assert newer.stale_bindings() == ["Booking.updated"]
    newer.declare(prune=True)  # unbinding: write on the queue, read on the exchange
    assert newer.stale_bindings() == []
    assert (attempts, handled) == ([1, 2], [(1, "refused")])
    for each in (app, shop, newer):
        each.close()


def test_a_worker_with_shards_runs_with_exactly_the_documented_permissions(new_user: NewUser, names: Names) -> None:
    """shards=N: the shards and presence exchanges, the shard queues, a worker's presence queue, a dead letter
    replayed through the shards."""
    service, exchange = names.service(), names.exchange()
    url = new_user(service_permissions(service, exchange))
    app = PubSub(url, schemas=ALL, model_exchange=exchange, service_name=service, shards=2, max_attempts=1)
    seen: list[str] = []
    refuse = {"status": "refused"}

    @app.subscribe("Booking.updated", ordered=True)
    def on_updated(event: BookingUpdated) -> None:
        if event.status == refuse["status"]:
            raise Reject("dead-lettered at once")
        seen.append(event.status)

    app.declare()
    app.publish_model_event(BOOKING, "updated", {"id": 1, "status": "refused"})
    app.publish_model_event(BOOKING, "updated", {"id": 2, "status": "paid"})
    with running_worker(app):
        wait_for(lambda: seen == ["paid"] and app.dead_letter_count() == 1, timeout=30,
                 what="a worker consuming the shards")
        refuse["status"] = "nothing"
        assert len(app.replay_dead_letters()) == 1
        wait_for(lambda: sorted(seen) == ["paid", "refused"], timeout=30, what="the letter replayed through the shards")
    app.close()


def test_the_event_log_and_a_backfill_run_with_exactly_the_documented_permissions(
        new_user: NewUser, names: Names) -> None:
    """A publisher with event_log declares and binds the log; a service replays it (a dead letter included) and
    backfills with the consumer's permissions."""
    service, exchange = names.service(), names.exchange()
    shop = PubSub(new_user(service_permissions(service, exchange, consumes=False)), schemas=ALL,
                  model_exchange=exchange, event_log="1D")
    shop.publish_model_event(BOOKING, "created", BookingCreated(id=1, guest="g"))
    shop.publish_model_event(BOOKING, "updated", BookingUpdated(id=1, status="refused"))
    app = _consumer(new_user(service_permissions(service, exchange, publishes=False)), service, exchange)
    seen: list[str] = []

    @app.subscribe("Booking.*")
    def on_booking(event: BookingCreated | BookingUpdated) -> None:
        if isinstance(event, BookingUpdated):
            raise Reject("dead-lettered at once")
        seen.append(event.guest)

    stop = threading.Event()
    worker = threading.Thread(target=app.run, kwargs={"stop": stop, "backfill": "1h"})
    worker.start()
    try:
        wait_for(lambda: seen == ["g"] and app.dead_letter_count() == 1, timeout=30, what="the backfill")
        shop.publish_model_event(BOOKING, "created", BookingCreated(id=2, guest="h"))
        wait_for(lambda: seen == ["g", "h"], timeout=30, what="the live event after the hand-over")
    finally:
        stop.set()
        worker.join(30)
    result = app.replay(since="1h")
    assert (result.handled, result.dead_lettered, seen) == (2, 1, ["g", "h", "g", "h"])
    for each in (app, shop):
        each.close()


def _denied(excinfo: pytest.ExceptionInfo[PermissionDenied], permission: str, resource: str, operation: str) -> None:
    error, text = excinfo.value, str(excinfo.value)
    assert " and ".join(error.permissions) == permission and error.resource == resource, text
    assert f"needs {permission} permission on {resource} in vhost '/'" in text and operation in text, text
    assert "rabbitmqctl set_permissions" in text and "ACCESS_REFUSED" in text, text


@pytest.mark.parametrize("missing", ["configure", "read"])
def test_declaring_without_a_permission_on_the_exchange(new_user: NewUser, names: Names, missing: str) -> None:
    service, exchange = names.service(), names.exchange()
    full = service_permissions(service, exchange)
    elsewhere = service_permissions(service, names.exchange("other"))  # the same, but for another exchange
    app = _consumer(new_user(replace(full, **{missing: getattr(elsewhere, missing)})), service, exchange)

    @app.subscribe("Booking.*")
    def on_booking(event: BookingCreated | BookingUpdated) -> None: ...

    with pytest.raises(PermissionDenied) as excinfo:
        app.declare()
    operation = "to declare it (exchange.declare)" if missing == "configure" else "to bind a queue to it (queue.bind)"
    _denied(excinfo, missing, f"exchange {exchange!r}", operation)
    app.close()


def test_declaring_new_retry_queues_without_write_on_the_default_exchange(new_user: NewUser, names: Names) -> None:
    service, exchange = names.service(), names.exchange()
    full = service_permissions(service, exchange)
    write = _names(exchange, f"{service}.events", f"{service}.dead-letters", f"{service}.dlx")  # no amq.default
    app = _consumer(new_user(replace(full, write=write)), service, exchange)

    @app.subscribe("Booking.*")
    def on_booking(event: BookingCreated | BookingUpdated) -> None: ...

    with pytest.raises(PermissionDenied) as excinfo:
        app.declare()
    _denied(excinfo, "write", "exchange 'amq.default'", "declare a queue that dead-letters through the default")
    app.close()


def test_declaring_the_service_queue_without_configure_on_it(new_user: NewUser, names: Names) -> None:
    service, exchange = names.service(), names.exchange()
    full = service_permissions(service, exchange)
    configure = _names(exchange, f"{service}.dlx", f"{service}.dead-letters")
    app = _consumer(new_user(replace(full, configure=configure)), service, exchange)

    @app.subscribe("Booking.*")
    def on_booking(event: BookingCreated | BookingUpdated) -> None: ...

    with pytest.raises(PermissionDenied) as excinfo:
        app.declare()
    _denied(excinfo, "configure and read", f"queue '{service}.events'", "a new queue that dead-letters needs both")
    app.close()


def test_draining_without_read_on_the_service_queue(rabbit_url: str, new_user: NewUser, names: Names) -> None:
    service, exchange = names.service(), names.exchange()
    full = service_permissions(service, exchange)
    owner = _consumer(rabbit_url, service, exchange)
    app = _consumer(new_user(replace(full, read=_names(exchange, f"{service}.dlx", f"{service}.events.ledger"))),
                    service, exchange)
    for each in (owner, app):

        @each.subscribe("Booking.*")
        def on_booking(event: BookingCreated | BookingUpdated) -> None: ...

    owner.declare()  # existing queues: redeclaring them needs no read
    with pytest.raises(PermissionDenied) as excinfo:
        app.drain(timeout=10)
    _denied(excinfo, "read", f"queue '{service}.events'", "to consume from it (basic.consume)")
    for each in (owner, app):
        each.close()


def test_publishing_without_write_on_the_exchange(new_user: NewUser, names: Names) -> None:
    exchange = names.exchange()
    app = PubSub(new_user(replace(service_permissions("-", exchange, consumes=False), write="^$")), schemas=ALL,
                 model_exchange=exchange, service_name="shop", confirm_timeout=10)
    with pytest.raises(PermissionDenied) as excinfo:  # at once, not a ConfirmTimeout 10 s later: no confirm ever comes
        app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
    _denied(excinfo, "write", f"exchange {exchange!r}", "to publish to it (basic.publish)")
    app.close()


def test_a_user_without_permissions_on_the_vhost(new_user: NewUser, names: Names) -> None:
    url = new_user(None)
    app = PubSub(url, schemas=ALL, model_exchange=names.exchange(), service_name="shop", connection_attempts=1)
    with pytest.raises(BrokerUnavailable) as excinfo:
        app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
    user = unquote(urlsplit(url).username or "")
    assert f"user {user!r} has no permissions on virtual host '/'" in str(excinfo.value), excinfo.value
    assert f"rabbitmqctl set_permissions -p / {user}" in str(excinfo.value)
    assert (urlsplit(url).password or "") not in str(excinfo.value), "the password never shows"
    app.close()


def test_a_vhost_that_does_not_exist(rabbit_url: str, names: Names) -> None:
    vhost = f"t-{uuid.uuid4().hex[:10]}"
    url = urlunsplit(urlsplit(rabbit_url)._replace(path="/" + vhost))
    app = PubSub(url, schemas=ALL, model_exchange=names.exchange(), service_name="shop", connection_attempts=1)
    with pytest.raises(BrokerUnavailable, match=f"virtual host '{vhost}' does not exist; create it"):
        app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
    app.close()


def test_a_refusal_of_an_unknown_operation_names_every_permission() -> None:
    exc = pika.exceptions.ChannelClosedByBroker(403, "ACCESS_REFUSED - access to queue 'q' in vhost 'v' refused "
                                                     "for user 'u'")
    error = refused(exc, "doing something")
    assert (error.permissions, error.resource, error.vhost, error.user) == (
        ("configure", "write", "read"), "queue 'q'", "v", "u")
    assert str(error).startswith("doing something: user 'u' needs configure, write or read permission on queue 'q'")
    other = refused(pika.exceptions.ChannelClosedByBroker(403, "ACCESS_REFUSED - something else"), "doing")
    assert other.permissions == () and "something else" in str(other) and isinstance(other, ConfigurationError)
