"""shards=N on the real broker (issue 29): worker processes of one service share the shard queues, a key's
events are applied in order across hand-overs (a worker joining mid-load, one SIGKILLed), and a killed
worker's shards are taken by the others within seconds."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from pubsubpy import PubSub
from tests.conftest import Names, free_port, wait_for
from tests.shard_events import ORDER, OrderUpdated, SqliteInbox

ROOT = Path(__file__).resolve().parent.parent
SHARDS = 4


class Run:
    """Worker processes of one sharded service, the events published to them, and what they applied."""

    def __init__(self, url: str, names: Names, tmp: Path, queue_type: str = "classic") -> None:
        self.url, self.log = url, tmp / "applied.txt"
        self.inbox: Path | None = None  # set: the workers apply through tests.shard_app.SqliteInbox
        self.env: dict[str, str] = {"SHARD_QUEUE_TYPE": queue_type}  # for the workers started next
        self.exchange, self.service = names.exchange(), names.service()
        self.workers: list[subprocess.Popen[str]] = []
        self.publisher = PubSub(url, schemas=[OrderUpdated], model_exchange=self.exchange)
        self.published: dict[int, list[int]] = defaultdict(list)
        declarer = PubSub(url, schemas=[OrderUpdated], model_exchange=self.exchange, service_name=self.service,
                          shards=SHARDS, queue_type=queue_type)  # type: ignore[arg-type]
        declarer.subscribe("Order.updated", ordered=True)(_placeholder)
        declarer.declare()  # at deploy time: nothing published before the first worker starts is lost
        declarer.close()

    def start(self, concurrency: int = 4, jitter_ms: int = 5, *more: str) -> subprocess.Popen[str]:
        env = {**os.environ, "PUBSUBPY_TEST_URL": self.url, "SHARD_EXCHANGE": self.exchange,
               "SHARD_SERVICE": self.service, "SHARD_COUNT": str(SHARDS), "SHARD_LOG": str(self.log),
               "SHARD_JITTER_MS": str(jitter_ms), **self.env,
               **({"SHARD_INBOX": str(self.inbox)} if self.inbox is not None else {})}
        worker = subprocess.Popen(
            [sys.executable, "-m", "pubsubpy.cli", "worker", "--app", "tests.shard_app:app",
             "--concurrency", str(concurrency), *more], cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        self.workers.append(worker)
        return worker

    def publish(self, keys: range, versions: range) -> None:
        events = [(ORDER, "updated", {"id": key, "version": version})
                  for version, key in itertools.product(versions, keys)]
        for start in range(0, len(events), 200):
            self.publisher.publish_many(events[start:start + 200])
        for version, key in itertools.product(versions, keys):
            self.published[key].append(version)

    def applied(self) -> list[tuple[int, int, str, int]]:
        if self.inbox is not None:
            if not self.inbox.exists():
                return []
            with contextlib.closing(sqlite3.connect(self.inbox, timeout=60)) as db:
                try:
                    return [(int(k), int(v), str(m), int(p)) for k, v, m, p in
                            db.execute("SELECT key, version, message_id, pid FROM applied ORDER BY rowid")]
                except sqlite3.OperationalError:  # not created yet
                    return []
        if not self.log.exists():
            return []
        rows = []
        for line in self.log.read_text().splitlines():
            key, version, message_id, pid = line.split()
            rows.append((int(key), int(version), message_id, int(pid)))
        return rows

    def wait_for_all(self, timeout: float) -> None:
        total = sum(len(v) for v in self.published.values())
        wait_for(lambda: len({row[2] for row in self.applied()}) >= total, timeout=timeout, step=0.2,
                 what=f"{total} events applied")

    def check(self) -> tuple[int, int, int]:
        """(order violations, lost, duplicates): a key's events first applied out of their published order,
        events never applied, and events applied more than once."""
        seen: set[str] = set()
        first: dict[int, list[int]] = defaultdict(list)
        duplicates = 0
        for key, version, message_id, _pid in self.applied():
            if message_id in seen:
                duplicates += 1
                continue
            seen.add(message_id)
            first[key].append(version)
        violations = sum(1 for key, versions in first.items() for a, b in itertools.pairwise(versions) if b < a)
        lost = sum(len(set(self.published[key]) - set(first.get(key, []))) for key in self.published)
        return violations, lost, duplicates

    def stop(self) -> list[str]:
        outputs = []
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                output, _ = worker.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                output, _ = worker.communicate()
            outputs.append(output)
            print(f"--- worker {worker.pid} (exit {worker.returncode}):\n{output[-4000:]}")  # shown on a failure
        self.publisher.close()
        return outputs


def _placeholder(event: OrderUpdated) -> None: ...


@pytest.fixture(params=["classic", "quorum"])
def run(request: pytest.FixtureRequest, rabbit_url: str, names: Names, tmp_path: Path) -> Run:
    return Run(rabbit_url, names, tmp_path, request.param)


def _pids(run: Run) -> set[int]:
    return {row[3] for row in run.applied()}


def test_two_workers_keep_every_keys_order_while_the_second_one_joins_mid_load(run: Run) -> None:
    first = run.start(jitter_ms=20)
    try:
        run.publish(range(60), range(1, 21))
        wait_for(lambda: len(run.applied()) >= 100, timeout=60, what="the first worker applying events")
        run.start(jitter_ms=20)  # takes about half the shards while the first worker is busy with them
        version = 21
        until = time.monotonic() + 60
        while len(_pids(run)) < 2 and time.monotonic() < until:  # events keep coming until it has some
            run.publish(range(60), range(version, version + 1))
            version += 1
            time.sleep(0.2)
        run.publish(range(60), range(version, version + 5))
        run.wait_for_all(timeout=120)
        assert len(_pids(run)) == 2, "both workers applied events"
        assert run.check() == (0, 0, 0)
    finally:
        outputs = run.stop()
    assert first.returncode == 0, outputs[0]
    assert f"releases {run.service}.shard." in outputs[0], outputs[0]


def test_a_killed_workers_shards_are_taken_within_ten_seconds_and_nothing_is_lost(run: Run) -> None:
    victim, survivor = run.start(), run.start()
    try:
        run.publish(range(40), range(1, 11))
        wait_for(lambda: len(_pids(run)) == 2, timeout=60, what="both workers applying events")
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed_at = time.monotonic()
        run.publish(range(40), range(11, 16))
        run.wait_for_all(timeout=120)
        taken = time.monotonic() - killed_at
        violations, lost, duplicates = run.check()
        assert (violations, lost) == (0, 0)
        assert duplicates <= 4 * 4, "only what the kill left unacked (a window per shard) runs twice"
        assert taken < 10 + 5, f"the survivor took the killed worker's shards in {taken:.1f} s"
    finally:
        outputs = run.stop()
    assert survivor.returncode == 0, outputs[1]


def _started(run: Run, key: int, version: int) -> set[int]:
    """The pids of the workers that started running (key, version)."""
    path = Path(f"{run.log}.started")
    lines = path.read_text().splitlines() if path.exists() else []
    return {int(pid) for k, v, _m, pid in (line.split() for line in lines) if (int(k), int(v)) == (key, version)}


@pytest.mark.slow  # about 25 s: a freeze past the heartbeat timeout
def test_a_worker_frozen_past_the_heartbeat_cannot_apply_an_older_event_after_its_shard_moved(
        run: Run, tmp_path: Path) -> None:
    """SIGSTOP a worker in the middle of an event, past the heartbeat timeout: the other worker takes its
    shard and applies that event and newer ones; resumed, the frozen worker finishes its run, and the stale
    guard (an ordered, idempotent subscription) keeps it from writing over them."""
    key = 7
    run.inbox = tmp_path / "inbox.sqlite3"
    SqliteInbox.create(str(run.inbox))
    run.env |= {"SHARD_HEARTBEAT": "2", "SHARD_SLOW_KEY": str(key), "SHARD_SLOW_SECONDS": "3"}
    workers = [run.start(), run.start()]
    try:
        run.publish(range(20), range(1, 2))
        run.wait_for_all(timeout=60)
        owner = next(pid for k, _v, _m, pid in run.applied() if k == key)
        frozen = next(worker for worker in workers if worker.pid == owner)
        run.publish(range(key, key + 1), range(2, 3))
        wait_for(lambda: owner in _started(run, key, 2), timeout=30, what="the owner starting the slow event")
        frozen.send_signal(signal.SIGSTOP)
        try:
            run.publish(range(key, key + 1), range(3, 5))
            wait_for(lambda: {row[1] for row in run.applied() if row[0] == key} >= {2, 3, 4}, timeout=60,
                     what="the other worker applying the frozen worker's event and the newer ones")
        finally:
            frozen.send_signal(signal.SIGCONT)
        run.publish(range(20), range(5, 6))  # both workers again, the thawed one included
        run.wait_for_all(timeout=60)
    finally:
        outputs = run.stop()  # a graceful stop: the thawed worker's late run ends (and is refused) first
    assert all(worker.returncode == 0 for worker in workers), outputs
    applied_by = {row[3] for row in run.applied() if (row[0], row[1]) == (key, 2)}
    assert applied_by and owner not in applied_by, "the event was applied by the worker that took the shard"
    assert len(_started(run, key, 2)) == 2, "both ran it: the frozen worker's run ended after the thaw"
    assert run.check() == (0, 0, 0)


def test_topology_shows_the_shards_and_the_worker_consuming_them(rabbit_url: str, names: Names) -> None:
    from pubsubpy.cli._topology_view import describe, to_text
    from tests.conftest import running_worker

    app = PubSub(rabbit_url, schemas=[OrderUpdated], model_exchange=names.exchange(), service_name=names.service(),
                 shards=2)
    app.subscribe("Order.updated", ordered=True)(_placeholder)
    app.declare()
    with running_worker(app):
        wait_for(lambda: all(info is not None and info.consumers == 1 for info in (
            app.transport.queue_info(f"{app.settings.service_name}.shard.{n}") for n in range(2))),
            timeout=30, what="the worker consuming both shards")
        view = describe(app)
    shards = [queue for queue in view.queues if queue.role == "shard"]
    assert [queue.name for queue in shards] == [f"{app.settings.service_name}.shard.{n}" for n in range(2)]
    assert all(len(queue.owners) == 1 and queue.consumers == 1 for queue in shards), shards
    text = to_text(view)
    assert f"-> {app.settings.service_name}.shards: " in text and "x-consistent-hash on pubsubpy-key" in text, text
    assert "owner " in text, text
    app.close()


def test_raising_shards_version_moves_new_events_and_finishes_the_old_shards_first(
        rabbit_url: str, names: Names) -> None:
    """Re-sharding on the broker (2 shards to 3): the ordered bindings move to generation 2 at declare, and a
    worker consumes what generation 1 holds before generation 2, so every key stays in order."""
    from tests.conftest import running_worker

    exchange, service = names.exchange(), names.service()
    before = PubSub(rabbit_url, schemas=[OrderUpdated], model_exchange=exchange, service_name=service, shards=2)
    before.subscribe("Order.updated", ordered=True)(_placeholder)
    before.declare()
    before.publish_many([(ORDER, "updated", {"id": key, "version": version})
                         for version, key in itertools.product(range(1, 6), range(30))])
    app = PubSub(rabbit_url, schemas=[OrderUpdated], model_exchange=exchange, service_name=service, shards=3,
                 shards_version=2)
    applied: list[tuple[int, int]] = []

    @app.subscribe("Order.updated", ordered=True)
    def on_order(event: OrderUpdated) -> None:
        time.sleep(0.002)
        applied.append((event.id, event.version))

    app.declare()
    app.publish_many([(ORDER, "updated", {"id": key, "version": version})
                      for version, key in itertools.product(range(6, 11), range(30))])
    depth = app.transport.queue_depth
    assert sum(depth(f"{service}.shard.{n}") for n in range(2)) == 150, "new events no longer reach generation 1"
    assert sum(depth(f"{service}.shard.v2.{n}") for n in range(3)) == 150
    with running_worker(app, concurrency=4):
        wait_for(lambda: len(applied) >= 300, timeout=60, what="both generations consumed")
    for key in range(30):
        assert [v for k, v in applied if k == key] == list(range(1, 11))
    for each in (before, app):
        each.close()


@pytest.mark.parametrize("run", ["classic"], indirect=True)
def test_a_sharded_workers_probe_and_metrics_cover_its_shards(run: Run) -> None:
    port = free_port()
    run.start(4, 5, "--metrics-port", str(port))
    try:
        def answer(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as error:
                return error.code, error.read().decode()
            except OSError:
                return 0, ""

        wait_for(lambda: f"{SHARDS} shard queue(s)" in answer("/healthz")[1], timeout=30,
                 what="/healthz to count the worker's shards")
        assert answer("/healthz") == (200, f"consuming from {run.service}.events and {SHARDS} shard queue(s)\n")
        run.publish(range(20), range(1, 3))
        run.wait_for_all(timeout=30)
        text = answer("/metrics")[1]
        for n in range(SHARDS):
            assert f'pubsubpy_queue="{run.service}.shard.{n}"' in text, text[-3000:]
        consumed = [line for line in text.splitlines() if line.startswith("messaging_client_consumed_messages_total")
                    and f":{run.service}.shard." in line]  # the destination: exchange:routing key:queue
        assert sum(float(line.rsplit(" ", 1)[1]) for line in consumed) == 40, consumed
    finally:
        run.stop()


def _holdings(run: Run) -> dict[str, list[str]]:
    """Which shard queues each live worker says it consumes (heard on the presence exchange)."""
    from pubsubpy._consume.presence import shard_owners

    return shard_owners(run.publisher.transport, f"{run.service}.presence")


@pytest.mark.slow  # about 30 s: three workers join, one is SIGKILLed
@pytest.mark.parametrize("run", ["classic"], indirect=True)
def test_shards_are_spread_over_the_live_workers_and_a_killed_ones_are_taken_over(run: Run) -> None:
    """Balance: every shard has one owner and no worker holds more than its fair share rounded up, after
    workers join and after one is SIGKILLed (its shards go to the others within 10 s)."""
    workers = [run.start(), run.start(), run.start()]
    try:
        def balanced(count: int) -> bool:
            held = _holdings(run)
            owned = sorted(queue for queues in held.values() for queue in queues)
            return len(held) == count and owned == sorted(f"{run.service}.shard.{n}" for n in range(SHARDS)) \
                and max(len(queues) for queues in held.values()) <= -(-SHARDS // count)

        wait_for(lambda: balanced(3), timeout=30, step=0.5, what="three workers sharing the shards")
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(10)
        killed_at = time.monotonic()
        wait_for(lambda: balanced(2), timeout=20, step=0.5, what="two workers sharing every shard")
        assert time.monotonic() - killed_at < 10 + 3, "a killed worker's shards are taken within 10 s"
        run.publish(range(20), range(1, 3))
        run.wait_for_all(timeout=30)
        assert run.check() == (0, 0, 0)
    finally:
        run.stop()


def test_declare_prune_removes_the_bindings_of_shards_turned_off_or_of_an_earlier_generation(
        rabbit_url: str, names: Names) -> None:
    exchange, service = names.exchange(), names.service()

    def app(**options: object) -> PubSub:
        made = PubSub(rabbit_url, schemas=[OrderUpdated], model_exchange=exchange, service_name=service,
                      **options)  # type: ignore[arg-type]
        made.subscribe("Order.updated", ordered=True)(_placeholder)
        return made

    first, second, off = app(shards=2), app(shards=3, shards_version=2), app()
    first.declare()
    second.declare()  # moves the binding to generation 2 itself; generation 1's record is stale
    assert second.stale_bindings() == [f"Order.updated -> {service}.shards"]
    second.declare(prune=True)
    assert second.stale_bindings() == []
    assert off.stale_bindings() == [f"Order.updated -> {service}.shards.v2"]
    off.declare(prune=True)
    assert off.stale_bindings() == []
    off.publish_model_event(ORDER, "updated", {"id": 1, "version": 1})
    depth = off.transport.queue_depth
    assert depth(f"{service}.events") == 1
    assert sum(depth(f"{service}.shard.v2.{n}") for n in range(3)) == 0, "nothing goes to the shards any more"
    for each in (first, second, off):
        each.close()
