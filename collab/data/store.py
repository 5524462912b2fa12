"""Append-only JSONL stores that survive kill -9.

Each record is one line, written with a single `write` of the whole line followed by flush and fsync, so a crash
leaves at most one torn line at the end of the file. Readers skip a torn last line; `repair` cuts it off before the
next append, so the file never holds a corrupt line in the middle. Records carry a key; a key already present is
never written twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from collab.errors import CollabError


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Complete records of a store, in order. A torn final line (no newline) is skipped; any other line that is not
    a JSON object was not written by the store, and is a CollabError naming the file and line."""
    if not path.is_file():
        return
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                return  # the line a crash interrupted
            try:
                record = json.loads(raw)
            except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
                record = e
            if not isinstance(record, dict):
                raise CollabError(f"line {number} is not a store record ({record})", where=str(path),
                                  fix="this file is only ever appended to by `collab data`; restore it, delete it to "
                                  "regenerate its conversations, or use a new output_dir.")
            yield record


class JsonlStore:
    """An append-only JSONL file whose records are unique by `key(record)`."""

    def __init__(self, path: str | Path, key: Callable[[dict[str, Any]], Any]) -> None:
        self.path = Path(path)
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repair()
        self.records: dict[Any, dict[str, Any]] = {}
        for record in read_records(self.path):
            self.records.setdefault(self.key(record), record)

    def repair(self) -> None:
        """Cut off a torn last line left by a crash."""
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with self.path.open("r+b") as f:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())

    def __contains__(self, key: Any) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def append(self, records: list[dict[str, Any]]) -> int:
        """Append the records whose keys are new; returns how many were written."""
        fresh = []
        for record in records:
            k = self.key(record)
            if k not in self.records:
                self.records[k] = record
                fresh.append(record)
        if fresh:
            payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fresh).encode()
            with self.path.open("ab") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
        return len(fresh)


def saved_turns(stage_dir: Path) -> str:
    """What an interrupted data stage has kept, in words: the scored turns in its store (collab.interrupt)."""
    from collab.interrupt import count_lines

    records = sum(count_lines(p) for p in sorted((stage_dir / "store").glob("*.jsonl")))
    return (f"{records} scored turns are saved in {stage_dir / 'store'}; the turns in progress were lost"
            if records else "no turn had been scored yet")
