"""shards=N on the real broker (issue 29): worker processes of one service share the shard queues, a key's
events are applied in order across hand-overs (a worker joining mid-load, one SIGKILLed), and a killed
worker's shards are taken by the others within seconds."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from pubsubpy import PubSub
from tests.conftest import Names, wait_for
from tests.shard_events import ORDER, OrderUpdated

ROOT = Path(__file__).resolve().parent.parent
SHARDS = 4


class Run:
    """Worker processes of one sharded service, the events published to them, and what they applied."""

    def __init__(self, url: str, names: Names, tmp: Path) -> None:
        self.url, self.log = url, tmp / "applied.txt"
        self.exchange, self.service = names.exchange(), names.service()
        self.workers: list[subprocess.Popen[str]] = []
        self.publisher = PubSub(url, schemas=[OrderUpdated], model_exchange=self.exchange)
        self.published: dict[int, list[int]] = defaultdict(list)
        declarer = PubSub(url, schemas=[OrderUpdated], model_exchange=self.exchange, service_name=self.service,
                          shards=SHARDS)
        declarer.subscribe("Order.updated", ordered=True)(_placeholder)
        declarer.declare()  # at deploy time: nothing published before the first worker starts is lost
        declarer.close()

    def start(self, concurrency: int = 4, jitter_ms: int = 5) -> subprocess.Popen[str]:
        env = {**os.environ, "PUBSUBPY_TEST_URL": self.url, "SHARD_EXCHANGE": self.exchange,
               "SHARD_SERVICE": self.service, "SHARD_COUNT": str(SHARDS), "SHARD_LOG": str(self.log),
               "SHARD_JITTER_MS": str(jitter_ms)}
        worker = subprocess.Popen(
            [sys.executable, "-m", "pubsubpy.cli", "worker", "--app", "tests.shard_app:app",
             "--concurrency", str(concurrency)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
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
        self.publisher.close()
        return outputs


def _placeholder(event: OrderUpdated) -> None: ...


@pytest.fixture
def run(rabbit_url: str, names: Names, tmp_path: Path) -> Run:
    return Run(rabbit_url, names, tmp_path)


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
    assert "releases shard" in outputs[0], outputs[0]


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
