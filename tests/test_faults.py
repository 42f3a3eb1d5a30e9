"""Fault injection on the real broker: connections force-closed while publishing and draining.

Every published message id must be handled at least once; duplicates are
allowed (at-least-once) and counted.
"""

from __future__ import annotations

import shutil
import threading
from collections import Counter

import pytest

from pubsubpy import MessageInfo, PubSub
from tests.conftest import IN_CI, Names, rabbitmqctl, wait_for
from tests.contract.events import ALL, BOOKING, BookingCreated

TOTAL = 5000


def _kill_connections(reason: str) -> None:
    rabbitmqctl("close_all_connections", reason)


@pytest.fixture
def ctl() -> None:
    if shutil.which("rabbitmqctl") is None:
        if IN_CI:
            pytest.fail("rabbitmqctl is needed for fault injection in CI")
        pytest.skip("rabbitmqctl not installed")


@pytest.mark.slow
def test_no_message_lost_while_connections_are_force_closed(rabbit_url: str, names: Names, ctl: None,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    app = PubSub(rabbit_url, schemas=ALL, model_exchange=names.exchange(), service_name=names.service(),
                 prefetch=100, connection_attempts=10, retry_connect_delay=0.2)
    handled: Counter[str] = Counter()
    redelivered = 0
    kills = 0
    gate = threading.Event()

    def kill_async(reason: str) -> threading.Thread:
        def run() -> None:
            nonlocal kills
            _kill_connections(reason)
            kills += 1
        thread = threading.Thread(target=run)
        thread.start()
        return thread

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated, info: MessageInfo) -> None:
        nonlocal redelivered, kills
        handled[info.message_id or ""] += 1
        redelivered += info.redelivered
        if sum(handled.values()) in (1000, 3000) and not gate.is_set():
            _kill_connections("fault test: mid-drain")  # this consumer's connection dies under it
            kills += 1
        if sum(handled.values()) == 3000:
            gate.set()

    app.declare()
    published: list[str] = []
    killers: list[threading.Thread] = []
    for i in range(TOTAL):
        if i == 1000:
            _kill_connections("fault test: between publishes")
            kills += 1
        if i in (2500, 4000):
            killers.append(kill_async("fault test: during publishes"))
        published.append(app.publish_model_event(BOOKING, "created", {"id": i, "guest": "f"}))
    for thread in killers:
        thread.join(timeout=60)

    def all_handled() -> bool:
        app.drain(timeout=30)
        return set(published) <= set(handled)

    wait_for(all_handled, timeout=120, step=0.1, what="every published message to be handled")
    duplicates = sum(handled.values()) - len(handled)
    extra_published = len(handled) - len(set(published))
    with capsys.disabled():
        print(f"\n[fault test] published {len(published)} ids, {kills} forced closes; handled {len(handled)} "
              f"distinct, {duplicates} duplicate deliveries, {redelivered} flagged redelivered, "
              f"{extra_published} unexpected ids")
    assert len(set(published)) == TOTAL
    assert set(published) <= set(handled), "no message lost"
    assert extra_published == 0
    assert kills >= 4
    app.close()


@pytest.fixture
def memory_alarm(ctl: None) -> object:
    """Trip RabbitMQ's memory alarm: the broker blocks every publishing connection until it clears."""
    rabbitmqctl("set_vm_memory_high_watermark", "0.0000001")
    try:
        yield None
    finally:
        rabbitmqctl("set_vm_memory_high_watermark", "0.4")


@pytest.mark.slow
@pytest.mark.parametrize(("confirm_timeout", "blocked_timeout", "expected"),
                         [(1.5, 60.0, "ConfirmTimeout"), (60.0, 1.5, "OperationTimeout")])
def test_a_blocked_broker_is_a_bounded_wait(rabbit_url: str, names: Names, memory_alarm: object,
                                            confirm_timeout: float, blocked_timeout: float, expected: str) -> None:
    import time

    import pubsubpy

    app = PubSub(rabbit_url, schemas=ALL, model_exchange=names.exchange(), service_name=names.service(),
                 confirm_timeout=confirm_timeout, blocked_connection_timeout=blocked_timeout,
                 connection_attempts=1)
    started = time.monotonic()
    with pytest.raises((pubsubpy.ConfirmTimeout, pubsubpy.OperationTimeout)) as excinfo:
        for i in range(50):
            app.publish_model_event(BOOKING, "created", {"id": i, "guest": "blocked"})
    elapsed = time.monotonic() - started
    assert type(excinfo.value).__name__ == expected, repr(excinfo.value)
    assert elapsed < 20, f"a blocked broker held the publisher for {elapsed:.1f}s"
    if expected == "ConfirmTimeout":
        assert "outcome is unknown" in str(excinfo.value)
    app.close()


@pytest.mark.slow
@pytest.mark.restarts  # last on its broker: after one, RabbitMQ 3.10 once stopped answering quorum-queue tests
def test_a_broker_restart_mid_drain_loses_nothing(rabbit_url: str, names: Names, ctl: None,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    app = PubSub(rabbit_url, schemas=ALL, model_exchange=names.exchange(), service_name=names.service(),
                 prefetch=50, connection_attempts=10, retry_connect_delay=0.3)
    handled: Counter[int] = Counter()

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None:
        handled[event.id] += 1
        if sum(handled.values()) == 500:
            try:  # the whole broker goes away under this consumer and comes back
                rabbitmqctl("stop_app")
            finally:
                rabbitmqctl("start_app")

    app.declare()
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "restart"}) for i in range(3000)])

    def all_handled() -> bool:
        app.drain(timeout=60)
        return len(handled) == 3000

    wait_for(all_handled, timeout=180, step=0.5, what="every message after the broker restart")
    duplicates = sum(handled.values()) - len(handled)
    with capsys.disabled():
        print(f"\n[restart test] 3000 published, broker restarted mid-drain: 3000 handled, {duplicates} duplicates")
    assert sorted(handled) == list(range(3000))
    app.close()
