"""The paper recipes: one pipeline file per model and task (recipes/<model>/<task>.yaml) with CollabLLM's settings.

Each file holds every stage (data, sft, dpo, online_dpo, grpo, eval), and each stage declares the stages it reads
(`init_from`, `data_from`, the eval stage's trained `models`). The settings pinned here are those the earlier
per-stage files (recipes/<model>/<task>/<stage>.yaml) gave each stage on 8 GPUs. That every shipped recipe
validates is also tests/unit/test_config.py::test_every_shipped_recipe_validates.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from collab.config import DataStage, EvalStage, Recipe, TrainerStage, load_recipe, recipes_root
from collab.run.record import open_run

MODELS = {"llama-3.1-8b-instruct": "meta-llama/Llama-3.1-8B-Instruct", "qwen3-8b": "Qwen/Qwen3-8B"}
# task folder: (task set, token penalty lambda, reply tokens, trainer max_length)
TASKS = {"math-hard": ("collabllm-math-hard", 5e-4, 1024, 4096),
         "bigcodebench": ("collabllm-bigcodebench", 5e-4, 1024, 4096),
         "medium": ("collabllm-medium", 1e-4, 2048, 8192)}
PIPELINE = ["data", "sft", "dpo", "online_dpo", "grpo", "eval"]
GPUS = 8  # the GPU count the recipes state
PAIRS = [(m, t) for m in MODELS for t in TASKS]
IDS = [f"{m}/{t}" for m, t in PAIRS]


@functools.cache
def paper(model: str, task: str) -> Recipe:
    return load_recipe(recipes_root() / model / f"{task}.yaml")


def trainer(recipe: Recipe, label: str) -> TrainerStage:
    stage = recipe.stage(label)
    assert isinstance(stage, TrainerStage)
    return stage


def effective_batch(stage: TrainerStage) -> int:
    return stage.trainer["per_device_train_batch_size"] * stage.trainer.get("gradient_accumulation_steps", 1) * GPUS


def declared_inputs(recipe: Recipe, stage_label: str) -> list[str]:
    """The stage labels a stage reads: a trainer's init_from/data_from, an eval stage's trained models."""
    stage = recipe.stage(stage_label)
    labels = [s.label for s in recipe.stages]
    if isinstance(stage, TrainerStage):
        return [ref for ref in (stage.data_from, stage.init_from) if ref]
    if isinstance(stage, EvalStage):
        return [name for name in stage.models if name in labels]
    return []


def test_the_recipes_folder_holds_one_pipeline_per_model_and_task_and_the_quickstarts() -> None:
    found = sorted(str(p.relative_to(recipes_root())) for p in recipes_root().rglob("*.yaml"))
    assert found == sorted(["quickstart.yaml", "quickstart-online.yaml", *(f"{m}/{t}.yaml" for m, t in PAIRS)])


def test_recipes_list_shows_the_pipeline_files(capsys: pytest.CaptureFixture[str]) -> None:
    from collab.cli import main

    assert main(["recipes", "list"]) == 0
    assert capsys.readouterr().out.split() == sorted(
        ["recipes/quickstart.yaml", "recipes/quickstart-online.yaml", *(f"recipes/{m}/{t}.yaml" for m, t in PAIRS)])


@pytest.mark.parametrize(("model", "task"), PAIRS, ids=IDS)
def test_each_pipeline_runs_every_stage_in_order_into_the_run_directory_the_stage_files_shared(
        model: str, task: str) -> None:
    recipe = paper(model, task)
    assert [s.label for s in recipe.stages] == PIPELINE
    assert recipe.name == f"{model}-{task}"
    # Runs started with the per-stage files (data.yaml ... eval.yaml) used this directory: they continue in it.
    assert recipe.output_dir == f"runs/{model}/{task}"


@pytest.mark.parametrize(("model", "task"), PAIRS, ids=IDS)
def test_every_stage_input_names_an_earlier_stage(model: str, task: str) -> None:
    recipe = paper(model, task)
    expected = {"data": [], "sft": ["data"], "dpo": ["data", "sft"], "online_dpo": ["data", "dpo"],
                "grpo": ["data", "sft"], "eval": ["sft", "dpo", "online_dpo", "grpo"]}
    for index, label in enumerate(PIPELINE):
        inputs = declared_inputs(recipe, label)
        assert inputs == expected[label], label
        assert set(inputs) <= set(PIPELINE[:index]), label


def test_a_run_started_with_a_per_stage_file_continues_under_the_pipeline_file(tmp_path: Path) -> None:
    pipeline = paper("llama-3.1-8b-instruct", "medium")
    sft_file = pipeline.model_copy(update={"stages": pipeline.stages[:2]})  # what the old sft.yaml held
    open_run(sft_file, tmp_path)
    (tmp_path / "data").mkdir()  # a started stage makes the resolved recipe binding
    open_run(pipeline, tmp_path)  # appends stages: accepted
    assert [s.label for s in load_recipe(tmp_path / "recipe.resolved.yaml").stages] == PIPELINE


@pytest.mark.parametrize(("model", "task"), PAIRS, ids=IDS)
def test_model_lora_and_reward_follow_the_paper(model: str, task: str) -> None:
    recipe = paper(model, task)
    task_set, token_lambda, reply_tokens, _ = TASKS[task]

    assert recipe.model.name == MODELS[model]
    assert recipe.model.lora is not None
    assert (recipe.model.lora.r, recipe.model.lora.alpha, recipe.model.lora.dropout) == (32, 16, 0.1)
    assert recipe.tasks.name == task_set and recipe.tasks.limit == 500
    r = recipe.reward
    assert (r.window, r.samples, r.token_lambda, r.token_mode, r.interactivity) == (2, 3, token_lambda, "window",
                                                                                     "judge")
    assert (r.policy_temperature, r.policy_max_new_tokens) == (0.7, reply_tokens)


@pytest.mark.parametrize(("model", "task"), PAIRS, ids=IDS)
def test_the_policy_engine_keeps_its_gpu_settings(model: str, task: str) -> None:
    policy = paper(model, task).policy
    assert (policy.kind, policy.max_model_len, policy.gpu_memory_utilization, policy.max_batch_size) == (
        "vllm", 16384, 0.85, 64)


@pytest.mark.parametrize(("model", "task"), PAIRS, ids=IDS)
def test_simulator_and_judge_are_priced_api_models_reached_through_environment_variables(model: str,
                                                                                         task: str) -> None:
    recipe = paper(model, task)
    sim, judge = recipe.simulator.backend, recipe.judge.backend

    assert recipe.simulator.kind == "llm" and sim is not None and judge is not None
    assert (sim.kind, sim.model, sim.price_per_million, sim.concurrency) == ("openai", "gpt-4o-mini", (0.15, 0.60),
                                                                             64)
    assert (sim.base_url_env, sim.api_key_env) == ("COLLAB_SIMULATOR_BASE_URL", "COLLAB_SIMULATOR_API_KEY")
    assert (judge.kind, judge.model, judge.price_per_million, judge.concurrency) == ("openai", "gpt-4o", (2.5, 10.0),
                                                                                     32)
    assert (judge.base_url_env, judge.api_key_env) == ("COLLAB_JUDGE_BASE_URL", "COLLAB_JUDGE_API_KEY")
    assert sim.base_url is None and judge.base_url is None  # no endpoint written into the recipe


@pytest.mark.parametrize(("model", "task"), PAIRS, ids=IDS)
def test_trainer_stages_have_the_paper_hyperparameters_and_lineage(model: str, task: str) -> None:
    recipe = paper(model, task)
    # label: (init_from, learning rate, per-device batch, effective batch on 8 GPUs, epochs, save_steps)
    expected = {"sft": (None, 1e-5, 2, 64, 3, 20), "dpo": ("sft", 5e-6, 1, 64, 8, 20),
                "online_dpo": ("dpo", 5e-6, 1, 32, 1, 20), "grpo": ("sft", 2e-6, 2, 64, 5, 50)}
    for label, (init_from, lr, per_device, batch, epochs, save_steps) in expected.items():
        stage = trainer(recipe, label)
        args = stage.trainer
        assert (stage.kind, stage.init_from, stage.data_from) == (label, init_from, "data")
        assert (args["learning_rate"], args["per_device_train_batch_size"], effective_batch(stage),
                args["num_train_epochs"], args["save_steps"]) == (lr, per_device, batch, epochs, save_steps), label
        assert stage.effective_batch_size == batch, label  # stated, so another GPU count cannot change it
        assert stage.accelerate_config == "zero2" and args["bf16"] is True and args["logging_steps"] == 5
    assert trainer(recipe, "dpo").trainer["beta"] == 0.1
    assert trainer(recipe, "online_dpo").trainer["beta"] == [0.1]
    grpo = trainer(recipe, "grpo").trainer
    # PPO-style clipping (batches reused, so the ratio is clipped), a group baseline
    assert (grpo["num_iterations"], grpo["epsilon"], grpo["num_generations"]) == (2, 0.2, 4)


@pytest.mark.parametrize(("model", "task"), PAIRS, ids=IDS)
def test_a_16_gpu_launch_is_refused_unless_it_scales_the_accumulation(model: str, task: str, tmp_path: Path) -> None:
    from collab.errors import CollabError
    from collab.launch.slurm import SlurmOptions, SlurmPlanner

    path = recipes_root() / model / f"{task}.yaml"
    recipe = load_recipe(path, [f"output_dir={tmp_path}"])

    def jobs(scale_batch: bool) -> list:
        options = SlurmOptions(nodes=2, gpus_per_node=8, scale_batch=scale_batch)
        return SlurmPlanner(recipe, path, [f"output_dir={tmp_path}"], options, cwd=tmp_path).plan()

    with pytest.raises(CollabError, match=r"stage 'sft': effective batch 128 = per_device_train_batch_size 2 x "
                                          r"gradient_accumulation_steps 4 x 16 processes, but the stage states "
                                          r"effective_batch_size 64"):
        jobs(scale_batch=False)
    scaled = {job.label: job for job in jobs(scale_batch=True)}
    for label in ("sft", "dpo", "online_dpo", "grpo"):
        accumulation = trainer(recipe, label).trainer["gradient_accumulation_steps"]
        job, half = scaled[label], accumulation // 2
        assert job.script_args[-2:] == ["--set", f"stages.{label}.trainer.gradient_accumulation_steps={half}"], label
        batch = trainer(recipe, label).effective_batch_size
        assert (f"effective batch {batch} kept on 16 processes (--scale-batch): gradient_accumulation_steps "
                f"{accumulation} -> {half}") in job.inside


@pytest.mark.parametrize(("model", "task"), PAIRS, ids=IDS)
def test_trainer_stages_keep_their_lengths_and_colocated_vllm_share(model: str, task: str) -> None:
    recipe = paper(model, task)
    _, _, reply_tokens, max_length = TASKS[task]
    for label in ("sft", "dpo", "online_dpo"):
        assert trainer(recipe, label).trainer["max_length"] == max_length, label
    online_dpo, grpo = trainer(recipe, "online_dpo").trainer, trainer(recipe, "grpo").trainer
    assert (online_dpo["max_new_tokens"], grpo["max_completion_length"]) == (reply_tokens, reply_tokens)
    for args in (online_dpo, grpo):
        assert (args["use_vllm"], args["vllm_mode"], args["vllm_gpu_memory_utilization"], args["temperature"]) == (
            True, "colocate", 0.3, 0.7)
    # vLLM would otherwise size its KV cache for the model's full context, which the 0.3 share does not hold.
    assert grpo["vllm_max_model_length"] == 8192
    thinking_off = {"chat_template_kwargs": {"enable_thinking": False}} if model == "qwen3-8b" else {}
    assert {k: v for k, v in grpo.items() if k == "chat_template_kwargs"} == thinking_off


@pytest.mark.parametrize(("model", "task"), PAIRS, ids=IDS)
def test_data_and_eval_stages_close_the_pipeline(model: str, task: str) -> None:
    recipe = paper(model, task)
    _, _, reply_tokens, _ = TASKS[task]
    data, ev = recipe.stage("data"), recipe.stage("eval")
    assert isinstance(data, DataStage) and isinstance(ev, EvalStage)

    assert data.max_turns == recipe.simulator.max_turns == 7  # paper: at most 14 messages
    assert (data.candidates, data.strategies, data.pairs, data.min_gap) == (
        3, ["sample", "proactive", "sample"], "best_worst", 0.05)
    assert (data.temperature, data.max_new_tokens, data.batch_conversations) == (0.8, reply_tokens, 64)
    trained = [s.label for s in recipe.stages if isinstance(s, TrainerStage)]
    assert ev.models == [MODELS[model], *trained]  # the base model against every trained stage
    assert (ev.runs, ev.mode) == (1, "sharded")
