"""The scripted sharded user (Lost in Conversation): reveals one fact per turn, never asks, needs no model.

A task's `facts` are its shards. The policy, for the last assistant message:

  1. a correct answer attempt (by the injected correctness check) -> done, with a short thanks ("answer_correct");
  2. the user has already sent `max_turns` messages -> done, no text ("turn_limit");
  3. it asks a question -> reveal the one unrevealed fact most relevant to the question ("reveal"); relevance is
     BM25 over content words with the task's facts as the collection, ties broken by fact order; when no
     unrevealed fact shares a content word with the question, a varied "I don't know" ("dont_know");
  4. a wrong answer attempt -> point out it is not right and reveal the next fact in order ("reveal"); with no
     fact left -> done, no text ("exhausted");
  5. anything else -> nudge with the next fact ("reveal"), or, with none left, ask for the answer ("nudge").

That is the Lost-in-Conversation user (`mode="reveal"`): every turn moves the conversation forward, so a policy that
guesses is handed the missing fact by its wrong answer and ends as well off as one that asked. For training, the
`withhold` mode makes a wrong or premature answer cost what it costs with people: rules 4 and 5 change to

  4'. a wrong answer attempt -> the user says it is not what they need, volunteering nothing ("rejected"); with
      probability `give_up` they end the conversation instead ("gave_up"), as an annoyed user does;
  5'. anything else -> the user asks for the result, volunteering nothing ("nudge").

so the only way to a withheld fact is a question about it, and MR can tell asking from guessing by outcomes alone.
With `recap` (either mode), the reply that hands over the last withheld fact also restates the whole request.

The empty transcript gets the opening: `task.opening`, or the goal's first sentence ("opening").

Stateless: which facts are revealed is read from the user turns of the transcript (see
`collab.metrics.behaviour.fact_in_text`), so the same simulator serves any number of conversations and resumed
runs. Deterministic: the wording is drawn from random.Random seeded by a SHA-256 of (the item's seed, task id, user
turn index), never from Python's per-process salted hash().

Correctness is only checked on turns that `is_answer_attempt` recognises, so a code sandbox runs only on turns
that contain code. The check is injectable; by default it is `collab.metrics.task_score.is_correct`.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from collab.chat import Conversation
from collab.metrics.behaviour import content_terms, revealed_per_user_turn
from collab.metrics.dialogue_acts import classify_turn, user_questions
from collab.seeding import stable_seed
from collab.simulators.base import SimulatorStats, UserSimulator, UserTurn
from collab.tasks.record import Task

CorrectnessCheck = Callable[[Task, str], bool]
ShardedMode = Literal["reveal", "withhold"]
SHARDED_MODES: tuple[str, ...] = ("reveal", "withhold")

# No template contains '?': the sharded user never asks questions.
THANKS = ("Thanks, that's right!", "Great, that's what I needed. Thanks!", "Perfect, thank you.", "That works, thanks.")
ANSWER_TO_QUESTION = ("{fact}", "Sure. {fact}", "Good question. {fact}", "Right, I should have said: {fact}")
WRONG_ANSWER = (
    "That doesn't look right to me. {fact}",
    "Hmm, I don't think that's it. {fact}",
    "Not quite. One more thing: {fact}",
)
NUDGE = ("{fact}", "One more detail: {fact}", "Also: {fact}", "Something else you should know: {fact}")
# The whole request, once its last missing piece is out (the goal may hold a '?': it is the user's own request).
RECAP = ("To sum up: {goal}", "So, all together: {goal}", "In short: {goal}")
REJECTED = (
    "That's not what I need.",
    "No, that's not right.",
    "Hmm, that's not it.",
    "That doesn't work for me.",
)
GO_AHEAD = ("Please go ahead.", "Go ahead, please.", "Just write it, please.", "Please just give me the result.")
NUDGE_NO_FACTS = (
    "That's everything I know. Please give me your answer.",
    "Please go ahead and give me the final answer.",
    "I've told you all I have, so go ahead.",
)
DONT_KNOW = (
    "I don't know, sorry.",
    "I'm not sure about that.",
    "No idea, I'm afraid.",
    "I don't really know. Whatever you think is best.",
    "That I can't tell you.",
)

_FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(?=\s|$)", re.DOTALL)


@dataclass
class ShardedStats(SimulatorStats):
    """SimulatorStats plus correctness checks that raised (counted as not correct, never as a silent pass)."""

    correctness_errors: int = 0


def item_seeds_for(batch: list[tuple[Task, Conversation]], seeds: list[int] | None) -> list[int]:
    """One seed per batch item: `seeds` as given (it must match the batch), or 0 for every item."""
    if seeds is None:
        return [0] * len(batch)
    if len(seeds) != len(batch):
        raise ValueError(f"{len(seeds)} seeds for {len(batch)} conversations")
    return list(seeds)


def first_sentence(text: str) -> str:
    match = _FIRST_SENTENCE.match(text.strip())
    return match.group(1).strip() if match else text.strip()


def rank_facts(query: str, facts: tuple[str, ...], candidates: list[int]) -> tuple[int | None, float]:
    """The candidate fact with the highest BM25 score for `query` (first in fact order on ties) and its score;
    (None, 0.0) when no candidate shares a content word with the query. IDF comes from all of the task's facts,
    so a word every fact contains (the task's topic) weighs little."""
    k1, b = 1.2, 0.75
    docs = [content_terms(f) for f in facts]
    if not docs or not candidates:
        return None, 0.0
    n = len(docs)
    avg_len = sum(len(d) for d in docs) / n or 1.0
    df = Counter(t for d in docs for t in set(d))
    query_terms = set(content_terms(query))
    best, best_score = None, 0.0
    for i in candidates:
        counts = Counter(docs[i])
        score = 0.0
        for term in query_terms & counts.keys():
            idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
            tf = counts[term]
            score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(docs[i]) / avg_len))
        if score > best_score:
            best, best_score = i, score
    return best, best_score


