"""Task metrics: answer/code/document extraction, math accuracy, pass rate, BLEU, QA F1 and the dispatcher."""

from __future__ import annotations

import threading
import time

import pytest
from sacrebleu.metrics import BLEU

from collab.metrics import pass_rate as pass_rate_module
from collab.metrics import task_score as task_score_module
from collab.metrics.accuracy import accuracy
from collab.metrics.base import MetricResult
from collab.metrics.bleu import bleu, sentence_bleu
from collab.metrics.extract import extract_code, extract_document, extract_final_answer
from collab.metrics.pass_rate import pass_rate, reference_imports
from collab.metrics.qa_f1 import normalize_answer, qa_f1, token_f1
from collab.metrics.sandbox import SandboxUnavailable
from collab.metrics.task_score import (
    TASK_METRIC_NAMES,
    MetricFailure,
    is_correct,
    result_is_correct,
    score_response,
)
from collab.tasks.record import Task


def math_task(answer: str) -> Task:
    return Task(id="m", kind="math", goal="Compute it.", answer=answer)


HUMANEVAL_PROMPT = '''from typing import List


def below_zero(operations: List[int]) -> bool:
    """Return True if the running balance ever drops below zero."""
'''
HUMANEVAL_TESTS = '''
METADATA = {"author": "jt", "dataset": "test"}


def check(candidate):
    assert candidate([]) is False
    assert candidate([1, 2, -3, 1, 2, -3]) is False
    assert candidate([1, 2, -4, 5, 6]) is True
    assert candidate([1, -1, 2, -2, 5, -5, 4, -5]) is True
'''
CORRECT_REPLY = '''Here is the function:

```python
def below_zero(operations: List[int]) -> bool:
    balance = 0
    for op in operations:
        balance += op
        if balance < 0:
            return True
    return False
```

It keeps a running balance.'''


def code_task(**changes: object) -> Task:
    fields: dict[str, object] = dict(
        id="HumanEval/3",
        kind="code",
        goal="Write below_zero.",
        answer=HUMANEVAL_PROMPT + "    balance = 0\n    for op in operations:\n        balance += op\n"
        "        if balance < 0:\n            return True\n    return False\n",
        tests=HUMANEVAL_TESTS,
        entry_point="below_zero",
    )
    fields.update(changes)
    return Task(**fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------- final answers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So the result is \\boxed{\\frac{1}{\\sqrt{2}}} overall.", "\\frac{1}{\\sqrt{2}}"),
        ("First \\boxed{3}, no wait: \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("The final answer is $\\frac{1}{2}$. I computed 3 and 4 on the way.", "\\frac{1}{2}"),
        ("**Final Answer:** 42", "42"),
        ("Natalia sold 48 clips in April.\n#### 72", "72"),
        ("Answer: -3", "-3"),
        ("The answer is 12 because 3 * 4 = 12 and 2 more.", "12"),
        ("Adding them up: 3 + 4 = 7.", "7"),
        ("She has 5 apples, then buys 7 more, so 12 apples.", "12"),
        ("The total is 1,234 dollars.", "1,234"),
        ("The temperature dropped to -15 degrees.", "-15"),
        ("Half of it: 3/4 of the pie", "3/4"),
    ],
)
def test_final_answer_extraction_follows_documented_precedence(text: str, expected: str) -> None:
    assert extract_final_answer(text) == expected


def test_binary_minus_is_not_read_as_a_negative_number() -> None:
    assert extract_final_answer("we get 10-3") == "3"


def test_no_answer_like_text_extracts_nothing() -> None:
    assert extract_final_answer("Could you tell me how many apples there are?") is None
    assert extract_final_answer("") is None
    assert extract_final_answer("   \n") is None


def test_number_fallback_can_be_disabled_for_qa() -> None:
    assert extract_final_answer("It was built in 1889 in Paris.", numeric_fallback=False) is None
    assert extract_final_answer("It was built in 1889 in Paris.") == "1889"


# ---------------------------------------------------------------------------------------------------------- code


