"""The app a worker process runs in tests/test_shards_rabbitmq.py (``pubsubpy worker --app tests.shard_app:app``).

An ordered subscription with ``shards`` from the environment. Each run sleeps 0 to ``SHARD_JITTER_MS``
milliseconds (``SHARD_SLOW_SECONDS`` for the key ``SHARD_SLOW_KEY``); the first run of about 5% of the
messages fails (retried in its lane). Every started run is appended to ``SHARD_LOG.started``.

What an applied event leaves: without ``SHARD_INBOX``, a line ``key sequence message_id pid`` appended to
SHARD_LOG (one write per line on a file opened for appending, so the lines of several processes interleave
whole, in the order they were applied). With ``SHARD_INBOX`` (an SQLite file), the subscription is
``idempotent=True`` and the row goes into that database's ``applied`` table in the inbox's transaction,
behind the stale guard: ``tests.shard_events.SqliteInbox``, an ``OrderedInbox`` several processes share.
"""

from __future__ import annotations

import hashlib
import os
import random
import time

from pubsubpy import MessageInfo, PubSub
from tests.shard_events import OrderUpdated, SqliteInbox, effects

_inbox_path = os.environ.get("SHARD_INBOX")
app = PubSub(os.environ["PUBSUBPY_TEST_URL"], schemas=[OrderUpdated], model_exchange=os.environ["SHARD_EXCHANGE"],
             service_name=os.environ["SHARD_SERVICE"], shards=int(os.environ.get("SHARD_COUNT", "4")),
             retry_delay=0.05, retry_delay_max=0.2, max_attempts=5, shutdown_timeout=10,
             heartbeat=int(os.environ.get("SHARD_HEARTBEAT", "10")),
             queue_type="quorum" if os.environ.get("SHARD_QUEUE_TYPE") == "quorum" else "classic",
             inbox=SqliteInbox(_inbox_path) if _inbox_path else None)
_log = os.open(os.environ["SHARD_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
_started = os.open(os.environ["SHARD_LOG"] + ".started", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
_jitter = float(os.environ.get("SHARD_JITTER_MS", "5")) / 1000
_slow_key, _slow = int(os.environ.get("SHARD_SLOW_KEY", "-1")), float(os.environ.get("SHARD_SLOW_SECONDS", "0"))
_failed: set[str] = set()


def _fails_once(message_id: str) -> bool:
    return hashlib.blake2b(message_id.encode(), digest_size=1).digest()[0] < 13  # 13/256: about 5%


@app.subscribe("Order.updated", ordered=True, idempotent=bool(_inbox_path))
def apply(event: OrderUpdated, info: MessageInfo) -> None:
    message_id = info.message_id or ""
    os.write(_started, f"{event.id} {event.version} {message_id} {os.getpid()}\n".encode())
    time.sleep(_slow if event.id == _slow_key else random.uniform(0, _jitter))
    if _fails_once(message_id) and message_id not in _failed and event.id != _slow_key:
        _failed.add(message_id)
        raise TimeoutError("database timeout (once)")
    row = (event.id, event.version, message_id, os.getpid())
    if _inbox_path:
        effects.rows.append(row)
    else:
        os.write(_log, " ".join(map(str, row)).encode() + b"\n")
