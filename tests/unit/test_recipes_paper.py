"""The paper recipes (recipes/<model>/<task>/<stage>.yaml) carry CollabLLM's settings and form one lineage per
model and task. That every shipped recipe validates is tests/unit/test_config.py::test_every_shipped_recipe_validates.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import pytest

from collab.config import DataStage, EvalStage, Recipe, TrainerStage, load_recipe, recipes_root
from collab.errors import CollabError
from collab.run.compat import breaking_differences

MODELS = {"llama-3.1-8b-instruct": "meta-llama/Llama-3.1-8B-Instruct", "qwen3-8b": "Qwen/Qwen3-8B"}
TASKS = {"math-hard": ("collabllm-math-hard", 5e-4), "bigcodebench": ("collabllm-bigcodebench", 5e-4),
         "medium": ("collabllm-medium", 1e-4)}
LINEAGE = ["data", "sft", "dpo", "online_dpo", "grpo", "eval"]
GPUS = 8  # the GPU count the recipes state
FOLDERS = [(m, t) for m in MODELS for t in TASKS]
IDS = [f"{m}/{t}" for m, t in FOLDERS]


@functools.cache
def paper(model: str, task: str, stage: str) -> Recipe:
    return load_recipe(recipes_root() / model / task / f"{stage}.yaml")


def trainer(recipe: Recipe, label: str) -> TrainerStage:
    stage = recipe.stage(label)
    assert isinstance(stage, TrainerStage)
    return stage


def effective_batch(stage: TrainerStage) -> int:
    return stage.trainer["per_device_train_batch_size"] * stage.trainer.get("gradient_accumulation_steps", 1) * GPUS


def test_every_model_and_task_has_the_six_lineage_recipes() -> None:
    for model, task in FOLDERS:
        found = sorted(p.stem for p in (recipes_root() / model / task).glob("*.yaml"))
        assert found == sorted(LINEAGE), f"{model}/{task}"


@pytest.mark.parametrize(("model", "task"), FOLDERS, ids=IDS)
def test_recipes_are_prefixes_of_one_pipeline_sharing_a_run_directory(model: str, task: str) -> None:
    recipes = [paper(model, task, s) for s in LINEAGE]
    for shorter, longer in itertools.pairwise(recipes):
        assert [s.label for s in longer.stages] == [s.label for s in shorter.stages] + [LINEAGE[len(shorter.stages)]]
        assert longer.stages[: len(shorter.stages)] == shorter.stages
        assert longer.model_dump(exclude={"stages"}) == shorter.model_dump(exclude={"stages"})
        assert breaking_differences(shorter, longer) == []
    assert recipes[-1].output_dir == f"runs/{model}/{task}"


def test_a_longer_lineage_recipe_continues_a_shorter_ones_run_and_not_the_reverse(tmp_path: Path) -> None:
    from collab.run.record import open_run

    sft, dpo = paper("llama-3.1-8b-instruct", "medium", "sft"), paper("llama-3.1-8b-instruct", "medium", "dpo")
    open_run(sft, tmp_path)
    (tmp_path / "data").mkdir()  # a started stage makes the resolved recipe binding
    open_run(dpo, tmp_path)
    with pytest.raises(CollabError, match="stages"):
        open_run(sft, tmp_path)


@pytest.mark.parametrize(("model", "task"), FOLDERS, ids=IDS)
def test_model_lora_and_reward_follow_the_paper(model: str, task: str) -> None:
    recipe = paper(model, task, "eval")
    task_set, token_lambda = TASKS[task]

    assert recipe.model.name == MODELS[model]
    assert recipe.model.lora is not None
    assert (recipe.model.lora.r, recipe.model.lora.alpha, recipe.model.lora.dropout) == (32, 16, 0.1)
    assert recipe.tasks.name == task_set and recipe.tasks.limit == 500
    r = recipe.reward
    assert (r.window, r.samples, r.token_lambda, r.token_mode, r.interactivity) == (2, 3, token_lambda, "window",
                                                                                     "judge")
    assert recipe.policy.kind == "vllm"


@pytest.mark.parametrize(("model", "task"), FOLDERS, ids=IDS)
def test_simulator_and_judge_are_priced_api_models_reached_through_environment_variables(model: str,
                                                                                         task: str) -> None:
    recipe = paper(model, task, "eval")
    sim, judge = recipe.simulator.backend, recipe.judge.backend

    assert recipe.simulator.kind == "llm" and sim is not None and judge is not None
    assert (sim.kind, sim.model, sim.price_per_million) == ("openai", "gpt-4o-mini", (0.15, 0.60))
    assert (sim.base_url_env, sim.api_key_env) == ("COLLAB_SIMULATOR_BASE_URL", "COLLAB_SIMULATOR_API_KEY")
    assert (judge.kind, judge.model, judge.price_per_million) == ("openai", "gpt-4o", (2.5, 10.0))
    assert (judge.base_url_env, judge.api_key_env) == ("COLLAB_JUDGE_BASE_URL", "COLLAB_JUDGE_API_KEY")
    assert sim.base_url is None and judge.base_url is None  # no endpoint written into the recipe


@pytest.mark.parametrize(("model", "task"), FOLDERS, ids=IDS)
def test_trainer_stages_have_the_paper_hyperparameters_and_lineage(model: str, task: str) -> None:
    recipe = paper(model, task, "eval")
    # label: (init_from, learning rate, effective batch on 8 GPUs, epochs)
    expected = {"sft": (None, 1e-5, 64, 3), "dpo": ("sft", 5e-6, 64, 8), "online_dpo": ("dpo", 5e-6, 32, 1),
                "grpo": ("sft", 2e-6, 64, 5)}
    for label, (init_from, lr, batch, epochs) in expected.items():
        stage = trainer(recipe, label)
        assert (stage.kind, stage.init_from, stage.data_from) == (label, init_from, "data")
        assert (stage.trainer["learning_rate"], effective_batch(stage), stage.trainer["num_train_epochs"]) == (
            lr, batch, epochs), label
        assert stage.accelerate_config == "zero2" and stage.trainer["bf16"] is True
    assert trainer(recipe, "dpo").trainer["beta"] == 0.1
    assert trainer(recipe, "online_dpo").trainer["beta"] == [0.1]
    grpo = trainer(recipe, "grpo").trainer
    assert grpo["num_iterations"] > 1 and grpo["num_generations"] >= 2  # PPO-style clipping, a group baseline
    for label in ("online_dpo", "grpo"):
        args = trainer(recipe, label).trainer
        assert args["use_vllm"] is True and args["vllm_mode"] in ("colocate", "server")


@pytest.mark.parametrize(("model", "task"), FOLDERS, ids=IDS)
def test_data_and_eval_stages_close_the_pipeline(model: str, task: str) -> None:
    recipe = paper(model, task, "eval")
    data, ev = recipe.stage("data"), recipe.stage("eval")
    assert isinstance(data, DataStage) and isinstance(ev, EvalStage)

    assert data.max_turns == recipe.simulator.max_turns == 7  # paper: at most 14 messages
    assert "proactive" in data.strategies
    trained = [s.label for s in recipe.stages if isinstance(s, TrainerStage)]
    assert ev.models == [MODELS[model], *trained]  # the base model against every trained stage
