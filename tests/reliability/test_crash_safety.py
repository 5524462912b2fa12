"""kill -9 at seeded random moments, then resume: the data engine, the evaluation and training end exactly where an
uninterrupted run ends, with no row lost, duplicated or corrupted.

Data and evaluation: each start runs the `collab` command, waits until the process has begun its work (it holds the
run's request cache open), draws a delay uniformly from [0, the uninterrupted run's working time) with a seeded RNG
and SIGKILLs the whole process tree. The command is then started again in the same directory, which resumes; a run
that finishes before its kill is compared with the reference and the next one starts from an empty directory.
Every tenth start is a fresh `python -m collab.cli` process; the others are forked from a process that has imported
collab already (conftest's fork server), which saves seconds of imports per start and so lets 20 kills fit the
time budget. COLLAB_CRASH_KILLS (default 20) sets the number of kills of each loop.

The policy of these loops is the fault server's deterministic echo endpoint without faults, at temperature 0: the
comparison needs a backend whose output depends only on the request. The resume from a partly finished batch is also
run with the hf backend sampling at temperature 1.0, whose requests each sample from their own seed and prompt.

Training: `collab train`, then `collab resume`, all fresh processes (a trainer is a subprocess of `accelerate
launch`), killed COLLAB_CRASH_TRAIN_KILLS times (default 20; each launch spends about 25 s starting up on a 2-core
machine, so this loop takes about 10 minutes).
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from collab.cli import main
from collab.run.checkpoints import checkpoint_step, is_complete_checkpoint, last_complete_checkpoint
from tests.fault_server import MODEL_NAME, FaultServer
from tests.reliability.conftest import (
    ForkServer,
    assert_same_records,
    crash_loop,
    data_outputs,
    data_recipe,
    jsonl_rows,
    keyed,
    kill_tree,
    opened,
    process_tree,
    run_collab,
    spawn_collab,
    write_finished_data_stage,
    write_qa_tasks,
    write_yaml,
)

KILLS = int(os.environ.get("COLLAB_CRASH_KILLS", "20"))
FRESH_EVERY = 10
STORE = "shard-0000-of-0001.jsonl"


def starter(fork_server: ForkServer, argv: list[str], log: Path) -> Callable[[int], Any]:
    """Every FRESH_EVERY-th start (the first included) is a fresh `python -m collab.cli` process; the others are
    forked from the fork server (see conftest), which skips seconds of imports per start."""

    def start(i: int) -> Any:
        return spawn_collab(*argv, log=log) if i % FRESH_EVERY == 0 else fork_server.run(argv, log)

    return start


def timed_reference(fork_server: ForkServer, argv: list[str], log: Path) -> float:
    """Run the command uninterrupted (forked, as most crash-loop starts are); returns its working time, from opening
    the request cache to exiting: the window the kill delays are drawn from."""
    run = fork_server.run(argv, log)
    while run.poll() is None and not opened(run, "cache.sqlite"):
        time.sleep(0.01)
    began = time.monotonic()
    assert run.wait(timeout=300) == 0, log.read_text()[-3000:]
    return time.monotonic() - began


# --- data --------------------------------------------------------------------------------------------------------


def test_data_engine_killed_20_times_resumes_to_exactly_the_uninterrupted_output(
    tmp_path: Path, echo_server: FaultServer, fork_server: ForkServer
) -> None:
    reference_dir, run_dir, tasks = tmp_path / "reference", tmp_path / "run", write_qa_tasks(tmp_path / "qa.jsonl")
    write_yaml(tmp_path / "reference.yaml", data_recipe(reference_dir, echo_server.base_url, tasks))
    recipe = write_yaml(tmp_path / "run.yaml", data_recipe(run_dir, echo_server.base_url, tasks))
    work_s = timed_reference(fork_server, ["data", str(tmp_path / "reference.yaml")], tmp_path / "reference.log")
    want = data_outputs(reference_dir)
    assert len(want["records"]) >= 12 and want["stats"]["conversations"] == 8

    def check_and_reset() -> None:
        assert_same_records(data_outputs(run_dir)["records"], want["records"])
        assert data_outputs(run_dir) == want
        shutil.rmtree(run_dir)

    report = crash_loop(starter(fork_server, ["data", str(recipe)], tmp_path / "run.log"),
                        started=lambda p: opened(p, "cache.sqlite"), on_finished=check_and_reset,
                        kills=KILLS, window_s=work_s, seed=1)

    assert report.kills == KILLS
    if run_dir.exists():  # the last kill's run, resumed to the end
        result = run_collab("data", str(recipe))
        assert result.returncode == 0, result.stderr[-3000:]
        check_and_reset()
    print(f"data crash loop: {report} (reference working time {work_s:.1f} s)")


def sampled_on_hf(recipe: dict[str, Any]) -> dict[str, Any]:
    """The data recipe with the tiny local model as the policy, sampling candidates and rollouts at temperature 1.0
    (prefix cache on, as by default): reproducing a run then needs every request's tokens to depend on its own seed
    and prompt only, not on the batch it lands in."""
    recipe["policy"] = {"kind": "hf", "max_batch_size": 4}
    recipe["reward"]["policy_temperature"] = 1.0
    recipe["stages"][0]["temperature"] = 1.0
    return recipe


@pytest.mark.parametrize("policy", ["echo", "hf"])
def test_data_resume_after_a_partly_finished_batch_matches_the_uninterrupted_run(
    tmp_path: Path, request: pytest.FixtureRequest, policy: str
) -> None:
    """The case the random kills find only sometimes, made certain: the store stops where one conversation of a
    batch has finished and its partner has not, so the resumed run batches the partner with the next conversation.
    Seeds are per conversation and turn, and each request samples from its own seed and prompt, so the records are
    still those of the uninterrupted run: with the deterministic echo endpoint, and with the hf backend sampling."""
    reference_dir, run_dir, tasks = tmp_path / "reference", tmp_path / "run", write_qa_tasks(tmp_path / "qa.jsonl")
    if policy == "echo":
        recipes = [data_recipe(d, request.getfixturevalue("echo_server").base_url, tasks)
                   for d in (reference_dir, run_dir)]
    else:
        recipes = [sampled_on_hf(data_recipe(d, "http://unused.invalid", tasks)) for d in (reference_dir, run_dir)]
    write_yaml(tmp_path / "reference.yaml", recipes[0])
    recipe = write_yaml(tmp_path / "run.yaml", recipes[1])
    assert main(["data", str(tmp_path / "reference.yaml")]) == 0
    lines = (reference_dir / "data" / "store" / STORE).read_text().splitlines(keepends=True)
    records = [json.loads(line) for line in lines]
    # A step of a batch of two that finished one conversation and not the other.
    cut = next(i + 1 for i in range(1, len(records))
               if records[i]["turn"] == records[i - 1]["turn"] and records[i]["done"] != records[i - 1]["done"]
               and records[i]["conv_id"] != records[i - 1]["conv_id"])
    (run_dir / "data" / "store").mkdir(parents=True)
    (run_dir / "data" / "store" / STORE).write_text("".join(lines[:cut]))

    assert main(["data", str(recipe)]) == 0

    assert_same_records(data_outputs(run_dir)["records"], data_outputs(reference_dir)["records"])
    assert data_outputs(run_dir) == data_outputs(reference_dir)


# --- evaluation --------------------------------------------------------------------------------------------------


def eval_args(base_url: str, tasks: Path, out: Path) -> list[str]:
    return ["eval", "--model", f"openai:{MODEL_NAME}@{base_url}", "--tasks", str(tasks), "--runs", "2",
            "--batch-size", "2", "--max-turns", "3", "--temperature", "0", "--resamples", "100", "--mr",
            "--out", str(out)]


def eval_outputs(out: Path) -> dict[str, Any]:
    rows = keyed(jsonl_rows(out / "conversations.jsonl"), lambda r: (r["model"], r["task_id"], r["run"]))
    return {"rows": rows, "results": json.loads((out / "results.json").read_text()),
            "report": (out / "report.md").read_text()}


def test_evaluation_killed_20_times_resumes_to_exactly_the_uninterrupted_output(
    tmp_path: Path, echo_server: FaultServer, fork_server: ForkServer
) -> None:
    reference, out, tasks = tmp_path / "reference", tmp_path / "out", write_qa_tasks(tmp_path / "qa.jsonl")
    work_s = timed_reference(fork_server, eval_args(echo_server.base_url, tasks, reference), tmp_path / "reference.log")
    want = eval_outputs(reference)
    assert len(want["rows"]) == 16 and all(r["failed"] is None for r in want["rows"].values())

    def check_and_reset() -> None:
        got = eval_outputs(out)
        assert_same_records(got["rows"], want["rows"])
        assert got == want
        shutil.rmtree(out)

    report = crash_loop(starter(fork_server, eval_args(echo_server.base_url, tasks, out), tmp_path / "run.log"),
                        started=lambda p: opened(p, "cache.sqlite"), on_finished=check_and_reset,
                        kills=KILLS, window_s=work_s, seed=2)

    assert report.kills == KILLS
    if out.exists():
        result = run_collab(*eval_args(echo_server.base_url, tasks, out))
        assert result.returncode == 0, result.stderr[-3000:]
        check_and_reset()
    print(f"eval crash loop: {report} (reference working time {work_s:.1f} s)")


# --- training ----------------------------------------------------------------------------------------------------

TRAIN_KILLS = int(os.environ.get("COLLAB_CRASH_TRAIN_KILLS", "20"))
# Enough steps that every kill can land in a step still to come: a kill advances the run by at most 3 steps.
MAX_STEPS = 3 * TRAIN_KILLS + 4


def train_recipe(run_dir: Path) -> dict[str, Any]:
    return {"name": "crash-train", "seed": 0, "output_dir": str(run_dir), "model": {"name": "tiny-random-smollm2"},
            "stages": [{"kind": "data"}, {"kind": "sft", "data_from": "data", "keep_checkpoints": "all", "trainer": {
                "logging_steps": 1, "gradient_checkpointing": False, "max_length": 64,
                "per_device_train_batch_size": 2, "max_steps": MAX_STEPS, "save_steps": 1, "save_total_limit": 2,
                "learning_rate": 1e-3}}]}


def trainer_running(proc: subprocess.Popen[bytes]) -> bool:
    for p in process_tree(proc.pid):
        try:
            if "collab.train.rank_main" in p.cmdline():
                return True
        except psutil.Error:
            continue
    return False


def trainers_of(run_dir: Path) -> list[int]:
    """Trainer processes (alive, not zombies) working on `run_dir`."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if p.info["status"] != psutil.STATUS_ZOMBIE and "collab.train.rank_main" in cmdline and str(run_dir) in cmdline:
            found.append(p.pid)
    return found


