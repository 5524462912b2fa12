"""Ask / answer behaviour of a finished conversation: did the assistant ask, too early an answer, needless asks.

Over-asking matters as much as under-asking (an assistant that always asks looks interactive and is annoying), so
the ask rate on underspecified tasks is always reported beside the false-ask rate on complete ones.

Which facts the user has revealed is tracked here too, because behaviour, the elicitation proxy and the scripted
simulator must agree on it. Facts are found in the user turns by text (see `fact_in_text`); a simulator that knows
what it revealed can add its record (`revealed_facts_per_turn`), which catches paraphrases text matching misses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from collab.chat import Conversation
from collab.metrics.base import MetricResult
from collab.metrics.dialogue_acts import classify_turn
from collab.tasks.record import Task

# A simulator's account of what it revealed, one entry per user turn it produced: an int or None (the fact that
# turn revealed, as in UserTurn.info["fact_index"]), an iterable of ints, or the UserTurn.info dict itself (its
# "fact_index" is read; the rollout engine's `user_info` list can be passed as is).
RevealRecord = Sequence[Mapping[str, Any] | Iterable[int] | int | None]

_STOPWORDS = frozenset(
    """a an the and or but if then else of to in on at by for with from into onto about as is are was were be been
    being am do does did done have has had having i me my mine you your yours he him his she her it its we us our
    they them their this that these those there here what which who whom whose when where why how can could would
    should will shall may might must not no yes so very just also too than some any all each every either neither
    both few more most other such only own same s t don doesn didn please tell know let like want need get got
    make sure okay ok thanks thank hi hello one""".split()
)
_TERM = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _stem(word: str) -> str:
    # A tiny suffix stripper: enough for "boxes"/"box", "holds"/"hold"; no dependency, fully deterministic.
    if word.isdigit() or len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "zes", "sses")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def content_terms(text: str) -> list[str]:
    """Lower-cased, stemmed words of `text` without stopwords, in order (duplicates kept)."""
    return [_stem(w) for w in _TERM.findall(text.lower()) if w not in _STOPWORDS]


def _normalise(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .!?;:,")


def fact_in_text(fact: str, text: str) -> bool:
    """True when `text` states `fact`: verbatim (ignoring case, spacing and end punctuation), or paraphrased with
    every number of the fact and at least 75% of its content words. The fuzzy rule needs 3+ content words, so a
    fact like "It is 4." is only matched verbatim (its single number would match too much)."""
    needle = _normalise(fact)
    if needle and needle in _normalise(text):
        return True
    fact_terms = set(content_terms(fact))
    if len(fact_terms) < 3:
        return False
    text_terms = set(content_terms(text))
    if not set(_NUMBER.findall(fact)) <= set(_NUMBER.findall(text)):
        return False
    return len(fact_terms & text_terms) / len(fact_terms) >= 0.75


def _recorded_indices(entry: Mapping[str, Any] | Iterable[int] | int | None) -> list[int]:
    if entry is None:
        return []
    if isinstance(entry, Mapping):
        index = entry.get("fact_index")
        return [index] if isinstance(index, int) and not isinstance(index, bool) else []
    if isinstance(entry, int):
        return [entry]
    return [i for i in entry if isinstance(i, int)]


def revealed_per_user_turn(
    task: Task, conversation: Conversation, record: RevealRecord | None = None
) -> list[list[int]]:
    """For each user turn, in order, the fact indices first revealed in it.

    Facts are found in the text of each user turn (`fact_in_text`); a simulator `record` adds what text matching
    cannot see (a paraphrase). The record may cover only the last user turns (a rollout records the turns it
    produced, not the history before it), so it is aligned to the end of the conversation after dropping trailing
    entries that reveal nothing (a final turn that ended the chat without a message). A record that still has
    more entries than there are user turns belongs to another conversation: ValueError.
    """
    user_texts = [m["content"] for m in conversation if m["role"] == "user"]
    recorded = [_recorded_indices(e) for e in record] if record is not None else []
    while recorded and not recorded[-1]:
        recorded.pop()
    if len(recorded) > len(user_texts):
        raise ValueError(f"revealed record has {len(recorded)} entries for {len(user_texts)} user turns")
    offset = len(user_texts) - len(recorded)
    seen: set[int] = set()
    out: list[list[int]] = []
    for k, text in enumerate(user_texts):
        found = {i for i, fact in enumerate(task.facts) if fact_in_text(fact, text)}
        if k >= offset:
            found.update(i for i in recorded[k - offset] if 0 <= i < len(task.facts))
        fresh = sorted(found - seen)
        seen.update(fresh)
        out.append(fresh)
    return out


@dataclass(frozen=True)
class Behaviour:
    """Behaviour of one conversation; 0/1 values are floats so they average into rates directly.

    Attributes:
        asked: 1 when an assistant turn asked the user something before any pure answer attempt. A turn that asks
            and answers at once (a hedged guess plus a question) counts as asking (and as an attempt).
        premature_answer: 1 when an answer attempt came before every fact had been revealed. For tasks without
            facts that need clarification, 1 when an attempt came before the user had replied to a question.
        over_ask: 1 when the assistant asked although the task did not need clarification.
        turns: Number of assistant turns.
        first_action: The act of the first assistant turn ("ask", "answer", "ask_and_answer", "other"), or "none".
        acts: The act of every assistant turn, in order.
    """

    asked: float
    premature_answer: float
    over_ask: float
    turns: float
    first_action: str
    acts: tuple[str, ...] = ()

    def metrics(self) -> dict[str, MetricResult]:
        """The numeric fields as MetricResults, for reports that aggregate every metric alike."""
        return {
            "asked": MetricResult(self.asked),
            "premature_answer": MetricResult(self.premature_answer),
            "over_ask": MetricResult(self.over_ask),
            "turns": MetricResult(self.turns, details={"first_action": self.first_action}),
        }


def behaviour(
    task: Task, conversation: Conversation, revealed_facts_per_turn: RevealRecord | None = None
) -> Behaviour:
    """Classify every assistant turn and derive the ask / premature / over-ask flags (system messages ignored)."""
    turns = [m for m in conversation if m["role"] in ("user", "assistant")]
    reveals = iter(revealed_per_user_turn(task, turns, revealed_facts_per_turn))
    revealed: set[int] = set()
    acts: list[str] = []
    asked = premature = False
    answered = False  # a pure answer turn has happened; later questions are follow-ups, not clarification
    question_open = clarified = False  # clarified: a user turn has followed an asking assistant turn
    for msg in turns:
        if msg["role"] == "user":
            revealed.update(next(reveals))
            clarified = clarified or question_open
            question_open = False
            continue
        act = classify_turn(task, msg["content"])
        acts.append(act)
        asks = act in ("ask", "ask_and_answer")
        attempts = act in ("answer", "ask_and_answer")
        if asks and not answered:
            asked = True
        if attempts and not premature:
            if task.facts:
                premature = len(revealed) < len(task.facts)
            elif task.needs_clarification:
                premature = not clarified
        question_open = asks
        if act == "answer":
            answered = True
    return Behaviour(
        asked=float(asked),
        premature_answer=float(premature),
        over_ask=float(asked and not task.needs_clarification),
        turns=float(len(acts)),
        first_action=acts[0] if acts else "none",
        acts=tuple(acts),
    )
