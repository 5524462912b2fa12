"""Dialogue acts, ask/answer behaviour, token penalty, the interactivity judge and the elicitation proxy."""

from __future__ import annotations

import json

import pytest

from collab.backends.base import Backend, Request
from collab.chat import Conversation, Generation, message
from collab.metrics.behaviour import behaviour, fact_in_text, revealed_per_user_turn
from collab.metrics.dialogue_acts import classify_turn, is_answer_attempt, is_question, questions
from collab.metrics.interactivity import InteractivityJudge, elicitation_rate, parse_rating
from collab.metrics.tokens import assistant_tokens, token_penalty, window_tokens
from collab.jsonparse import JSONParseError
from collab.tasks.record import Task

MATH = Task(
    id="apples",
    kind="math",
    goal="Tom has 3 boxes of apples. Each box holds 4 apples. How many apples does Tom have?",
    opening="Tom has 3 boxes of apples. How many apples does he have?",
    facts=("Each box holds 4 apples.",),
    answer="12",
    needs_clarification=True,
)
CODE = Task(
    id="sort",
    kind="code",
    goal="Write sort_desc(xs) returning the distinct numbers of xs in descending order.",
    opening="Write me a sorting function.",
    facts=("Remove duplicates.", "Sort in descending order."),
    answer="def sort_desc(xs):\n    return sorted(set(xs), reverse=True)",
    entry_point="sort_desc",
    needs_clarification=True,
)
QA = Task(id="capital", kind="qa", goal="What is the capital of France?", answer="Paris")
DOC = Task(
    id="blog",
    kind="doc",
    goal="Write a short casual blog post about morning walks.",
    answer=" ".join(["word"] * 80),
)

CODE_ANSWER = (
    "Here's the implementation:\n\n```python\ndef sort_desc(xs):\n    return sorted(set(xs), reverse=True)\n```\n\n"
    "This removes duplicates and sorts in descending order."
)


@pytest.mark.parametrize(
    ("task", "text", "expected"),
    [
        # math: clarifying questions, including polite preambles and request phrasing without '?'
        (MATH, "To calculate the total, I need to know how many apples are in each box. Could you provide that?",
         "ask"),
        (MATH, "I'd be happy to help! How many apples does each box contain?", "ask"),
        (MATH, "Please provide the number of apples per box.", "ask"),
        (MATH, "I need a few details:\n1. How many apples per box?\n2. Are all boxes full?\nThen I can solve it.",
         "ask"),
        # restating the givens is not an answer
        (MATH, "So you have 3 boxes. How many apples are in each box?", "ask"),
        # answers with numbers
        (MATH, "Tom has 3 boxes with 4 apples each.\n\n3 × 4 = 12\n\nSo Tom has **12 apples**.", "answer"),
        (MATH, "The answer is $\\boxed{12}$.", "answer"),
        (MATH, "Let's break it down:\n1. Tom has 3 boxes.\n2. Each box holds 4 apples.\n3. Total = 3 × 4 = 12.\n\n"
               "Tom has 12 apples in total. Let me know if you have any other questions!", "answer"),
        (MATH, "12", "answer"),
        # step labels are not results
        (MATH, "Let's solve it step by step.\n\n**Step 1:** Boxes: 3.\n\n**Step 2:** Apples per box: unknown.\n\n"
               "Could you provide the apples per box?", "ask"),
        # hedged guess plus a question
        (MATH, "Assuming each box holds 4 apples, Tom would have 3 × 4 = 12 apples. Could you confirm the number "
               "per box?", "ask_and_answer"),
        # rhetorical questions inside an explanation, and pleasantries
        (MATH, "Let's think. What do we know? Tom has 3 boxes. Why does that matter? Because the total depends on "
               "the box size.", "other"),
        (MATH, "Sure, I can help with that! Let me know if you have any questions.", "other"),
        # code
        (CODE, "Before I write it: should duplicates be removed, and do you want ascending or descending order?",
         "ask"),
        (CODE, CODE_ANSWER, "answer"),
        (CODE, CODE_ANSWER + " Does this help?", "answer"),
        (CODE, CODE_ANSWER + " Would you like me to keep duplicates instead?", "ask_and_answer"),
        (CODE, "```python\nname = input('What is your name?')\nprint(name)\n```", "answer"),
        (CODE, "```python\ndef sort_desc(xs):\n    \"\"\"Sort.\n    Later.\"\"\"\n    ...\n```\nWhat should happen with "
               "duplicates?", "ask"),
        (CODE, "def sort_desc(xs):\n    return sorted(xs)[::-1]", "answer"),
        (CODE, "```bash\npip install numpy\n```", "other"),
        # qa
        (QA, "The capital of France is Paris.", "answer"),
        (QA, "Paris.", "answer"),
        (QA, "Do you mean Paris, France, or the capital of some other France?", "ask"),
        (QA, "I'm not sure which country you mean. Could you clarify?", "ask"),
        # doc
        (DOC, "What tone would you like for the post, formal or casual?", "ask"),
        (DOC, "Here is a draft:\n\n" + "Morning walks clear the head and start the day well. " * 6, "answer"),
        (DOC, "Sure, happy to help.", "other"),
    ],
)
def test_classify_turn_on_realistic_assistant_texts(task: Task, text: str, expected: str) -> None:
    assert classify_turn(task, text) == expected


