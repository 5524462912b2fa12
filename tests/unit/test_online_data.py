"""The prompt dataset of the online stages: openings from the simulator, later states from a data stage's store,
task ids as a column, saved once and read back on every later launch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collab.config import Recipe, validate_recipe
from collab.errors import CollabError
from collab.simulators.sharded import ShardedSimulator
from collab.train import online_data
from collab.train.online_data import build_prompt_rows, load_online_data, load_tasks, prompts_path


def recipe(tmp_path: Path, *, data_from: str | None = None, system_prompt: str | None = None,
           first: dict[str, Any] | None = None) -> Recipe:
    return validate_recipe({
        "name": "prompts", "output_dir": str(tmp_path / "run"),
        "model": {"name": "tiny-random-smollm2", "system_prompt": system_prompt},
        "tasks": {"name": "clarify-math", "limit": 3},
        "stages": [first or {"kind": "data"},
                   {"kind": "grpo", "data_from": data_from, "trainer": {"num_generations": 2,
                                                                          "per_device_train_batch_size": 2}}],
    })


def test_each_task_gives_its_opening_with_the_task_id_and_the_system_prompt(tmp_path: Path) -> None:
    r = recipe(tmp_path, system_prompt="Ask when something is missing.")
    tasks = load_tasks(r)

    rows = build_prompt_rows(r, r.stages[1], r.run_dir, ShardedSimulator(), tasks)

    assert [row["task_id"] for row in rows] == [t.id for t in tasks]
    assert rows[0]["prompt"] == [{"role": "system", "content": "Ask when something is missing."},
                                 {"role": "user", "content": tasks[0].opening}]
    assert all(row["turn"] == 0 and row["conv_id"] == row["task_id"] for row in rows)


def write_store(run_dir: Path, records: list[dict[str, Any]], torn: str = "") -> None:
    store = run_dir / "data" / "store"
    store.mkdir(parents=True)
    text = "".join(json.dumps(r) + "\n" for r in records) + torn
    (store / "shard-0000-of-0001.jsonl").write_text(text)


def test_later_states_of_the_data_stage_are_added_once(tmp_path: Path) -> None:
    r = recipe(tmp_path, data_from="data")
    tasks = load_tasks(r)
    opening = [{"role": "user", "content": tasks[0].opening}]
    later = [*opening, {"role": "assistant", "content": "How many apples are in each box?"},
             {"role": "user", "content": tasks[0].facts[0]}]
    write_store(r.run_dir, [
        {"conv_id": tasks[0].id, "task_id": tasks[0].id, "turn": 0, "history": opening, "done": False},
        {"conv_id": tasks[0].id, "task_id": tasks[0].id, "turn": 1, "history": later, "done": True},
        {"conv_id": tasks[0].id, "task_id": tasks[0].id, "turn": 1, "history": later, "done": True},  # other shard
        {"conv_id": "elsewhere", "task_id": "not-in-this-set", "turn": 1, "history": later, "done": True},
    ], torn='{"conv_id": "half')

    rows = build_prompt_rows(r, r.stages[1], r.run_dir, ShardedSimulator(), tasks)

    assert len(rows) == 4  # three openings and one later state
    assert rows[3] == {"prompt": later, "task_id": tasks[0].id, "conv_id": tasks[0].id, "turn": 1}


def test_states_from_a_stage_that_is_not_a_data_stage_are_refused(tmp_path: Path) -> None:
    r = recipe(tmp_path, data_from="sft", first={"kind": "sft", "name": "sft"})
    with pytest.raises(CollabError, match="'sft', which is a sft stage, not a data stage"):
        build_prompt_rows(r, r.stages[1], r.run_dir, ShardedSimulator(), load_tasks(r))


def test_prompts_are_built_once_and_read_back_by_later_launches(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    r = recipe(tmp_path)
    first = load_online_data(r, r.stages[1], r.run_dir)
    assert prompts_path(r.run_dir, r.stages[1]).is_dir()

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the prompts were built again")

    monkeypatch.setattr(online_data, "build_prompt_rows", fail)
    again = load_online_data(r, r.stages[1], r.run_dir)

    assert again["train"].to_list() == first["train"].to_list()
    assert first["train"].column_names == ["prompt", "task_id", "conv_id", "turn"] and len(first["train"]) == 3
