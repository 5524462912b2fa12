"""Reading a stage's training data from its data stage, and the row conversions for TRL."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from collab.config import TrainerStage
from collab.errors import CollabError
from collab.train.data import eval_split, load_stage_data
from collab.train.dpo import to_preference
from collab.train.sft import to_prompt_completion

USER = {"role": "user", "content": "Tom has 3 boxes. How many apples?"}
ASK = {"role": "assistant", "content": "How many apples per box?"}


def test_sft_row_trains_on_its_last_assistant_turn_only() -> None:
    row = {"messages": [{"role": "system", "content": "s"}, USER, ASK], "conv_id": "c", "turn": 0, "mr": 0.5}
    assert to_prompt_completion(row) == {"prompt": [{"role": "system", "content": "s"}, USER], "completion": [ASK]}


def test_sft_row_ending_with_a_user_turn_is_refused() -> None:
    with pytest.raises(CollabError, match="conversation 'c9' does not end with an assistant turn"):
        to_prompt_completion({"messages": [USER], "conv_id": "c9"})


def test_dpo_row_accepts_single_messages_or_lists() -> None:
    assert to_preference({"prompt": [USER], "chosen": ASK, "rejected": [ASK], "gap": 0.3}) == {
        "prompt": [USER], "chosen": [ASK], "rejected": [ASK]}


def stage(data_from: str | None = "data") -> TrainerStage:
    return TrainerStage(kind="sft", data_from=data_from)


def as_split(rows: list[dict[str, object]]) -> Dataset:
    # datasets cannot build an empty split from an empty list; from_dict with the columns can.
    return Dataset.from_list(rows) if rows else Dataset.from_dict({"messages": [], "conv_id": [], "turn": [], "mr": []})


def save(run_dir: Path, train_rows: int, eval_rows: int = 1, done: bool = True) -> None:
    rows = [{"messages": [USER, ASK], "conv_id": f"c{i}", "turn": 0, "mr": 0.5} for i in range(train_rows + eval_rows)]
    DatasetDict({"train": as_split(rows[eval_rows:]), "eval": as_split(rows[:eval_rows])}).save_to_disk(
        str(run_dir / "data" / "sft"))
    if done:
        (run_dir / "data" / "DONE").write_text("{}")


def test_stage_data_is_read_from_the_data_stage(tmp_path: Path) -> None:
    save(tmp_path, 3)
    data = load_stage_data(tmp_path, stage(), "sft")
    assert (len(data["train"]), len(data["eval"])) == (3, 1)
    assert eval_split(data, {}) is None  # no evaluation unless the trainer asks for it
    assert len(eval_split(data, {"eval_strategy": "steps"})) == 1


def test_empty_eval_split_is_left_out_instead_of_failing_to_load(tmp_path: Path) -> None:
    save(tmp_path, 3, eval_rows=0)  # datasets 5.2 saves an empty split without shards and cannot load it back
    data = load_stage_data(tmp_path, stage(), "sft")
    assert list(data) == ["train"] and len(data["train"]) == 3
    assert eval_split(data, {"eval_strategy": "steps"}) is None


def test_no_data_from_is_explained(tmp_path: Path) -> None:
    with pytest.raises(CollabError, match="stage 'sft' \\(sft\\) has no data_from"):
        load_stage_data(tmp_path, stage(None), "sft")


def test_unfinished_data_stage_is_explained(tmp_path: Path) -> None:
    save(tmp_path, 3, done=False)
    with pytest.raises(CollabError, match="stage 'data' has not finished"):
        load_stage_data(tmp_path, stage(), "sft")


def test_empty_training_split_suggests_more_data(tmp_path: Path) -> None:
    save(tmp_path, 0)
    with pytest.raises(CollabError, match="has no training rows.*min_gap"):
        load_stage_data(tmp_path, stage(), "sft")