# A "when" question asks for a day or a time, a "where" question for a place; content words alone cannot see that,
# since "when" and "where" carry no content of their own.
_SLOT_WORDS = {"when": "day date time hour", "where": "place location venue"}
_WH = re.compile(r"\b(when|where)\b", re.IGNORECASE)


def with_slot_words(query: str) -> str:
    """`query` plus the kinds of detail its when/where words ask for."""
    return " ".join([query, *(_SLOT_WORDS[w.lower()] for w in _WH.findall(query))])


def _default_is_correct(task: Task, text: str) -> bool:
    # Imported lazily: the scorer pulls in math-verify and the code sandbox, which a caller injecting its own
    # check does not need.
    from collab.metrics.task_score import is_correct

    return bool(is_correct(task, text))


class ShardedSimulator(UserSimulator):
    """Scripted Lost-in-Conversation user.

    Args:
        max_turns: Most user messages in a conversation, the opening included; at the limit the user stops.
        mode: `reveal` (Lost in Conversation: wrong answers and other turns are answered with the next fact) or
            `withhold` (a fact is given only to a question about it; see the module docstring).
        give_up: In `withhold` mode, the probability that the user ends the conversation after a wrong answer.
        recap: When a question obtains the last withheld fact, also restate the whole request (the goal).
        is_correct: (task, assistant text) -> bool. Defaults to `collab.metrics.task_score.is_correct`.
    """

    name = "sharded"

    def __init__(
        self,
        *,
        max_turns: int = 7,
        mode: ShardedMode = "reveal",
        give_up: float = 0.0,
        recap: bool = False,
        is_correct: CorrectnessCheck | None = None,
    ) -> None:
        super().__init__()
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        if mode not in SHARDED_MODES:
            raise ValueError(f"mode must be one of {SHARDED_MODES}, got {mode!r}")
        if not 0.0 <= give_up <= 1.0:
            raise ValueError(f"give_up must be a probability in [0, 1], got {give_up}")
        self.max_turns = max_turns
        self.mode = mode
        self.give_up = give_up
        self.recap = recap
        self.is_correct: CorrectnessCheck = is_correct or _default_is_correct
        self.stats: ShardedStats = ShardedStats()

    def respond(self, batch: list[tuple[Task, Conversation]], seeds: list[int] | None = None) -> list[UserTurn]:
        item_seeds = item_seeds_for(batch, seeds)
        out = [self._next(task, transcript, seed) for (task, transcript), seed in zip(batch, item_seeds)]
        self.stats.turns += sum(1 for t in out if t.text is not None)
        return out

    def _next(self, task: Task, transcript: Conversation, seed: int) -> UserTurn:
        turns = [m for m in transcript if m["role"] in ("user", "assistant")]
        user_turns = sum(1 for m in turns if m["role"] == "user")
        rng = random.Random(stable_seed(seed, task.id, user_turns))
        if not turns:
            opening = task.opening or first_sentence(task.goal)
            in_opening = revealed_per_user_turn(task, [{"role": "user", "content": opening}])[0]
            return UserTurn(opening, info={"reason": "opening", "fact_index": None, "revealed": in_opening})
        if turns[-1]["role"] != "assistant":
            raise ValueError(f"task {task.id}: the transcript must end with an assistant turn")

        revealed = {i for per_turn in revealed_per_user_turn(task, turns) for i in per_turn}
        remaining = [i for i in range(len(task.facts)) if i not in revealed]
        text = turns[-1]["content"]
        act = classify_turn(task, text)
        info: dict[str, Any] = {"act": act, "fact_index": None}

        def end(reason: str, reply: str | None = None) -> UserTurn:
            return UserTurn(reply, done=True, info={**info, "reason": reason, "revealed": sorted(revealed)})

        def say(reason: str, reply: str, fact: int | None = None) -> UserTurn:
            now = sorted(revealed | ({fact} if fact is not None else set()))
            if self.recap and fact is not None and remaining == [fact]:
                reply = f"{reply} {rng.choice(RECAP).format(goal=task.goal)}"
            return UserTurn(reply, info={**info, "reason": reason, "fact_index": fact, "revealed": now})

        if act in ("answer", "ask_and_answer") and self._check(task, text, info):
            return end("answer_correct", rng.choice(THANKS))
        if user_turns >= self.max_turns:
            return end("turn_limit")
        if act in ("ask", "ask_and_answer"):
            fact, score = rank_facts(with_slot_words(" ".join(user_questions(task, text))), task.facts, remaining)
            if fact is None:
                return say("dont_know", rng.choice(DONT_KNOW))
            info["relevance"] = round(score, 4)
            return say("reveal", rng.choice(ANSWER_TO_QUESTION).format(fact=task.facts[fact]), fact)
        if self.mode == "withhold":
            if act == "answer":
                if rng.random() < self.give_up:
                    return end("gave_up")
                return say("rejected", rng.choice(REJECTED))
            return say("nudge", rng.choice(GO_AHEAD))
        if act == "answer":
            if not remaining:
                return end("exhausted")
            fact = remaining[0]
            return say("reveal", rng.choice(WRONG_ANSWER).format(fact=task.facts[fact]), fact)
        if remaining:
            fact = remaining[0]
            return say("reveal", rng.choice(NUDGE).format(fact=task.facts[fact]), fact)
        return say("nudge", rng.choice(NUDGE_NO_FACTS))

    def _check(self, task: Task, text: str, info: dict[str, Any]) -> bool:
        try:
            return bool(self.is_correct(task, text))
        except ImportError:
            raise  # a missing scorer is a broken install, not a wrong answer
        except Exception as exc:  # a crashing scorer must not end or derail the conversation silently
            self.stats.correctness_errors += 1
            info["correctness_error"] = f"{type(exc).__name__}: {exc}"[:200]
            return False
