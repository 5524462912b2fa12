"""QA F1: SQuAD-style token F1 (and exact match) of the assistant's answer against the reference.

Both sides are normalised as in the official SQuAD script (lower case, no punctuation, no articles, single spaces),
so "The Eiffel Tower." matches "eiffel tower". An explicitly marked answer ("Answer: ...", "\\boxed{...}") is
scored on its own; otherwise the whole reply is, so a verbose reply pays for its extra words in precision.
"""

from __future__ import annotations

import re
import string
from collections import Counter

from collab.metrics.base import MetricResult
from collab.metrics.extract import extract_final_answer
from collab.tasks.record import Task

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    """Harmonic mean of token precision and recall after normalisation. When either side has no tokens, 1.0 only
    if both have none (the SQuAD v2 convention)."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(gold)


def qa_f1(task: Task, text: str) -> MetricResult:
    """Token F1 of the answer in `text` against `task.answer`; `details["exact_match"]` is 1.0 or 0.0."""
    if not task.answer.strip():
        return MetricResult.fail(f"task {task.id} has no reference answer")
    marked = extract_final_answer(text or "", numeric_fallback=False)
    prediction = marked if marked is not None else (text or "").strip()
    source = "marked" if marked is not None else "whole_reply"
    if not prediction:
        return MetricResult(0.0, details={"prediction": "", "exact_match": 0.0, "source": "empty"})
    f1 = token_f1(prediction, task.answer)
    em = float(exact_match(prediction, task.answer))
    return MetricResult(f1, details={"prediction": prediction[:500], "exact_match": em, "source": source})
