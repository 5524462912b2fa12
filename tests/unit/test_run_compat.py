"""Restarting `collab train` on an existing run directory: what may change and what names the keys that may not."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from collab.config import Recipe, validate_recipe
from collab.errors import CollabError
from collab.run.compat import breaking_differences
from collab.run.record import open_run

BASE: dict[str, Any] = {
    "name": "compat",
    "model": {"name": "tiny-random-smollm2"},
    "stages": [
        {"kind": "data"},
        {"kind": "dpo", "data_from": "data",
         "trainer": {"max_steps": 6, "per_device_train_batch_size": 2, "learning_rate": 1e-5}},
    ],
}


def recipe(**changes: Any) -> Recipe:
    raw = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = raw
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        node[keys[-1]] = value
    return validate_recipe(raw)


def test_identical_recipes_are_compatible() -> None:
    assert breaking_differences(recipe(), recipe()) == []


def test_learning_rate_and_tracking_may_change_between_starts() -> None:
    changed = recipe(stages__1__trainer__learning_rate=2e-5, tracking__wandb="offline", reward__window=3)
    assert breaking_differences(recipe(), changed) == []


def test_model_name_change_is_named_with_both_values() -> None:
    assert breaking_differences(recipe(), recipe(model__name="smollm2-135m-instruct")) == [
        "model.name ('tiny-random-smollm2' -> 'smollm2-135m-instruct')"
    ]


def test_adding_lora_shows_the_whole_section() -> None:
    assert breaking_differences(recipe(), recipe(model__lora={"r": 8})) == [
        "model.lora (None -> {'r': 8, 'alpha': 16, 'dropout': 0.1, 'target_modules': 'all-linear'})"
    ]


def test_batch_and_step_arguments_are_named_by_stage_index() -> None:
    changed = recipe(stages__1__trainer__max_steps=8, stages__1__trainer__gradient_accumulation_steps=4)
    assert breaking_differences(recipe(), changed) == [
        "stages.1.trainer.gradient_accumulation_steps (unset -> 4)",
        "stages.1.trainer.max_steps (6 -> 8)",
    ]


def test_changed_stage_kind_is_named() -> None:
    changed = recipe(stages__1__kind="sft")
    assert breaking_differences(recipe(), changed) == ["stages ([data:data, dpo:dpo] -> [data:data, sft:sft])"]


def test_appending_a_stage_is_compatible() -> None:
    raw = copy.deepcopy(BASE)
    raw["stages"].append({"kind": "eval", "models": ["dpo"]})
    assert breaking_differences(recipe(), validate_recipe(raw)) == []


def test_restart_with_breaking_change_names_keys_and_the_fix(tmp_path: Path) -> None:
    open_run(recipe(), tmp_path)
    (tmp_path / "dpo" / "checkpoints").mkdir(parents=True)
    with pytest.raises(CollabError) as error:
        open_run(recipe(stages__1__trainer__per_device_train_batch_size=4), tmp_path)
    message = str(error.value)
    assert "stages.1.trainer.per_device_train_batch_size (2 -> 4)" in message
    assert "--set output_dir=" in message and f"collab resume {tmp_path}" in message


def test_restart_before_any_stage_started_takes_the_new_recipe(tmp_path: Path) -> None:
    open_run(recipe(), tmp_path)
    open_run(recipe(model__name="smollm2-135m-instruct"), tmp_path)
    assert "smollm2-135m-instruct" in (tmp_path / "recipe.resolved.yaml").read_text()


def test_restart_with_compatible_change_rewrites_the_resolved_recipe(tmp_path: Path) -> None:
    open_run(recipe(), tmp_path)
    (tmp_path / "data").mkdir()
    open_run(recipe(stages__1__trainer__learning_rate=3e-5), tmp_path)
    assert "learning_rate: 3.0e-05" in (tmp_path / "recipe.resolved.yaml").read_text()


def finished(run_dir: Path, *labels: str) -> None:
    for label in labels:
        (run_dir / label).mkdir(parents=True, exist_ok=True)
        (run_dir / label / "DONE").write_text("{}")


def test_rerun_with_changed_settings_of_a_finished_stage_is_refused_naming_each_key(tmp_path: Path) -> None:
    open_run(recipe(), tmp_path)
    finished(tmp_path, "data", "dpo")
    record = (tmp_path / "recipe.resolved.yaml").read_text()

    with pytest.raises(CollabError) as error:
        open_run(recipe(stages__1__trainer__beta=0.5, tasks__limit=16), tmp_path)

    message = str(error.value)
    assert "finished stages ['data', 'dpo']" in message
    assert "tasks.limit (None -> 16)" in message
    assert "stages.1.trainer.beta (unset -> 0.5)" in message
    assert "--set output_dir=runs/compat-2" in message and "--restart-from data" in message
    assert (tmp_path / "recipe.resolved.yaml").read_text() == record


def test_a_change_to_a_finished_stages_own_settings_suggests_restarting_from_that_stage(tmp_path: Path) -> None:
    open_run(recipe(), tmp_path)
    finished(tmp_path, "data", "dpo")

    with pytest.raises(CollabError, match="--restart-from dpo"):
        open_run(recipe(stages__1__trainer__learning_rate=3e-5), tmp_path)


def test_changes_to_unfinished_stages_and_tracking_are_accepted_and_recorded(tmp_path: Path) -> None:
    open_run(recipe(), tmp_path)
    finished(tmp_path, "data")

    open_run(recipe(stages__1__trainer__learning_rate=3e-5, tracking__wandb="offline"), tmp_path)

    assert "learning_rate: 3.0e-05" in (tmp_path / "recipe.resolved.yaml").read_text()


def test_restart_from_moves_that_stage_and_later_ones_aside_and_records_the_new_settings(tmp_path: Path) -> None:
    open_run(recipe(), tmp_path)
    finished(tmp_path, "data", "dpo")
    (tmp_path / "dpo" / "final").mkdir()

    open_run(recipe(stages__1__trainer__beta=0.5), tmp_path, restart_from="dpo")

    [moved] = list((tmp_path / "replaced").iterdir())
    assert sorted(p.name for p in moved.iterdir()) == ["dpo"]
    assert (moved / "dpo" / "final").is_dir() and not (tmp_path / "dpo").exists()
    assert (tmp_path / "data" / "DONE").is_file()
    assert "beta: 0.5" in (tmp_path / "recipe.resolved.yaml").read_text()


def test_restart_from_a_later_stage_still_refuses_changes_to_earlier_finished_stages(tmp_path: Path) -> None:
    open_run(recipe(), tmp_path)
    finished(tmp_path, "data", "dpo")

    with pytest.raises(CollabError, match="tasks.limit"):
        open_run(recipe(tasks__limit=16), tmp_path, restart_from="dpo")

    assert (tmp_path / "dpo" / "DONE").is_file() and not (tmp_path / "replaced").exists()


def test_restart_from_an_unknown_stage_lists_the_stage_names(tmp_path: Path) -> None:
    with pytest.raises(CollabError, match=r"no stage named 'dop'.*\['data', 'dpo'\]"):
        open_run(recipe(), tmp_path, restart_from="dop")
