"""A persistent request cache shared by every backend and every process of a run.

An entry is keyed by the model's identity, the messages, the sampling parameters and the sample index, so a
repeated computation with the same seeds makes no new calls. Failed generations are never stored.

Two layouts, chosen by the filesystem that holds the run directory (collab.backends.filesystems):

- local disk: one SQLite file in WAL mode, which many processes of one host read and append concurrently.
- NFS, Lustre, GPFS and other network filesystems, where WAL is unsafe across hosts: every writer (a training rank,
  a Slurm array task, or the single process of a stage) appends to its own file `<name>.d/<writer>.sqlite` with a
  rollback journal, which no other process writes, and reads its own file, then the shared `<name>.sqlite` opened
  read-only. `merge_shards` folds the per-writer files into the shared one when no writer runs (the end of a
  stage, on its first node; `collab data merge`), so the next stage and a requeued job find every entry.

COLLAB_CACHE_LAYOUT=shared|per-writer overrides the detection (a site whose "local" scratch is really shared).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path

from collab.backends.filesystems import is_network_filesystem
from collab.chat import Conversation, Generation, SamplingParams
from collab.errors import CollabError

LAYOUT_ENV = "COLLAB_CACHE_LAYOUT"
CACHE_FILE = "cache.sqlite"  # in the run directory
TABLE = "CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


def request_key(identity: str, messages: Conversation, params: SamplingParams, sample_index: int) -> str:
    payload = json.dumps(
        [identity, messages, params.cache_fields(), sample_index], sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def cache_layout(path: Path) -> str:
    """`shared` (one WAL file) on a local filesystem, `per-writer` on a network one; see the module docstring."""
    chosen = os.environ.get(LAYOUT_ENV, "").strip()
    if chosen in ("shared", "per-writer"):
        return chosen
    if chosen:
        raise CollabError(f"{LAYOUT_ENV}={chosen!r} is not a cache layout", fix="use shared, per-writer, or unset it.")
    return "per-writer" if is_network_filesystem(path.parent) else "shared"


def writer_name() -> str:
    """This process's own cache file name: stable across requeues (ranks and array tasks keep their numbers) and
    distinct among the processes of a stage that run at the same time."""
    parts = []
    if os.environ.get("SLURM_ARRAY_TASK_ID"):
        parts.append(f"task{os.environ['SLURM_ARRAY_TASK_ID']}")
    if os.environ.get("RANK"):
        parts.append(f"rank{os.environ['RANK']}")
    return "-".join(parts) or "main"


def shard_dir(path: Path) -> Path:
    return path.with_name(f"{path.stem}.d")


def _connect(path: Path, *, wal: bool, read_only: bool = False) -> sqlite3.Connection:
    target = f"file:{path}?mode=ro" if read_only else str(path)
    db = sqlite3.connect(target, uri=read_only, timeout=60, check_same_thread=False, isolation_level=None)
    if not read_only:
        db.execute(f"PRAGMA journal_mode={'WAL' if wal else 'DELETE'}")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(TABLE)
    return db


class RequestCache:
    """Key -> Generation store. Thread-safe within a process, safe across processes (and, in the per-writer layout,
    across the hosts of a network filesystem)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.layout = cache_layout(self.path)
        self._lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        if self.layout == "shared":
            self._db = _connect(self.path, wal=True)
        else:
            own = shard_dir(self.path) / f"{writer_name()}.sqlite"
            own.parent.mkdir(parents=True, exist_ok=True)
            self._db = _connect(own, wal=False)
            if self.path.is_file():  # written only by merge_shards, when no writer runs
                try:
                    self._readers.append(_connect(self.path, wal=False, read_only=True))
                except sqlite3.OperationalError:  # a WAL-mode file of an earlier local run: merge_shards converts it
                    pass
        self.hits = 0
        self.misses = 0

    def get_many(self, keys: list[str]) -> dict[str, Generation]:
        found: dict[str, Generation] = {}
        with self._lock:
            for db in (self._db, *self._readers):
                wanted = [k for k in keys if k not in found]
                for start in range(0, len(wanted), 500):
                    chunk = wanted[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    rows = db.execute(f"SELECT key, value FROM generations WHERE key IN ({marks})", chunk)
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
        """Entries this cache can see (its own file and, per-writer, the shared one; a key in both counts once)."""
        with self._lock:
            if not self._readers:
                return self._db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
            keys = {k for db in (self._db, *self._readers) for (k,) in db.execute("SELECT key FROM generations")}
            return len(keys)

    def close(self) -> None:
        with self._lock:
            for db in (self._db, *self._readers):
                db.close()


def merge_shards(path: str | Path) -> int:
    """Fold the per-writer files of the cache at `path` into it and remove them; returns the entries added.

    Call it only when no process of the run writes the cache (the end of a stage, on its first node), because it
    reads the per-writer files without their writers' locks mattering. A no-op in the shared layout."""
    path = Path(path)
    shards = sorted(shard_dir(path).glob("*.sqlite"))
    if not shards:
        return 0
    db = _connect(path, wal=False)  # a rollback journal: the shared file may sit on a network filesystem
    try:
        before = db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
        for shard in shards:
            db.execute("ATTACH DATABASE ? AS shard", (str(shard),))
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR IGNORE INTO generations SELECT key, value FROM shard.generations")
            db.execute("COMMIT")
            db.execute("DETACH DATABASE shard")
            shard.unlink()
            shard.with_name(shard.name + "-journal").unlink(missing_ok=True)
        return db.execute("SELECT COUNT(*) FROM generations").fetchone()[0] - before
    finally:
        db.close()
