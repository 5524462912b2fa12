"""The paper recipes run end to end on a CPU through `collab train RECIPE --set ...`: the same files, shrunk by
overrides to a tiny model, a scripted user, the rule-based interactivity proxy and tiny sizes.

The pipeline file runs one stage at a time, as docs/recipes.md shows: `--stage data`, `--stage sft`, `--stage dpo`
into one run directory (each later stage reads the outputs of its finished inputs), then `--stage eval`, then the
online stages one by one with `--stage NAME`. Every start passes the same overrides: a run continues only under
the same step definition.

The model is tiny-random-smollm2 with a generation config that ends a reply on half of the vocabulary: a random
model otherwise never emits its end-of-turn token, every candidate hits the token limit and gets the truncation
penalty, and the data stage produces no SFT rows to train on.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from collab.cli import main

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "llama-3.1-8b-instruct" / "math-hard.yaml"
TRAINERS = ["sft", "dpo", "online_dpo", "grpo"]
TRAINER_SMOKE = {"bf16": "false", "max_steps": "1", "per_device_train_batch_size": "2",
                 "gradient_accumulation_steps": "1", "gradient_checkpointing": "false", "save_steps": "1",
                 "logging_steps": "1"}
TRAINER_EXTRA = {
    "sft": {"max_length": "128"},
    "dpo": {"max_length": "128"},
    "online_dpo": {"use_vllm": "false", "max_new_tokens": "8", "max_length": "128"},
    "grpo": {"use_vllm": "false", "max_completion_length": "8", "num_generations": "2", "num_iterations": "2"},
}


def stopping_tiny_model(folder: Path) -> Path:
    """tiny-random-smollm2, copied, with every even token id ending a reply (replies of about two tokens)."""
    from collab.models import tiny_model_dir

    shutil.copytree(tiny_model_dir(), folder)
    config = json.loads((folder / "config.json").read_text())
    generation = json.loads((folder / "generation_config.json").read_text())
    generation["eos_token_id"] = list(range(0, config["vocab_size"], 2))
    (folder / "generation_config.json").write_text(json.dumps(generation))
    return folder


def recipe_args(shared: list[str], *extra: str) -> list[str]:
    """`RECIPE --set ...`: the shared overrides and the smoke trainer arguments of every trainer stage, the same for
    every start: a run continues only under the same step definition."""
    assignments = [*shared, *extra, *(f"stages.{stage}.trainer.{k}={v}" for stage in TRAINERS
                                      for k, v in {**TRAINER_SMOKE, **TRAINER_EXTRA.get(stage, {})}.items()),
                   # the paper's batches belong to 8 GPUs; one CPU process with batch 2 states none
                   *(f"stages.{stage}.effective_batch_size=null" for stage in TRAINERS)]
    return [str(RECIPE), *(arg for a in assignments for arg in ("--set", a))]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """(run directory, model, overrides shared by every start of the pipeline)."""
    root = tmp_path_factory.mktemp("smoke")
    model = stopping_tiny_model(root / "tiny-stopping")
    run_dir = root / "run"
    overrides = [
        f"output_dir={run_dir}", f"model.name={model}", "model.dtype=float32", "policy.kind=hf",
        "tasks.name=clarify-math", "tasks.limit=4", "tracking.wandb=disabled",
        "simulator.kind=sharded", "simulator.max_turns=2",
        "reward.interactivity=elicitation", "reward.samples=1", "reward.window=1", "reward.policy_max_new_tokens=8",
        "stages.data.candidates=2", "stages.data.max_turns=2", "stages.data.max_new_tokens=8",
        "stages.data.min_gap=0", "stages.data.eval_fraction=0",
    ]
    return run_dir, model, overrides


def done(run_dir: Path, label: str) -> bool:
    return (run_dir / label / "DONE").is_file()


def test_data_sft_and_dpo_run_one_stage_at_a_time_from_the_pipeline_file(
        smoke: tuple[Path, Path, list[str]]) -> None:
    run_dir, model, overrides = smoke
    args = recipe_args(overrides, f"stages.eval.models=[{model}, sft, dpo]")

    assert main(["train", *args, "--stage", "sft"]) == 2  # its input, data, has not finished: nothing runs
    assert not (run_dir / "sft").exists()
    assert main(["train", *args, "--stage", "data"]) == 0
    assert main(["train", *args, "--stage", "sft"]) == 0
    stats = json.loads((run_dir / "data" / "stats.json").read_text())
    assert stats["conversations"] == 4 and stats["sft_rows"]["train"] > 0
    assert done(run_dir, "sft") and (run_dir / "sft" / "final" / "adapter_config.json").is_file()
    adapter = json.loads((run_dir / "sft" / "final" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (32, 16, 0.1)  # the paper's LoRA

    data_done = (run_dir / "data" / "DONE").stat().st_mtime_ns
    assert main(["train", *args, "--stage", "dpo"]) == 0
    assert (run_dir / "data" / "DONE").stat().st_mtime_ns == data_done  # read, not regenerated
    assert done(run_dir, "dpo")
    assert json.loads((run_dir / "dpo" / "DONE").read_text())["global_step"] == 1


def test_eval_stage_compares_the_base_model_with_the_trained_stages(smoke: tuple[Path, Path, list[str]]) -> None:
    run_dir, model, overrides = smoke
    if not done(run_dir, "dpo"):
        pytest.skip("needs the trained lineage of the previous test")

    assert main(["train", *recipe_args(overrides, f"stages.eval.models=[{model}, sft, dpo]"), "--stage", "eval"]) == 0

    results = json.loads((run_dir / "eval" / "results.json").read_text())
    assert sorted(results["models"]) == sorted([str(model), "sft", "dpo"])
    assert all(m["turns"]["n"] == 4 for m in results["models"].values())  # 4 test tasks, 1 run each
    assert len((run_dir / "eval" / "conversations.jsonl").read_text().splitlines()) == 3 * 4


@pytest.mark.skipif(importlib.util.find_spec("collab.train.online") is None,
                    reason="the online stages' runner (collab.train.online) is not in this version")
@pytest.mark.parametrize("stage", ["online_dpo", "grpo"])
def test_online_stage_trains_one_step(smoke: tuple[Path, Path, list[str]], stage: str) -> None:
    run_dir, model, overrides = smoke
    if not done(run_dir, "dpo"):
        pytest.skip("needs the trained lineage of the first test")

    assert main(["train", *recipe_args(overrides, f"stages.eval.models=[{model}, sft, dpo]"), "--stage", stage]) == 0
    assert json.loads((run_dir / stage / "DONE").read_text())["global_step"] == 1
    assert (run_dir / stage / "final" / "adapter_config.json").is_file()
