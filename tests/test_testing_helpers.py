"""``pubsubpy.testing`` and the pytest plugin: named memory:// brokers, ``memory_broker()``, ``settle()``,
``capture()``, the ``memory_broker`` fixture (docs/how-to/testing.md shows the cascade test below)."""

from __future__ import annotations

import gc
import importlib.metadata
import os
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import pubsubpy.transports.memory
from pubsubpy import ConfigurationError, MessageInfo, ModelEvent, PubSub, Reason
from pubsubpy.messages import Outcome
from pubsubpy.testing import (
    MemoryBroker,
    NotSettled,
    capture,
    drop_memory_broker,
    memory_broker,
    settle,
)
from pubsubpy.transports.memory import MemoryTransport

ROOT = pathlib.Path(__file__).resolve().parents[1]

if not importlib.metadata.entry_points(group="pytest11", name="pubsubpy"):
    pytest_plugins = ["pubsubpy._pytest_plugin"]  # until the installed metadata has the entry point


# -- the worked example of docs/how-to/testing.md (kept identical: see the last test) --------------
class Booked(ModelEvent, model="shop.models.Booking", event="created", register=False):
    id: int


class Invoiced(ModelEvent, model="billing.models.Invoice", event="issued", register=False):
    booking: int


def test_a_booking_is_billed_then_mailed(memory_broker: str) -> None:
    shop, billing, mailer = (PubSub(memory_broker, service_name=name, schemas=[Booked, Invoiced])
                             for name in ("shop", "billing", "mailer"))
    mailed: list[int] = []

    @billing.subscribe("Booking.created")
    def bill(event: Booked) -> None:
        billing.publish_model_event("billing.models.Invoice", "issued", {"booking": event.id})

    @mailer.subscribe("Invoice.issued")
    def mail(event: Invoiced, info: MessageInfo) -> None:
        if info.attempt == 1:
            raise ConnectionError("mail server down")  # retried after retry_delay (1 s): settle moves the clock
        mailed.append(event.booking)

    billing.declare()  # the queues exist before the first event, as after a deploy
    mailer.declare()
    shop.publish_model_event("shop.models.Booking", "created", {"id": 7})
    settled = settle(shop, billing, mailer)
    assert mailed == [7]
    assert (settled[billing].handled, settled[mailer].retried, settled[mailer].handled) == (1, 1, 1)
# -- end of the worked example -----------------------------------------------------------------


SCHEMAS: list[type[ModelEvent]] = [Booked, Invoiced]


def _app(url: str, service: str | None = None, **options: object) -> PubSub:
    return PubSub(url, service_name=service, schemas=SCHEMAS, **options)  # type: ignore[arg-type]


def _book(app: PubSub, booking: int = 1) -> str:
    return app.publish_model_event("shop.models.Booking", "created", {"id": booking})


def _biller(url: str, seen: list[int], service: str = "billing") -> PubSub:
    app = _app(url, service)

    @app.subscribe("Booking.created")
    def on_booking(event: Booked) -> None:
        seen.append(event.id)

    return app


@pytest.fixture
def fixed_names() -> Iterator[None]:
    yield
    for name in ("shop", "a", "b"):
        drop_memory_broker(f"memory://{name}")


# -- memory://NAME -----------------------------------------------------------------------------
def test_apps_naming_one_memory_broker_see_each_others_events(fixed_names: None) -> None:
    seen: list[int] = []
    billing = _biller("memory://shop", seen)
    billing.declare()
    _book(_app("memory://shop", "shop"), 5)
    assert billing.drain(timeout=5).handled == 1
    assert seen == [5]
    assert _app("memory://shop/").transport.broker is billing.transport.broker  # type: ignore[attr-defined]