def test_questions_inside_code_and_urls_are_ignored() -> None:
    assert not is_question("Use `input('Name?')` or see https://example.com/?q=1 for details.")


def test_questions_returns_the_asking_sentences() -> None:
    text = "Great question! Could you tell me the number of boxes? Also, which colour are they?"
    assert questions(text) == ["Could you tell me the number of boxes?", "Also, which colour are they?"]


def test_question_with_self_answer_is_rhetorical_even_with_you() -> None:
    assert not is_question("Why do you multiply here? Because each box holds the same number of apples.")


def test_echoed_numbers_are_not_an_answer_but_a_new_conclusion_is() -> None:
    assert not is_answer_attempt(MATH, "So Tom has 3 boxes, and each holds 4 apples. Let me work on it.")
    assert is_answer_attempt(MATH, "Therefore Tom has 12 apples.")


def test_answers_marked_the_way_the_scorer_reads_them_are_attempts() -> None:
    pytest.importorskip("collab.metrics.extract")
    assert is_answer_attempt(MATH, "Working it out step by step.\n#### 12")
    # The scorer's marker on a given number is still only a restatement.
    assert not is_answer_attempt(MATH, "Let me restate the problem first.\n#### 3")


def test_question_about_the_answer_is_not_an_attempt() -> None:
    assert not is_answer_attempt(MATH, "Is the answer 12?")


# --- behaviour ---------------------------------------------------------------------------------------------------


