"""The LLM user simulator: any Backend plays the user, CollabLLM style, with strict checks on what it says.

Open simulators (8B and smaller) break in known ways: prose instead of JSON, a number where a string belongs, and
"role confusion": they start acting as the assistant ("Sure, here is the code"), solve their own task, or paste
the hidden goal. Each such turn is rejected, counted in `stats` and re-asked; only the failing conversations are
re-asked, all of them in one batched call per round, each round with a new seed (a cached sample would otherwise
come back unchanged). The number of rounds is bounded, so a stuck model costs at most `max_reasks` more calls.

When every attempt fails the conversation gets `UserTurn(text=None, done=True, info={"error": ...})` and
`stats.gave_up` grows. CALLERS MUST TREAT SUCH A CONVERSATION AS FAILED (no reward, or an explicit failure): it
did not end because the user was satisfied. `info["failed"]` is True exactly in that case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from collab.backends.base import Backend
from collab.chat import Conversation, Generation, SamplingParams
from collab.jsonparse import JSONParseError, parse_json_object
from collab.metrics.dialogue_acts import is_answer_attempt, states_math_result
from collab.reasking import generate_with_reasks
from collab.simulators.base import SimulatorStats, UserSimulator, UserTurn
from collab.simulators.prompts import TERMINATE, opening_prompt, reask_note, respond_prompt
from collab.tasks.record import Task

_TERMINATE_RE = re.compile(r"\[\[\s*TERMINATE[ _]CHAT\s*\]\]", re.IGNORECASE)

_ASSISTANT_OPENING = re.compile(
    r"^\W*(sure|certainly|of course|absolutely|great)\W+here(?:'s| is)\b"
    r"|^\W*here(?:'s| is) (?:the|a|an|your|my) (?:code|solution|answer|function|implementation|revised|updated"
    r"|draft|document|step|final|complete|corrected)"
    r"|^\W*(assistant|ai)\s*:"
    r"|^\W*(great|good|excellent) question"
    r"|^\W*i'?d be (happy|glad) to help"
    r"|^\W*i can help you"
    r"|^\W*let me (help you|solve (this|it|that|the)|walk you through)",
    re.IGNORECASE,
)
_ASSISTANT_ANYWHERE = re.compile(
    r"\bas an ai\b|\bas a (large )?language model\b|\bi am an ai\b|\bi'm an ai\b|\bhow (can|may) i (help|assist)"
    r" you\b|\banything else i can help\b",
    re.IGNORECASE,
)
_CODE_LINE = re.compile(r"^\s*(def |class |return |import |from \S+ import |for .+:$|if .+:$)", re.MULTILINE)
_WORD = re.compile(r"[a-z0-9']+")


@dataclass
class LLMSimulatorStats(SimulatorStats):
    """SimulatorStats plus failures of the backend itself (network, engine), which are neither parse failures
    nor role confusions but are re-asked the same way."""

    backend_errors: int = 0


def _trigrams(text: str) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def goal_overlap(goal: str, text: str) -> tuple[float, float]:
    """(coverage, containment) of word trigrams: the share of the goal's trigrams found in `text`, and the share
    of `text`'s trigrams taken from the goal."""
    goal_grams, text_grams = _trigrams(goal), _trigrams(text)
    if not goal_grams or not text_grams:
        return 0.0, 0.0
    shared = len(goal_grams & text_grams)
    return shared / len(goal_grams), shared / len(text_grams)


def role_confusion(
    task: Task,
    text: str,
    *,
    goal_coverage_threshold: float = 0.5,
    min_goal_words: int = 12,
    max_words: int = 150,
) -> str | None:
    """Why `text` reads as the assistant's turn rather than the user's, or None when it is a plausible user turn.

    Rules: an assistant-style opening ("Sure, here is", "As an AI", "Here is the code"); a code block or several
    code lines; more than `max_words` words (a pasted solution; not applied to doc tasks, whose users may paste
    text); a solved task (math: an explicit result not among the givens; code: a working definition); copying the
    hidden goal: at least `goal_coverage_threshold` of its word trigrams, or 20+ words of which 80% of trigrams come
    from it. Goals shorter than `min_goal_words` are exempt from the copy rule: a one-line question is what a real
    user types.
    """
    if _ASSISTANT_OPENING.search(text) or _ASSISTANT_ANYWHERE.search(text):
        return "acts as the assistant"
    if "```" in text or len(_CODE_LINE.findall(text)) >= 2:
        return "writes code"
    words = len(text.split())
    if task.kind != "doc" and words > max_words:
        return f"too long for a user turn ({words} words)"
    if task.kind == "math" and states_math_result(task, text):
        return "solves its own task"
    if task.kind == "code" and is_answer_attempt(task, text):
        return "solves its own task"
    if len(task.goal.split()) >= min_goal_words:
        coverage, containment = goal_overlap(task.goal, text)
        if coverage >= goal_coverage_threshold or (words >= 20 and containment >= 0.8):
            return f"copies the hidden goal (coverage {coverage:.2f}, containment {containment:.2f})"
    return None


