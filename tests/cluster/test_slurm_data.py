"""A real data stage through `collab launch slurm`: one shard per array task, then the afterok merge job.

The tiny random model plays the policy and the scripted (sharded) simulator the user, on two clarify-math tasks
with the shortest settings, so the test measures the Slurm plumbing (array, shard arguments, dependency, merge into
datasets and DONE), not the quality of the data.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.slurm_cluster import SlurmCluster, collab_has_commands

pytestmark = [
    pytest.mark.cluster,
]

SHARDS = 2

RECIPE = """\
name: slurm-data
output_dir: {run_dir}
model:
  name: tiny-random-smollm2
policy:
  kind: hf
  max_batch_size: 4
tasks:
  name: clarify-math
  limit: 2
simulator:
  kind: sharded
  max_turns: 2
reward:
  window: 1
  samples: 1
  policy_max_new_tokens: 4
stages:
  - kind: data
    candidates: 2
    max_turns: 1
    max_new_tokens: 8
    min_gap: 0.0
"""


def test_data_stage_runs_as_array_then_merge(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    recipe = tmp_path / "data.yaml"
    recipe.write_text(RECIPE.format(run_dir=run_dir))

    launched = subprocess.run(
        [sys.executable, "-m", "collab.cli", "launch", "slurm", str(recipe), "--nodes", "1", "--gpus-per-node", "0",
         "--shards", str(SHARDS), "--time", "15", "--signal-s", "60"],
        env=slurm_cluster.env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert launched.returncode == 0, launched.stderr + launched.stdout
    shards_job, merge_job = [line.split()[1].rstrip(":") for line in launched.stdout.splitlines()
                             if line.startswith("submitted")]
    assert f"--array=0-{SHARDS - 1}" in launched.stdout and "--dependency=afterok:$JOB1" in launched.stdout

    tasks = slurm_cluster.wait_final(shards_job, timeout=240)
    [merge] = slurm_cluster.wait_final(merge_job, timeout=120)
    logs = "\n".join(p.read_text()[-3000:] for p in sorted((run_dir / "logs").glob("*.out")))
    assert [t["JobState"] for t in tasks] == ["COMPLETED"] * SHARDS, logs
    assert merge["JobState"] == "COMPLETED", logs

    store = run_dir / "data" / "store"
    assert sorted(p.name for p in store.glob("shard-*.jsonl")) == [f"shard-{i:04d}-of-{SHARDS:04d}.jsonl"
                                                                   for i in range(SHARDS)]
    assert (run_dir / "data" / "DONE").is_file()
    assert (run_dir / "data" / "dpo").is_dir() and (run_dir / "data" / "sft").is_dir()
    assert json.loads((run_dir / "data" / "stats.json").read_text())["conversations"] == 2
    shard_args = sorted(line.split("--shard ")[1].split()[0] for line in logs.splitlines()
                        if "] collab data" in line and "--shard" in line)
    assert shard_args == [f"{i}/{SHARDS}" for i in range(SHARDS)]
