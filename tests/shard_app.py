"""The app a worker process runs in tests/test_shards_rabbitmq.py (``pubsubpy worker --app tests.shard_app:app``).

An ordered subscription with ``shards`` from the environment. Each run sleeps 0 to ``SHARD_JITTER_MS``
milliseconds (``SHARD_SLOW_SECONDS`` for the key ``SHARD_SLOW_KEY``); the first run of about 5% of the
messages fails (retried in its lane). Every started run is appended to ``SHARD_LOG.started``.

What an applied event leaves: without ``SHARD_INBOX``, a line ``key sequence message_id pid`` appended to
SHARD_LOG (one write per line on a file opened for appending, so the lines of several processes interleave
whole, in the order they were applied). With ``SHARD_INBOX`` (an SQLite file), the subscription is
``idempotent=True`` and the row goes into that database's ``applied`` table in the inbox's transaction,
behind the stale guard: ``SqliteInbox``, an ``OrderedInbox`` that several processes share.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable

from pubsubpy import MessageInfo, PubSub
from pubsubpy.inbox import Applied, OrderedRun
from tests.shard_events import OrderUpdated

_effects = threading.local()  # the rows a run wants written, written by the inbox in its transaction


class SqliteInbox:
    """An ``OrderedInbox`` in one SQLite file: the handler's effects, (message id, handler) and the key's last
    sequence are written in one ``BEGIN IMMEDIATE`` transaction, after the handler ran."""

    def __init__(self, path: str) -> None:
        self.path = path
        with self._db() as db:
            db.executescript("""
                CREATE TABLE IF NOT EXISTS seen (message_id TEXT, handler TEXT, PRIMARY KEY (message_id, handler));
                CREATE TABLE IF NOT EXISTS last (handler TEXT, key TEXT, sequence INTEGER, PRIMARY KEY (handler, key));
                CREATE TABLE IF NOT EXISTS applied (key INTEGER, version INTEGER, message_id TEXT, pid INTEGER);
            """)

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def run_once(self, message_id: str, handler: str, call: Callable[[], object]) -> bool:
        return self.run_in_order(message_id, handler, "", -1, call).applied is Applied.RAN

    def run_in_order(self, message_id: str, handler: str, key: str, sequence: int,
                     call: Callable[[], object]) -> OrderedRun:
        _effects.rows = []
        call()
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT sequence FROM last WHERE handler = ? AND key = ?", (handler, key)).fetchone()
            last = None if row is None else int(row[0])
            if db.execute("SELECT 1 FROM seen WHERE message_id = ? AND handler = ?", (message_id, handler)).fetchone():
                db.execute("ROLLBACK")
                return OrderedRun(Applied.DUPLICATE, last)
            if last is not None and last >= sequence >= 0:
                db.execute("ROLLBACK")
                return OrderedRun(Applied.STALE, last)
            db.execute("INSERT INTO seen VALUES (?, ?)", (message_id, handler))
            db.execute("INSERT OR REPLACE INTO last VALUES (?, ?, ?)", (handler, key, sequence))
            db.executemany("INSERT INTO applied VALUES (?, ?, ?, ?)", _effects.rows)
            db.execute("COMMIT")
            return OrderedRun(Applied.RAN, last)
        finally:
            db.close()

    def reset_order(self, key: str, handler: str | None = None) -> int:
        with self._db() as db:
            return db.execute("DELETE FROM last WHERE key = ? AND (? IS NULL OR handler = ?)",
                              (key, handler, handler)).rowcount


_inbox_path = os.environ.get("SHARD_INBOX")
app = PubSub(os.environ["PUBSUBPY_TEST_URL"], schemas=[OrderUpdated], model_exchange=os.environ["SHARD_EXCHANGE"],
             service_name=os.environ["SHARD_SERVICE"], shards=int(os.environ.get("SHARD_COUNT", "4")),
             retry_delay=0.05, retry_delay_max=0.2, max_attempts=5, shutdown_timeout=10,
             heartbeat=int(os.environ.get("SHARD_HEARTBEAT", "10")),
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
        _effects.rows.append(row)
    else:
        os.write(_log, " ".join(map(str, row)).encode() + b"\n")