def test_different_names_and_plain_memory_urls_are_separate_brokers(fixed_names: None) -> None:
    for publisher_url, consumer_url in (("memory://a", "memory://b"), ("memory://", "memory://")):
        seen: list[int] = []
        billing = _biller(consumer_url, seen)
        billing.declare()
        _book(_app(publisher_url, "shop"))  # reaches no queue: another broker
        assert billing.drain(timeout=5).messages == 0
        assert seen == []


def test_a_named_broker_outlives_the_apps_that_used_it(memory_broker: str) -> None:
    _biller(memory_broker, []).declare()  # declared at "deploy time"; that app object is gone now
    gc.collect()
    _book(_app(memory_broker, "shop"), 3)
    seen: list[int] = []
    assert _biller(memory_broker, seen).drain(timeout=5).handled == 1
    assert seen == [3]


def test_dropping_a_named_broker_gives_the_next_app_an_empty_one() -> None:
    url = memory_broker()
    first = _app(url).transport
    drop_memory_broker(url)
    assert _app(url).transport.broker is not first.broker  # type: ignore[attr-defined]
    drop_memory_broker(url)  # unknown names are fine
    with pytest.raises(ConfigurationError, match="memory://NAME"):
        drop_memory_broker("amqp://localhost/")


@pytest.mark.parametrize("url", ["memory://two words", "memory://a/b", "memory://a,memory://b", "memory://-x",
                                 "memory://?x=1"])
def test_a_memory_url_names_one_broker_or_none(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"memory://NAME"):
        PubSub(url)


def test_memory_broker_returns_fresh_names() -> None:
    urls = {memory_broker() for _ in range(100)}
    assert len(urls) == 100
    assert all(re.fullmatch(r"memory://test-[0-9a-f]{16}", url) for url in urls)
    assert MemoryBroker is pubsubpy.transports.memory.MemoryBroker


_FIXTURE_BROKERS: list[str] = []


def test_the_fixture_gives_each_test_its_own_broker_and_drops_it(memory_broker: str) -> None:
    name = memory_broker.removeprefix("memory://")
    assert name not in pubsubpy.transports.memory._named
    _app(memory_broker).transport  # noqa: B018 (makes the broker)
    assert name in pubsubpy.transports.memory._named
    _FIXTURE_BROKERS.append(name)  # the fixture's teardown drops it: test_the_fixture_dropped_its_broker


# -- the broker's clock and its unacked count ---------------------------------------------------
def test_the_broker_clock_moves_forward_to_the_next_expiry() -> None:
    now = [100.0]
    broker = MemoryBroker(clock=lambda: now[0])
    billing = PubSub("memory://", transport=MemoryTransport(broker), service_name="billing", schemas=SCHEMAS,
                     retry_delay=30, retry_jitter=False)

    @billing.subscribe("Booking.created")
    def fail(event: Booked) -> None:
        raise RuntimeError("no")

    billing.declare()
    _book(billing)
    assert billing.drain(timeout=5).retried == 1
    assert broker.next_expiry() == 30.0
    assert broker.depth("billing.events") == 0
    assert broker.advance_to_next_expiry() == pytest.approx(30.0)
    assert broker.depth("billing.events") == 1 and broker.next_expiry() is None
    assert broker.now() == pytest.approx(130.0) and now[0] == 100.0
    with pytest.raises(ValueError):
        broker.advance(-1)


def test_the_broker_counts_unacked_messages_per_queue() -> None:
    broker = MemoryBroker()
    billing = PubSub("memory://", transport=MemoryTransport(broker), service_name="billing", schemas=SCHEMAS)

    @billing.subscribe("Booking.*")
    def ignore(event: Booked) -> None:
        pass

    billing.declare()
    _book(billing)
    _book(billing)
    consumer = billing.transport.consume("billing.events", prefetch=1)
    delivery = consumer.get(1.0)
    assert delivery is not None
    assert (broker.unacked("billing.events"), broker.depth("billing.events")) == (1, 1)
    consumer.close()
    assert (broker.unacked("billing.events"), broker.depth("billing.events")) == (0, 2)
    assert broker.unacked("no.such.queue") == 0


