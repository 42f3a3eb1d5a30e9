"""ordered=True on every backend: one key's events run one at a time and in order, a failure is retried in
its lane, and with idempotent=True the inbox skips stale events (issue 27's probe, on both transports)."""

from __future__ import annotations

import threading
import time

import pytest

from pubsubpy import ConfigurationError, MessageInfo, ModelEvent
from pubsubpy.testing import MemoryInbox
from tests.contract.conftest import Backend

ORDER = "shop.models.Order"


class OrderUpdated(ModelEvent, model=ORDER, event="updated", key="id", sequence="version", register=False):
    id: int
    status: str
    version: int


class OrderCreated(ModelEvent, model=ORDER, event="created", key="id", register=False):
    id: int
    status: str


SCHEMAS = [OrderUpdated, OrderCreated]


class Flaky:
    """A handler body that fails the first time it sees each (id, status) in ``fail_once``."""

    def __init__(self, fail_once: set[tuple[int, str]]) -> None:
        self.fail_once = set(fail_once)
        self.state: dict[int, str] = {}
        self.applied: list[tuple[int, str]] = []
        self.running: set[int] = set()
        self.overlaps = 0
        self.lock = threading.Lock()

    def __call__(self, event: OrderUpdated, pause: float = 0.0) -> None:
        with self.lock:
            if event.id in self.running:
                self.overlaps += 1
            self.running.add(event.id)
        try:
            if pause:
                time.sleep(pause)
            with self.lock:
                if (event.id, event.status) in self.fail_once:
                    self.fail_once.discard((event.id, event.status))
                    raise TimeoutError("database timeout")
                self.state[event.id] = event.status
                self.applied.append((event.id, event.status))
        finally:
            with self.lock:
                self.running.discard(event.id)


@pytest.mark.parametrize("concurrency", [1, 8])
def test_a_transient_failure_on_paid_then_cancelled_ends_cancelled(backend: Backend, concurrency: int) -> None:
    app = backend.app(schemas=SCHEMAS, retry_delay=0.2)
    flaky = Flaky({(1, "paid")})

    @app.subscribe("Order.updated", ordered=True)
    def on_order(event: OrderUpdated, info: MessageInfo) -> None:
        assert info.key == f"{ORDER}:{event.id}"
        flaky(event, pause=0.002)

    app.declare()
    for version, status in enumerate(["paid", "cancelled"], start=1):
        app.publish_model_event(ORDER, "updated", {"id": 1, "status": status, "version": version})
    for other in range(2, 30):  # other keys, so a concurrent drain has parallel work
        app.publish_model_event(ORDER, "updated", {"id": other, "status": "paid", "version": 1})
    result = app.drain(timeout=30, concurrency=concurrency)
    assert flaky.state[1] == "cancelled", flaky.applied
    assert [s for i, s in flaky.applied if i == 1] == ["paid", "cancelled"]
    assert result.handled == 30 and result.retried == 0 and result.dead_lettered == 0, result
    assert flaky.overlaps == 0


def test_one_key_runs_one_at_a_time_and_keys_run_in_parallel(backend: Backend) -> None:
    app = backend.app(schemas=SCHEMAS)
    flaky = Flaky(set())
    seen_together = threading.Event()
    running: set[int] = set()
    lock = threading.Lock()

    @app.subscribe("Order.updated", ordered=True)
    def on_order(event: OrderUpdated) -> None:
        with lock:
            running.add(event.id)
            if len(running) > 1:
                seen_together.set()
        try:
            seen_together.wait(0.05)
            flaky(event)
        finally:
            with lock:
                running.discard(event.id)

    app.declare()
    for version in range(1, 6):
        for key in (1, 2, 3):
            app.publish_model_event(ORDER, "updated", {"id": key, "status": f"s{version}", "version": version})
    result = app.drain(timeout=30, concurrency=4)
    assert result.handled == 15, result
    assert flaky.overlaps == 0, "two events of one key ran at once"
    for key in (1, 2, 3):
        assert [s for i, s in flaky.applied if i == key] == [f"s{v}" for v in range(1, 6)]
    assert seen_together.is_set(), "different keys never ran in parallel"


