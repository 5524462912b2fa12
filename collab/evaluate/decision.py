"""First-turn decision scores: how strongly a model opens by asking rather than answering, task by task.

For each task's opening, one forward pass gives the model's next-token log-probabilities at the start of its reply;
the score is log p(first token of the ask opening) - log p(first token of the answer opening). Nothing is sampled,
so the ranking of tasks by score (its AUC against `needs_clarification`) measures what a model has learned about
*when* to ask, free of the sampling noise of a 48-task evaluation. The mean score per group of tasks (steps and
variant on clarify-math) shows which cue drives the decision: docs/quickstart.md found that every trained SmolLM2
ranked problems by how many numbers they state.

`python -m collab.evaluate.decision MODEL [MODEL ...]` prints the table; the sampled rates it estimates treat the
two first tokens as the only choices, which matches the measured ask and over-ask rates of the quickstart's runs to
within about two problems.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from collab.chat import message
from collab.errors import CollabError
from collab.tasks.record import Task

ASK_OPENING = "Could you tell me"
ANSWER_OPENING = "The answer is"


@dataclass(frozen=True)
class DecisionScore:
    """One task's first-turn decision: `score` > 0 means the ask opening's first token is the likelier one."""

    task_id: str
    needs_clarification: bool
    group: str
    score: float


def first_token(tokenizer: Any, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise CollabError(f"the opening {text!r} has no tokens", where="--ask-opening / --answer-opening",
                          fix="give a non-empty opening, e.g. --ask-opening 'Could you tell me'.")
    return ids[0]


def decision_scores(
    model: Any, tokenizer: Any, tasks: Sequence[Task], *, ask_opening: str = ASK_OPENING,
    answer_opening: str = ANSWER_OPENING, group_by: Sequence[str] = ("steps", "variant"),
) -> list[DecisionScore]:
    """The decision score of every task (its opening as the only user message, encoded as the hf backend encodes
    it), grouped by metadata fields."""
    import torch

    from collab.backends.hf import encode_messages

    ask, answer = first_token(tokenizer, ask_opening), first_token(tokenizer, answer_opening)
    if ask == answer:
        raise CollabError(
            f"the openings {ask_opening!r} and {answer_opening!r} start with the same token, so the first token "
            "cannot tell asking from answering", where="--ask-opening / --answer-opening",
            fix="give openings whose first words differ, as the quickstart's prefills do.")
    scores = []
    with torch.no_grad():
        for task in tasks:
            ids = encode_messages(tokenizer, [message("user", task.opening)])
            logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0, -1].float()
            logp = logits.log_softmax(-1)
            group = "/".join(str(task.metadata.get(field, "-")) for field in group_by)
            scores.append(DecisionScore(task.id, task.needs_clarification, group, float(logp[ask] - logp[answer])))
    return scores


def auc(scores: Sequence[DecisionScore]) -> float | None:
    """P(score of a task that needs clarification > score of one that does not), ties counting half; None without
    both kinds."""
    pos = [s.score for s in scores if s.needs_clarification]
    neg = [s.score for s in scores if not s.needs_clarification]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def ask_probability(score: float, temperature: float) -> float:
    """P(the ask opening) when sampling at `temperature` between the two first tokens only (greedy: 0 or 1)."""
    if temperature <= 0:
        return float(score > 0)
    return 1.0 / (1.0 + math.exp(-score / temperature))


@dataclass(frozen=True)
class DecisionSummary:
    auc: float | None
    ask_rate: float
    over_ask_rate: float
    mean_by_group: dict[str, float]


def summarize(scores: Sequence[DecisionScore], temperature: float) -> DecisionSummary:
    """AUC, the expected ask / over-ask rates at `temperature`, and the mean score per group."""
    by_group: dict[str, list[float]] = defaultdict(list)
    rates: dict[bool, list[float]] = {True: [], False: []}
    for s in scores:
        by_group[s.group].append(s.score)
        rates[s.needs_clarification].append(ask_probability(s.score, temperature))
    return DecisionSummary(auc(scores), _mean(rates[True]), _mean(rates[False]),
                           {g: _mean(v) for g, v in sorted(by_group.items())})


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def main(argv: Sequence[str] | None = None) -> None:
    from collab.models import load_model, load_tokenizer
    from collab.tasks.registry import load_task_set

    parser = argparse.ArgumentParser(prog="python -m collab.evaluate.decision", description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="model names or paths (e.g. runs/quickstart/dpo/final)")
    parser.add_argument("--tasks", default="clarify-math")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--ask-opening", default=ASK_OPENING)
    parser.add_argument("--answer-opening", default=ANSWER_OPENING)
    parser.add_argument("--group-by", nargs="*", default=["steps", "variant"])
    args = parser.parse_args(argv)
    tasks = load_task_set(args.tasks, split=args.split, limit=args.limit)
    for name in args.models:
        model = load_model(name, device="cpu")
        scores = decision_scores(model, load_tokenizer(name), tasks, ask_opening=args.ask_opening,
                                 answer_opening=args.answer_opening, group_by=args.group_by)
        s = summarize(scores, args.temperature)
        greedy = summarize(scores, 0.0)
        print(f"{name}: AUC {s.auc if s.auc is None else round(s.auc, 3)}; expected at T={args.temperature}: "
              f"ask {s.ask_rate:.2f}, over-ask {s.over_ask_rate:.2f}; greedy: ask {greedy.ask_rate:.2f}, "
              f"over-ask {greedy.over_ask_rate:.2f}")
        for group, value in s.mean_by_group.items():
            print(f"  {group:24s} {value:+.2f}")


if __name__ == "__main__":
    main()
