"""Two stages of one pipeline recipe into one run directory through the real slurm/train.slurm, with a preemption.

A paper recipe holds every stage and its jobs share one output_dir: the sft job runs first, then the grpo job
trains its own stage, here with a `--set` override as a user scaling the batch would pass. The second job is
preempted (USR1, as before a time limit), requeues itself, and must rerun the same
`collab train RECIPE --stage grpo --set ...` command: not `collab resume RUN_DIR`, whose resolved recipe is the one
the latest start wrote (the sft job's, without the override). tests/cluster/fake_collab.py stands in for `collab`
(a counter that saves on the signal and records the overrides of each start), so the test costs seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.slurm_cluster import SlurmCluster, wait_for

pytestmark = pytest.mark.cluster

OVERRIDE = "stages.2.trainer.gradient_accumulation_steps=4"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_second_stage_job_keeps_its_override_across_preemption_and_resumes(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(f"name: lineage\noutput_dir: {run_dir}\n# stages: data, sft, grpo\n")

    first_env = slurm_cluster.fake_collab_env(tmp_path / "bin", FAKE_STEPS="3", FAKE_STEP_S="0.1")
    first = slurm_cluster.sbatch(f"--output={tmp_path}/sft.out", "slurm/train.slurm", "--recipe", str(pipeline),
                                 "--run-dir", str(run_dir), "--stage", "sft", env=first_env)
    [done] = slurm_cluster.wait_final(first, timeout=60)
    assert done["JobState"] == "COMPLETED", (tmp_path / "sft.out").read_text()
    assert (run_dir / "sft" / "DONE").exists() and (run_dir / "recipe.resolved.yaml").exists()

    env = slurm_cluster.fake_collab_env(tmp_path / "bin", FAKE_STEPS="24", FAKE_STEP_S="0.25")
    log = tmp_path / "grpo.out"
    job = slurm_cluster.sbatch(f"--output={log}", "slurm/train.slurm", "--recipe", str(pipeline), "--run-dir",
                               str(run_dir), "--stage", "grpo", "--", "--set", OVERRIDE, env=env)
    wait_for(lambda: len(lines(run_dir / "grpo" / "progress")) >= 4, 60, "the grpo stage to count to 4")
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", job)
    [record] = slurm_cluster.wait_final(job, timeout=120)

    text = log.read_text()
    assert record["JobState"] == "COMPLETED", text
    assert record["Restarts"] == "1", text
    assert "requeueing job" in text and "collab resume" not in text
    grpo_calls = [c for c in lines(run_dir / "calls.log") if " | grpo | " in c]
    assert [c.split(" | ")[:4] for c in grpo_calls] == [
        ["train", "grpo", f"--set {OVERRIDE}", "restart=0"],
        ["train", "grpo", f"--set {OVERRIDE}", "restart=1"],
    ]
    # The override held on both starts, and the run directory's recipe is the grpo job's, with it.
    assert lines(run_dir / "grpo" / "overrides") == [OVERRIDE, OVERRIDE]
    assert (run_dir / "recipe.resolved.yaml").read_text() == pipeline.read_text() + f"# set {OVERRIDE}\n"
    # The stage resumed from what it saved at the preemption instead of starting over.
    progress = lines(run_dir / "grpo" / "progress")
    [saved] = [p for p in progress if p.startswith("saved")]
    assert 4 <= int(saved.split()[1]) < 24
    assert [int(p) for p in progress if not p.startswith("saved")] == list(range(1, 25))
    assert (run_dir / "grpo" / "DONE").exists()
