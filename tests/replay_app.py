"""The app a worker process runs in tests/test_replay_rabbitmq.py (``pubsubpy worker --app tests.replay_app:app
--backfill 1h``): an ordered, idempotent subscription whose effect (a row ``key version message_id pid``) goes
into ``REPLAY_INBOX``'s ``applied`` table in the inbox's transaction (``tests.shard_events.SqliteInbox``, which
keeps the backfill's checkpoint too). Each run sleeps ``REPLAY_SLEEP_MS`` milliseconds."""

from __future__ import annotations

import os
import time

from pubsubpy import MessageInfo, PubSub
from tests.shard_events import OrderUpdated, SqliteInbox, effects

app = PubSub(os.environ["PUBSUBPY_TEST_URL"], schemas=[OrderUpdated], model_exchange=os.environ["REPLAY_EXCHANGE"],
             service_name=os.environ["REPLAY_SERVICE"], inbox=SqliteInbox(os.environ["REPLAY_INBOX"]),
             retry_delay=0.05, retry_delay_max=0.2, heartbeat=10)
_sleep = float(os.environ.get("REPLAY_SLEEP_MS", "0")) / 1000


@app.subscribe("Order.updated", ordered=True, idempotent=True)
def apply(event: OrderUpdated, info: MessageInfo) -> None:
    if _sleep:
        time.sleep(_sleep)
    effects.rows.append((event.id, event.version, info.message_id or "", os.getpid()))