def test_a_key_out_of_attempts_is_dead_lettered_and_its_key_goes_on(backend: Backend) -> None:
    app = backend.app(schemas=SCHEMAS, retry_delay=0.05, max_attempts=2)
    applied: list[str] = []

    @app.subscribe("Order.updated", ordered=True)
    def on_order(event: OrderUpdated) -> None:
        if event.status == "broken":
            raise ValueError("always fails")
        applied.append(event.status)

    app.declare()
    for version, status in enumerate(["paid", "broken", "cancelled"], start=1):
        app.publish_model_event(ORDER, "updated", {"id": 7, "status": status, "version": version})
    result = app.drain(timeout=30)
    assert applied == ["paid", "cancelled"]
    assert result.dead_lettered == 1 and result.handled == 2 and result.retried == 0, result
    [letter] = app.list_dead_letters()
    assert letter.reason == "handler_error" and letter.attempts == 2


def test_a_replayed_dead_letter_older_than_the_key_is_skipped_as_stale(backend: Backend) -> None:
    inbox = MemoryInbox()
    app = backend.app(schemas=SCHEMAS, inbox=inbox, max_attempts=1)
    state: dict[int, str] = {}
    broken = {"paid"}

    @app.subscribe("Order.updated", ordered=True, idempotent=True)
    def on_order(event: OrderUpdated) -> None:
        if event.status in broken:
            raise ValueError("a bug, fixed later")
        state[event.id] = event.status

    app.declare()
    app.publish_model_event(ORDER, "updated", {"id": 3, "status": "paid", "version": 1})
    app.publish_model_event(ORDER, "updated", {"id": 3, "status": "cancelled", "version": 2})
    first = app.drain(timeout=30)
    assert first.dead_lettered == 1 and state == {3: "cancelled"}, first
    broken.clear()  # the bug is fixed; the dead letter is replayed a day later
    assert len(app.replay_dead_letters()) == 1
    second = app.drain(timeout=30)
    assert second.handled == 1 and second.stale == 1, second
    assert state == {3: "cancelled"}, "the replay rolled the order back"
    assert inbox.sequences[(on_order_name(app), f"{ORDER}:3")] == 2


def on_order_name(app: object) -> str:
    return f"{__name__}.test_a_replayed_dead_letter_older_than_the_key_is_skipped_as_stale.<locals>.on_order"


def test_an_event_matching_an_ordered_and_a_plain_subscription_runs_each_once(backend: Backend) -> None:
    app = backend.app(schemas=SCHEMAS, retry_delay=0.05)
    ordered: list[str] = []
    plain: list[str] = []
    fail_plain = {"paid"}

    @app.subscribe("Order.updated", ordered=True)
    def in_order(event: OrderUpdated) -> None:
        ordered.append(event.status)

    @app.subscribe("Order.updated")
    def audit(event: OrderUpdated) -> None:
        if event.status in fail_plain:
            fail_plain.discard(event.status)
            raise ValueError("transient")
        plain.append(event.status)

    app.declare()
    app.publish_model_event(ORDER, "updated", {"id": 4, "status": "paid", "version": 1})
    first = app.drain(timeout=30)
    assert first.retried == 1 and ordered == ["paid"], first  # the plain handler's retry goes through a retry queue
    deadline = time.monotonic() + 20
    while not plain and time.monotonic() < deadline:
        app.drain(timeout=5)
    assert ordered == ["paid"] and plain == ["paid"], "the retry copy runs only the handler that failed"


def test_ordered_and_idempotent_needs_an_inbox_with_the_stale_guard(backend: Backend) -> None:
    class OnlyOnce:
        def run_once(self, message_id: str, handler: str, call: object) -> bool:
            return True

    app = backend.app(schemas=SCHEMAS, inbox=OnlyOnce())

    @app.subscribe("Order.updated", ordered=True, idempotent=True)
    def on_order(event: OrderUpdated) -> None: ...

    with pytest.raises(ConfigurationError, match="run_in_order"):
        app.drain(timeout=5)


