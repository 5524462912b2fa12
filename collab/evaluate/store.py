"""The append-only conversation log of an evaluation (`conversations.jsonl`), which is also its resume state.

Why append-only JSONL: a batch of finished conversations is written as whole lines and fsynced before the next batch
starts, so a crash loses at most the batch in flight and never rewrites what is already saved. The only damage a
crash can do is a torn last line; it is cut off on the next load (and the conversation it held is simply run
again). A malformed line anywhere else was not written by us and is an error, not something to skip silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from collab.errors import CollabError

CONVERSATIONS_FILE = "conversations.jsonl"
"""The log's name in an evaluation's output folder."""

RowKey = tuple[str, str, int]
"""(model label, task id, run index): what makes a conversation unique within one evaluation."""


def row_key(row: dict[str, Any]) -> RowKey:
    return (str(row["model"]), str(row["task_id"]), int(row["run"]))


class ConversationStore:
    """Reads and appends the rows of `path`. One writer at a time (the runner holds a lock on the folder)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.torn_lines_dropped = 0

    def load(self) -> list[dict[str, Any]]:
        """Every complete row, in file order. A torn last line is removed from the file so appends stay aligned."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        if not data:
            return []
        keep = len(data)
        if not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1  # the tail after the last newline is a torn write
        lines = data[:keep].decode("utf-8").split("\n")[:-1] if keep else []
        rows: list[dict[str, Any]] = []
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise CollabError(
                    f"line {lineno} is not valid JSON ({exc.msg})",
                    where=str(self.path),
                    fix="this file is only ever appended to by `collab eval`; restore it or use a fresh --out folder.",
                ) from exc
        if keep < len(data):
            self.torn_lines_dropped += 1
            with open(self.path, "r+b") as f:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
        return rows

    def append(self, rows: Iterable[dict[str, Any]]) -> int:
        """Write rows as whole lines and fsync them; returns how many were written."""
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        if not text:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        return text.count("\n")


def saved_conversations(stage_dir: Path) -> str:
    """What an interrupted evaluation has kept, in words: its finished conversations (collab.interrupt)."""
    from collab.interrupt import count_lines

    done = count_lines(stage_dir / CONVERSATIONS_FILE)
    return (f"{done} finished conversations are saved; the ones in progress were lost" if done
            else "no conversation had finished yet")