# -- settle ------------------------------------------------------------------------------------
def test_settle_moves_the_clock_instead_of_sleeping_the_retry_delay(memory_broker: str) -> None:
    billing = _app(memory_broker, "billing", retry_delay=120, retry_jitter=False)  # a sleep would time settle out
    attempts: list[int] = []

    @billing.subscribe("Booking.created")
    def flaky(event: Booked, info: MessageInfo) -> None:
        attempts.append(info.attempt)
        if info.attempt == 1:
            raise ConnectionError("down")

    billing.declare()
    _book(billing)
    settled = settle(billing, timeout=30)
    assert attempts == [1, 2]
    assert settled.advanced > 119  # up to the expiry: less the (real) time since the retry was queued
    broker = billing.transport.broker  # type: ignore[attr-defined]
    assert broker.now() - time.monotonic() > 119


def test_settle_runs_every_retry_in_order_then_dead_letters(memory_broker: str) -> None:
    billing = _app(memory_broker, "billing", retry_jitter=False)  # max_attempts=3, retry_delay=1 s, doubling
    attempts: list[tuple[int, int]] = []

    @billing.subscribe("Booking.created")
    def broken(event: Booked, info: MessageInfo) -> None:
        attempts.append((event.id, info.attempt))
        raise RuntimeError("always")

    billing.declare()
    _book(billing, 1)
    _book(billing, 2)
    settled = settle(billing)
    assert attempts == [(1, 1), (2, 1), (1, 2), (2, 2), (1, 3), (2, 3)]
    result = settled["billing"]
    assert (result.retried, result.dead_lettered, result.reasons) == (4, 2, {Reason.HANDLER_ERROR.value: 2})
    assert 2.5 < settled.advanced <= 3.0 + 1e-5  # 1 s, then 2 s (less the real time between)
    assert billing.dead_letter_count() == 2
    assert settled.total.messages == 6 and "billing: 6 messages" in str(settled)


def test_settle_with_nothing_to_do_returns_after_two_quiet_passes(memory_broker: str) -> None:
    shop = _app(memory_broker, "shop")  # no subscriptions: a publisher, never drained
    billing = _biller(memory_broker, [])
    settled = settle(shop, billing)
    assert settled.passes == 2 and settled.advanced == 0
    assert settled[shop].messages == 0 and settled[billing].messages == 0
    with pytest.raises(KeyError, match="drained no service 'mailer'"):
        settled["mailer"]


def _relay(url: str, service: str, pattern: str, publish: tuple[str, str]) -> PubSub:
    app = _app(url, service)

    @app.subscribe(pattern)
    def forward(event: ModelEvent) -> None:
        key = "id" if publish[1] == "created" else "booking"
        app.publish_model_event(*publish, {key: 1})

    return app


def test_settle_raises_naming_the_queues_of_a_cascade_that_loops(memory_broker: str) -> None:
    ping = _relay(memory_broker, "ping", "Booking.created", ("billing.models.Invoice", "issued"))
    pong = _relay(memory_broker, "pong", "Invoice.issued", ("shop.models.Booking", "created"))
    ping.declare()
    pong.declare()
    _book(ping)
    with pytest.raises(NotSettled) as raised:
        settle(ping, pong, timeout=0.5)
    assert isinstance(raised.value, AssertionError)
    assert set(raised.value.queues) <= {"ping.events", "pong.events"} and raised.value.queues
    assert re.search(r"(ping|pong)\.events \(1 (delivered in the last pass|ready)", str(raised.value))
    assert raised.value.settled.total.handled > 2


def test_settle_raises_for_a_handler_that_feeds_its_own_queue(memory_broker: str) -> None:
    echo = _relay(memory_broker, "echo", "Booking.created", ("shop.models.Booking", "created"))
    echo.declare()
    _book(echo)
    started = time.monotonic()
    with pytest.raises(NotSettled, match=r"echo\.events \("):
        settle(echo, timeout=0.5)
    assert time.monotonic() - started < 5  # the drain itself never empties: settle's timeout bounds it


