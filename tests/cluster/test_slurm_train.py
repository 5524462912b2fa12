"""A real DPO stage through `collab launch slurm` and slurm/train.slurm, preempted and resumed, on CPU.

The tiny random model trains a few steps on a hand-made preference dataset (the data stage is pre-built: a saved
DatasetDict with prompt/chosen/rejected and DONE). After the first checkpoint the test sends the batch shell USR1
as Slurm does before a time limit; the trainer saves and exits 75, the job requeues itself, and the restart runs
the same `collab train` to the end from the saved checkpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.slurm_cluster import ROOT, SlurmCluster, collab_has_commands, wait_for

pytestmark = [
    pytest.mark.cluster,
]

MAX_STEPS = 4

RECIPE = f"""\
name: slurm-dpo
output_dir: {{run_dir}}
model:
  name: tiny-random-smollm2
stages:
  - kind: data
  - kind: dpo
    data_from: data
    accelerate_config: cpu
    keep_checkpoints: last
    trainer:
      max_steps: {MAX_STEPS}
      per_device_train_batch_size: 2
      max_length: 64
      save_steps: 1
      logging_steps: 1
"""


def build_data_stage(run_dir: Path) -> None:
    """What a finished data stage leaves: data/dpo (a DatasetDict with train and eval splits) and data/DONE."""
    from datasets import Dataset, DatasetDict

    rows = [
        {"prompt": [{"role": "user", "content": f"Tom has {i} boxes of apples. How many apples?"}],
         "chosen": [{"role": "assistant", "content": "How many apples are in each box?"}],
         "rejected": [{"role": "assistant", "content": f"{4 * i} apples."}],
         "conv_id": f"c{i}", "turn": 0, "chosen_mr": 0.8, "rejected_mr": 0.1, "gap": 0.7}
        for i in range(8)
    ]
    DatasetDict({"train": Dataset.from_list(rows[:6]), "eval": Dataset.from_list(rows[6:])}).save_to_disk(
        str(run_dir / "data" / "dpo"))
    (run_dir / "data" / "DONE").write_text(json.dumps({"kind": "data", "built_by": "test"}))


def checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "dpo" / "checkpoints").glob("checkpoint-*"))


def test_dpo_stage_is_preempted_requeued_and_resumed(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    recipe = tmp_path / "dpo.yaml"
    recipe.write_text(RECIPE.format(run_dir=run_dir))
    build_data_stage(run_dir)

    launched = subprocess.run(
        [sys.executable, "-m", "collab.cli", "launch", "slurm", str(recipe), "--stage", "dpo", "--nodes", "1",
         "--gpus-per-node", "0", "--cpus-per-task", "2", "--time", "20", "--signal-s", "60"],
        env=slurm_cluster.env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert launched.returncode == 0, launched.stderr + launched.stdout
    assert "accelerate launch" in launched.stdout and str(ROOT / "slurm" / "train.slurm") in launched.stdout
    [job] = [line.split()[1].rstrip(":") for line in launched.stdout.splitlines() if line.startswith("submitted")]

    wait_for(lambda: bool(checkpoints(run_dir)) or slurm_cluster.state(job) not in ("PENDING", "RUNNING"), 240,
             "the first checkpoint")
    assert slurm_cluster.state(job) == "RUNNING", slurm_cluster.jobs(job)
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", job)

    [record] = slurm_cluster.wait_final(job, timeout=300)
    [log] = (run_dir / "logs").glob("collab-slurm-dpo-dpo-*.out")
    text = log.read_text()
    assert record["JobState"] == "COMPLETED", text[-4000:]
    assert record["Restarts"] == "1", text[-4000:]
    assert "training step ended with exit code 75" in text and "requeueing job" in text
    # Both starts ran `collab train` (the trainer's own stop line may mention `collab resume` for manual runs).
    started = [line.split("on every train node: ", 1)[1] for line in text.splitlines() if "on every train node: " in line]
    assert len(started) == 2 and all(cmd.startswith(f"collab train {recipe} --stage dpo") for cmd in started), started
    assert (run_dir / "dpo" / "DONE").is_file() and (run_dir / "dpo" / "final").is_dir()
    assert f"checkpoint-{MAX_STEPS}" in checkpoints(run_dir)
    assert f"stage 'dpo' (dpo) continues from {run_dir / 'dpo' / 'checkpoints'}" in text  # resumed, not restarted