def checkpoint_made_since(checkpoints: Path, step: int, before: set[tuple[str, int]]) -> bool:
    """Whether checkpoint-`step` exists and was created after `before` (name, inode) was taken: a torn one that an
    earlier, killed launch left behind does not count."""
    path = checkpoints / f"checkpoint-{step}"
    try:
        return (path.name, path.stat().st_ino) not in before
    except OSError:
        return False


def losses(checkpoint: Path) -> list[tuple[int, float]]:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return [(entry["step"], entry["loss"]) for entry in state["log_history"] if "loss" in entry]


def test_training_killed_at_random_steps_resumes_to_the_uninterrupted_weights_with_a_continuous_log(
    tmp_path: Path
) -> None:
    """`collab train`, then `collab resume` after each kill. A kill is armed either when the trainer process starts
    (then it lands in start-up or the first steps) or when this launch creates checkpoint-N for a random N (then it
    lands while that checkpoint is written or during the next steps, the moments that tear checkpoints).

    On CPU the resumed run is bit-for-bit the uninterrupted one: the checkpoint restores optimizer, scheduler, RNG
    and data position, so the losses of every step and the final weights are equal, not merely close."""
    reference = tmp_path / "reference"
    write_finished_data_stage(reference)
    result = run_collab("train", str(write_yaml(tmp_path / "reference.yaml", train_recipe(reference))), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    run_dir = tmp_path / "run"
    recipe = write_yaml(tmp_path / "train.yaml", train_recipe(run_dir))
    write_finished_data_stage(run_dir)
    stage, log = run_dir / "sft", tmp_path / "train.log"
    checkpoints = stage / "checkpoints"
    rng = random.Random(3)
    kills: list[str] = []
    starts = 0
    began = time.monotonic()
    while len(kills) < TRAIN_KILLS and not (stage / "DONE").exists():
        assert starts < TRAIN_KILLS + 3
        resumed_from = last_complete_checkpoint(checkpoints)
        done = checkpoint_step(resumed_from) if resumed_from else 0
        before = {(p.name, p.stat().st_ino) for p in checkpoints.glob("checkpoint-*")} if checkpoints.is_dir() else set()
        proc = spawn_collab(*(["train", str(recipe)] if starts == 0 else ["resume", str(run_dir)]), log=log)
        starts += 1
        if done + 1 < MAX_STEPS and rng.random() < 0.75:
            step = rng.randint(done + 1, min(done + 2, MAX_STEPS - 1))
            armed, delay = f"checkpoint-{step}", rng.uniform(0, 1.0)
            ready = functools.partial(checkpoint_made_since, checkpoints, step, before)
        else:
            armed, delay = "trainer start", rng.uniform(0, 10)
            ready = functools.partial(trainer_running, proc)
        try:
            deadline = time.monotonic() + 300
            while proc.poll() is None and not ready():
                assert time.monotonic() < deadline, f"{armed} did not come within 300 s"
                time.sleep(0.02)
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            kill_tree(proc)
            kills.append(f"{armed} + {delay:.2f} s (resumed from step {done})")
            assert not trainers_of(run_dir), "a trainer outlived the kill"
            continue
        finally:
            if proc.poll() is None:
                kill_tree(proc)
        assert proc.returncode == 0, log.read_text()[-3000:]
    if not (stage / "DONE").exists():
        result = run_collab("resume", str(run_dir))
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    torn = (stage / "train.log").read_text().count("removed the incomplete checkpoint")
    print(f"training: {len(kills)} kills in {starts} launches, {time.monotonic() - began:.0f} s, {torn} torn "
          f"checkpoints removed on resume: {kills}")

    assert len(kills) == TRAIN_KILLS
    assert json.loads((stage / "DONE").read_text())["global_step"] == MAX_STEPS
    assert all(is_complete_checkpoint(p) for p in checkpoints.glob("checkpoint-*")), "a torn checkpoint was left"
    last = last_complete_checkpoint(checkpoints)
    assert last is not None and last.name == f"checkpoint-{MAX_STEPS}"
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["global_step"] == MAX_STEPS
    logged = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert logged == list(range(1, MAX_STEPS + 1)), logged  # continuous: no step lost, none logged twice
    assert all(math.isfinite(entry["loss"]) for entry in state["log_history"] if "loss" in entry)
    assert losses(last) == losses(reference / "sft" / "checkpoints" / f"checkpoint-{MAX_STEPS}")
    final = stage / "final"
    assert (final / "model.safetensors").is_file() and (final / "tokenizer_config.json").is_file()
    import torch
    from safetensors.torch import load_file

    weights, want = load_file(str(final / "model.safetensors")), load_file(str(reference / "sft" / "final" /
                                                                               "model.safetensors"))
    assert sorted(weights) == sorted(want) and len(weights) > 0
    different = [name for name in want if not torch.equal(weights[name], want[name])]
    assert different == [], f"weights differ from the uninterrupted run: {different[:5]}"
