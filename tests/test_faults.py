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
