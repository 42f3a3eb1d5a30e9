"""Run the benchmarks: ``python -m bench.run [--quick] [--out bench/results]``.

Every ratio is pubsubpy's rate over its baseline's (for the latency rows, in ms,
its latency over the baseline's: above 1 is slower), both measured alternately in
this process (several rounds, medians), because this 2-core machine (broker
included) drifts from run to run. Prints a table, writes ``results.json`` and
``throughput.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from bench import (
    broker_rows,
    latency_rows,
    local_rows,
    ordering_rows,
    outbox_rows,
    replay_rows,
    shard_rows,
    worker_rows,
)
from bench.common import URL, Booking, Row, delete_app, fill, unique
from pubsubpy import PubSub


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_row(count: int) -> Row:
    exchange, service = unique("x"), unique("svc")
    app = PubSub(URL, schemas=[Booking], model_exchange=exchange, service_name=service, telemetry=False)

    @app.subscribe("Booking.*")
    def on_booking(event: Booking) -> None:
        pass

    app.declare()
    fill(f"{service}.events", count, exchange)
    before = rss_mb()  # before the first drain: its connection and caches count too
    peak = before

    def sample(result: object) -> None:
        nonlocal peak
        if getattr(result, "messages", 0) % 5000 == 0:
            peak = max(peak, rss_mb())

    result = app.drain(timeout=600, on_message=sample)
    peak = max(peak, rss_mb())
    delete_app(app)
    return Row(f"memory: RSS growth over a {result.handled:,}-message drain", "MB", ours=[peak - before],
               target="<= 25 MB")


def idle_row(repeats: int) -> Row:
    exchange, service = unique("x"), unique("svc")
    app = PubSub(URL, schemas=[Booking], model_exchange=exchange, service_name=service, telemetry=False)
    for i in range(20):
        app.subscribe(f"Booking.k{i}.*")(_noop)
    app.subscribe("Booking.*")(_noop)
    app.declare()
    app.drain(timeout=10)
    times = [local_rows.timed_ms(lambda: app.drain(timeout=10)) for _ in range(repeats)]
    delete_app(app)
    return Row("idle drain (empty queue, 21 subscriptions)", "ms", ours=times, target="median <= 20 ms")


def _noop(event: Booking) -> None:
    pass


def met(row: Row) -> bool | None:
    target = row.target.replace("median ", "")
    if not target:
        return None
    op, value = target.split()[:2]
    number = float(value)
    measured = row.ratio if row.baseline else row.ours_median
    return measured >= number if op == ">=" else measured <= number


def fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def print_table(rows: list[Row]) -> None:
    header = f"{'row':<58} {'pubsubpy':>12} {'baseline':>12} {'ratio':>8}  {'target':<16} met"
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = f"{row.ratio:.2f}" if row.baseline else "-"
        ok = met(row)
        print(f"{row.name:<58} {fmt(row.ours_median):>12} {fmt(row.baseline_median):>12} {ratio:>8}  "
              f"{row.target:<16} {'yes' if ok else 'NO' if ok is not None else ''}  ({row.unit})"
              + (f"  {row.note}" if row.note else ""))


SHORT = {
    "single publish": "publish, confirmed\nvs raw pika",
    "batch publish": "publish_many\nvs raw pika, confirmed",
    "drain": "drain\nvs raw pika consumer",
    "vs FastStream: publish,": "publish\nvs FastStream",
    "vs FastStream: publish_many": "publish_many\nvs FastStream publish",
    "vs FastStream: drain": "drain\nvs FastStream",
    "in-process": "memory:// publish+drain\nvs model_validate_json",
    "worker, 20 ms handler: concurrency 16": "worker, 20 ms handler\nconcurrency 16 vs 1",
    "worker, 20 ms handler: concurrency 4": "worker, 20 ms handler\nconcurrency 4 vs 1",
    "worker, no-op handler (default": "worker, prefetch 4\nvs raw pika consumer",
    "worker, no-op handler (prefetch=1000)": "worker, prefetch 1000\nvs raw pika consumer",
    "worker, ordered=True": "worker, ordered=True, 5% fail once\nvs unordered",
    "3 workers, shards=8 ordered": "3 workers, shards=8, one killed\nvs unordered",
    "drain: validation_error": "validation_error dead letters\nvs handled",
    "drain: validation_error dead letters vs raw": "dead letters vs raw pika\nmaking the same copies",
    "drain: handler_error": "handler_error dead letters\nvs handled",
    "drain: handler raised": "retried\nvs handled",
    "outbox relay": "outbox relay\nvs publish_many",
    "drain: telemetry on, API only": "drain, telemetry on (API only)\nvs off",
    "drain: telemetry on + SDK": "drain, telemetry on + SDK\nvs off",
    "publish: telemetry on, API only": "publish, telemetry on (API only)\nvs off",
    "publish: telemetry on + SDK": "publish, telemetry on + SDK\nvs off",
    "replay: ": "replay of the event log\nvs raw pika reading the stream",
    "replay vs live drain": "replay of the event log\nvs live drain",
    "cluster: publish: 3-node": "publish, 3-node quorum\nvs 1-node classic",
    "cluster: publish: 1-node": "publish, 1-node quorum\nvs 1-node classic",
    "cluster: publish: classic": "publish, classic on node 1\nvs 1-node classic",
    "cluster: publish_many: 3-node": "publish_many, 3-node quorum\nvs 1-node classic",
    "cluster: publish_many: 1-node": "publish_many, 1-node quorum\nvs 1-node classic",
    "cluster: publish_many: classic": "publish_many, classic on node 1\nvs 1-node classic",
    "cluster: consume: 3-node": "consume, 3-node quorum\nvs 1-node classic",
    "cluster: consume: 1-node": "consume, 1-node quorum\nvs 1-node classic",
    "cluster: consume: classic": "consume, classic on node 1\nvs 1-node classic",
}


def short_label(name: str) -> str:
    matches = [prefix for prefix in SHORT if name.startswith(prefix)]  # the longest: "drain" vs "drain: ..."
    return SHORT[max(matches, key=len)] if matches else name[:30]


def chart(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.baseline and r.unit == "msg/s"][::-1]
    fig, ax = plt.subplots(figsize=(9, max(5.5, 1 + 0.38 * len(shown))))  # two-line labels stay apart
    ys = range(len(shown))
    ax.barh([y + 0.2 for y in ys], [r.ours_median for r in shown], height=0.4, label="pubsubpy")
    ax.barh([y - 0.2 for y in ys], [r.baseline_median for r in shown], height=0.4, label="baseline")
    ax.set_yticks(list(ys), [short_label(r.name) for r in shown], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("messages / second, median of rounds (log scale)")
    ax.set_title(f"pubsubpy vs baselines in one run, {dt.date.today().isoformat()}\n"
                 "2 cores shared with RabbitMQ 3.10 on the same host", fontsize=10)
    for y, r in zip(ys, shown, strict=True):
        ax.annotate(f" x{r.ratio:.2f}", (max(r.ours_median, r.baseline_median), y), va="center", fontsize=8)
    ax.set_xlim(right=max(max(r.ours_median, r.baseline_median) for r in shown) * 4)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, under a minute")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--no-faststream", action="store_true")
    parser.add_argument("--no-cluster", action="store_true", help="skip the rows on the 3-node cluster")
    parser.add_argument("--no-ordering", action="store_true",
                        help="skip the ordered=True and shards rows (about nine minutes at full size)")
    parser.add_argument("--no-replay", action="store_true",
                        help="skip the event log replay rows (about 12 minutes at full size)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="alternating rounds per row (default 3 with --quick, else 5; 1 checks that each row runs)")
    args = parser.parse_args(argv)
    quick = args.quick
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rounds = args.rounds or (3 if quick else 5)
    started = time.perf_counter()
    rows: list[Row] = []

    def step(label: str) -> None:
        print(f"  ... {label} ({time.perf_counter() - started:.0f}s)", file=sys.stderr, flush=True)

    step("single publish")
    rows.append(broker_rows.single_publish(300 if quick else 2000, rounds))
    step("batch publish")
    rows.append(broker_rows.batch_publish(2000 if quick else 20000, rounds))
    step("drain")
    rows.append(broker_rows.drain(3000 if quick else 30000, rounds))
    rows.extend(worker_rows.all_rows(quick, rounds, step))
    if not args.no_ordering:
        rows.extend(ordering_rows.all_rows(quick, rounds, step))  # one pair at full size: 100,000 events a side
        rows.extend(shard_rows.all_rows(quick, rounds, step))  # 3 worker processes, one SIGKILLed; about 2 min a side
    if not args.no_replay:
        rows.extend(replay_rows.all_rows(quick, rounds, step))  # 1,000,000 events published once, read 3 ways
    rows.extend(latency_rows.all_rows(quick, rounds, step))  # 60 s per side (5 s quick), split over the rounds
    try:
        from bench import telemetry_rows
    except ImportError:
        print("opentelemetry-sdk is not installed (pip install '.[prometheus]'): skipping the telemetry rows",
              file=sys.stderr)
    else:
        rows.extend(telemetry_rows.all_rows(quick, rounds, step))
    if not args.no_faststream:
        step("FastStream")
        try:
            from bench import faststream_rows

            rows.extend(faststream_rows.rows(300 if quick else 2000, 2000 if quick else 10000, 2 if quick else 3))
        except ImportError:
            print("FastStream is not installed (pip install '.[bench]'): skipping its rows", file=sys.stderr)
    # -- asyncio rows (bench/aio_rows.py): AsyncPubSub vs FastStream, raw aio-pika and sync pubsubpy --
    if not args.no_faststream:
        from bench import aio_rows

        SHORT.update(aio_rows.SHORT)
        try:
            rows.extend(aio_rows.all_rows(quick, rounds, step))
        except ImportError:
            print("FastStream is not installed (pip install '.[bench]'): skipping the asyncio rows", file=sys.stderr)
    # -- end of the asyncio rows --
    if not args.no_cluster:
        from bench import cluster_rows

        rows.extend(cluster_rows.all_rows(quick, rounds, step))
    step("outbox")
    rows.extend(outbox_rows.rows(2000 if quick else 10000, 200 if quick else 1000, rounds))
    step("routing")
    rows.extend(local_rows.routing(10_000, 2000 if quick else 20000, rounds))
    step("in-process")
    rows.append(local_rows.in_process(2000 if quick else 20000, rounds))
    step("memory")
    rows.append(memory_row(10_000 if quick else 100_000))
    step("idle drain")
    rows.append(idle_row(10 if quick else 30))

    print_table(rows)
    results = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "seconds": round(time.perf_counter() - started, 1),
        "rows": [
            {"name": r.name, "unit": r.unit, "pubsubpy": r.ours_median,
             "baseline": r.baseline_median if r.baseline else None,
             "ratio": r.ratio if r.baseline else None, "target": r.target, "met": met(r), "note": r.note,
             "rounds": {"pubsubpy": r.ours, "baseline": r.baseline},
             "spread": statistics.pstdev(r.ours) / r.ours_median if len(r.ours) > 1 and r.ours_median else 0}
            for r in rows
        ],
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False, default=str))
    chart(rows, out / "throughput.png")
    print(f"wrote {out / 'results.json'} and {out / 'throughput.png'} in {results['seconds']}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
