"""Rows for ``shards=N``: ordered subscriptions across worker processes (issue 29), against the same run
unordered.

Three worker processes (``pubsubpy worker --concurrency 8``, ``bench/shard_app.py``) consume events of many
keys, published in random key order before they start; each key's events carry an increasing ``seq``. The
handler sleeps 0-20 ms and 5% of the events fail once. Midway (half of the events handled) one worker is
SIGKILLed and started again. The ordered side runs ``shards=8`` with ``ordered=True``; the baseline the same
workers, events, handler and kill with ``shards=0`` and the subscription unordered (retries through the
retry queue), on the service queue.

- Throughput: events / (the first worker's start to the last event's first success).
- Violations: first successes of an event after a later event of its key had succeeded.
- Lost: events never handled. Duplicates: successes of an event that had already succeeded (the kill
  leaves what it had handled but not yet acked to run again).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import URL, Row, delete_app, keyed_rows_main, unique
from bench.shard_app import JITTER, ORDER, OrderUpdated
from pubsubpy import PubSub

WORKERS = 3
CONCURRENCY = 8
SHARDS = 8
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Outcome:
    rate: float
    violations: int
    lost: int
    duplicates: int
    seconds: float


def _events(events: int, keys: int, seed: int = 29) -> list[tuple[int, int]]:
    per_key = events // keys
    rng = random.Random(seed)
    slots = [key for key in range(keys) for _ in range(per_key)]
    rng.shuffle(slots)
    seq = [0] * keys
    order = []
    for key in slots:
        order.append((key, seq[key]))
        seq[key] += 1
    return order


def _tally(log: Path, expected: int) -> tuple[int, int, int, int]:
    """(distinct events succeeded, violations, duplicates, lines) from the success log."""
    newest: dict[int, int] = {}
    seen: set[tuple[int, int]] = set()
    violations = duplicates = lines = 0
    with open(log) as file:
        for line in file:
            key_text, seq_text, _pid = line.split()
            key, seq = int(key_text), int(seq_text)
            lines += 1
            if (key, seq) in seen:
                duplicates += 1
                continue
            seen.add((key, seq))
            if seq < newest.get(key, -1):
                violations += 1
            newest[key] = max(newest.get(key, -1), seq)
    return len(seen), violations, duplicates, lines


def run_side(ordered: bool, events: list[tuple[int, int]], timeout: float,
             report: Callable[[str], None]) -> Outcome:
    exchange, service = unique("x"), unique("svc")
    shards = SHARDS if ordered else 0
    app = PubSub(URL, schemas=[OrderUpdated], model_exchange=exchange, service_name=service, shards=shards,
                 telemetry=False, retry_delay=0.1)
    app.subscribe("Order.updated", ordered=ordered)(_placeholder)
    app.declare()
    specs = [(ORDER, "updated", {"id": key, "seq": seq, "status": "paid"}) for key, seq in events]
    for start in range(0, len(specs), 5000):
        app.publish_many(specs[start:start + 5000])
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "successes.txt"
        log.touch()
        env = {**os.environ, "BENCH_URL": URL, "BENCH_EXCHANGE": exchange, "BENCH_SERVICE": service,
               "BENCH_SHARDS": str(shards), "BENCH_ORDERED": "1" if ordered else "0", "BENCH_SHARD_LOG": str(log)}

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen([sys.executable, "-m", "pubsubpy.cli", "worker", "--app", "bench.shard_app:app",
                                     "--concurrency", str(CONCURRENCY)], cwd=ROOT, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        began = time.perf_counter()
        workers = [start() for _ in range(WORKERS)]
        killed = False
        done_at = None
        try:
            while time.perf_counter() - began < timeout:
                handled, *_ = _tally(log, len(events))
                if handled >= len(events):
                    done_at = time.perf_counter()
                    break
                if not killed and handled >= len(events) // 2:
                    workers[0].send_signal(signal.SIGKILL)
                    workers[0].wait(10)
                    workers[0] = start()
                    killed = True
                    report(f"{'ordered' if ordered else 'unordered'}: killed and restarted a worker at {handled:,}")
                time.sleep(0.2)
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                try:
                    worker.wait(60)
                except subprocess.TimeoutExpired:
                    worker.kill()
        handled, violations, duplicates, _lines = _tally(log, len(events))
    delete_app(app)
    if done_at is None:
        raise RuntimeError(f"{'ordered' if ordered else 'unordered'}: {handled:,} of {len(events):,} events "
                           f"handled within {timeout:.0f}s")
    seconds = done_at - began
    return Outcome(len(events) / seconds, violations, len(events) - handled, duplicates, seconds)


def _placeholder(event: OrderUpdated) -> None: ...


def shard_rows(events: int, keys: int, rounds: int, report: Callable[[str], None] = lambda _line: None) -> list[Row]:
    order = _events(events, keys)
    timeout = 120 + 4 * events * JITTER / 2 / (WORKERS * CONCURRENCY)
    runs: dict[bool, list[Outcome]] = {True: [], False: []}
    for _ in range(rounds):
        for side in (True, False):
            run = run_side(side, order, timeout, report)
            runs[side].append(run)
            report(f"{'ordered' if side else 'unordered'}: {run.rate:,.0f} events/s in {run.seconds:.1f}s, "
                   f"{run.violations:,} violations, {run.lost} lost, {run.duplicates} duplicates")
    ordered, unordered = runs[True], runs[False]
    what = (f"{len(order):,} events, {keys:,} keys, {WORKERS} worker processes x concurrency {CONCURRENCY}, "
            f"shards={SHARDS}, 0-{JITTER * 1000:.0f} ms handler, 5% fail once, one worker SIGKILLed midway")
    return [
        Row("3 workers, shards=8 ordered vs unordered (one SIGKILLed)", "msg/s", ours=[r.rate for r in ordered],
            baseline=[r.rate for r in unordered], target=">= 0.7", note=what),
        Row("3 workers, shards=8: per-key sequence violations", "events",
            ours=[float(sum(r.violations for r in ordered))], target="<= 0",
            note=f"all rounds; unordered: {sum(r.violations for r in unordered):,}"),
        Row("3 workers, shards=8: lost events", "events", ours=[float(sum(r.lost for r in ordered))], target="<= 0",
            note=f"all rounds; run twice after the kill (counted): {sum(r.duplicates for r in ordered)}"),
    ]


def all_rows(quick: bool, rounds: int, step: Callable[[str], None] = lambda _label: None) -> list[Row]:
    """Quick: 3,000 events over 150 keys, ``rounds`` pairs; else 100,000 over 5,000 keys, one pair."""
    step("shards across worker processes")
    return shard_rows(3000, 150, rounds) if quick else shard_rows(100_000, 5000, 1)


def main(argv: list[str] | None = None) -> int:
    return keyed_rows_main(__doc__.splitlines()[0], shard_rows, argv)


if __name__ == "__main__":
    raise SystemExit(main())