def test_a_held_key_holds_only_its_own_later_events(backend: Backend) -> None:
    app = backend.app(schemas=SCHEMAS, retry_delay=0.3)
    flaky = Flaky({(1, "paid")})

    @app.subscribe("Order.updated", ordered=True)
    def on_order(event: OrderUpdated) -> None:
        flaky(event)

    app.declare()
    app.publish_model_event(ORDER, "updated", {"id": 1, "status": "paid", "version": 1})
    app.publish_model_event(ORDER, "updated", {"id": 1, "status": "cancelled", "version": 2})
    for other in (2, 3, 4):
        app.publish_model_event(ORDER, "updated", {"id": other, "status": "paid", "version": 1})
    result = app.drain(timeout=30, concurrency=1)
    assert result.handled == 5, result
    assert flaky.applied == [(2, "paid"), (3, "paid"), (4, "paid"), (1, "paid"), (1, "cancelled")], \
        "while key 1 waited out its retry delay, the other keys ran (even at concurrency=1)"


def test_in_lane_retries_stop_at_half_of_consumer_timeout(backend: Backend) -> None:
    app = backend.app(schemas=SCHEMAS, retry_delay=0.15, max_attempts=10, consumer_timeout=0.4)
    runs: list[str] = []

    @app.subscribe("Order.updated", ordered=True)
    def on_order(event: OrderUpdated) -> None:
        runs.append(event.status)
        if event.status == "paid":
            raise TimeoutError("still down")

    app.declare()
    app.publish_model_event(ORDER, "updated", {"id": 5, "status": "paid", "version": 1})
    app.publish_model_event(ORDER, "updated", {"id": 5, "status": "cancelled", "version": 2})
    result = app.drain(timeout=30)
    assert runs == ["paid", "paid", "cancelled"], "a retry 0.15s later fits in 0.2s; the next, 0.3s later, does not"
    assert result.dead_lettered == 1 and result.handled == 1, result
    [letter] = app.list_dead_letters()
    assert letter.attempts == 2 and "still down" in (letter.error or "")


def test_foreign_ordered_messages_without_a_key_or_with_a_bad_sequence(backend: Backend,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    inbox = MemoryInbox()
    app = backend.app(schemas=SCHEMAS, inbox=inbox)
    seen: list[tuple[str | None, int | None, str]] = []

    @app.subscribe("Order.updated", ordered=True, idempotent=True)
    def on_order(event: OrderUpdated, info: MessageInfo) -> None:
        seen.append((info.key, info.sequence, event.status))

    app.declare()
    exchange = app.settings.model_exchange
    body = b'{"id": 9, "status": "%s", "version": 1}'
    backend.foreign_publish(exchange, "Order.updated", body % b"keyless", content_type="application/json",
                            message_id="f-1")
    backend.foreign_publish(exchange, "Order.updated", body % b"negative", content_type="application/json",
                            message_id="f-2", headers={"pubsubpy-key": f"{ORDER}:9", "pubsubpy-sequence": -5})
    backend.foreign_publish(exchange, "Order.updated", body % b"good", content_type="application/json",
                            message_id="f-3", headers={"pubsubpy-key": f"{ORDER}:9", "pubsubpy-sequence": 4})
    result = app.drain(timeout=30)
    assert result.handled == 3 and result.stale == 0, result
    assert seen == [(None, None, "keyless"), (f"{ORDER}:9", None, "negative"), (f"{ORDER}:9", 4, "good")]
    assert "outside [0, 2**63)" in caplog.text and "without the stale guard" in caplog.text


def test_a_stale_event_far_behind_is_a_warning(backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    inbox = MemoryInbox()
    app = backend.app(schemas=SCHEMAS, inbox=inbox)
    state: dict[int, str] = {}

    @app.subscribe("Order.updated", ordered=True, idempotent=True)
    def on_order(event: OrderUpdated) -> None:
        state[event.id] = event.status

    app.declare()
    app.publish_model_event(ORDER, "updated", {"id": 6, "status": "new", "version": 5000})
    app.publish_model_event(ORDER, "updated", {"id": 6, "status": "restored", "version": 3})
    result = app.drain(timeout=30)
    assert result.stale == 1 and state == {6: "new"}, result
    warned = [r for r in caplog.records if "as stale" in r.getMessage()]
    assert warned and warned[0].levelname == "WARNING", "4,997 behind: a publisher restored from a backup?"
