"""The events users append through the service: durable in SQLite (WAL), mirrored in memory.

An event is acknowledged only after its transaction commits; with ``synchronous=FULL`` (the default) the
commit reaches the disk first, so neither a ``kill -9`` of the server nor a power cut loses an acknowledged
event (``normal`` keeps them through a killed process but may lose the last ones to a power cut, for faster
appends). Events are stored with the external ids as sent (JSON, so ``12`` and ``"12"`` stay apart), not
encoded: a model loaded later, with another vocabulary, reads them afresh, and an item unknown today is
used once a model knows it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import defaultdict
from pathlib import Path

from seqrec.errors import DataError

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,          -- JSON of the external id as sent
    timestamp REAL NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id, seq);
"""


class EventStore:
    """Appended events per user (external user id as text -> external item ids, oldest first)."""

    def __init__(self, path, sync: str = "full"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={sync.upper()}")
            self._db.executescript(SCHEMA)
            rows = self._db.execute("SELECT user_id, item_id FROM events ORDER BY seq").fetchall()
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: not a usable event store ({exc})") from None
        self._lock = threading.Lock()
        self._events: dict[str, list] = defaultdict(list)
        for user, item in rows:
            self._events[user].append(json.loads(item))

    def append(self, user: str, items: list, timestamps: list[float] | None = None) -> int:
        """Store ``items`` for ``user`` durably, then in memory; returns the user's appended-event count."""
        now = time.time()
        stamps = timestamps if timestamps is not None else [now] * len(items)
        rows = [(user, json.dumps(item), float(t), now) for item, t in zip(items, stamps)]
        with self._lock:
            with self._db:  # one transaction: all of the request's events or none
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT INTO events (user_id, item_id, timestamp, received) VALUES (?, ?, ?, ?)",
                                     rows)
            self._events[user].extend(items)
            return len(self._events[user])

    def events(self, user: str) -> list:
        """The user's appended item ids, oldest first (a copy)."""
        with self._lock:
            return list(self._events.get(user, ()))

    def users(self) -> list[str]:
        with self._lock:
            return list(self._events)

    def counts(self) -> tuple[int, int]:
        """(users, events) appended so far."""
        with self._lock:
            return len(self._events), sum(map(len, self._events.values()))

    def close(self) -> None:
        with self._lock:
            self._db.close()
