"""The line Ctrl-C prints says what each kind of stage kept: scored turns, finished conversations, or a checkpoint."""

from __future__ import annotations

from pathlib import Path

from collab.interrupt import saved_state, stage_interrupted
from tests.unit.test_run_checkpoints import make_checkpoint


def test_a_data_stage_counts_the_scored_turns_of_every_shard(tmp_path: Path) -> None:
    store = tmp_path / "data" / "store"
    store.mkdir(parents=True)
    (store / "shard-0000-of-0002.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    (store / "shard-0001-of-0002.jsonl").write_text('{"a": 3}\n\n')
    assert saved_state(tmp_path, "data", "data") == (f"3 scored turns are saved in {store}; the turns in progress "
                                                     "were lost")


def test_a_data_stage_with_nothing_scored_says_so(tmp_path: Path) -> None:
    assert saved_state(tmp_path, "data", "data") == "no turn had been scored yet"


def test_an_eval_stage_counts_its_finished_conversations(tmp_path: Path) -> None:
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "conversations.jsonl").write_text('{"x": 1}\n{"x": 2}\n')
    assert saved_state(tmp_path, "eval", "eval") == "2 finished conversations are saved; the ones in progress were lost"
    assert saved_state(tmp_path, "eval2", "eval") == "no conversation had finished yet"


def test_a_trainer_stage_names_its_last_complete_checkpoint_not_a_torn_one(tmp_path: Path) -> None:
    checkpoints = tmp_path / "dpo" / "checkpoints"
    make_checkpoint(checkpoints, 4)
    make_checkpoint(checkpoints, 6, torn_state=True)
    error = stage_interrupted(tmp_path, "dpo", "dpo")
    assert str(error) == (f"interrupted during stage 'dpo': the last complete checkpoint is {checkpoints}/checkpoint-4"
                          f" (step 4); the steps after it were lost. Continue with `collab resume {tmp_path}`.")


def test_a_trainer_stage_without_a_checkpoint_starts_over(tmp_path: Path) -> None:
    assert saved_state(tmp_path, "grpo", "grpo") == "no checkpoint had been saved yet, so the stage starts over"