def test_settle_takes_memory_apps_only() -> None:
    with pytest.raises(ConfigurationError, match="memory:// apps only"):
        settle(PubSub("amqp://guest:guest@127.0.0.1:5672/%2F", service_name="x"))
    with pytest.raises(ConfigurationError, match="needs the apps"):
        settle()
    with pytest.raises(ConfigurationError, match="timeout"):
        settle(_app("memory://"), timeout=0)


# -- capture -----------------------------------------------------------------------------------
def test_capture_records_typed_publishes_and_handler_runs(memory_broker: str) -> None:
    shop, billing = _app(memory_broker, "shop"), _app(memory_broker, "billing")

    @billing.subscribe("Booking.created")
    def bill(event: Booked, info: MessageInfo) -> None:
        if info.attempt == 1:
            raise ConnectionError("ledger down")
        billing.publish_model_event("billing.models.Invoice", "issued", {"booking": event.id},
                                    correlation_id=info.message_id)

    billing.declare()
    before = billing.middleware.middleware if billing.middleware else ()
    with capture(shop, billing) as seen:
        booked = _book(shop, 9)
        shop.publish_model_event("billing.models.Invoice", "issued", {"booking": 0})  # nobody subscribes
        settle(shop, billing)
    _book(shop, 10)  # after the block: not recorded

    [first, lost] = seen.published(app=shop)
    assert isinstance(first.event, Booked) and first.event.id == 9
    assert (first.message_id, first.routing_key, first.service, first.routed) == (booked, "Booking.created",
                                                                                  "shop", True)
    assert lost.routed is False
    [invoice] = seen.published(Invoiced, app=billing)
    assert invoice.event.booking == 9 and invoice.correlation_id == booked
    assert seen.published(Booked, app=billing) == []

    runs = seen.handled(Booked, handler=bill)
    assert [(run.outcome, run.attempt, run.message_id) for run in runs] == [
        (Outcome.RETRIED, 1, booked), (Outcome.HANDLED, 2, booked)]
    assert isinstance(runs[0].exception, ConnectionError) and runs[0].reason is None and runs[1].ok
    assert runs[1].event.id == 9 and runs[1].service == "billing" and runs[1].routing_key == "Booking.created"
    assert seen.handled(handler="tests.test_testing_helpers.nothing") == []
    assert seen.handled(Invoiced) == [] and len(seen.handled(app=billing)) == 2
    after = billing.middleware.middleware if billing.middleware else ()
    assert after == before  # the recorder is gone


def test_captures_nest_and_see_events_without_a_schema(memory_broker: str) -> None:
    app = PubSub(memory_broker, service_name="loose", require_schemas=False, telemetry=False)

    @app.subscribe("Note.#")
    def note(event: dict) -> None:  # type: ignore[type-arg]
        pass

    app.declare()
    with capture(app) as outer:
        with capture(app) as inner:
            app.publish_model_event("notes.Note", "added", {"text": "hi"})
        app.drain(timeout=5)
    assert [p.event for p in outer.published()] == [{"text": "hi"}] == [p.event for p in inner.published(dict)]
    assert [h.event for h in outer.handled(dict)] == [{"text": "hi"}] and inner.handled() == []
    assert app.middleware is None


# -- the plugin ----------------------------------------------------------------------------------
def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, **env})


def test_importing_the_plugin_imports_no_django_nor_pika_and_nothing_else() -> None:
    done = _python("import pubsubpy._pytest_plugin, sys; "
                   "assert 'django' not in sys.modules and 'pika' not in sys.modules")
    assert done.returncode == 0, done.stderr
    done = _python("import sys, logging, warnings, pytest, pubsubpy\n"
                   "modules, handlers = set(sys.modules), list(logging.root.handlers)\n"
                   "filters = list(warnings.filters)\n"
                   "import pubsubpy._pytest_plugin\n"
                   "assert set(sys.modules) - modules == {'pubsubpy._pytest_plugin'}, set(sys.modules) - modules\n"
                   "assert logging.root.handlers == handlers and warnings.filters == filters\n"
                   "assert pubsubpy.get_default().configured is False")
    assert done.returncode == 0, done.stderr


