"""Candidate strategies: the steering text and the assistant prefill that a steered candidate continues."""

from __future__ import annotations

from collab.backends.base import Backend, Generation, Request, SamplingParams
from collab.candidates import PREFILLS, assign_strategies, cut_at_stop, prefill_for, sample_candidates, steered_prompt
from collab.tasks.record import Task

HISTORY = [{"role": "user", "content": "Tom has 3 boxes. How many apples?"}]


def test_ask_candidates_continue_a_question_opening_on_every_task_kind() -> None:
    for kind in ("math", "code", "qa"):
        assert prefill_for("ask", kind, seed=0) == PREFILLS[("ask", "*")][0]
    openings = {prefill_for("ask", "math", seed=s) for s in range(8)}
    assert openings == set(PREFILLS[("ask", "*")])


def test_answer_candidates_commit_to_a_result_on_math_only() -> None:
    assert prefill_for("answer", "math", seed=1) == "So the answer is"
    assert prefill_for("answer", "code") is None
    assert prefill_for("sample", "math") is None


def test_recipe_openings_replace_the_built_in_ones_of_the_strategies_they_name() -> None:
    overrides = {"ask": ["Could you tell me"], "sample": []}
    assert {prefill_for("ask", kind, seed=s, overrides=overrides) for kind in ("math", "code") for s in range(4)} == {
        "Could you tell me"}
    assert prefill_for("sample", "math", overrides=overrides) is None
    assert prefill_for("answer", "math", seed=0, overrides=overrides) == "The answer is"  # not named: built-in
    prompt = steered_prompt("ask", HISTORY, None, seed=3, kind="math", prefills=overrides)
    assert prompt[-1] == {"role": "assistant", "content": "Could you tell me"}


def test_steered_prompt_adds_the_steering_to_the_system_prompt_and_ends_with_the_prefill() -> None:
    prompt = steered_prompt("answer", HISTORY, "You are helpful.", seed=0, kind="math")
    assert prompt[0]["role"] == "system" and prompt[0]["content"].startswith("You are helpful.\n\nAnswer the request")
    assert prompt[1:-1] == HISTORY
    assert prompt[-1] == {"role": "assistant", "content": "The answer is"}
    assert steered_prompt("sample", HISTORY, None) == HISTORY


def test_strategies_cycle_over_the_candidates() -> None:
    assert assign_strategies(["ask", "answer"], 5) == ["ask", "answer", "ask", "answer", "ask"]


class Rambler(Backend):
    """Continues every prompt with a question and then rambles on, up to the token limit."""

    def __init__(self) -> None:
        super().__init__("rambler")

    @property
    def identity(self) -> str:
        return self.name

    def _generate_batch(self, requests: list[Request]) -> list[Generation]:
        return [Generation(text=" many boxes are there? I hope you're having a great day? And", completion_tokens=16,
                           finish_reason="length") for _ in requests]


def test_a_strategy_with_stop_strings_ends_its_candidates_after_the_first_one_and_they_count_as_complete() -> None:
    task = Task(id="t", kind="math", goal="g", opening=HISTORY[0]["content"], answer="12")
    (group,) = sample_candidates(Rambler(), [(task, HISTORY)], ["ask", "answer"], SamplingParams(max_new_tokens=16),
                                 prefills={"ask": ["Could you tell me how"], "answer": []}, stops={"ask": ["?"]})
    ask, answer = group
    assert (ask.text, ask.truncated) == ("Could you tell me how many boxes are there?", False)
    assert answer.text.endswith("And") and answer.truncated  # no stop strings for it: cut by the token limit


def test_stop_strings_inside_the_prefill_do_not_cut_and_the_earliest_one_wins() -> None:
    assert cut_at_stop("Really?", " Yes. Then?", ["?"]) == ("Really? Yes. Then?", True)
    assert cut_at_stop("", "One. Two? Three.", ["?", "."]) == ("One.", True)
    assert cut_at_stop("Hi", " there", ["?"]) == ("Hi there", False)