def conv(*texts: str) -> Conversation:
    return [message("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(texts)]


def test_ask_then_answer_after_the_fact_is_ideal() -> None:
    b = behaviour(MATH, conv(MATH.opening or "", "How many apples are in each box?", "Each box holds 4 apples.",
                             "Then Tom has 3 × 4 = 12 apples."))
    assert (b.asked, b.premature_answer, b.over_ask, b.turns, b.first_action) == (1.0, 0.0, 0.0, 2.0, "ask")
    assert b.acts == ("ask", "answer")


def test_answer_before_the_fact_is_premature() -> None:
    b = behaviour(MATH, conv(MATH.opening or "", "Tom has 15 apples."))
    assert (b.asked, b.premature_answer, b.first_action) == (0.0, 1.0, "answer")


def test_hedged_answer_with_question_counts_as_asking_and_premature() -> None:
    b = behaviour(MATH, conv(MATH.opening or "", "If each box holds 5, that's 3 × 5 = 15. How many per box?"))
    assert (b.asked, b.premature_answer, b.first_action) == (1.0, 1.0, "ask_and_answer")


def test_asking_on_a_complete_task_is_over_asking() -> None:
    b = behaviour(QA, conv("What is the capital of France?", "Which France do you mean?", "The country.",
                           "Paris."))
    assert (b.asked, b.over_ask, b.premature_answer) == (1.0, 1.0, 0.0)


def test_questions_after_a_pure_answer_are_not_asking() -> None:
    b = behaviour(QA, conv("What is the capital of France?", "Paris.", "Thanks", "Which city do you want next?"))
    assert (b.asked, b.over_ask) == (0.0, 0.0)


def test_ambiguous_task_without_facts_is_premature_until_a_question_was_answered() -> None:
    ambiguous = QA.model_copy(update={"needs_clarification": True})
    assert behaviour(ambiguous, conv("Capital?", "Paris.")).premature_answer == 1.0
    assert behaviour(ambiguous, conv("Capital?", "Of which country?", "France.", "Paris.")).premature_answer == 0.0


def test_simulator_record_overrides_text_matching_of_facts() -> None:
    # The paraphrase does not contain the fact; only the simulator's record says it was revealed.
    transcript = conv(MATH.opening or "", "How many per box?", "four in every one", "So Tom has 12 apples.")
    assert behaviour(MATH, transcript).premature_answer == 1.0
    assert behaviour(MATH, transcript, revealed_facts_per_turn=[None, 0]).premature_answer == 0.0
    # The engine's list of UserTurn.info dicts works as is, and may cover only the trailing user turns.
    assert behaviour(MATH, transcript, revealed_facts_per_turn=[{"fact_index": 0}]).premature_answer == 0.0
    with pytest.raises(ValueError, match="3 entries for 2 user turns"):
        behaviour(MATH, transcript, revealed_facts_per_turn=[0, 0, 0])


def test_fact_matching_is_verbatim_or_a_close_paraphrase_with_its_numbers() -> None:
    assert fact_in_text("Each box holds 4 apples.", "oh, each box  holds 4 apples")
    assert fact_in_text("Each box holds 4 apples.", "there are 4 apples in each box, it holds them")
    assert not fact_in_text("Each box holds 4 apples.", "each box holds 5 apples")
    assert revealed_per_user_turn(MATH, conv("hi", "q?", "Each box holds 4 apples.")) == [[], [0]]


def test_behaviour_metrics_are_metric_results() -> None:
    metrics = behaviour(MATH, conv(MATH.opening or "", "How many per box?")).metrics()
    assert metrics["asked"].value == 1.0 and metrics["turns"].value == 1.0
    assert metrics["turns"].details["first_action"] == "ask"


def test_empty_conversation_has_no_first_action() -> None:
    b = behaviour(MATH, conv(MATH.opening or ""))
    assert (b.turns, b.first_action, b.asked) == (0.0, "none", 0.0)


# --- tokens ------------------------------------------------------------------------------------------------------


def test_token_penalty_values() -> None:
    assert token_penalty(1000, 5e-4) == pytest.approx(-0.5)
    assert token_penalty(5000, 5e-4) == -1.0
    assert token_penalty(5000, 5e-4, cap=False) == pytest.approx(-2.5)
    assert token_penalty(0, 1e-4) == 0.0
    with pytest.raises(ValueError):
        token_penalty(10, -1.0)


def test_window_and_assistant_token_counts() -> None:
    messages = [message("system", "s s s"), *conv("a b", "c d e", "f", "g h i j")]
    count = lambda text: len(text.split())  # noqa: E731
    assert window_tokens(messages, count) == 10
    assert window_tokens(messages, count, start=2) == 8  # the candidate at index 2 and everything after
    assert assistant_tokens(messages, count) == 7


# --- interactivity judge -------------------------------------------------------------------------------------------


class ScriptedBackend(Backend):
    """Returns queued replies in request order and records every batch."""

    def __init__(self, replies: list[str | Generation]) -> None:
        super().__init__("scripted-judge")
        self.queue = list(replies)
        self.batches: list[list[Request]] = []

    @property
    def identity(self) -> str:
        return "scripted-judge"

    def _generate_batch(self, requests: list[Request]) -> list[Generation]:
        self.batches.append(requests)
        return [r if isinstance(r, Generation) else Generation(text=r) for r in (self.queue.pop(0) for _ in requests)]


def rating(value: object) -> str:
    return json.dumps({"thought": "ok", "interactivity": value})


def items(n: int) -> list[tuple[Task, Conversation]]:
    return [(MATH, conv(f"Tom has {i} boxes.", "How many per box?")) for i in range(n)]


def test_judge_scores_a_batch_in_one_call_at_temperature_zero() -> None:
    backend = ScriptedBackend([rating(0), rating(0.5), rating(1), rating(0.73)])
    judge = InteractivityJudge(backend)
    results = judge.score(items(4))
    assert [r.value for r in results] == [0.0, 0.5, 1.0, 0.73]
    assert len(backend.batches) == 1 and len(backend.batches[0]) == 4
    assert backend.batches[0][0].params.temperature == 0.0
    assert MATH.goal in backend.batches[0][0].messages[-1]["content"]


def test_judge_reasks_only_failed_items_in_one_batch_per_round() -> None:
    backend = ScriptedBackend(
        [rating("1"), rating(1), rating(1.5), "no json here", rating(1), rating(0), rating(0.5)]
    )
    judge = InteractivityJudge(backend)
    results = judge.score(items(4))
    assert [r.value for r in results] == [1.0, 1.0, 0.0, 0.5]
    assert [len(b) for b in backend.batches] == [4, 3]
    assert judge.stats.parse_failures == 2 and judge.stats.out_of_range == 1
    assert judge.stats.reasks == 3 and judge.stats.failures == 0
    assert results[0].details["attempts"] == 2


def test_judge_failure_is_explicit_never_zero() -> None:
    backend = ScriptedBackend([rating("high"), rating(-1), Generation.failure("rate limited")])
    judge = InteractivityJudge(backend, max_reasks=2)
    (result,) = judge.score(items(1))
    assert result.value is None and not result.ok
    assert "backend error" in (result.error or "")
    assert judge.stats.failures == 1 and judge.stats.backend_errors == 1
    assert len(backend.batches) == 3


def test_judge_skips_conversations_without_assistant_turns() -> None:
    backend = ScriptedBackend([])
    (result,) = InteractivityJudge(backend).score([(MATH, conv("hello"))])
    assert result.error == "no assistant turn to judge"
    assert backend.batches == []


def test_parse_rating_is_strict() -> None:
    assert parse_rating(rating(0.5)) == (0.5, "ok")
    for bad in [rating("0.5"), rating(True), rating(2), rating(None), '{"interactivity": 1}']:
        with pytest.raises(JSONParseError):
            parse_rating(bad)


# --- elicitation proxy ---------------------------------------------------------------------------------------------


def test_elicitation_credits_the_facts_questions_obtained_not_the_act_of_asking() -> None:
    asked = conv(CODE.opening or "", "Should duplicates be removed?", "Remove duplicates.",
                 "What order do you want?", "Sort in descending order.")
    assert elicitation_rate(CODE, asked).value == 1.0
    volunteered = conv(CODE.opening or "", "Should duplicates be removed?", "Remove duplicates.",
                       CODE_ANSWER, "Sort in descending order.")
    # One of the two facts was obtained by a question; the other was volunteered after an attempt.
    assert elicitation_rate(CODE, volunteered).value == 0.5
    guessed = conv(CODE.opening or "", CODE_ANSWER, "Remove duplicates.")
    assert elicitation_rate(CODE, guessed).value == 0.0
    # A question whose answer reveals nothing obtains nothing, and costs 0.5.
    irrelevant = conv(CODE.opening or "", "Do you like Python?", "I don't know.",
                      "Should duplicates be removed?", "Remove duplicates.", "What order?", "Sort in descending order.")
    assert elicitation_rate(CODE, irrelevant).value == 0.5


def test_elicitation_ignores_facts_given_in_the_opening() -> None:
    task = MATH.model_copy(update={"opening": "Tom has 3 boxes. Each box holds 4 apples. How many apples?"})
    result = elicitation_rate(task, conv(task.opening or "", "Tom has 12 apples."))
    assert result.value == 0.0 and result.details["outstanding"] == []


def test_elicitation_without_facts_charges_needless_questions_and_reads_no_label() -> None:
    assert elicitation_rate(QA, conv("Capital of France?", "Paris.")).value == 0.0
    assert elicitation_rate(QA, conv("Capital of France?", "Which France?", "I don't know.", "Paris.")).value == -0.5
    # A reply that does not ask scores 0 whether or not the task is labelled as needing clarification.
    relabelled = QA.model_copy(update={"needs_clarification": True})
    assert elicitation_rate(relabelled, conv("Capital?", "Paris.")).value == 0.0


def test_elicitation_is_rated_from_the_candidate_turn_on() -> None:
    transcript = conv(MATH.opening or "", "How many per box?", "Each box holds 4 apples.", "Tom has 12 apples.")
    assert elicitation_rate(MATH, transcript).value == 1.0
    # From the last assistant turn on, the fact was already known: nothing outstanding, no question asked.
    later = elicitation_rate(MATH, transcript, start=3)
    assert later.value == 0.0 and later.details["outstanding"] == []
    guess_then_ask = conv(MATH.opening or "", "Tom has 7 apples.", "No.", "How many per box?",
                          "Each box holds 4 apples.")
    assert elicitation_rate(MATH, guess_then_ask, start=3).value == 1.0
    assert elicitation_rate(MATH, guess_then_ask, start=1).value == 1.0  # the guess cost nothing here...
    assert elicitation_rate(MATH, conv(MATH.opening or "", "Tom has 7 apples.", "No.")).value == 0.0  # ...this did


def test_elicitation_uses_the_simulator_record_and_fails_explicitly() -> None:
    transcript = conv(MATH.opening or "", "How many per box?", "four in every one")
    assert elicitation_rate(MATH, transcript).value == -0.5  # asked, but no fact recorded as revealed: wasted
    assert elicitation_rate(MATH, transcript, revealed=[None, 0]).value == 1.0
    # A rollout's user_info: the reveal, then a final turn that ended the chat without a message.
    rollout_info = [{"reason": "reveal", "fact_index": 0}, {"reason": "turn_limit", "fact_index": None, "done": True}]
    assert elicitation_rate(MATH, transcript, revealed=rollout_info).value == 1.0
    assert elicitation_rate(MATH, transcript, revealed=[0, 0, 0]).error is not None
    assert elicitation_rate(MATH, conv("hi")).error == "no assistant turn to rate"
