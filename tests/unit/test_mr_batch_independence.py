"""A candidate's MR depends on its own seed, not on the candidates scored beside it: every future assistant turn of
its rollouts is sampled (hf backend, temperature 1.0) from the request's own seed and prompt."""

from __future__ import annotations

from collab.backends.hf import HFBackend
from collab.config import RewardConfig
from collab.reward import Candidate, MRResult, MultiturnReward
from collab.simulators.sharded import ShardedSimulator
from collab.tasks.record import Task

TASK = Task(id="u", kind="math", goal="Tom has 3 boxes with 12 apples each. How many apples?",
            opening="Tom has 3 boxes of apples. How many apples does he have?",
            facts=("Each box holds 12 apples.",), answer="36", needs_clarification=True)
OTHER = Task(id="c", kind="math", goal="Ann reads 4 pages a day for 5 days. How many pages?",
             opening="Ann reads 4 pages a day for 5 days. How many pages?", answer="20")


def candidate(task: Task, text: str) -> Candidate:
    return Candidate(task, [{"role": "user", "content": task.opening}], text)


def transcripts(result: MRResult) -> list[list[tuple[str, str]]]:
    return [[(m["role"], m["content"]) for m in rollout.messages] for rollout in result.rollouts]


def test_a_candidates_rollouts_are_the_same_alone_and_beside_other_candidates(tiny_backend: HFBackend) -> None:
    reward = MultiturnReward(tiny_backend, ShardedSimulator(),
                             RewardConfig(window=2, samples=2, policy_temperature=1.0, policy_max_new_tokens=12))
    target = candidate(TASK, "How many apples are in each box?")
    [alone] = reward.score([target], seeds=[42])
    beside = reward.score([candidate(OTHER, "It is 20."), target, candidate(TASK, "It is 3."),
                           candidate(OTHER, "Which pages?"), candidate(TASK, "How many boxes?")],
                          seeds=[1, 42, 3, 4, 5])[1]
    assert transcripts(beside) == transcripts(alone)
    assert (beside.mr, beside.components) == (alone.mr, alone.components)
    # The rollouts do hold sampled policy turns, and another seed samples others.
    assert all(any(m["role"] == "assistant" and m["content"] for m in r.messages[1:]) for r in alone.rollouts)
    [reseeded] = reward.score([target], seeds=[43])
    assert transcripts(reseeded) != transcripts(alone)
