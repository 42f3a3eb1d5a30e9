"""The worker app of ``bench/shard_rows.py`` (``pubsubpy worker --app bench.shard_app:app``), configured
from the environment: ``shards`` and ``ordered`` per side, the same handler on both.

The handler sleeps a duration drawn from the event's id and sequence (0 to 20 ms), and the first attempt of
about 5% of the events (drawn the same way) raises (``MessageInfo.attempt``, so in any process). Each success
is appended to ``BENCH_SHARD_LOG`` as ``key seq pid`` (one write per line on a file opened for appending).
"""

from __future__ import annotations

import hashlib
import os
import time

from pubsubpy import MessageInfo, ModelEvent, PubSub

ORDER = "bench.models.Order"
JITTER = 0.020
FAIL_SHARE = 0.05


class OrderUpdated(ModelEvent, model=ORDER, event="updated", key="id", register=False):
    id: int
    seq: int
    status: str


def draw(key: int, seq: int) -> tuple[float, bool]:
    """(sleep seconds, fails once) of one event: the same in every process and run."""
    digest = hashlib.blake2b(f"{key}/{seq}".encode(), digest_size=8).digest()
    return digest[0] / 255 * JITTER, int.from_bytes(digest[1:3], "big") < FAIL_SHARE * 65536


app = PubSub(os.environ.get("BENCH_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"), schemas=[OrderUpdated],
             model_exchange=os.environ.get("BENCH_EXCHANGE", "bench"), service_name=os.environ.get("BENCH_SERVICE"),
             shards=int(os.environ.get("BENCH_SHARDS", "0")), retry_delay=0.1, telemetry=False,
             on_unroutable="ignore")
_log = os.open(os.environ.get("BENCH_SHARD_LOG", os.devnull), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


@app.subscribe("Order.updated", ordered=os.environ.get("BENCH_ORDERED") == "1")
def on_order(event: OrderUpdated, info: MessageInfo) -> None:
    sleep, fails = draw(event.id, event.seq)
    time.sleep(sleep)
    if fails and info.attempt == 1:
        raise RuntimeError("bench: the first attempt fails")
    os.write(_log, f"{event.id} {event.seq} {os.getpid()}\n".encode())
