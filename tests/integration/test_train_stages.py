"""Real training through the real command: `collab train` / `collab resume` in this process, the trainer in the
`accelerate launch` subprocess, on a data stage built by hand to the run-directory contract.

The preemption test runs the first `collab train` as a subprocess so it can send it SIGUSR1, as Slurm would.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from datasets import Dataset, DatasetDict

from collab.cli import main
from collab.run.checkpoints import is_complete_checkpoint, last_complete_checkpoint
from collab.train.preemption import EXIT_PREEMPTED
from tests.preemption import train_until_checkpoint_then_preempt

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def preference_rows(n: int) -> list[dict[str, Any]]:
    """Clarify-or-answer pairs: ask when the apples per box are missing, answer when they are given."""
    rows = []
    for i in range(n):
        boxes, missing = i + 2, i % 2 == 0
        question = f"Tom has {boxes} boxes of apples{'' if missing else ' with 4 apples in each'}. How many apples?"
        ask, answer = "How many apples are in each box?", f"{boxes * 4} apples."
        chosen, rejected = (ask, answer) if missing else (answer, ask)
        rows.append({"prompt": [{"role": "user", "content": question}],
                     "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}],
                     "conv_id": f"c{i}", "turn": 0, "chosen_mr": 0.9, "rejected_mr": 0.2, "gap": 0.7})
    return rows


def write_data_stage(run_dir: Path, n: int = 12) -> None:
    """A finished data stage as the contract describes it: sft/ and dpo/ DatasetDicts, stats.json, DONE."""
    data = run_dir / "data"
    rows = preference_rows(n)
    sft = [{"messages": r["prompt"] + r["chosen"], "conv_id": r["conv_id"], "turn": 0, "mr": r["chosen_mr"]}
           for r in rows]
    DatasetDict({"train": Dataset.from_list(rows[2:]), "eval": Dataset.from_list(rows[:2])}).save_to_disk(
        str(data / "dpo"))
    DatasetDict({"train": Dataset.from_list(sft[2:]), "eval": Dataset.from_list(sft[:2])}).save_to_disk(
        str(data / "sft"))
    (data / "stats.json").write_text(json.dumps({"conversations": n, "mr_mean": 0.55, "pairs": {"train": n - 2}}))
    (data / "DONE").write_text("{}")


FAST = {"logging_steps": 1, "gradient_checkpointing": False, "max_length": 96, "per_device_train_batch_size": 2}


def write_recipe(tmp_path: Path, stages: list[dict[str, Any]], *, model: str = "tiny-random-smollm2",
                 lora: dict[str, Any] | None = None, wandb: str = "disabled") -> tuple[Path, Path]:
    run_dir = tmp_path / "run"
    kept = [{"keep_checkpoints": "all", **s} for s in stages]  # the tests read checkpoints after the stage ends
    recipe = {"name": "train-it", "output_dir": str(run_dir), "model": {"name": model, "lora": lora},
              "tracking": {"wandb": wandb, "project": "collab-tests"}, "stages": [{"kind": "data"}, *kept]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    write_data_stage(run_dir)
    return path, run_dir


def trainer_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / "trainer_state.json").read_text())


def test_dpo_on_smollm2_writes_a_checkpoint_and_a_loadable_adapter(tmp_path: Path) -> None:
    recipe, run_dir = write_recipe(tmp_path, [{"kind": "dpo", "data_from": "data", "trainer": {
        **FAST, "max_steps": 2, "save_steps": 2, "learning_rate": 2e-5, "beta": 0.1,
        "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 1.0]}}],
        model="smollm2-135m-instruct", lora={"r": 8, "alpha": 16, "dropout": 0.0})

    assert main(["train", str(recipe)]) == 0

    checkpoint = run_dir / "dpo" / "checkpoints" / "checkpoint-2"
    assert is_complete_checkpoint(checkpoint)
    state = trainer_state(checkpoint)
    assert state["global_step"] == 2
    assert all("rewards/margins" in entry for entry in state["log_history"][:2])
    final = run_dir / "dpo" / "final"
    assert (final / "adapter_model.safetensors").is_file() and (final / "tokenizer_config.json").is_file()
    assert json.loads((run_dir / "dpo" / "DONE").read_text())["global_step"] == 2
    assert json.loads((run_dir / "dpo" / "launch.json").read_text())["world_size"] == 1

    from collab.models import load_model

    model = load_model(str(final), device="cpu")  # the adapter on its base, merged
    assert type(model).__name__ == "LlamaForCausalLM" and model.num_parameters() > 100_000_000


def test_sft_then_dpo_continues_the_sft_adapter_and_a_rerun_skips_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe, run_dir = write_recipe(tmp_path, [
        {"kind": "sft", "data_from": "data", "trainer": {**FAST, "max_steps": 1, "save_steps": 1}},
        {"kind": "dpo", "data_from": "data", "init_from": "sft", "trainer": {**FAST, "max_steps": 1, "save_steps": 1}},
    ], lora={"r": 4, "alpha": 8, "dropout": 0.0})

    assert main(["train", str(recipe)]) == 0

    assert (run_dir / "sft" / "final" / "adapter_config.json").is_file()
    assert json.loads((run_dir / "dpo" / "DONE").read_text())["source"] == str(run_dir / "sft" / "final")
    assert (run_dir / "dpo" / "final" / "adapter_config.json").is_file()
    capsys.readouterr()
    assert main(["train", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "stage 'sft' is done; skipping it" in out and "stage 'dpo' is done; skipping it" in out
    assert "launching" not in out


def test_trainer_error_is_reported_with_its_own_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe, run_dir = write_recipe(tmp_path, [{"kind": "dpo", "data_from": "data", "trainer": {**FAST, "max_steps": 1}}])
    broken = Dataset.from_list([{"prompt": "p", "answer": "a"}])
    DatasetDict({"train": broken}).save_to_disk(str(run_dir / "data" / "dpo.new"))
    os.replace(run_dir / "data" / "dpo", run_dir / "data" / "dpo.old")
    os.replace(run_dir / "data" / "dpo.new", run_dir / "data" / "dpo")

    assert main(["train", str(recipe)]) == 2

    err = capsys.readouterr().err
    assert re.search(r"collab: error: stage 'dpo': .*dpo lacks the columns \['chosen', 'rejected'\]", err)
    assert not (run_dir / "dpo" / "DONE").exists()


def wandb_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def test_preempted_training_resumes_from_its_checkpoint_with_the_same_wandb_run(tmp_path: Path) -> None:
    recipe, run_dir = write_recipe(tmp_path, [{"kind": "dpo", "data_from": "data", "trainer": {
        **FAST, "max_steps": 6, "save_steps": 2, "save_total_limit": 10,
        "gradient_accumulation_steps": 2}}], wandb="offline")  # slower steps: the signal lands well before step 6
    stage = run_dir / "dpo"
    returncode, output = train_until_checkpoint_then_preempt(recipe, stage / "checkpoints" / "checkpoint-2")

    assert returncode == EXIT_PREEMPTED, output[-3000:]
    preempted = json.loads((stage / "preempted.json").read_text())
    stopped = preempted["global_step"]
    assert preempted["signal"] == "SIGUSR1" and 2 <= stopped < 6
    assert last_complete_checkpoint(stage / "checkpoints") == stage / "checkpoints" / f"checkpoint-{stopped}"
    assert not (stage / "DONE").exists()
    assert f"stopped on SIGUSR1 at step {stopped} of 6" in output and f"collab resume {run_dir}" in output

    assert main(["resume", str(run_dir)]) == 0

    state = trainer_state(stage / "checkpoints" / "checkpoint-6")
    assert state["global_step"] == 6
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert steps == [1, 2, 3, 4, 5, 6]
    second_launch = (stage / "train.log").read_text().split("\n=== ")[-1]
    assert f"resuming stage 'dpo' from {stage / 'checkpoints' / f'checkpoint-{stopped}'}" in second_launch
    assert len(re.findall(r"\{'loss': ", second_launch)) == 6 - stopped  # continued, not restarted from step 0
    assert json.loads((stage / "DONE").read_text())["global_step"] == 6
    assert not (stage / "preempted.json").exists()

    run_id = (stage / "wandb_id").read_text().strip()
    runs = wandb_runs(run_dir)
    assert [r.name.rsplit("-", 1)[1] for r in runs] == [run_id, run_id]  # one run id across both launches
    for run in runs:
        data = (run / f"run-{run_id}.wandb").read_bytes()
        assert b"train/loss" in data and b"train/global_step" in data
    assert b"data/samples" in (runs[0] / f"run-{run_id}.wandb").read_bytes()  # the sample table, first launch only
