"""conversations.jsonl: whole-line appends, torn last lines, refusing foreign damage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collab.errors import CollabError
from collab.evaluate.store import ConversationStore, row_key


def test_appended_rows_load_back_in_order(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path / "c.jsonl")
    assert store.load() == []
    assert store.append([{"model": "m", "task_id": "t1", "run": 0, "text": "a\nb"}]) == 1
    assert store.append([{"model": "m", "task_id": "t2", "run": 1}, {"model": "m", "task_id": "t3", "run": 0}]) == 2
    assert [row_key(r) for r in store.load()] == [("m", "t1", 0), ("m", "t2", 1), ("m", "t3", 0)]
    assert store.load()[0]["text"] == "a\nb"


def test_a_torn_last_line_is_dropped_and_cut_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"model": "m", "task_id": "t1", "run": 0}) + "\n" + '{"model": "m", "task_')
    store = ConversationStore(path)
    assert [row_key(r) for r in store.load()] == [("m", "t1", 0)]
    assert store.torn_lines_dropped == 1
    store.append([{"model": "m", "task_id": "t2", "run": 0}])
    assert [row_key(r) for r in ConversationStore(path).load()] == [("m", "t1", 0), ("m", "t2", 0)]


def test_a_malformed_line_in_the_middle_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"model": "m", "task_id": "t1", "run": 0}\nnot json\n{"model": "m", "task_id": "t2", "run": 0}\n')
    with pytest.raises(CollabError, match="line 2 is not valid JSON"):
        ConversationStore(path).load()
