"""W&B settings of training stages: the mode, the run id stored once per stage, what the trainer is given."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from collab.config import Recipe, TrackingConfig
from collab.run.layout import StagePaths
from collab.train.tracking import ensure_run_id, flatten_numbers, sample_rows, wandb_env, wandb_mode


def recipe(mode: str = "offline") -> Recipe:
    return Recipe(name="track", tracking=TrackingConfig(wandb=mode, project="p", tags=["a", "b"]),  # type: ignore[arg-type]
                  stages=[{"kind": "data"}, {"kind": "dpo", "data_from": "data"}])  # type: ignore[list-item]


def test_wandb_id_is_generated_once_and_kept(tmp_path: Path) -> None:
    paths = StagePaths(tmp_path, "dpo")
    first = ensure_run_id(paths)
    assert len(first) == 8 and first.isalnum()
    assert ensure_run_id(paths) == first
    assert (tmp_path / "dpo" / "wandb_id").read_text().strip() == first
    assert [p.name for p in (tmp_path / "dpo").iterdir()] == ["wandb_id"]  # no temporary files left


def _race(run_dir: str, out: mp.Queue[str]) -> None:
    out.put(ensure_run_id(StagePaths(Path(run_dir), "dpo")))


def test_processes_starting_a_stage_together_agree_on_one_id(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    queue: mp.Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), queue)) for _ in range(4)]
    for p in procs:
        p.start()
    ids = {queue.get(timeout=30) for _ in procs}
    for p in procs:
        p.join(30)
    assert ids == {(tmp_path / "dpo" / "wandb_id").read_text().strip()}


def test_wandb_mode_environment_variable_wins_over_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    assert wandb_mode(recipe("online"), {}) == "online"
    assert wandb_mode(recipe("online"), {"WANDB_MODE": "offline"}) == "offline"
    assert wandb_mode(recipe("disabled"), {"WANDB_MODE": "dryrun"}) == "offline"
    assert wandb_mode(recipe("offline"), {"WANDB_MODE": "disabled"}) == "disabled"


def test_trainer_environment_resumes_the_stored_run_in_the_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    r = recipe("offline")
    env = wandb_env(r, r.stages[1], tmp_path)  # type: ignore[arg-type]
    assert env == {
        "WANDB_MODE": "offline", "WANDB_RUN_ID": (tmp_path / "dpo" / "wandb_id").read_text().strip(),
        "WANDB_RESUME": "allow", "WANDB_DIR": str(tmp_path.resolve()), "WANDB_PROJECT": "p",
        "WANDB_NAME": "track/dpo", "WANDB_TAGS": "a,b",
    }


def test_disabled_tracking_creates_no_run_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    r = recipe("disabled")
    assert wandb_env(r, r.stages[1], tmp_path) == {"WANDB_MODE": "disabled"}  # type: ignore[arg-type]
    assert not (tmp_path / "dpo").exists()


def test_data_stats_are_flattened_to_numeric_summary_keys() -> None:
    stats = {"conversations": 12, "mr_mean": 0.4, "mean_gap": None, "pairs": {"train": 30, "eval": 3},
             "chosen_strategies": {"ask": 20}, "name": "x", "ok": True}
    assert flatten_numbers(stats, "data") == {"data/conversations": 12, "data/mr_mean": 0.4, "data/pairs/train": 30,
                                              "data/pairs/eval": 3, "data/chosen_strategies/ask": 20}


def test_sample_table_shows_pairs_with_their_scores() -> None:
    row = {"prompt": [{"role": "user", "content": "How many apples?"}],
           "chosen": [{"role": "assistant", "content": "Per box?"}], "rejected": {"role": "assistant", "content": "12"},
           "conv_id": "c1", "turn": 0, "chosen_mr": 0.9, "rejected_mr": 0.1, "gap": 0.8}
    columns, data = sample_rows("dpo", [row])
    assert columns == ["conv_id", "turn", "prompt", "chosen", "rejected", "chosen_mr", "rejected_mr", "gap"]
    assert data == [["c1", 0, "[user] How many apples?", "[assistant] Per box?", "[assistant] 12", 0.9, 0.1, 0.8]]
    columns, data = sample_rows("sft", [{"messages": row["prompt"] + row["chosen"], "conv_id": "c1", "turn": 0,
                                         "mr": 0.9}])
    assert data == [["c1", 0, "[user] How many apples?\n[assistant] Per box?", 0.9]]
