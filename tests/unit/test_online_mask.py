"""Failed or tied MR stays out of the online trainers' loss, with real TRL trainers on the tiny model: an online DPO
pair whose MR failed or tied gets no gradient; a GRPO/RLOO group whose MRs tie, or with fewer than two scored
completions, gets advantage 0, and a failed completion never counts as a score of 0. The counts reach the logs."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset

from collab.backends.hf import HFBackend
from collab.reward import MRResult
from collab.tasks.record import Task
from collab.train.online import trainer_class
from collab.train.online_mask import group_mask, pair_mask
from collab.train.online_reward import AsyncMRRewardFunction, MRRewardFunction, breakdown_metrics

TASKS = [Task(id=f"t{i}", kind="math", goal=f"What is {i} + {i}?", opening=f"What is {i} + {i}?", answer=str(2 * i))
         for i in range(3)]
NAN = float("nan")


class ScriptedScores:
    """MR at the trainer's boundary: the next scripted MR list, in the order of the completions it is given."""

    def __init__(self) -> None:
        self.next: list[float | None] = []

    def score(self, candidates: list[Any], seed: int = 0) -> list[MRResult]:
        assert len(candidates) == len(self.next)
        return [MRResult(mr=value) for value in self.next]


class NoPolicy:
    @contextlib.contextmanager
    def session(self, step: int) -> Iterator[None]:
        yield None


def prompt(task: Task) -> dict[str, Any]:
    return {"prompt": [{"role": "user", "content": task.opening}], "task_id": task.id}


def build(kind: str, tiny_backend: HFBackend, tmp_path: Path, **config: Any) -> tuple[Any, ScriptedScores]:
    from trl import GRPOConfig, RLOOConfig
    from trl.experimental.online_dpo import OnlineDPOConfig

    configs = {"online_dpo": OnlineDPOConfig, "grpo": GRPOConfig, "rloo": RLOOConfig}
    function = (MRRewardFunction if kind == "online_dpo" else AsyncMRRewardFunction)(tasks={t.id: t for t in TASKS})
    scores = ScriptedScores()
    function.attach(scores, NoPolicy(), [tiny_backend.tokenizer.eos_token_id])  # type: ignore[arg-type]
    args = configs[kind](output_dir=str(tmp_path), report_to=[], use_cpu=True, logging_steps=1, **config)
    trainer = trainer_class(kind)(model=copy.deepcopy(tiny_backend.model), reward_funcs=[function], args=args,
                                  train_dataset=Dataset.from_list([prompt(t) for t in TASKS]),
                                  processing_class=tiny_backend.tokenizer)
    trainer.mr_reward = function
    return trainer, scores


# --- the masks -----------------------------------------------------------------------------------------------------


def test_pair_mask_skips_pairs_with_a_failed_or_equal_mr() -> None:
    # Pairs (first half, second half): (1.0, 0.5) trains, (None, 0.7) failed, (-1, -1) both truncated: tied.
    mask = pair_mask([1.0, None, -1.0, 0.5, 0.7, -1.0])
    assert mask.keep.tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert (mask.skipped_failed, mask.skipped_tied, mask.trained) == (1, 1, 1)


def test_group_mask_masks_failed_completions_and_skips_tied_or_unscored_groups() -> None:
    rewards = torch.tensor([0.2, NAN, 0.9,   # one failure: the other two still compare
                            0.5, 0.5, 0.5,   # tied
                            NAN, 0.3, NAN,   # one scored completion: nothing to compare
                            0.5, NAN, 0.5])  # tied among the scored
    mask = group_mask(rewards, 3)
    assert mask.keep.tolist() == [1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert (mask.skipped_failed, mask.skipped_tied, mask.trained) == (1, 2, 1)


# --- online DPO ----------------------------------------------------------------------------------------------------


def dpo_gradients(trainer: Any, scores: ScriptedScores, mr: list[float | None]) -> list[torch.Tensor]:
    """The gradient of one online DPO training step on t0 and t1 (same sampled completions every call)."""
    scores.next = mr
    trainer.model.zero_grad(set_to_none=False)
    torch.manual_seed(0)
    trainer.training_step(trainer.model, {"prompt": [prompt(t)["prompt"] for t in TASKS[:2]],
                                          "task_id": [t.id for t in TASKS[:2]]})
    return [p.grad.clone() for p in trainer.model.parameters() if p.requires_grad]


def test_online_dpo_pairs_with_failed_or_tied_mr_get_no_gradient(tiny_backend: HFBackend, tmp_path: Path) -> None:
    trainer, scores = build("online_dpo", tiny_backend, tmp_path, per_device_train_batch_size=2, max_new_tokens=4)
    # Completions [t0 first, t1 first, t0 second, t1 second]: t0's pair failed, t1's pair tied (both truncated).
    skipped = dpo_gradients(trainer, scores, [None, -1.0, 0.4, -1.0])
    assert all(torch.count_nonzero(g) == 0 for g in skipped)
    # The unmasked loss would train both: -logsigmoid(beta * x) has slope -beta/2 at x = 0.
    trained = dpo_gradients(trainer, scores, [1.0, -1.0, 0.4, -1.0])
    assert sum(torch.count_nonzero(g) for g in trained) > 0
    # A failed MR is no score of 0: which side failed, and the partner's MR, change nothing.
    assert all(torch.equal(a, b) for a, b in zip(trained, dpo_gradients(trainer, scores, [1.0, None, 0.4, 3.0])))
    logged = breakdown_metrics(trainer.mr_reward.totals)
    assert (logged["mr/pairs_skipped_failed"], logged["mr/pairs_skipped_tied"], logged["mr/pairs_trained"]) == (
        2.0, 2.0, 2.0)


# --- GRPO and RLOO -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "config"), [
    ("grpo", {}),
    ("rloo", {"normalize_advantages": True}),  # batch normalisation would give a tied group an advantage
])
def test_grpo_and_rloo_give_tied_and_unscored_groups_no_advantage(kind: str, config: dict[str, Any],
                                                                   tiny_backend: HFBackend, tmp_path: Path) -> None:
    trainer, scores = build(kind, tiny_backend, tmp_path, num_generations=3, per_device_train_batch_size=9,
                            max_completion_length=4, **config)
    # Group t0: one failure, the others compare; t1: tied (all truncated); t2: a single scored completion.
    scores.next = [0.2, None, 0.9, -1.0, -1.0, -1.0, None, 0.3, None]
    trainer.model.train()
    advantages = trainer._generate_and_score_completions([prompt(t) for t in TASKS for _ in range(3)])["advantages"]
    assert advantages[0] < 0 < advantages[2] and advantages[1] == 0  # the failure is out, not a 0 among them
    assert advantages[3:].tolist() == [0.0] * 6
    logged = breakdown_metrics(trainer.mr_reward.totals)
    assert (logged["mr/groups_skipped_failed"], logged["mr/groups_skipped_tied"], logged["mr/groups_trained"]) == (
        1.0, 1.0, 1.0)