class LLMSimulator(UserSimulator):
    """A user simulator prompted CollabLLM style on any Backend.

    Args:
        backend: The model playing the user.
        max_turns: Most user messages in a conversation, the opening included; at the limit the user stops
            (done, no text, reason "turn_limit") without a model call. None: no limit (the engine's own).
        temperature: Sampling temperature of the user (1.0, as in the paper).
        max_new_tokens: Room for the JSON object, thought included.
        max_reasks: Extra rounds for conversations whose turn was rejected.
        goal_coverage_threshold, min_goal_words, max_words: role-confusion thresholds (see `role_confusion`).
    """

    name = "llm"

    def __init__(
        self,
        backend: Backend,
        *,
        max_turns: int | None = None,
        temperature: float = 1.0,
        max_new_tokens: int = 512,
        max_reasks: int = 2,
        goal_coverage_threshold: float = 0.5,
        min_goal_words: int = 12,
        max_words: int = 150,
    ) -> None:
        super().__init__()
        if max_reasks < 0:
            raise ValueError(f"max_reasks must be >= 0, got {max_reasks}")
        if max_turns is not None and max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        self.backend = backend
        self.max_turns = max_turns
        self.params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, json_mode=True, n=1)
        self.max_reasks = max_reasks
        self.goal_coverage_threshold = goal_coverage_threshold
        self.min_goal_words = min_goal_words
        self.max_words = max_words
        self.stats: LLMSimulatorStats = LLMSimulatorStats()

    def respond(self, batch: list[tuple[Task, Conversation]], seeds: list[int] | None = None) -> list[UserTurn]:
        """One UserTurn per item. `seeds[i]` seeds item i's sample (re-asks derive new seeds from it); all items
        of a round go to the backend as one batch of requests, whatever their seeds."""
        if seeds is not None and len(seeds) != len(batch):
            raise ValueError(f"{len(seeds)} seeds for {len(batch)} conversations")
        item_seeds = list(seeds) if seeds is not None else [0] * len(batch)
        results: list[UserTurn | None] = [None] * len(batch)
        prompts: dict[int, Conversation] = {}
        for i, (task, transcript) in enumerate(batch):
            turns = [m for m in transcript if m["role"] != "system"]
            if not turns:
                if task.opening:
                    # A scripted opening costs no call and keeps every run's first turn identical.
                    results[i] = UserTurn(task.opening, info={"reason": "opening", "source": "task"})
                    self.stats.turns += 1
                    continue
                prompts[i] = opening_prompt(task)
                continue
            if turns[-1]["role"] != "assistant":
                raise ValueError(f"task {task.id}: the transcript must end with an assistant turn")
            user_turns = sum(1 for m in turns if m["role"] == "user")
            if self.max_turns is not None and user_turns >= self.max_turns:
                results[i] = UserTurn(None, done=True, info={"reason": "turn_limit"})
                continue
            prompts[i] = respond_prompt(task, turns)

        def interpret(i: int, gen: Generation) -> tuple[UserTurn | None, str | None]:
            task, transcript = batch[i]
            return self._interpret(task, gen, opening=not any(m["role"] != "system" for m in transcript))

        outcome = generate_with_reasks(
            self.backend, prompts, {i: item_seeds[i] for i in prompts}, self.params, interpret,
            max_reasks=self.max_reasks, reask_note=reask_note, salt="user-reask",
        )
        self.stats.reasks += outcome.reasks
        for i, turn in outcome.values.items():
            turn.info["attempts"] = outcome.attempts[i]
            results[i] = turn
            self.stats.turns += 1
        for i, error in outcome.failures.items():
            self.stats.gave_up += 1
            results[i] = UserTurn(None, done=True, info={"error": error, "failed": True, "attempts": self.max_reasks + 1})
        return [r if r is not None else UserTurn(None, done=True, info={"error": "no turn"}) for r in results]

    def _interpret(self, task: Task, gen: Generation, *, opening: bool) -> tuple[UserTurn | None, str | None]:
        """The user turn in `gen`, or (None, reason) after counting the failure in stats."""
        if not gen.ok:
            self.stats.backend_errors += 1
            return None, f"backend error: {gen.error}"
        try:
            obj = parse_json_object(
                gen.text,
                required={"response": str},
                optional={"thought": (str, type(None)), "current_answer": (str, type(None))},
            )
        except JSONParseError as exc:
            self.stats.parse_failures += 1
            return None, f"unparseable: {exc.reason}"
        raw = obj["response"]
        terminate = bool(_TERMINATE_RE.search(raw))
        text = _TERMINATE_RE.sub(" ", raw).strip()
        if not terminate and not text:
            self.stats.parse_failures += 1
            return None, "unparseable: empty response"
        if opening and terminate:
            self.stats.parse_failures += 1
            return None, "unparseable: terminated before the conversation started"
        if text:
            confusion = role_confusion(
                task,
                text,
                goal_coverage_threshold=self.goal_coverage_threshold,
                min_goal_words=self.min_goal_words,
                max_words=self.max_words,
            )
            if confusion:
                self.stats.role_confusions += 1
                return None, f"role confusion: {confusion}"
        info: dict[str, Any] = {
            "reason": "opening" if opening else ("terminate" if terminate else "respond"),
            "thought": obj.get("thought"),
            "current_answer": obj.get("current_answer"),
        }
        return UserTurn(text or None, done=terminate, info=info), None


__all__ = ["TERMINATE", "LLMSimulator", "LLMSimulatorStats", "goal_overlap", "role_confusion"]
