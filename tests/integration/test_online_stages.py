"""Online training with MR on CPU, through the real command: `collab train` / `collab resume` in this process, the
trainer under `accelerate launch`, the tiny random model, the sharded user, 2 prompts x 2 generations x 16 tokens,
window 1, one rollout per completion.

The random model almost never emits its end-of-turn token, so every completion would be truncated (MR = the penalty
for all, no rollouts, zero advantages). A generation bias towards that token makes some completions end early:
they get rollouts, the others the truncation penalty, and the groups have a reward spread to learn from.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from collab.cli import main
from collab.run.checkpoints import last_complete_checkpoint
from collab.train.curves import read_metrics, series
from collab.train.preemption import EXIT_PREEMPTED
from tests.preemption import train_until_checkpoint_then_preempt

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
EOS_BIAS = {"sequence_bias": [[[2], 8.0]]}  # <|im_end|> is id 2 in SmolLM2's vocabulary
FAST = {"gradient_checkpointing": False, "learning_rate": 1e-3, "logging_steps": 1}
GROUPS = {"per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 16,
          "generation_kwargs": EOS_BIAS}


def write_recipe(tmp_path: Path, stage: dict[str, Any], *, wandb: str = "disabled", every: int = 2,
                 lora: dict[str, Any] | None = None) -> tuple[Path, Path]:
    run_dir = tmp_path / "run"
    recipe = {"name": "online-it", "output_dir": str(run_dir), "model": {"name": "tiny-random-smollm2", "lora": lora},
              "tasks": {"name": "clarify-math", "limit": 2},
              "reward": {"window": 1, "samples": 1, "policy_max_new_tokens": 8, "truncation_penalty": -1.0},
              "tracking": {"wandb": wandb, "project": "collab-tests", "sample_table_every": every},
              "stages": [{"keep_checkpoints": "all", **stage}]}  # the tests read checkpoints after the stage ends
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path, run_dir


def log_history(run_dir: Path, stage: str, step: int) -> list[dict[str, Any]]:
    state = json.loads((run_dir / stage / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "loss" in entry]


def samples(run_dir: Path, stage: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / stage / "samples.jsonl").read_text().splitlines()]


def test_grpo_with_several_iterations_per_batch_is_the_ppo_path(tmp_path: Path) -> None:
    recipe, run_dir = write_recipe(tmp_path, {"kind": "grpo", "trainer": {
        **FAST, **GROUPS, "num_iterations": 2, "epsilon": 0.2, "max_steps": 4, "save_steps": 4}})

    assert main(["train", str(recipe)]) == 0

    logs = log_history(run_dir, "grpo", 4)
    assert [e["step"] for e in logs] == [1, 2, 3, 4]
    # One generation batch (4 completions, one MR call) serves two optimizer steps with the clipped ratio.
    assert [("mr/mean" in e) for e in logs] == [True, False, True, False]
    assert all("clip_ratio/region_mean" in e for e in logs)
    scored = (logs[0], logs[2])
    for entry in scored:
        assert entry["mr/candidates"] == 4 and entry["mr/failed"] == 0
        assert entry["mr/mean"] == pytest.approx(entry["rewards/mr/mean"], abs=1e-5)
        assert entry["mr/rollouts"] == entry["mr/candidates"] * (1 - entry["mr/truncated_rate"])  # S=1 each
    assert sum(e["mr/rollouts"] for e in scored) > 0 and sum(e["mr/truncated_rate"] for e in scored) > 0
    assert sorted({s["step"] for s in samples(run_dir, "grpo")}) == [0, 2]
    assert json.loads((run_dir / "grpo" / "DONE").read_text())["global_step"] == 4
    assert (run_dir / "grpo" / "final" / "model.safetensors").is_file()
    assert len(__import__("datasets").load_from_disk(str(run_dir / "grpo" / "prompts"))["train"]) == 2


def test_rloo_trains_on_mr_and_logs_the_breakdown_every_step(tmp_path: Path) -> None:
    recipe, run_dir = write_recipe(tmp_path, {"kind": "rloo", "trainer": {
        **FAST, **GROUPS, "max_steps": 2, "save_steps": 2}}, every=1)

    assert main(["train", str(recipe)]) == 0

    logs = log_history(run_dir, "rloo", 2)
    assert [e["step"] for e in logs] == [1, 2]
    for entry in logs:
        assert {"mr/mean", "mr/std", "mr/truncated_rate", "mr/failed", "mr/failed_rollouts", "mr/seconds"} <= set(entry)
        assert entry["mr/mean"] == pytest.approx(entry["rewards/mr/mean"], abs=1e-5)
        if entry["mr/truncated_rate"] < 1:
            assert {"mr/task", "mr/tokens", "mr/interactivity", "mr/asked"} <= set(entry)
    logged = read_metrics(run_dir / "rloo" / "metrics.jsonl")  # kept after the stage's checkpoints are gone
    assert series(logged, "mr/mean") == ([1, 2], [e["mr/mean"] for e in logs])
    rows = samples(run_dir, "rloo")
    assert sorted({r["step"] for r in rows}) == [0, 1]
    assert all(r["mr"] == -1.0 for r in rows if r["truncated"])
    assert all(len(r["rollouts"]) == 1 for r in rows if not r["truncated"])
    assert (run_dir / "rloo" / "DONE").is_file()


def test_online_dpo_trains_a_lora_adapter_on_mr_preferences(tmp_path: Path) -> None:
    recipe, run_dir = write_recipe(tmp_path, {"kind": "online_dpo", "trainer": {
        **FAST, "per_device_train_batch_size": 2, "max_new_tokens": 16, "max_length": 256,
        "generation_kwargs": EOS_BIAS, "max_steps": 2, "save_steps": 2}},
        lora={"r": 4, "alpha": 8, "dropout": 0.0})

    assert main(["train", str(recipe)]) == 0

    logs = log_history(run_dir, "online_dpo", 2)
    assert [e["step"] for e in logs] == [1, 2]
    for entry in logs:
        assert entry["mr/candidates"] == 4  # 2 prompts x 2 completions, scored in one MR call
        assert entry["objective/scores"] == pytest.approx(entry["mr/mean"], abs=1e-5)  # MR is the preference
        assert "rewards/margins" in entry
    assert (run_dir / "online_dpo" / "final" / "adapter_config.json").is_file()


def test_preempted_online_stage_resumes_with_the_same_wandb_run(tmp_path: Path) -> None:
    recipe, run_dir = write_recipe(tmp_path, {"kind": "grpo", "trainer": {
        **FAST, **GROUPS, "max_steps": 4, "save_steps": 1, "save_total_limit": 10}}, wandb="offline", every=2)
    stage = run_dir / "grpo"
    returncode, output = train_until_checkpoint_then_preempt(recipe, stage / "checkpoints" / "checkpoint-1")

    assert returncode == EXIT_PREEMPTED, output[-3000:]
    stopped = json.loads((stage / "preempted.json").read_text())["global_step"]
    assert 1 <= stopped < 4
    assert last_complete_checkpoint(stage / "checkpoints") == stage / "checkpoints" / f"checkpoint-{stopped}"

    assert main(["resume", str(run_dir)]) == 0

    logs = log_history(run_dir, "grpo", 4)
    assert [e["step"] for e in logs] == [1, 2, 3, 4]  # continued, not restarted
    assert all("mr/mean" in e for e in logs)
    second_launch = (stage / "train.log").read_text().split("\n=== ")[-1]
    assert f"resuming stage 'grpo' from {stage / 'checkpoints' / f'checkpoint-{stopped}'}" in second_launch
    assert "prompts saved" not in second_launch  # the prompt dataset of the first launch is read back
    assert {s["step"] for s in samples(run_dir, "grpo")} >= {0, 2}
    run_id = (stage / "wandb_id").read_text().strip()
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert [r.name.rsplit("-", 1)[1] for r in runs] == [run_id, run_id]
    data = b"".join((r / f"run-{run_id}.wandb").read_bytes() for r in runs)
    assert b"mr/mean" in data and b"mr/samples" in data and b"train/global_step" in data


def test_rollouts_use_the_weights_of_the_current_step(tmp_path: Path) -> None:
    """The reward's policy backend is the trainer's live model: after one optimizer step the same greedy rollout
    turn changes, the backend's revision follows the step, and each MR call ran at the revision of its step."""
    import torch

    from collab.backends.base import Request
    from collab.chat import SamplingParams
    from collab.config import load_recipe
    from collab.run.record import open_run
    from collab.train.rank_main import build_stage_trainer

    torch.set_num_threads(1)
    path, run_dir = write_recipe(tmp_path, {"kind": "online_dpo", "trainer": {
        **FAST, "learning_rate": 0.05, "per_device_train_batch_size": 2, "max_new_tokens": 16, "max_length": 256,
        "generation_kwargs": EOS_BIAS, "max_steps": 2, "save_strategy": "no"}})
    recipe = load_recipe(path)
    open_run(recipe, run_dir)
    trainer, _, _ = build_stage_trainer(recipe, recipe.stages[0], run_dir)  # type: ignore[arg-type]
    policy = trainer.mr_reward.policy
    sessions: list[tuple[int, str]] = []
    session = policy.session

    @contextlib.contextmanager
    def recording_session(step: int) -> Iterator[Any]:
        with session(step) as backend:
            sessions.append((step, backend.revision))
            yield backend

    policy.session = recording_session
    prompt = [{"role": "user", "content": "Mia has 6 boxes of apples. How many apples does Mia have?"}]
    greedy = Request(prompt, SamplingParams(max_new_tokens=12, temperature=0.0, seed=3))
    ids = torch.tensor([trainer.processing_class.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                            return_dict=False)])

    def probe(step: int) -> tuple[str, str, torch.Tensor]:
        with session(step) as backend:
            text = backend.generate_requests([greedy])[0].text
            with torch.no_grad():
                logits = backend.model(input_ids=ids).logits[0, -1]
            return text, backend.revision, logits

    before_text, before_revision, before_logits = probe(trainer.state.global_step)
    assert policy.backend.model is trainer.accelerator.unwrap_model(trainer.model_wrapped)

    trainer.train()

    after_text, after_revision, after_logits = probe(trainer.state.global_step)
    assert (before_revision, after_revision) == ("0", "2")
    assert (after_logits - before_logits).abs().max().item() > 1e-2
    assert after_text != before_text
    assert sessions == [(0, "0"), (1, "1")]  # one MR call per step, at that step's revision
