"""Interactivity: did the assistant engage the user the way the need required.

Two measures:
  InteractivityJudge  the CollabLLM term of R_int: an LLM judge reads the conversation and the user's hidden goal
                      and rates in [0, 1] whether the assistant asked relevant clarifying questions, understood the
                      need and avoided needless questions. Batched, strictly parsed, bounded re-asks, and a judge
                      that never produces a valid rating gives MetricResult.fail, never 0.
  elicitation_rate    a free rule-based proxy: the share of the withheld facts the assistant obtained by asking
                      for them, less 0.5 for each question that obtained nothing. It reads outcomes (what the
                      user revealed), never a label of the task.
"""

from __future__ import annotations

from dataclasses import dataclass

from collab.backends.base import Backend
from collab.chat import Conversation, Generation, Message, SamplingParams, message
from collab.jsonparse import JSONParseError, parse_json_object
from collab.metrics.base import MetricResult
from collab.metrics.behaviour import RevealRecord, revealed_per_user_turn
from collab.metrics.dialogue_acts import asks_user, classify_turn
from collab.reasking import generate_with_reasks
from collab.tasks.record import Task

JUDGE_SYSTEM = "You are a careful, impartial evaluator of conversations between a user and an AI assistant."

JUDGE_RUBRIC = """Rate the ASSISTANT's interactivity in the conversation below.

The user's complete intent (the assistant could not see it; the user may have revealed it only gradually):
<<<
{goal}
>>>

The conversation:
<<<
{transcript}
>>>

Interactivity means:
- When the request was ambiguous or missing information, the assistant asked relevant, specific clarifying
  questions instead of guessing or assuming.
- The assistant understood the user's actual need and moved the conversation toward it.
- The assistant avoided unnecessary or redundant questions: when everything needed was already known, it simply
  did the task.

Score: 1 = highly interactive (asked exactly what was needed, or rightly needed no questions); 0.5 = partly
(some relevant engagement, but missed questions, assumptions or needless questions); 0 = not interactive (ignored
missing information, guessed, or asked irrelevant questions). Any value between 0 and 1 is allowed.

Reply with one JSON object and nothing else:
{{"thought": "<your reasoning, briefly>", "interactivity": <a number from 0 to 1>}}"""

_REASK = (
    "That reply was rejected ({reason}). Reply with only the JSON object "
    '{{"thought": "<string>", "interactivity": <a number from 0 to 1, not a string>}}.'
)


@dataclass
class JudgeStats:
    calls: int = 0
    items: int = 0
    parse_failures: int = 0
    out_of_range: int = 0
    backend_errors: int = 0
    reasks: int = 0
    failures: int = 0


def _render(conversation: Conversation) -> str:
    labels = {"user": "USER", "assistant": "ASSISTANT"}
    return "\n\n".join(f"{labels[m['role']]}: {m['content']}" for m in conversation if m["role"] in labels)


def judge_prompt(task: Task, conversation: Conversation) -> list[Message]:
    body = JUDGE_RUBRIC.format(goal=task.goal, transcript=_render(conversation))
    return [message("system", JUDGE_SYSTEM), message("user", body)]


def parse_rating(text: str) -> tuple[float, str]:
    """(interactivity, thought) from a judge reply. Raises JSONParseError for a missing or mistyped key (a string
    "1" is rejected, not converted) and for a value outside [0, 1]."""
    obj = parse_json_object(text, required={"thought": str, "interactivity": float})
    value = float(obj["interactivity"])
    if not 0.0 <= value <= 1.0:
        raise JSONParseError(f"interactivity {value} is outside [0, 1]")
    return value, obj["thought"]


