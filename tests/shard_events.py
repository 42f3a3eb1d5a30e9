"""The event and the inbox of the shards tests (tests/test_shards_rabbitmq.py and the worker app it runs,
tests/shard_app.py)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Collection

from pubsubpy import ModelEvent
from pubsubpy.inbox import Applied, OrderedRun

ORDER = "shop.models.Order"


class OrderUpdated(ModelEvent, model=ORDER, event="updated", key="id", sequence="version", register=False):
    id: int
    version: int


effects = threading.local()  # the rows a run wants written, written by the inbox in its transaction


class SqliteInbox:
    """An ``OrderedInbox`` and ``ReplayInbox`` in one SQLite file: the handler's effects, (message id, handler)
    and the key's last sequence are written in one ``BEGIN IMMEDIATE`` transaction, after the handler ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    @staticmethod
    def create(path: str) -> None:
        """The tables, once, before any worker starts (workers sharing the file only read and write rows)."""
        with contextlib.closing(sqlite3.connect(path, timeout=60, isolation_level=None)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript("""
                CREATE TABLE seen (message_id TEXT, handler TEXT, PRIMARY KEY (message_id, handler));
                CREATE TABLE last (handler TEXT, key TEXT, sequence INTEGER, PRIMARY KEY (handler, key));
                CREATE TABLE applied (key INTEGER, version INTEGER, message_id TEXT, pid INTEGER);
                CREATE TABLE replay_state (name TEXT PRIMARY KEY, state TEXT);
            """)

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60, isolation_level=None)

    def run_once(self, message_id: str, handler: str, call: Callable[[], object]) -> bool:
        return self.run_in_order(message_id, handler, "", -1, call).applied is Applied.RAN

    def run_in_order(self, message_id: str, handler: str, key: str, sequence: int,
                     call: Callable[[], object]) -> OrderedRun:
        effects.rows = []
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
            db.executemany("INSERT INTO applied VALUES (?, ?, ?, ?)", effects.rows)
            db.execute("COMMIT")
            return OrderedRun(Applied.RAN, last)
        finally:
            db.close()

    def replay_state(self, name: str) -> str | None:
        with contextlib.closing(self._db()) as db:
            row = db.execute("SELECT state FROM replay_state WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def save_replay_state(self, name: str, state: str | None) -> None:
        with contextlib.closing(self._db()) as db:
            if state is None:
                db.execute("DELETE FROM replay_state WHERE name = ?", (name,))
            else:
                db.execute("INSERT OR REPLACE INTO replay_state VALUES (?, ?)", (name, state))

    def recorded(self, handler: str, message_ids: Collection[str]) -> set[str]:
        with contextlib.closing(self._db()) as db:
            return {str(row[0]) for row in db.execute(
                f"SELECT message_id FROM seen WHERE handler = ? AND message_id IN ({','.join('?' * len(message_ids))})",
                (handler, *message_ids))}

    def forget_handler(self, handler: str) -> int:
        with contextlib.closing(self._db()) as db:
            return db.execute("DELETE FROM seen WHERE handler = ?", (handler,)).rowcount + \
                db.execute("DELETE FROM last WHERE handler = ?", (handler,)).rowcount

    def reset_order(self, key: str, handler: str | None = None) -> int:
        with contextlib.closing(self._db()) as db:
            return db.execute("DELETE FROM last WHERE key = ? AND (? IS NULL OR handler = ?)",
                              (key, handler, handler)).rowcount
