"""Candidate strategies: how the data engine and `collab simulate` sample the responses that MR compares.

A small model rarely asks on its own, so comparing only plain samples gives MR nothing to prefer. Following
CollabLLM (a proactive instruction on a share of candidates) and ACT (action-contrastive candidates), a strategy
adds a steering instruction to the policy's system prompt for that candidate only. The steering never enters the
training data: pairs are stored with the unsteered prompt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from collab.chat import Conversation, message

if TYPE_CHECKING:
    from collab.backends.base import Backend
    from collab.chat import SamplingParams
    from collab.reward import Candidate
    from collab.tasks.record import Task

Strategy = Literal["sample", "proactive", "ask", "answer"]

STEERING: dict[Strategy, str | None] = {
    "sample": None,
    "proactive": (
        "You are a collaborative assistant. Before answering, consider whether the request is missing information "
        "you need. If something essential is missing or ambiguous, ask a focused clarifying question instead of "
        "guessing. If the request is complete, answer it directly and concisely."
    ),
    "ask": (
        "The request may be missing information. Do not solve it yet. Reply with one short clarifying question "
        "about the missing detail you need most."
    ),
    "answer": "Answer the request directly and concisely now, without asking any questions. End with the final answer.",
}


def steered_prompt(strategy: Strategy, messages: Conversation, system_prompt: str | None) -> Conversation:
    """The prompt the policy sees for a candidate of `strategy`: the base system prompt plus the steering text."""
    steering = STEERING[strategy]
    system = "\n\n".join(p for p in (system_prompt, steering) if p)
    return [message("system", system), *messages] if system else list(messages)


def assign_strategies(strategies: list[Strategy], count: int) -> list[Strategy]:
    """Cycle the configured strategies over `count` candidates (count 4 with all four gives one of each)."""
    return [strategies[i % len(strategies)] for i in range(count)]


def sample_candidates(
    policy: Backend,
    items: list[tuple[Task, Conversation]],
    strategies: list[Strategy],
    params: SamplingParams,
    *,
    system_prompt: str | None = None,
    seed: int = 0,
) -> list[list[Candidate]]:
    """`len(strategies)` candidates for each (task, history), all sampled in one batched policy call.

    Failed generations are dropped (and counted by the backend); a candidate that hit the token limit is marked
    truncated so MR gives it the fixed penalty.
    """
    from collab.backends.base import Request
    from collab.reward import Candidate

    requests = [
        Request(steered_prompt(strategy, history, system_prompt), params.with_(seed=seed + 17 * j, n=1), sample_index=i)
        for i, (_, history) in enumerate(items)
        for j, strategy in enumerate(strategies)
    ]
    generations = policy.generate_requests(requests)
    out: list[list[Candidate]] = []
    for i, (task, history) in enumerate(items):
        group = []
        for j, strategy in enumerate(strategies):
            gen = generations[i * len(strategies) + j]
            if gen.ok:
                group.append(
                    Candidate(task, history, gen.text, truncated=gen.finish_reason == "length", strategy=strategy)
                )
        out.append(group)
    return out
