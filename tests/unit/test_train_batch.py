"""The effective batch of a trainer stage across GPU counts: stated in the recipe, kept or refused with numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from collab.config import load_recipe, validate_recipe
from collab.errors import CollabError
from collab.launch.slurm import SlurmOptions, SlurmPlanner
from collab.train.batch import batch_plan, check_effective_batch, scaled_accumulation

# The paper's DPO batch: 64 on one node of 8 GPUs = 2 per device x 4 accumulation x 8.
RECIPE = """\
name: paper
output_dir: {out}
model: {{name: tiny-random-smollm2}}
stages:
  - kind: data
  - kind: dpo
    data_from: data
    accelerate_config: zero2
    effective_batch_size: 64
    trainer: {{per_device_train_batch_size: 2, gradient_accumulation_steps: 4, max_steps: 2}}
"""


@pytest.fixture
def recipe_path(tmp_path: Path) -> Path:
    path = tmp_path / "paper.yaml"
    path.write_text(RECIPE.format(out=tmp_path / "run"))
    return path


def dpo(recipe_path: Path, *overrides: str):  # noqa: ANN201 - a TrainerStage
    return load_recipe(recipe_path, list(overrides)).stage("dpo")


def test_the_declared_gpu_count_gives_the_stated_batch(recipe_path: Path) -> None:
    plan = check_effective_batch(dpo(recipe_path), 8)
    assert (plan.effective, plan.matches) == (64, True)
    assert plan.describe() == ("effective batch 64 = per_device_train_batch_size 2 x gradient_accumulation_steps 4 "
                               "x 8 processes")


def test_sixteen_gpus_are_refused_with_the_numbers_and_the_accumulation_that_keeps_the_batch(
    recipe_path: Path,
) -> None:
    with pytest.raises(CollabError) as e:
        check_effective_batch(dpo(recipe_path), 16)
    assert ("effective batch 128 = per_device_train_batch_size 2 x gradient_accumulation_steps 4 x 16 processes, "
            "but the stage states effective_batch_size 64") in str(e.value)
    assert "Fix: --set stages.dpo.trainer.gradient_accumulation_steps=2 keeps it" in str(e.value)
    assert scaled_accumulation(dpo(recipe_path), 16) == 2
    assert scaled_accumulation(dpo(recipe_path), 4) == 8


def test_a_gpu_count_that_cannot_keep_the_batch_says_why(recipe_path: Path) -> None:
    with pytest.raises(CollabError, match=r"effective_batch_size 64 is not a multiple of per_device_train_batch_size "
                                          r"2 x 24 processes = 48"):
        scaled_accumulation(dpo(recipe_path), 24)
    with pytest.raises(CollabError) as e:
        check_effective_batch(dpo(recipe_path), 24)
    assert "Fix: stage 'dpo': effective_batch_size 64 is not a multiple" in str(e.value)


def test_a_stage_without_a_stated_batch_runs_anywhere_and_says_it_changes(tmp_path: Path) -> None:
    recipe = validate_recipe({"name": "x", "output_dir": str(tmp_path), "model": {"name": "tiny-random-smollm2"},
                              "stages": [{"kind": "data"}, {"kind": "sft", "data_from": "data"}]})
    plan = check_effective_batch(recipe.stages[1], 16)
    assert plan.effective == 8 * 1 * 16  # TRL's defaults: 8 per device, no accumulation
    assert "states no effective_batch_size, so it changes with the number of GPUs" in plan.describe()
    with pytest.raises(CollabError, match="states no effective_batch_size"):
        scaled_accumulation(recipe.stages[1], 16)


def slurm_plan(recipe_path: Path, nodes: int, scale_batch: bool = False):  # noqa: ANN201 - list[Job]
    options = SlurmOptions(nodes=nodes, gpus_per_node=8, stage="dpo", scale_batch=scale_batch)
    options.validate()
    return SlurmPlanner(load_recipe(recipe_path), recipe_path, [], options).plan()


def test_launch_states_the_batch_for_the_requested_world_size(recipe_path: Path) -> None:
    [job] = slurm_plan(recipe_path, nodes=1)
    assert any(line.startswith("effective batch 64 = ") and line.endswith("x 8 processes") for line in job.inside)
    assert "--" not in job.script_args  # nothing to override


def test_launch_on_two_nodes_refuses_unless_asked_to_scale(recipe_path: Path) -> None:
    with pytest.raises(CollabError, match="effective batch 128 .* 16 processes, but the stage states "
                                          "effective_batch_size 64"):
        slurm_plan(recipe_path, nodes=2)
    [job] = slurm_plan(recipe_path, nodes=2, scale_batch=True)
    assert job.script_args[-3:] == ["--", "--set", "stages.dpo.trainer.gradient_accumulation_steps=2"]
    assert ("effective batch 64 kept on 16 processes (--scale-batch): gradient_accumulation_steps 4 -> 2"
            in job.inside)
    # The job's own recipe, with that override, passes the runner's check on 16 processes.
    assert check_effective_batch(dpo(recipe_path, job.script_args[-1]), 16).effective == 64


def test_batch_plan_reads_the_trainer_arguments(recipe_path: Path) -> None:
    plan = batch_plan(dpo(recipe_path, "stages.dpo.trainer.per_device_train_batch_size=4"), 8)
    assert (plan.per_device, plan.accumulation, plan.world_size, plan.effective) == (4, 4, 8, 128)
