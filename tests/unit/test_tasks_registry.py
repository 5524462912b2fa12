"""The task-set registry: built-in names, JSONL paths, and errors that say what to type instead."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from collab.errors import CollabError
from collab.tasks.registry import list_task_sets, load_task_set, register_task_set

BUILT_IN = ["clarify-math", "clarify-message", "collabllm-bigcodebench", "collabllm-math-hard", "collabllm-medium", "humaneval-chat"]


def _message(**kwargs: object) -> str:
    spec = kwargs.pop("spec")
    with pytest.raises(CollabError) as info:
        load_task_set(spec, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def test_built_in_sets_are_registered_and_sorted() -> None:
    assert [name for name in list_task_sets() if name in BUILT_IN] == BUILT_IN


@pytest.mark.parametrize("module", ["collab.tasks.clarify_math", "collab.tasks.collabllm_hub"])
def test_importing_any_builder_module_first_registers_every_built_in(module: str) -> None:
    code = f"import {module}\nfrom collab.tasks.registry import list_task_sets\nprint(list_task_sets())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == repr(BUILT_IN)


def test_unknown_name_suggests_the_closest_and_lists_all() -> None:
    message = _message(spec="clarify-maths")
    assert "tasks.name: unknown task set 'clarify-maths'" in message
    assert "did you mean 'clarify-math'?" in message
    assert "Registered task sets: " + ", ".join(BUILT_IN) in message


def test_missing_jsonl_path_is_a_collab_error(tmp_path: Path) -> None:
    missing = tmp_path / "mine.jsonl"
    assert f"task file {str(missing)!r} does not exist" in _message(spec=str(missing))


def test_jsonl_path_loads_with_limit_and_ignores_split(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    rows = [{"id": f"t{i}", "kind": "qa", "goal": f"Question {i}?", "answer": str(i)} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert [t.id for t in load_task_set(str(path), split="test", limit=2)] == ["t0", "t1"]


def test_unknown_split_suggests_the_closest() -> None:
    message = _message(spec="humaneval-chat", split="tset")
    assert "tasks.split: unknown split 'tset'" in message and "did you mean 'test'?" in message


@pytest.mark.parametrize("limit", [0, -3])
def test_non_positive_limit_is_rejected(limit: int) -> None:
    assert f"limit must be a positive integer or empty, got {limit}" in _message(spec="clarify-math", limit=limit)


def test_registering_a_taken_name_is_a_bug() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_task_set("clarify-math")(lambda split, limit, seed: [])
