"""Candidate strategies: the steering text and the assistant prefill that a steered candidate continues."""

from __future__ import annotations

from collab.candidates import PREFILLS, assign_strategies, prefill_for, steered_prompt

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
