"""CollabLLM hub loaders, on small local fixtures: one task per conversation, split by conversation, offline errors."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from collab.errors import CollabError
from collab.tasks import collabllm_hub
from collab.tasks.collabllm_hub import (
    DATA_DIR_ENV,
    conversation_split,
    last_boxed,
    row_group_to_task,
    rows_to_tasks,
    select_split,
)
from collab.tasks.record import Task
from collab.tasks.registry import load_task_set

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "collabllm"


@pytest.fixture(autouse=True)
def offline_fixtures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(FIXTURES))


def _rows(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]


def _by_conv(tasks: list[Task]) -> dict[Any, Task]:
    return {t.metadata["conv_id"]: t for t in tasks}


def test_math_gives_one_task_per_conversation_from_its_first_turn() -> None:
    rows = _rows("math-hard")
    tasks = _by_conv(load_task_set("collabllm-math-hard", split="all"))
    assert len(rows) == 4 and sorted(tasks) == [3, 5]
    task = tasks[3]
    assert task.id == "collabllm-math-hard-3"
    assert task.kind == "math" and task.needs_clarification is True
    assert task.goal == rows[0]["single_turn_prompt"]
    assert task.opening == rows[0]["prompt"][0]["content"]
    assert task.metadata["turns"] == 2 and task.metadata["rows"] == 3
    assert task.metadata["single_turn_metadata"] == {
        "level": "Level 5", "type": "Counting & Probability", "split": "train",
    }  # fmt: skip
    assert task.metadata["source"] == "collabllm/collabllm-multiturn-math-hard"


def test_math_answer_is_the_last_boxed_value() -> None:
    tasks = _by_conv(load_task_set("collabllm-math-hard", split="all"))
    assert tasks[3].answer == "\\frac{5}{14}"
    assert tasks[5].answer == "103"


def test_last_boxed_balances_nested_braces_and_returns_none_without_one() -> None:
    assert last_boxed("so $\\boxed{1}$ or rather $\\boxed{\\frac{1}{2}}$") == "\\frac{1}{2}"
    assert last_boxed("no box here") is None


def test_math_answer_without_a_box_keeps_the_full_completion() -> None:
    row = {**_rows("math-hard")[3], "single_turn_completion": "The answer is 103."}
    assert row_group_to_task("math-hard", 5, [row]).answer == "The answer is 103."


def test_first_turn_is_chosen_by_turn_id_not_row_order() -> None:
    rows = list(reversed(_rows("math-hard")[:3]))
    task = row_group_to_task("math-hard", 3, rows)
    assert task.opening == _rows("math-hard")[0]["prompt"][0]["content"]


def test_code_tests_and_entry_point_come_from_single_turn_metadata() -> None:
    rows = _rows("bigcodebench")
    task = _by_conv(load_task_set("collabllm-bigcodebench", split="all"))[8]
    assert task.kind == "code" and task.entry_point == "task_func"
    assert task.tests is not None and task.tests.startswith(rows[0]["single_turn_metadata"]["test"].rstrip())
    assert "def check(candidate)" in task.tests
    assert task.answer == json.loads(rows[0]["single_turn_completion"])["answer"]
    assert "test" not in task.metadata["single_turn_metadata"]
    assert task.metadata["single_turn_metadata"]["task_id"] == "BigCodeBench/1001"


def test_code_falls_back_to_the_json_completion_for_tests() -> None:
    task = _by_conv(load_task_set("collabllm-bigcodebench", split="all"))[12]
    assert task.entry_point == "task_func"
    assert task.tests is not None and "def test_n_too_large" in task.tests


@pytest.mark.parametrize("conv_id", [8, 12])
def test_code_reference_answer_passes_the_wrapped_unittest_tests(conv_id: int) -> None:
    task = _by_conv(load_task_set("collabllm-bigcodebench", split="all"))[conv_id]
    assert task.tests is not None and task.entry_point is not None
    namespace: dict[str, Any] = {}
    exec(task.answer + "\n" + task.tests, namespace)
    namespace["check"](namespace[task.entry_point])
    broken: dict[str, Any] = {}
    exec(task.answer.replace("return ", "return None and ") + "\n" + task.tests, broken)
    with pytest.raises(AssertionError, match="TestCases"):
        broken["check"](broken[task.entry_point])


def test_code_row_without_tests_anywhere_is_a_collab_error() -> None:
    row = {**_rows("bigcodebench")[2], "single_turn_completion": "def task_func(values, n): ..."}
    with pytest.raises(CollabError, match="no tests or entry point"):
        row_group_to_task("bigcodebench", 12, [row])


def test_medium_tasks_are_documents() -> None:
    rows = _rows("medium")
    tasks = _by_conv(load_task_set("collabllm-medium", split="all"))
    assert {t.kind for t in tasks.values()} == {"doc"}
    assert tasks[17].answer == rows[0]["single_turn_completion"]
    assert tasks[17].opening == "Could you help me write a short blog post about working from home?"
    assert tasks[21].metadata["single_turn_metadata"]["tags"] == ["Cooking", "Self Improvement"]


@pytest.mark.parametrize("name", ["math-hard", "bigcodebench", "medium"])
def test_splits_are_by_conversation_and_cover_every_task(name: str) -> None:
    every = load_task_set(f"collabllm-{name}", split="all")
    train = load_task_set(f"collabllm-{name}", split="train")
    test = load_task_set(f"collabllm-{name}", split="test")
    assert {t.id for t in train} | {t.id for t in test} == {t.id for t in every}
    assert not {t.id for t in train} & {t.id for t in test}
    assert len(train) == 1 and len(test) == 1  # fixtures hold one conversation of each split


def test_multi_turn_conversation_lands_whole_in_one_split() -> None:
    test = load_task_set("collabllm-math-hard", split="test")
    assert [t.metadata["conv_id"] for t in test] == [3]
    assert test[0].metadata["rows"] == 3  # all three turn rows became this one task


def test_split_does_not_depend_on_row_order() -> None:
    rows = _rows("math-hard") + _rows("math-hard")[:1]
    random.Random(0).shuffle(rows)
    shuffled = select_split(rows_to_tasks("math-hard", rows), "test")
    assert [t.id for t in shuffled] == ["collabllm-math-hard-3"]


def test_about_a_fifth_of_conversations_go_to_test() -> None:
    share = sum(conversation_split(i) == "test" for i in range(5000)) / 5000
    assert 0.17 < share < 0.23
    assert conversation_split("abc") == conversation_split("abc")


def test_parquet_files_load_like_jsonl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(_rows("math-hard")), tmp_path / "math-hard.parquet")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert load_task_set("collabllm-math-hard", split="all") == rows_to_tasks("math-hard", _rows("math-hard"))


def test_data_dir_without_the_file_says_which_names_to_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(CollabError) as info:
        load_task_set("collabllm-medium")
    message = str(info.value)
    assert f"no data file for collabllm-medium in {tmp_path}" in message
    assert "medium.jsonl or medium.parquet" in message


def test_unreachable_hub_without_data_dir_explains_the_offline_route(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV)

    def offline(repo: str) -> list[dict[str, Any]]:
        raise ConnectionError(f"Couldn't reach '{repo}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(collabllm_hub, "_load_from_hub", offline)
    with pytest.raises(CollabError) as info:
        load_task_set("collabllm-math-hard")
    message = str(info.value)
    assert "cannot load collabllm/collabllm-multiturn-math-hard" in message
    assert DATA_DIR_ENV in message and "math-hard.jsonl" in message


def test_rows_missing_a_column_are_a_collab_error() -> None:
    row = _rows("medium")[0]
    del row["single_turn_prompt"]
    with pytest.raises(CollabError, match="row 0 lacks column\\(s\\) single_turn_prompt"):
        rows_to_tasks("medium", [row])