class InteractivityJudge:
    """Batched LLM judge of interactivity (temperature 0 as in the paper).

    Args:
        backend: The judge model.
        max_reasks: Extra rounds for items whose rating was invalid; each round is one batched call holding only
            the failed items, with the rejected reply and the reason appended to their prompt.
        temperature, max_new_tokens, seed: Sampling of the judge.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        max_reasks: int = 2,
        temperature: float = 0.0,
        max_new_tokens: int = 512,
        seed: int = 0,
    ) -> None:
        if max_reasks < 0:
            raise ValueError(f"max_reasks must be >= 0, got {max_reasks}")
        self.backend = backend
        self.max_reasks = max_reasks
        self.params = SamplingParams(
            temperature=temperature, max_new_tokens=max_new_tokens, seed=seed, json_mode=True, n=1
        )
        self.stats = JudgeStats()

    def score(self, items: list[tuple[Task, Conversation]]) -> list[MetricResult]:
        """One MetricResult per (task, conversation), in order; failures carry the last reason and attempts."""
        results: list[MetricResult | None] = [None] * len(items)
        prompts: dict[int, list[Message]] = {}
        for i, (task, conversation) in enumerate(items):
            if not any(m["role"] == "assistant" for m in conversation):
                results[i] = MetricResult.fail("no assistant turn to judge")
                continue
            prompts[i] = judge_prompt(task, conversation)
        self.stats.items += len(items)

        def interpret(i: int, gen: Generation) -> tuple[MetricResult | None, str | None]:
            if not gen.ok:
                self.stats.backend_errors += 1
                return None, f"backend error: {gen.error}"
            try:
                value, thought = parse_rating(gen.text)
            except JSONParseError as exc:
                if "outside [0, 1]" in exc.reason:
                    self.stats.out_of_range += 1
                else:
                    self.stats.parse_failures += 1
                return None, f"unparseable: {exc.reason}"
            return MetricResult(value, details={"thought": thought}), None

        outcome = generate_with_reasks(
            self.backend, prompts, {i: self.params.seed for i in prompts}, self.params, interpret,
            max_reasks=self.max_reasks, reask_note=lambda reason: _REASK.format(reason=reason), salt="judge-reask",
        )
        self.stats.calls += outcome.calls
        self.stats.reasks += outcome.reasks
        for i, result in outcome.values.items():
            results[i] = MetricResult(result.value, details={**result.details, "attempts": outcome.attempts[i]})
        for i, error in outcome.failures.items():
            self.stats.failures += 1
            results[i] = MetricResult.fail(error, attempts=self.max_reasks + 1)
        return [r if r is not None else MetricResult.fail("not scored") for r in results]


@dataclass(frozen=True)
class Elicitation:
    """What the assistant's questions obtained, from a given assistant turn on.

    Attributes:
        outstanding: Facts the user still held when that turn began (revealed before it: not outstanding).
        elicited: Outstanding facts first revealed in a user turn that directly answered an assistant question.
        questions: Asking assistant turns that the user answered (a question in the last turn has no outcome yet).
        wasted: Of those, the turns that only asked (no answer attempt beside the question) and whose answer revealed
            no fact: an irrelevant or needless question. A message that ends "Can you make it?" is not one.
    """

    outstanding: frozenset[int]
    elicited: frozenset[int]
    questions: int
    wasted: int

    @property
    def share(self) -> float | None:
        """Elicited share of the outstanding facts; None when nothing was outstanding."""
        return len(self.elicited) / len(self.outstanding) if self.outstanding else None


def elicitation(
    task: Task, conversation: Conversation, revealed: RevealRecord | None = None, *, start: int = 0
) -> Elicitation:
    """Trace which facts the assistant's questions obtained, from the assistant turn at `conversation[start]` on.

    A fact counts as elicited when it first appears in a user turn that directly follows an asking assistant turn
    (at or after `start`); facts the user volunteered, or that sat in the opening, do not. `revealed` is the
    simulator's record, one entry per user turn (see behaviour.revealed_per_user_turn). Raises ValueError when
    the record does not fit the conversation.
    """
    turns = [(i, m) for i, m in enumerate(conversation) if m["role"] in ("user", "assistant")]
    per_user_turn = iter(revealed_per_user_turn(task, [m for _, m in turns], revealed))
    before: set[int] = set()
    elicited: set[int] = set()
    questions = wasted = 0
    pending: str | None = None  # the act of the previous assistant turn, when it asked at or after `start`
    rated = False  # an assistant turn at or after `start` has been seen; user turns before it are history
    for position, msg in turns:
        if msg["role"] == "assistant":
            rated = rated or position >= start
            pending = classify_turn(task, msg["content"]) if rated and asks_user(task, msg["content"]) else None
            continue
        fresh = next(per_user_turn)
        if not rated:
            before.update(fresh)
        elif pending is not None:
            questions += 1
            new = set(fresh) - before - elicited
            elicited.update(new)
            wasted += not new and pending == "ask"
        pending = None
    outstanding = frozenset(range(len(task.facts))) - before
    return Elicitation(outstanding, frozenset(elicited & outstanding), questions, wasted)


def elicitation_rate(
    task: Task, conversation: Conversation, revealed: RevealRecord | None = None, *, start: int = 0
) -> MetricResult:
    """Rule-based interactivity proxy in [-1, 1], rated from the assistant turn at `conversation[start]` on (in MR:
    the candidate's own turn; over a whole conversation: 0).

    It credits what questions obtained, never the act of asking: the share of the facts the user still held that
    the assistant's questions obtained (0 when the user held nothing back), minus 0.5 for every question that
    obtained nothing. A reply that does not ask scores 0 on every task, so the proxy cannot stand in for the label
    of whether the task needed a question: a relevant question on an underspecified request scores 1, a guess 0,
    an irrelevant question -0.5, and on a complete request answering scores 0 and a needless question -0.5. What the
    user held is the task's facts and what was obtained is what the user revealed in reply; no label is read.
    """
    if not any(m["role"] == "assistant" for m in conversation[start:]):
        return MetricResult.fail("no assistant turn to rate")
    try:
        trace = elicitation(task, conversation, revealed, start=start)
    except ValueError as exc:
        return MetricResult.fail(str(exc))
    value = max(-1.0, (trace.share or 0.0) - 0.5 * trace.wasted)
    return MetricResult(value, details={
        "elicited": sorted(trace.elicited), "outstanding": sorted(trace.outstanding), "questions": trace.questions,
        "wasted_questions": trace.wasted,
    })