def test_code_extraction_prefers_last_block_defining_the_entry_point() -> None:
    text = (
        "```python\ndef below_zero(ops):\n    return 1\n```\nbetter:\n"
        "```python\ndef below_zero(ops):\n    return 2\n```\nusage:\n```python\nprint(below_zero([]))\n```"
    )
    assert extract_code(text, "below_zero") == "def below_zero(ops):\n    return 2\n"


def test_code_extraction_falls_back_to_last_python_block_then_raw_code() -> None:
    assert extract_code("```python\nx = 1\n```\n```\ny = 2\n```") == "y = 2\n"
    assert extract_code("def f(x):\n    return x + 1") == "def f(x):\n    return x + 1\n"


def test_code_extraction_accepts_a_reply_cut_off_inside_its_fence() -> None:
    assert extract_code("Here:\n```python\ndef f():\n    return 1\n", "f") == "def f():\n    return 1\n"


def test_prose_without_code_extracts_nothing() -> None:
    assert extract_code("I think you should sort the list first, then scan it.", "f") is None
    assert extract_code("", "f") is None


# ----------------------------------------------------------------------------------------------------- documents


def test_document_extraction_drops_leading_and_trailing_chitchat() -> None:
    text = (
        "Sure, here is the draft you asked for:\n\n"
        "Dear team,\nThe launch moves to May.\n\n"
        "Let me know if you want edits!"
    )
    assert extract_document(text) == "Dear team,\nThe launch moves to May."


def test_document_extraction_starts_at_a_heading_and_takes_a_dominant_fence() -> None:
    assert extract_document("Of course!\n# Release notes\n- faster\n") == "# Release notes\n- faster"
    fenced = "Here you go:\n```markdown\n# Title\nA long enough body for the document itself.\n```"
    assert extract_document(fenced) == "# Title\nA long enough body for the document itself."


def test_document_with_several_code_examples_is_kept_whole() -> None:
    doc = "# Usage\nInstall it:\n```\npip install x\n```\nThen run:\n```\nx --help\n```\nThat is all."
    assert extract_document(doc) == doc


# ------------------------------------------------------------------------------------------------------ accuracy


@pytest.mark.parametrize(
    ("gold", "reply"),
    [
        ("0.5", "So the answer is \\boxed{\\frac{1}{2}}."),
        ("\\frac{1}{2}", "The final answer is 0.5"),
        ("1234", "In total she pays 1,234 dollars."),
        ("1,234", "#### 1234"),
        ("-3", "Therefore x = -3"),
        ("\\frac{3}{4}", "Answer: 0.75"),
        ("\\sqrt{2}", "\\boxed{2^{1/2}}"),
        ("10", "\\boxed{10.0}"),
    ],
)
def test_accuracy_accepts_equivalent_forms(gold: str, reply: str) -> None:
    result = accuracy(math_task(gold), reply)
    assert result.value == 1.0, result


@pytest.mark.parametrize(("gold", "reply"), [("-3", "\\boxed{3}"), ("0.5", "answer: 0.6"), ("1234", "It is 1,243.")])
def test_accuracy_scores_wrong_answers_zero_not_failure(gold: str, reply: str) -> None:
    result = accuracy(math_task(gold), reply)
    assert result.value == 0.0
    assert result.error is None


def test_accuracy_is_zero_when_nothing_was_answered() -> None:
    result = accuracy(math_task("12"), "Could you tell me how many boxes there are?")
    assert result == MetricResult(0.0, details={"extracted": None})


