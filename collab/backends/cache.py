"""A persistent request cache shared by every backend and every process of a run.

SQLite in WAL mode lets many processes (data shards, Slurm array tasks) read and append concurrently. An entry is
keyed by the model's identity, the messages, the sampling parameters and the sample index, so a repeated computation
with the same seeds makes no new calls. Failed generations are never stored.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path

from collab.chat import Conversation, Generation, SamplingParams


def request_key(identity: str, messages: Conversation, params: SamplingParams, sample_index: int) -> str:
    payload = json.dumps(
        [identity, messages, params.cache_fields(), sample_index], sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class RequestCache:
    """Key -> Generation store. Thread-safe within a process, safe across processes through SQLite's locking."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.hits = 0
        self.misses = 0

    def get_many(self, keys: list[str]) -> dict[str, Generation]:
        found: dict[str, Generation] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, value FROM generations WHERE key IN ({marks})", chunk)
                for key, value in rows:
                    found[key] = Generation(**json.loads(value), cached=True)
            self.hits += len(found)
            self.misses += len(set(keys)) - len(found)
        return found

    def put_many(self, items: dict[str, Generation]) -> None:
        rows = []
        for key, gen in items.items():
            if not gen.ok:
                continue
            record = asdict(gen)
            record.pop("cached")
            rows.append((key, json.dumps(record, ensure_ascii=False)))
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT OR REPLACE INTO generations (key, value) VALUES (?, ?)", rows)
            self._db.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
