"""The multiturn-aware reward and the batched rollout engine."""

from __future__ import annotations

import pytest

from collab.backends.base import Backend, Request
from collab.backends.hf import HFBackend
from collab.chat import Generation
from collab.config import RewardConfig, RewardWeights
from collab.reward import Candidate, MultiturnReward
from collab.simulators.sharded import ShardedSimulator
from collab.tasks.record import Task

COMPLETE = Task(id="c", kind="math", goal="Tom has 3 boxes with 12 apples each. How many apples?",
                opening="Tom has 3 boxes with 12 apples each. How many apples?", answer="36")
UNDERSPECIFIED = Task(id="u", kind="math", goal="Tom has 3 boxes with 12 apples each. How many apples?",
                      opening="Tom has 3 boxes of apples. How many apples does he have?",
                      facts=("Each box holds 12 apples.",), answer="36", needs_clarification=True)


def history(task: Task) -> list:
    return [{"role": "user", "content": task.opening}]


class FailingBackend(Backend):
    """A policy whose every call fails, as an endpoint that is down would (fault injected at the model boundary)."""

    identity = "failing"

    def _generate_batch(self, requests: list[Request]) -> list[Generation]:
        return [Generation.failure("APIConnectionError: connection refused") for _ in requests]


def test_mr_of_all_candidates_takes_one_policy_call_per_future_turn(tiny_backend: HFBackend) -> None:
    tasks = [COMPLETE.model_copy(update={"id": f"t{i}"}) for i in range(8)]
    candidates = [Candidate(t, history(t), text) for t in tasks
                  for text in ("What do you mean?", "It is 36.", "Hello there.", "Could you say more?")]
    reward = MultiturnReward(tiny_backend, ShardedSimulator(max_turns=10),
                             RewardConfig(window=2, samples=3, policy_max_new_tokens=4))
    calls_before = tiny_backend.stats.calls
    results = reward.score(candidates)
    assert len(results) == 32 and all(len(r.rollouts) == 3 for r in results)
    # 96 rollouts x 2 future assistant turns, in exactly 2 batched policy calls and at most 2 simulator calls.
    assert reward.engine.stats.policy_calls == 2
    assert tiny_backend.stats.calls - calls_before <= 2
    assert reward.engine.stats.simulator_calls <= 2


def test_window_zero_scores_the_candidate_alone_with_the_paper_formula(tiny_backend: HFBackend) -> None:
    config = RewardConfig(window=0, samples=1, token_lambda=0.01)
    [result] = MultiturnReward(tiny_backend, ShardedSimulator(), config).score(
        [Candidate(COMPLETE, history(COMPLETE), "The answer is 36.")])
    tokens = tiny_backend.count_tokens("The answer is 36.")
    assert result.components["task"] == 1.0
    assert result.components["tokens"] == pytest.approx(-0.01 * tokens)
    assert result.components["interactivity"] == 0.0  # asked nothing, obtained nothing: the same on every task
    assert result.mr == pytest.approx(1.0 - 0.01 * tokens)


def test_token_penalty_is_capped_at_minus_one(tiny_backend: HFBackend) -> None:
    config = RewardConfig(window=0, samples=1, token_lambda=1.0)
    [result] = MultiturnReward(tiny_backend, ShardedSimulator(), config).score(
        [Candidate(COMPLETE, history(COMPLETE), "The answer is 36.")])
    assert result.components["tokens"] == -1.0


def test_weights_scale_the_components(tiny_backend: HFBackend) -> None:
    config = RewardConfig(window=0, samples=1, token_lambda=0.0, weights=RewardWeights(task=2.0, interactivity=0.5))
    [result] = MultiturnReward(tiny_backend, ShardedSimulator(), config).score(
        [Candidate(COMPLETE, history(COMPLETE), "The answer is 36.")])
    assert result.mr == pytest.approx(2.0 * 1.0 + 0.5 * 0.0)


def test_asking_on_an_underspecified_task_beats_guessing(tiny_backend: HFBackend) -> None:
    config = RewardConfig(window=1, samples=2, token_lambda=0.0, policy_max_new_tokens=4)
    ask, guess = MultiturnReward(tiny_backend, ShardedSimulator(), config).score([
        Candidate(UNDERSPECIFIED, history(UNDERSPECIFIED), "How many apples are in each box?"),
        Candidate(UNDERSPECIFIED, history(UNDERSPECIFIED), "The answer is 12."),
    ])
    assert ask.components["asked"] == 1.0 and guess.components["asked"] == 0.0
    assert ask.components["interactivity"] > guess.components["interactivity"]
    assert ask.mr is not None and guess.mr is not None and ask.mr > guess.mr
    # The user's reply to the question reveals the withheld fact.
    assert ask.rollouts[0].messages[1] == {"role": "user", "content": ask.rollouts[0].messages[1]["content"]}
    assert "12 apples" in ask.rollouts[0].messages[1]["content"]


def test_a_needless_question_obtains_nothing_and_costs_interactivity(tiny_backend: HFBackend) -> None:
    config = RewardConfig(window=1, samples=1, policy_max_new_tokens=4)
    [result] = MultiturnReward(tiny_backend, ShardedSimulator(), config).score(
        [Candidate(COMPLETE, history(COMPLETE), "Do you mean red apples?")])
    assert result.components["asked"] == 1.0
    assert result.components["interactivity"] == -0.5  # the user had nothing to give: one wasted question
    assert "over_ask" not in result.components  # the reward knows outcomes, not the task's label


@pytest.mark.parametrize("task", [COMPLETE, UNDERSPECIFIED], ids=["complete", "underspecified"])
def test_mr_never_reads_the_needs_clarification_label(tiny_backend: HFBackend, task: Task) -> None:
    config = RewardConfig(window=1, samples=2, policy_max_new_tokens=4)
    reward = MultiturnReward(tiny_backend, ShardedSimulator(mode="withhold"), config)
    relabelled = task.model_copy(update={"needs_clarification": not task.needs_clarification})
    texts = ("How many apples are in each box?", "The answer is 36.", "Hello there.")
    original = reward.score([Candidate(task, history(task), t) for t in texts], seeds=[1, 2, 3])
    flipped = reward.score([Candidate(relabelled, history(relabelled), t) for t in texts], seeds=[1, 2, 3])
    assert [r.mr for r in original] == [r.mr for r in flipped]
    assert [r.components for r in original] == [r.components for r in flipped]


def test_truncated_candidate_gets_the_penalty_without_rollouts(tiny_backend: HFBackend) -> None:
    reward = MultiturnReward(tiny_backend, ShardedSimulator(), RewardConfig(truncation_penalty=-1.0))
    calls = tiny_backend.stats.calls
    [result] = reward.score([Candidate(COMPLETE, history(COMPLETE), "The answer is", truncated=True)])
    assert result.mr == -1.0 and result.rollouts == []
    assert tiny_backend.stats.calls == calls and reward.stats.truncated_candidates == 1


def test_failed_policy_calls_make_mr_fail_explicitly_never_zero() -> None:
    reward = MultiturnReward(FailingBackend("down"), ShardedSimulator(), RewardConfig(window=1, samples=2))
    [result] = reward.score([Candidate(UNDERSPECIFIED, history(UNDERSPECIFIED), "How many per box?")])
    assert result.mr is None
    assert result.error is not None and "APIConnectionError" in result.error
    assert reward.stats.failed_rollouts == 2 and reward.stats.failed_candidates == 1