def test_the_entry_point_loads_the_fixture_and_no_pubsubpy_turns_it_off(tmp_path: pathlib.Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}
    if not importlib.metadata.entry_points(group="pytest11", name="pubsubpy"):
        # The installed metadata predates the entry point in pyproject.toml: give pytest the same one.
        info = tmp_path / "site" / "pubsubpy_plugin_probe-0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pubsubpy-plugin-probe\nVersion: 0\n")
        (info / "entry_points.txt").write_text("[pytest11]\npubsubpy = pubsubpy._pytest_plugin\n")
        env["PYTHONPATH"] = os.pathsep.join([str(info.parent), str(ROOT), env.get("PYTHONPATH", "")])
    (tmp_path / "test_probe.py").write_text(
        "def test_url(memory_broker):\n    assert memory_broker.startswith('memory://test-')\n")

    def pytest_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args,
                               "test_probe.py"], capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)

    on = pytest_run()
    assert on.returncode == 0, on.stdout + on.stderr
    off = pytest_run("-p", "no:pubsubpy")
    assert off.returncode != 0 and "fixture 'memory_broker' not found" in off.stdout, off.stdout + off.stderr


def test_the_fixture_dropped_its_broker() -> None:
    if not _FIXTURE_BROKERS:
        pytest.skip("test_the_fixture_gives_each_test_its_own_broker_and_drops_it did not run first")
    assert [name for name in _FIXTURE_BROKERS if name in pubsubpy.transports.memory._named] == []


# -- the how-to --------------------------------------------------------------------------------
def test_the_how_to_shows_the_worked_example_as_tested() -> None:
    source = pathlib.Path(__file__).read_text()
    example = source.split("# -- the worked example")[1].split("\n", 1)[1].split("# -- end of the worked example")[0]
    how_to = (ROOT / "docs" / "how-to" / "testing.md").read_text()
    assert example.strip() in how_to
    body = example.split("def test_a_booking_is_billed_then_mailed")[0]
    assert len(example.strip().splitlines()) - len(body.strip().splitlines()) < 25


class Ping(ModelEvent, model="tests.Ping", event="sent", register=False):
    n: int


def test_reset_keeps_every_field_of_a_subscription(memory_broker: str) -> None:
    """``reset()`` copies the subscriptions made at import time; an ``async def`` handler must stay one (it
    was copied as a plain function: under AsyncPubSub it returned a coroutine, was retried, then
    dead-lettered), and so must every other field."""
    import asyncio
    import dataclasses

    import pubsubpy
    from pubsubpy.aio import AsyncPubSub
    from pubsubpy.testing import reset

    reset(subscriptions=True)
    ran: list[int] = []

    @pubsubpy.subscribe("Ping.sent", max_attempts=2)
    async def on_ping(event: Ping, info: MessageInfo) -> None:
        await asyncio.sleep(0)
        ran.append(event.n)

    before = [dataclasses.asdict(sub) for sub in pubsubpy.get_default().router.subscriptions]
    reset()  # keeps the subscriptions made so far
    try:
        after = [dataclasses.asdict(sub) for sub in pubsubpy.get_default().router.subscriptions]
        assert after == before
        pubsubpy.init(memory_broker, service_name="pinger", schemas=[Ping])

        async def main() -> int:
            app = AsyncPubSub.of(pubsubpy.get_default())
            await app.declare()
            await app.publish_model_event("tests.Ping", "sent", {"n": 7})
            result = await app.drain(timeout=5)
            return result.handled

        assert asyncio.run(main()) == 1 and ran == [7]
    finally:
        reset(subscriptions=True)
