"""Interactivity: did the assistant engage the user the way the need required.

Two measures:
  InteractivityJudge  the CollabLLM term of R_int: an LLM judge reads the conversation and the user's hidden goal
                      and rates in [0, 1] whether the assistant asked relevant clarifying questions, understood the
                      need and avoided needless questions. Batched, strictly parsed, bounded re-asks, and a judge
                      that never produces a valid rating gives MetricResult.fail, never 0.
  elicitation_rate    a free rule-based proxy for tasks with facts: the share of the facts the assistant obtained
                      by asking for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from collab.backends.base import Backend
from collab.chat import Conversation, Generation, Message, SamplingParams, message
from collab.jsonparse import JSONParseError, parse_json_object
from collab.metrics.base import MetricResult
from collab.metrics.behaviour import RevealRecord, revealed_per_user_turn
from collab.metrics.dialogue_acts import classify_turn, is_question
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


def elicitation_rate(
    task: Task, conversation: Conversation, revealed: RevealRecord | None = None
) -> MetricResult:
    """Rule-based interactivity proxy.

    Every task: the first decision is rated. It is right when the assistant's first act asked on a task that needs
    clarification, or did not ask before attempting a complete task. Rewarding any question would teach
    over-asking on complete tasks, the failure mode that Abg-CoQA-style false-ask rates expose.

    Tasks without facts (or whose facts all sit in the opening): the proxy is that decision, 1.0 or 0.0.

    Tasks with facts: half the decision and half the share of facts the assistant elicited, where a fact is
    elicited when it first appears in a user turn that directly follows an assistant turn asking a question
    (volunteered facts and those in the opening do not count; facts already in the opening leave the denominator,
    since nobody needs to ask for them). The decision half is why a vague question still beats a guess on an
    underspecified task (0.5 against 0.0) while a question that obtains what was missing scores 1.0: without it a
    small policy's unfocused questions and its invented numbers tie at 0, and MR cannot tell asking from guessing.

    `revealed` is the simulator's record, one entry per user turn (see behaviour.revealed_per_user_turn).
    """
    turns = [m for m in conversation if m["role"] in ("user", "assistant")]
    if not any(m["role"] == "assistant" for m in turns):
        return MetricResult.fail("no assistant turn")
    try:
        per_user_turn = revealed_per_user_turn(task, turns, revealed)
    except ValueError as exc:
        return MetricResult.fail(str(exc))

    in_opening: set[int] = set()
    elicited: set[int] = set()
    user_index = 0
    previous_asked = False
    for position, msg in enumerate(turns):
        if msg["role"] == "assistant":
            previous_asked = is_question(msg["content"])
            continue
        fresh = per_user_turn[user_index]
        user_index += 1
        if position == 0:
            in_opening.update(fresh)
        elif previous_asked:
            elicited.update(fresh)
        previous_asked = False

    first_act = next(classify_turn(task, m["content"]) for m in turns if m["role"] == "assistant")
    asked_first = first_act in ("ask", "ask_and_answer")
    right = float(asked_first if task.needs_clarification else not asked_first)
    askable = len(task.facts) - len(in_opening)
    if askable > 0:
        share = len(elicited) / askable
        return MetricResult(0.5 * right + 0.5 * share, details={
            "elicited": sorted(elicited), "askable": askable, "first_action": first_act, "rule": "facts"})
    return MetricResult(right, details={"first_action": first_act, "rule": "first_action"})
