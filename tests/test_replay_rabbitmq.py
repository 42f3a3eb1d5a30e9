"""The event log and replay on the real broker (issue 30): a late service's backfill and hand-over to live under
load, the same with the backfilling worker SIGKILLed at about half, a retention gap, and a rebuild."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from pubsubpy import LogGap, MessageInfo, PubSub
from pubsubpy.testing import MemoryInbox
from pubsubpy.topology import event_log_name
from tests.conftest import Names, connection_pids, wait_for
from tests.shard_events import ORDER, OrderUpdated, SqliteInbox

ROOT = Path(__file__).resolve().parent.parent


class Load:
    """Publishes ``OrderUpdated`` events (each key's versions counting up from 0) and remembers them by id."""

    def __init__(self, url: str, exchange: str) -> None:
        self.publisher = PubSub(url, schemas=[OrderUpdated], model_exchange=exchange, event_log="1D")
        self.versions: dict[int, int] = defaultdict(lambda: -1)
        self.published: dict[str, tuple[int, int]] = {}
        self.lock = threading.Lock()

    def next_events(self, keys: list[int]) -> list[tuple[str, str, dict[str, int]]]:
        events = []
        for key in keys:
            self.versions[key] += 1
            events.append((ORDER, "updated", {"id": key, "version": self.versions[key]}))
        return events

    def burst(self, total: int, keys: int) -> None:
        order = [n % keys for n in range(total)]
        for start in range(0, total, 500):
            events = self.next_events(order[start:start + 500])
            ids = self.publisher.publish_many(events)
            with self.lock:
                self.published.update(zip(ids, [(e[2]["id"], e[2]["version"]) for e in events], strict=True))

    @contextlib.contextmanager
    def steady(self, rate: float, keys: int) -> Iterator[None]:
        """Publish ``rate`` events a second, one key after another, while the block runs."""
        stop = threading.Event()

        def publish() -> None:
            for n in itertools.count():
                if stop.wait(max(0.0, started + n / rate - time.monotonic())):
                    return
                (event,) = self.next_events([n % keys])
                message_id = self.publisher.publish_model_event(*event)
                with self.lock:
                    self.published[message_id] = (event[2]["id"], event[2]["version"])

        started = time.monotonic()
        thread = threading.Thread(target=publish, name="steady-publisher")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(30)

    def check(self, handled: list[tuple[int, int, str]]) -> tuple[int, int, int]:
        """(lost, duplicate runs, order violations) of ``handled`` (key, version, message id) rows."""
        ids = [message_id for _, _, message_id in handled]
        duplicates = len(ids) - len(set(ids))
        lost = len(set(self.published) - set(ids))
        last: dict[int, int] = {}
        violations = 0
        for key, version, _ in handled:
            if version <= last.get(key, -1):
                violations += 1
            last[key] = max(version, last.get(key, -1))
        return lost, duplicates, violations

    def close(self) -> None:
        self.publisher.close()


@pytest.fixture
def load(rabbit_url: str, names: Names) -> Iterator[Load]:
    made = Load(rabbit_url, names.exchange())
    yield made
    made.close()


def test_a_late_service_backfills_20000_events_and_goes_live_with_no_gap_and_no_duplicate(
        rabbit_url: str, names: Names, load: Load) -> None:
    """20,000 events over 2,000 aggregates before the service exists; a publisher writing 200/s during the
    replay and the hand-over; a plain (not idempotent) ordered handler: each event runs exactly once, in order."""
    load.burst(20_000, 2_000)
    exchange = load.publisher.settings.model_exchange
    app = PubSub(rabbit_url, schemas=[OrderUpdated], model_exchange=exchange, service_name=names.service())
    handled: list[tuple[int, int, str]] = []

    @app.subscribe("Order.updated", ordered=True)
    def apply(event: OrderUpdated, info: MessageInfo) -> None:
        handled.append((event.id, event.version, info.message_id or ""))

    stop = threading.Event()
    worker = threading.Thread(target=app.run, kwargs={"stop": stop, "backfill": "1h"}, name="backfilling-worker")
    try:
        with load.steady(200, 2_000):
            worker.start()
            queue = app.topology().queue.name
            wait_for(lambda: (info := app.transport.queue_info(queue)) is not None and info.consumers > 0, 120,
                     step=0.1, what="the backfill to hand over to the live queue")
            time.sleep(2)  # (the publisher goes on into the live part: a bounded stretch, not a wait for a result)
        wait_for(lambda: len({row[2] for row in handled}) >= len(load.published), 60, step=0.1,
                 what=f"all {len(load.published)} events handled")
    finally:
        stop.set()
        worker.join(60)
        app.close()
    assert len(load.published) > 20_000, "the publisher wrote during the backfill"
    assert load.check(handled) == (0, 0, 0), "(lost, duplicate runs, order violations)"


@pytest.mark.slow
def test_a_backfill_sigkilled_at_half_resumes_with_none_lost_and_none_run_twice(
        rabbit_url: str, names: Names, load: Load, tmp_path: Path) -> None:
    """As above, in a worker process with an idempotent subscription (SQLite inbox keeping the checkpoint),
    SIGKILLed at about half of its backfill and started again."""
    inbox = tmp_path / "inbox.sqlite"
    SqliteInbox.create(str(inbox))
    load.burst(20_000, 2_000)
    env = {**os.environ, "PUBSUBPY_TEST_URL": rabbit_url, "REPLAY_INBOX": str(inbox),
           "REPLAY_EXCHANGE": load.publisher.settings.model_exchange, "REPLAY_SERVICE": names.service()}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "pubsubpy.cli", "worker", "--app", "tests.replay_app:app",
                                 "--backfill", "1h"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def applied() -> list[tuple[int, int, str]]:
        with contextlib.closing(sqlite3.connect(inbox, timeout=60)) as db:
            return [(int(k), int(v), str(m)) for k, v, m in
                    db.execute("SELECT key, version, message_id FROM applied ORDER BY rowid")]

    outputs: list[str] = []
    worker = start()
    try:
        with load.steady(200, 2_000):
            wait_for(lambda: len(applied()) >= 10_000, 180, step=0.2, what="half of the backfill applied")
            worker.send_signal(signal.SIGKILL)
            outputs.append(worker.communicate(timeout=30)[0])
            killed_at = len(applied())
            worker = start()
            wait_for(lambda: len(applied()) >= 20_000, 180, step=0.2, what="the restarted worker's backfill")
            time.sleep(2)  # the publisher goes on into the live part
        with contextlib.suppress(AssertionError):  # (the assertion below says what is missing)
            wait_for(lambda: len({row[2] for row in applied()}) >= len(load.published), 120, step=0.2,
                     what=f"all {len(load.published)} events applied")
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        outputs.append(worker.communicate(timeout=60)[0])
        print("\n".join(output[-3000:] for output in outputs))  # shown on a failure
    assert 10_000 <= killed_at < 20_000
    lost, duplicates, _ = load.check(applied())
    assert (lost, duplicates) == (0, 0)


def test_replay_refuses_a_window_whose_start_retention_dropped(rabbit_url: str, names: Names) -> None:
    exchange = names.exchange()
    stream = event_log_name(exchange)
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    try:  # a log with tiny segments and a tiny size cap, so retention drops its start within the test
        channel = connection.channel()
        channel.exchange_declare(exchange, "topic", durable=True)
        channel.queue_declare(stream, durable=True, arguments={
            "x-queue-type": "stream", "x-max-length-bytes": 20_000, "x-stream-max-segment-size-bytes": 4_000})
        channel.queue_bind(stream, exchange, "#")
    finally:
        connection.close()
    publisher = PubSub(rabbit_url, schemas=[OrderUpdated], model_exchange=exchange)
    since = time.time() - 5
    for start in range(0, 600, 10):  # small batches: a chunk (what one write stores) stays below a segment's size,
        # else retention may keep only the newest segment, which the replay's own markers then fill
        publisher.publish_many([(ORDER, "updated", {"id": n, "version": 0}) for n in range(start, start + 10)])
    publisher.close()
    app = PubSub(rabbit_url, schemas=[OrderUpdated], model_exchange=exchange, service_name=names.service())
    ids: list[int] = []

    @app.subscribe("Order.updated")
    def apply(event: OrderUpdated) -> None:
        ids.append(event.id)

    try:
        import datetime as dt

        window = dt.datetime.fromtimestamp(since, dt.timezone.utc)
        with pytest.raises(LogGap, match="retention dropped"):
            app.replay(since=window)
        assert ids == []
        dry = app.replay(since=window, dry_run=True)
        assert dry.gap is not None and ids == []
        result = app.replay(since=window, allow_gap=True)
        assert 0 < len(ids) < 600 and ids == sorted(ids) and ids[-1] == 599 and result.gap is not None
    finally:
        app.close()


def test_a_rebuilt_read_model_equals_the_live_one(rabbit_url: str, names: Names) -> None:
    exchange = names.exchange()
    publisher = PubSub(rabbit_url, schemas=[OrderUpdated], model_exchange=exchange, event_log="1D")
    app = PubSub(rabbit_url, schemas=[OrderUpdated], model_exchange=exchange, service_name=names.service(),
                 inbox=MemoryInbox())
    model: dict[int, int] = {}

    @app.subscribe("Order.updated", ordered=True, idempotent=True)
    def project(event: OrderUpdated) -> None:
        model[event.id] = event.version

    try:
        app.declare()
        publisher.publish_many([(ORDER, "updated", {"id": n % 50, "version": n // 50}) for n in range(500)])
        app.drain(timeout=30)
        live = dict(model)
        model.clear()
        result = app.replay(since="1h", rebuild=True)
        assert result.handled == 500 and model == live and len(live) == 50
    finally:
        publisher.close()
        app.close()


def test_a_replay_whose_connection_is_closed_attaches_again_at_the_next_offset(rabbit_url: str, names: Names) -> None:
    """The broker closes the replay's connections at its 1,000th event: it attaches again where it was, and
    every event still runs once, in order."""
    exchange, service = names.exchange(), names.service()
    publisher = PubSub(rabbit_url, schemas=[OrderUpdated], model_exchange=exchange, event_log="1D")
    ids: list[str] = []
    for start in range(0, 3000, 500):
        ids += publisher.publish_many([(ORDER, "updated", {"id": n, "version": 0}) for n in range(start, start + 500)])
    publisher.close()
    app = PubSub(rabbit_url, schemas=[OrderUpdated], model_exchange=exchange, service_name=service)
    handled: list[str] = []

    @app.subscribe("Order.updated")
    def apply(event: OrderUpdated, info: MessageInfo) -> None:
        handled.append(info.message_id or "")
        if len(handled) == 1000:
            for pid in connection_pids(service):
                subprocess.run(["rabbitmqctl", "close_connection", pid, "a test closes it"], check=True,
                               capture_output=True, timeout=60)

    try:
        result = app.replay(since="1h")
    finally:
        app.close()
    assert handled == ids and result.handled == 3000
