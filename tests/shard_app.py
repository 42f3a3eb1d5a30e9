"""The app a worker process runs in tests/test_shards_rabbitmq.py (``pubsubpy worker --app tests.shard_app:app``).

An ordered subscription with ``shards`` from the environment. Each run sleeps 0 to ``SHARD_JITTER_MS``
milliseconds; the first run of about 5% of the messages fails (retried in its lane). Every applied event is
appended to SHARD_LOG as ``key sequence message_id pid`` (one write per line on a file opened for
appending, so the lines of several processes interleave whole, in the order they were applied).
"""

from __future__ import annotations

import hashlib
import os
import random
import time

from pubsubpy import MessageInfo, PubSub
from tests.shard_events import OrderUpdated

app = PubSub(os.environ["PUBSUBPY_TEST_URL"], schemas=[OrderUpdated], model_exchange=os.environ["SHARD_EXCHANGE"],
             service_name=os.environ["SHARD_SERVICE"], shards=int(os.environ.get("SHARD_COUNT", "4")),
             retry_delay=0.05, retry_delay_max=0.2, max_attempts=5, shutdown_timeout=10,
             heartbeat=int(os.environ.get("SHARD_HEARTBEAT", "10")))
_log = os.open(os.environ["SHARD_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
_jitter = float(os.environ.get("SHARD_JITTER_MS", "5")) / 1000
_failed: set[str] = set()


def _fails_once(message_id: str) -> bool:
    return hashlib.blake2b(message_id.encode(), digest_size=1).digest()[0] < 13  # 13/256: about 5%


@app.subscribe("Order.updated", ordered=True)
def apply(event: OrderUpdated, info: MessageInfo) -> None:
    time.sleep(random.uniform(0, _jitter))
    message_id = info.message_id or ""
    if _fails_once(message_id) and message_id not in _failed:
        _failed.add(message_id)
        raise TimeoutError("database timeout (once)")
    os.write(_log, f"{event.id} {event.version} {message_id} {os.getpid()}\n".encode())