def test_accuracy_runs_from_worker_threads() -> None:
    results: list[MetricResult] = []
    threads = [threading.Thread(target=lambda: results.append(accuracy(math_task("0.5"), "\\boxed{1/2}")))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [r.value for r in results] == [1.0, 1.0, 1.0]


def test_accuracy_times_out_on_a_runaway_comparison_and_recovers() -> None:
    # 9^(9^(9^9)) makes sympy build a gigantic integer inside one C call that holds the GIL.
    assert accuracy(math_task("5"), "\\boxed{5}").value == 1.0  # a warm helper: time only the comparison
    start = time.monotonic()
    result = accuracy(math_task("5"), "\\boxed{9^{9^{9^9}}}", timeout_s=1.0)
    assert time.monotonic() - start < 5
    assert result.value is None and result.error is not None and "timed out" in result.error
    assert accuracy(math_task("5"), "\\boxed{5}").value == 1.0


def test_accuracy_fails_loudly_without_a_reference() -> None:
    result = accuracy(math_task(" "), "\\boxed{5}")
    assert result.value is None and "no reference" in (result.error or "")


# ----------------------------------------------------------------------------------------------------- pass rate


def test_correct_humaneval_solution_passes() -> None:
    result = pass_rate(code_task(), CORRECT_REPLY)
    assert result.value == 1.0, result.details
    assert result.details["error_kind"] is None


def test_reference_imports_give_the_prompt_environment() -> None:
    # The reply uses List without importing it, as HumanEval completions do.
    assert reference_imports(code_task().answer) == "from typing import List"


def test_wrong_solution_scores_zero_with_reason() -> None:
    reply = "```python\ndef below_zero(operations):\n    return False\n```"
    result = pass_rate(code_task(), reply)
    assert result.value == 0.0 and result.error is None
    assert result.details["error_kind"] == "exception"
    assert "AssertionError" in result.details["stderr_tail"]


def test_main_guard_demo_does_not_run_during_tests() -> None:
    demo = "\n\nif __name__ == '__main__':\n    print(below_zero(input()))\n```"
    reply = CORRECT_REPLY.replace("    return False\n```", "    return False" + demo)
    assert pass_rate(code_task(), reply).value == 1.0


def test_syntax_error_scores_zero() -> None:
    result = pass_rate(code_task(), "```python\ndef below_zero(operations)\n    return False\n```")
    assert result.value == 0.0 and result.details["error_kind"] == "syntax"


@pytest.mark.parametrize("reply", ["", "I am not sure how to do this.", "\x00\x01 garbage ```"])
def test_reply_without_code_scores_zero(reply: str) -> None:
    result = pass_rate(code_task(), reply)
    assert result.value == 0.0 and result.error is None


def test_infinite_loop_scores_zero_within_the_time_limit() -> None:
    reply = "```python\ndef below_zero(operations):\n    while True:\n        pass\n```"
    start = time.monotonic()
    result = pass_rate(code_task(), reply, timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert result.value == 0.0 and result.details["error_kind"] == "timeout"
    assert elapsed < 1.0 + 2.5


def test_task_without_tests_is_a_metric_failure() -> None:
    result = pass_rate(code_task(tests=None), CORRECT_REPLY)
    assert result.value is None and "no tests" in (result.error or "")


def test_unavailable_sandbox_is_a_metric_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise SandboxUnavailable("no interpreter")

    monkeypatch.setattr(pass_rate_module, "run_python", broken)
    result = pass_rate(code_task(), CORRECT_REPLY)
    assert result.value is None and "no interpreter" in (result.error or "")


# ---------------------------------------------------------------------------------------------------------- BLEU

REFERENCE_DOC = "The quarterly report shows revenue grew by ten percent while costs stayed flat across all regions."


def doc_task(answer: str = REFERENCE_DOC) -> Task:
    return Task(id="d", kind="doc", goal="Write the summary.", answer=answer)


def test_identical_document_scores_one() -> None:
    assert bleu(doc_task(), REFERENCE_DOC).value == 1.0
    assert bleu(doc_task(), f"Sure, here is the summary:\n\n{REFERENCE_DOC}\n\nLet me know!").value == 1.0


def test_bleu_is_word_level_not_character_level() -> None:
    # Every word present, order scrambled: character n-grams mostly survive inside words, word n-grams do not.
    shuffled = "flat regions revenue quarterly all while report percent stayed The costs by shows ten across grew."
    word_level = bleu(doc_task(), shuffled).value
    char_level = BLEU(effective_order=True, tokenize="char").sentence_score(shuffled, [REFERENCE_DOC]).score / 100
    assert word_level is not None
    assert word_level == pytest.approx(sentence_bleu(shuffled, REFERENCE_DOC))
    assert word_level < 0.2 < char_level
    assert bleu(doc_task(), shuffled).details["precisions"][0] == 100.0  # all words are there


def test_empty_document_scores_zero_and_missing_reference_fails() -> None:
    assert bleu(doc_task(), "").value == 0.0
    assert bleu(doc_task(), "   ").value == 0.0
    assert bleu(doc_task(" "), REFERENCE_DOC).value is None


# ------------------------------------------------------------------------------------------------------- QA F1


def qa_task(answer: str) -> Task:
    return Task(id="q", kind="qa", goal="Where?", answer=answer)


def test_squad_normalisation() -> None:
    assert normalize_answer("The  Eiffel-Tower, in PARIS!") == "eiffeltower in paris"


def test_qa_exact_answer_scores_one_with_exact_match() -> None:
    result = qa_f1(qa_task("Eiffel Tower"), "Answer: the Eiffel Tower.")
    assert result.value == 1.0 and result.details["exact_match"] == 1.0


def test_qa_partial_overlap_has_exact_f1() -> None:
    # prediction {paris, tower} vs gold {eiffel, tower, in, paris}: P = 1, R = 1/2, F1 = 2/3.
    result = qa_f1(qa_task("Eiffel Tower in Paris"), "Answer: Paris tower")
    assert result.value == pytest.approx(2 / 3) and result.details["exact_match"] == 0.0
    assert token_f1("a b c", "x y") == 0.0


def test_qa_unmarked_reply_is_scored_whole_and_numbers_are_not_mistaken_for_answers() -> None:
    result = qa_f1(qa_task("Paris"), "It was built in 1889 in Paris.")
    # tokens: it was built in 1889 in paris (7) vs paris (1): P = 1/7, R = 1, F1 = 0.25.
    assert result.value == pytest.approx(0.25) and result.details["source"] == "whole_reply"


def test_qa_empty_reply_scores_zero() -> None:
    assert qa_f1(qa_task("Paris"), "").value == 0.0


# --------------------------------------------------------------------------------------------------- dispatcher


def test_dispatch_by_kind_and_metric_names() -> None:
    assert TASK_METRIC_NAMES == {
        "math": "accuracy", "code": "pass_rate", "qa": "qa_f1", "doc": "bleu", "message": "detail_success"
    }
    assert score_response(math_task("7"), "\\boxed{7}").details["metric"] == "accuracy"
    assert score_response(qa_task("Paris"), "Answer: Paris").details["metric"] == "qa_f1"
    assert score_response(doc_task(), REFERENCE_DOC).details["metric"] == "bleu"
    assert score_response(code_task(), CORRECT_REPLY).details["metric"] == "pass_rate"


def test_is_correct_per_kind() -> None:
    assert is_correct(math_task("7"), "\\boxed{7}") is True
    assert is_correct(math_task("7"), "\\boxed{8}") is False
    assert is_correct(code_task(), CORRECT_REPLY) is True
    assert is_correct(qa_task("Paris"), "Answer: Paris") is True
    assert is_correct(qa_task("Paris"), "Answer: Paris, France") is False  # F1 2/3, but not an exact match
    assert is_correct(doc_task(), REFERENCE_DOC) is True
    assert is_correct(doc_task(), "Revenue grew.", bleu_threshold=0.5) is False


def test_metric_failures_are_not_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MetricFailure):
        result_is_correct(math_task("7"), MetricResult.fail("broken"))

    def explode(_task: Task, _text: str) -> MetricResult:
        raise KeyError("boom")

    monkeypatch.setitem(task_score_module._METRICS, "qa", explode)
    result = score_response(qa_task("Paris"), "Paris")
    assert result.value is None and "KeyError" in (result.error or "")
