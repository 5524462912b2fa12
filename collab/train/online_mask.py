"""What the online trainers learn from: MR that failed or that ties carries no preference and stays out of the loss.

TRL's own handling falls short of that. OnlineDPOTrainer adds up its reward functions with `nansum`, so a failed MR
(None) compares as 0 against its partner, and a tied pair (both truncated, both -1) trains its first completion as
chosen. GRPO and RLOO already leave a failed completion out of the group baseline and give it no advantage, but a tied
group can still get one: RLOO's `normalize_advantages` and GRPO's `normalize_then_sum` centre advantages over the whole
batch, not the group.

- Online DPO: a pair whose MR failed on either side, or whose two MRs are equal, contributes nothing. TRL computes the
  pair losses and their mean inside one `training_step`, with no per-pair weight, so the mask acts on the gradient:
  the policy's log-probabilities get a backward hook that zeroes the rows of the skipped pairs' two completions.
  A pair's loss depends on its own two rows only, so its gradient is exactly zero; the other pairs' gradients are
  unchanged (the mean keeps its denominator, as GRPO keeps zero-advantage groups in its normaliser). TRL's logged
  `loss` and `rewards/*` still average over every pair.
- GRPO and RLOO: a failed completion is masked out and its group's baseline comes from the completions that were
  scored (TRL's behaviour, kept): the failure is of the rollouts (a model call, a simulator), not evidence about the
  completion, and dropping the whole group would throw away the other G-1 comparisons. A group with fewer than two
  scored completions, or whose scored MRs are all equal, gets advantage 0 on every completion. The rewards are
  gathered from every process before advantages are computed (a group may span processes), so the mask is computed
  on the gathered rewards, identically on every rank, and each rank keeps its slice.

Counts go to the MR breakdown (collab.train.online_reward): `mr/pairs_skipped_failed`, `mr/pairs_skipped_tied`,
`mr/pairs_trained`; `mr/groups_skipped_failed`, `mr/groups_skipped_tied`, `mr/groups_trained`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Mask:
    """Which completions keep their part in the loss (1.0) or lose it (0.0), and why units were skipped."""

    keep: torch.Tensor
    skipped_failed: int
    skipped_tied: int
    trained: int


def pair_mask(rewards: Sequence[float | None]) -> Mask:
    """Online DPO: completion i and i + B form pair i (TRL samples the B prompts twice, second half after the first)."""
    half = len(rewards) // 2
    keep = torch.ones(len(rewards))
    failed = tied = 0
    for i, (first, second) in enumerate(zip(rewards[:half], rewards[half:])):
        if first is None or second is None:
            failed += 1
        elif first == second:
            tied += 1
        else:
            continue
        keep[i] = keep[i + half] = 0.0
    return Mask(keep, failed, tied, half - failed - tied)


def group_mask(rewards: torch.Tensor, group_size: int) -> Mask:
    """GRPO/RLOO: `rewards` (NaN where MR failed) of consecutive groups of `group_size` completions."""
    groups = rewards.view(-1, group_size)
    scored = ~torch.isnan(groups)
    few = scored.sum(dim=1) < 2
    # All scored values equal: the largest equals the smallest (NaNs replaced so they take no part).
    high = torch.where(scored, groups, -torch.inf).amax(dim=1)
    low = torch.where(scored, groups, torch.inf).amin(dim=1)
    tied = ~few & (high == low)
    keep = scored & ~(few | tied)[:, None]
    return Mask(keep.flatten().float(), int(few.sum()), int(tied.sum()), int((~(few | tied)).sum()))


def record(reward_function: Any, prefix: str, mask: Mask) -> None:
    """Add the mask's counts to the MR breakdown of the steps since the last log."""
    if reward_function is None:
        return
    for name, value in (("skipped_failed", mask.skipped_failed), ("skipped_tied", mask.skipped_tied),
                        ("trained", mask.trained)):
        reward_function.totals.add(f"{prefix}_{name}", float(value))


class PairMaskMixin:
    """For OnlineDPOTrainer: skipped pairs get no gradient (see the module docstring)."""

    mr_reward: Any = None
    _pair_keep: torch.Tensor | None = None

    def _forward(self, model: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        logprobs = super()._forward(model, *args, **kwargs)  # type: ignore[misc]
        if logprobs.requires_grad:  # the policy's pass; the reference's runs without gradients
            # The step's rewards, and so its mask, come after this forward and before the backward.
            self._pair_keep = None
            logprobs.register_hook(self._mask_pair_gradients)
        return logprobs

    def _calculate_rewards_from_functions(self, prompts: list[Any], completions: list[Any],
                                          completion_ids_list: list[list[int]], **kwargs: Any) -> torch.Tensor:
        rewards = super()._calculate_rewards_from_functions(  # type: ignore[misc]
            prompts, completions, completion_ids_list, **kwargs)
        # TRL has already turned a failed MR into 0 in `rewards`; the MR function kept what it returned.
        mask = pair_mask(self.mr_reward.last_rewards)
        self._pair_keep = mask.keep.to(rewards.device)
        record(self.mr_reward, "pairs", mask)
        return rewards

    def _mask_pair_gradients(self, grad: torch.Tensor) -> torch.Tensor:
        if self._pair_keep is None:
            raise RuntimeError("online DPO backward before its rewards: the pair mask is unknown")
        return grad * self._pair_keep.to(grad.dtype)[:, None]


class GroupMaskMixin:
    """For GRPOTrainer and RLOOTrainer: skipped groups and failed completions get advantage 0."""

    mr_reward: Any = None
    _gathered_rewards: torch.Tensor | None = None

    def _calculate_rewards(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        gathered = super()._calculate_rewards(*args, **kwargs)  # type: ignore[misc]
        self._gathered_rewards = gathered
        return gathered

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._gathered_rewards = None
        output = super()._generate_and_score_completions(inputs)  # type: ignore[misc]
        per_function = self._gathered_rewards
        assert per_function is not None, "TRL scored the completions without _calculate_rewards"
        # One reward per completion as TRL sums them, NaN where every function returned None.
        weights = self.reward_weights.to(per_function.device)  # type: ignore[attr-defined]
        rewards = (per_function * weights).nansum(dim=1)
        rewards[torch.isnan(per_function).all(dim=1)] = torch.nan
        training = self.model.training  # type: ignore[attr-defined]
        group_size = self.num_generations if training else self.num_generations_eval  # type: ignore[attr-defined]
        mask = group_mask(rewards, group_size)
        advantages = output["advantages"]
        start = self.accelerator.process_index * len(advantages)  # type: ignore[attr-defined]
        keep = mask.keep[start : start + len(advantages)].to(advantages.device, advantages.dtype)
        output["advantages"] = advantages * keep.view(-1, *[1] * (advantages.dim() - 1))
        if self.accelerator.is_main_process:  # type: ignore[attr-defined]
            record(self.mr_reward, "groups", mask)  # every rank computed the same counts; the merge sums ranks
        return output
