"""The Slurm mechanics the slurm/ scripts rely on, proven on a real one-node cluster.

The real slurm/train.slurm, data.slurm and eval.slurm run here with tests/cluster/fake_collab.py standing in for
`collab`: a counter loop that saves on USR1 and exits 75, like the trainer. So these tests show that the scripts
requeue on the signal, restart with SLURM_RESTART_COUNT, rerun the same `collab train` command (overrides
included), resume from the saved counter, run every array shard before the afterok merge, and survive preemption by a higher partition,
without the minutes a real training run takes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.slurm_cluster import SlurmCluster, wait_for

pytestmark = pytest.mark.cluster


def write_recipe(tmp_path: Path) -> tuple[Path, Path]:
    run_dir = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"name: mech\noutput_dir: {run_dir}\n")
    return recipe, run_dir


def progress(run_dir: Path, stage: str) -> list[str]:
    path = run_dir / stage / "progress"
    return path.read_text().split("\n")[:-1] if path.exists() else []


def test_sbatch_runs_a_job_with_a_step(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "hello.out"
    job = slurm_cluster.sbatch(f"--output={out}", "--wrap", "echo batch $SLURM_JOB_ID; srun echo step ok")
    [record] = slurm_cluster.wait_final(job, timeout=60)
    assert record["JobState"] == "COMPLETED", record
    assert out.read_text().splitlines() == [f"batch {job}", "step ok"]


def test_usr1_saves_requeues_and_resumes(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    recipe, run_dir = write_recipe(tmp_path)
    env = slurm_cluster.fake_collab_env(tmp_path / "bin", FAKE_STEPS="24", FAKE_STEP_S="0.25")
    log = tmp_path / "train.out"
    job = slurm_cluster.sbatch(
        f"--output={log}", "slurm/train.slurm", "--recipe", str(recipe), "--run-dir", str(run_dir),
        "--stage", "dpo", "--accelerate-config", "cpu", "--", "--set", "seed=1", env=env)
    wait_for(lambda: len(progress(run_dir, "dpo")) >= 4, 60, "the fake trainer to count to 4")
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", job)

    [record] = slurm_cluster.wait_final(job, timeout=120)
    assert record["JobState"] == "COMPLETED", log.read_text()
    assert record["Restarts"] == "1"
    assert (run_dir / "dpo" / "DONE").exists()

    calls = (run_dir / "calls.log").read_text().splitlines()
    assert len(calls) == 2, calls
    assert calls[0].startswith("train | dpo | --set seed=1 | restart=0 |")
    assert calls[1].startswith("train | dpo | --set seed=1 | restart=1 |")
    assert "--num_machines 1 --num_processes 1" in calls[0] and "--machine_rank 0" in calls[0]
    assert "--rdzv_backend c10d" in calls[0] and "accelerate_config=cpu" in calls[0]

    # It saved once, then continued from the saved count instead of starting over.
    lines = progress(run_dir, "dpo")
    saved = [line for line in lines if line.startswith("saved")]
    assert len(saved) == 1
    count = int(saved[0].split()[1])
    assert 4 <= count < 24
    assert [int(x) for x in lines if not x.startswith("saved")] == list(range(1, 25))
    text = log.read_text()  # --open-mode=append keeps the first run's log across the requeue
    assert "restart 0" in text and "restart 1" in text and "requeueing job" in text


def test_array_shards_then_afterok_merge(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    recipe, run_dir = write_recipe(tmp_path)
    env = slurm_cluster.fake_collab_env(tmp_path / "bin", FAKE_SHARD_S="4")
    shards = slurm_cluster.sbatch(f"--output={tmp_path}/data-%A_%a.out", "--array=0-2", "slurm/data.slurm", "shard",
                                  str(recipe), "--stage", "data", env=env)
    merge = slurm_cluster.sbatch(f"--output={tmp_path}/merge.out", f"--dependency=afterok:{shards}",
                                 "slurm/data.slurm", "merge", str(run_dir), env=env)
    calls_log = run_dir / "calls.log"
    wait_for(lambda: calls_log.exists() and " | 0/3 | " in calls_log.read_text(), 60, "shard 0 to start")
    # A time-limit warning to one shard: its step is stopped and the task requeued; the merge still waits for it.
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", f"{shards}_0")
    tasks = slurm_cluster.wait_final(shards, timeout=120)
    [merged] = slurm_cluster.wait_final(merge, timeout=60)

    logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("data-*.out")))
    assert [t["JobState"] for t in tasks] == ["COMPLETED"] * 3, logs
    assert [t["Restarts"] for t in sorted(tasks, key=lambda t: t["ArrayTaskId"])] == ["1", "0", "0"]
    assert merged["JobState"] == "COMPLETED", (tmp_path / "merge.out").read_text()
    assert (run_dir / "data" / "merged").read_text().split() == [f"shard-{i}-of-3" for i in range(3)]
    calls = calls_log.read_text().splitlines()
    shard_calls = sorted((c.split(" | ")[1], c.split(" | ")[2]) for c in calls if c.startswith("data"))
    assert shard_calls == [("0/3", "restart=0"), ("0/3", "restart=1"), ("1/3", "restart=0"), ("2/3", "restart=0")]
    assert calls[-1].startswith("merge")  # it ran after every shard had written its output
    finished = max(float((run_dir / "data" / f"shard-{i}-of-3").read_text()) for i in range(3))
    assert (run_dir / "data" / "merged").stat().st_mtime >= finished


def test_preemption_by_high_partition_requeues_and_resumes(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    cpus = int(slurm_cluster.run("sinfo", "-h", "-o", "%c").stdout.split()[0])  # the whole node
    recipe, run_dir = write_recipe(tmp_path)
    env = slurm_cluster.fake_collab_env(tmp_path / "bin", FAKE_STEPS="30", FAKE_STEP_S="0.2")
    log = tmp_path / "low.out"
    low = slurm_cluster.sbatch(f"--output={log}", "--partition=low", f"--cpus-per-task={cpus}", "slurm/train.slurm",
                               "--recipe", str(recipe), "--run-dir", str(run_dir), "--stage", "grpo", env=env)
    wait_for(lambda: len(progress(run_dir, "grpo")) >= 3, 60, "the low-priority job to start counting")
    high = slurm_cluster.sbatch(f"--output={tmp_path}/high.out", "--partition=high", f"--cpus-per-task={cpus}",
                                "--wrap", "sleep 1")

    [urgent] = slurm_cluster.wait_final(high, timeout=60)
    [record] = slurm_cluster.wait_final(low, timeout=120)
    assert urgent["JobState"] == "COMPLETED"
    assert record["JobState"] == "COMPLETED", log.read_text()
    assert int(record["Restarts"]) >= 1
    assert any(line.startswith("saved") for line in progress(run_dir, "grpo"))
    assert (run_dir / "grpo" / "DONE").exists()
    assert "USR1" in log.read_text()


def test_eval_job_runs_the_stage(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    recipe, run_dir = write_recipe(tmp_path)
    env = slurm_cluster.fake_collab_env(tmp_path / "bin", FAKE_STEPS="2", FAKE_STEP_S="0.1")
    job = slurm_cluster.sbatch(f"--output={tmp_path}/eval.out", "slurm/eval.slurm", "--recipe", str(recipe),
                               "--run-dir", str(run_dir), "--stage", "eval", env=env)
    [record] = slurm_cluster.wait_final(job, timeout=60)
    assert record["JobState"] == "COMPLETED", (tmp_path / "eval.out").read_text()
    assert (run_dir / "eval" / "DONE").exists()
    assert (run_dir / "calls.log").read_text().startswith("train | eval |")

