"""Document BLEU: word-level sentence BLEU of the assistant's document against the reference document.

Word-level on purpose: CollabLLM computed BLEU on raw character strings, so n-grams were characters and a document
with the right letters in the wrong words scored well. Here sacrebleu tokenizes words ("13a", as in WMT) and
`effective_order` keeps short documents from scoring 0 just for lacking 4-grams.
"""

from __future__ import annotations

from sacrebleu.metrics import BLEU

from collab.metrics.base import MetricResult
from collab.metrics.extract import extract_document
from collab.tasks.record import Task


def sentence_bleu(hypothesis: str, reference: str) -> float:
    """Word-level BLEU in [0, 1] (sacrebleu's 0-100 score divided by 100)."""
    # A fresh scorer per call: cheap, and no state shared between the reward threads.
    scorer = BLEU(effective_order=True, tokenize="13a")
    return _unit(scorer.sentence_score(hypothesis, [reference]).score)


def _unit(score: float) -> float:
    # sacrebleu's 100.0 for identical text comes back as 1.0000000000000004 after its log/exp round trip.
    return min(1.0, max(0.0, score / 100.0))


def bleu(task: Task, text: str) -> MetricResult:
    """BLEU of `extract_document(text)` against `task.answer`; an empty document scores 0.0."""
    reference = task.answer.strip()
    if not reference:
        return MetricResult.fail(f"task {task.id} has no reference document")
    document = extract_document(text or "")
    if not document.strip():
        return MetricResult(0.0, details={"document_words": 0, "reason": "empty document"})
    scorer = BLEU(effective_order=True, tokenize="13a")
    score = scorer.sentence_score(document, [reference])
    details = {
        "bleu": round(score.score, 4),
        "precisions": [round(p, 4) for p in score.precisions],
        "brevity_penalty": round(score.bp, 4),
        "document_words": len(document.split()),
        "reference_words": len(reference.split()),
    }
    return MetricResult(_unit(score.score), details=details)
