"""Candidate strategies: how the data engine and `collab simulate` sample the responses that MR compares.

A small model rarely asks on its own, so comparing only plain samples gives MR nothing to prefer. Following
CollabLLM (a proactive instruction on a share of candidates) and ACT (action-contrastive candidates), a strategy
adds a steering instruction to the policy's system prompt for that candidate only. The steering never enters the
training data: pairs are stored with the unsteered prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
# Small models ignore steering instructions, so a steered candidate also starts its reply with a few opening words
# (an assistant prefill) that the model completes: a question opening for `ask`, and for `answer` on math an opening
# that commits to a result, which keeps the reply short (a rambling derivation is cut off at the token limit and
# loses to any question, teaching over-asking). One opening per candidate, chosen by its seed; the key is the
# strategy and the task kind, "*" matching every kind.
PREFILLS: dict[tuple[Strategy, str], tuple[str, ...]] = {
    ("ask", "*"): (
        "Could you tell me",
        "Before I answer, could you tell me",
        "Can you clarify",
        "I need one more detail to answer this. What is",
    ),
    ("answer", "math"): ("The answer is", "So the answer is"),
}


def prefill_for(
    strategy: Strategy, kind: str, seed: int = 0, overrides: Mapping[str, Sequence[str]] | None = None
) -> str | None:
    """The assistant prefill of a `strategy` candidate on a task of `kind`, or None. `overrides` (a recipe's
    openings per strategy) replaces the built-in openings of the strategies it names, on every kind."""
    if overrides is not None and strategy in overrides:
        options: Sequence[str] | None = overrides[strategy]
    else:
        options = PREFILLS.get((strategy, kind)) or PREFILLS.get((strategy, "*"))
    return options[seed % len(options)] if options else None


def steered_prompt(
    strategy: Strategy,
    messages: Conversation,
    system_prompt: str | None,
    seed: int = 0,
    *,
    kind: str = "*",
    prefills: Mapping[str, Sequence[str]] | None = None,
) -> Conversation:
    """The prompt the policy sees for a candidate of `strategy`: the base system prompt plus the steering text, and
    for prefilled strategies a final assistant message that the reply continues."""
    steering = STEERING[strategy]
    system = "\n\n".join(p for p in (system_prompt, steering) if p)
    prompt = [message("system", system), *messages] if system else list(messages)
    prefill = prefill_for(strategy, kind, seed, prefills)
    if prefill:
        prompt.append(message("assistant", prefill))
    return prompt


def cut_at_stop(prefix: str, reply: str, stops: Sequence[str]) -> tuple[str, bool]:
    """`prefix + reply` ended after the earliest stop string that the reply completes (a stop string inside the
    prefill itself does not count), and whether it was cut."""
    text = prefix + reply
    ends = [i + len(s) for s in stops if s and (i := text.find(s, max(0, len(prefix) - len(s) + 1))) >= 0]
    return (text[: min(ends)], True) if ends else (text, False)


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
    seeds: list[int] | None = None,
    prefills: Mapping[str, Sequence[str]] | None = None,
    stops: Mapping[str, Sequence[str]] | None = None,
) -> list[list[Candidate]]:
    """`len(strategies)` candidates for each (task, history), all sampled in one batched policy call.

    `seeds` (one per item) makes each item's candidates depend on its own seed only, not on its position in the
    batch (the data engine needs this: a resumed run batches conversations differently); without it, item i draws
    from `seed` and its position. `prefills` replaces the built-in openings of the strategies it names; `stops` ends the candidates of the
    strategies it names at the first of their strings (collab.config.DataStage.stops).

    Failed generations are dropped (and counted by the backend); a candidate that hit the token limit is marked
    truncated so MR gives it the fixed penalty.
    """
    from collab.backends.base import Request
    from collab.reward import Candidate

    if seeds is not None and len(seeds) != len(items):
        raise ValueError(f"{len(seeds)} seeds for {len(items)} items")
    # Per item: (prefill seed, sampling seed, sample index); the sampled seed is the sampling seed + the index.
    base = ([(s, s, 0) for s in seeds] if seeds is not None
            else [(seed + i, seed, i) for i in range(len(items))])
    requests = [
        Request(steered_prompt(strategy, history, system_prompt, seed=base[i][0] + j, kind=items[i][0].kind,
                               prefills=prefills),
                params.with_(seed=base[i][1] + 17 * j, n=1), sample_index=base[i][2])
        for i, (_, history) in enumerate(items)
        for j, strategy in enumerate(strategies)
    ]
    generations = policy.generate_requests(requests)
    out: list[list[Candidate]] = []
    for i, (task, history) in enumerate(items):
        group = []
        for j, strategy in enumerate(strategies):
            k = i * len(strategies) + j
            gen, prompt = generations[k], requests[k].messages
            if gen.ok:
                prefix = prompt[-1]["content"] if prompt[-1]["role"] == "assistant" else ""
                text, cut = cut_at_stop(prefix, gen.text, (stops or {}).get(strategy, ()))
                group.append(Candidate(task, history, text.strip(),
                                       truncated=gen.finish_reason == "length" and not cut, strategy=strategy))
        out.append(group)
    return out
